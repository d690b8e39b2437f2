"""scripts/operate.py against the local world: failure records in the output bucket (as the
pipeline writes them) and parked messages (as Lambda's DLQ delivers them) moved back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from scripts.operate import list_failures, main, redrive, sendable_attributes

if TYPE_CHECKING:
    from localworld.world import LocalWorld


def failure_record(key: str, reason: str, failed_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "source": {"bucket": "input-bucket", "key": key, "version_id": None, "etag": "0123abcd"},
        "class": "permanent",
        "retryable": False,
        "reason": reason,
        "message": f"Deepgram said no to {key}",
        "http_status": 400,
        "deepgram_error_code": "Bad Request",
        "deepgram_request_id": f"req-{key}",
        "attempts": 1,
        "first_attempt_at": failed_at,
        "failed_at": failed_at,
        **extra,
    }


@pytest.fixture
def records(world: LocalWorld) -> dict[str, dict[str, Any]]:
    s3 = world.aws.s3()
    records = {
        world.failure_key("calls/a.wav"): failure_record(
            "calls/a.wav", "unsupported-media", "2025-01-02T10:00:00.000Z"
        ),
        world.failure_key("calls/b.mp3"): failure_record(
            "calls/b.mp3", "deepgram-rejected", "2025-01-03T10:00:00.000Z", attempts=3, http_status=422
        ),
        world.failure_key("c.ogg"): failure_record("c.ogg", "unsupported-media", "2025-01-04T10:00:00.000Z"),
    }
    for key, record in records.items():
        s3.put_object(Bucket=world.output_bucket, Key=key, Body=json.dumps(record).encode())
    # Not failure records: a transcript, a stray non-JSON object and JSON of another shape.
    s3.put_object(
        Bucket=world.output_bucket, Key=world.transcript_key("calls/ok.wav"), Body=b'{"results": {}}'
    )
    s3.put_object(Bucket=world.output_bucket, Key=f"{world.failure_prefix}notes.txt", Body=b"hello")
    s3.put_object(Bucket=world.output_bucket, Key=world.failure_key("odd"), Body=b'{"results": {}}')
    return records


def test_list_failures_returns_only_failure_records_oldest_first(
    world: LocalWorld, records: dict[str, dict[str, Any]]
) -> None:
    found = list_failures(world.aws.s3(), world.output_bucket)

    assert [r["record_key"] for r in found] == list(records)
    for record in found:
        assert {k: v for k, v in record.items() if k != "record_key"} == records[record["record_key"]]
    assert found[1]["attempts"] == 3
    assert found[1]["http_status"] == 422


def test_list_failures_filters_by_reason_and_prefix(
    world: LocalWorld, records: dict[str, dict[str, Any]]
) -> None:
    s3 = world.aws.s3()

    media = list_failures(s3, world.output_bucket, reason="unsupported-media")
    calls = list_failures(s3, world.output_bucket, prefix=f"{world.failure_prefix}calls/")

    assert [r["source"]["key"] for r in media] == ["calls/a.wav", "c.ogg"]
    assert [r["source"]["key"] for r in calls] == ["calls/a.wav", "calls/b.mp3"]
    assert list_failures(s3, world.output_bucket, reason="no-such-reason") == []


def test_failures_command_prints_a_table_and_counts(
    world: LocalWorld,
    records: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in world.aws.env().items():
        monkeypatch.setenv(name, value)

    assert main(["failures", "--bucket", world.output_bucket, "--text"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["FAILED_AT", "REASON", "HTTP", "SOURCE_KEY", "ATTEMPTS", "MESSAGE"]
    assert lines[2].split()[:5] == [
        "2025-01-03T10:00:00.000Z",
        "deepgram-rejected",
        "422",
        "calls/b.mp3",
        "3",
    ]
    assert lines[2].endswith("Deepgram said no to calls/b.mp3")
    assert lines[-3:] == ["3 failure record(s)", "       2  unsupported-media", "       1  deepgram-rejected"]


def test_failures_command_prints_one_json_document_with_filters(
    world: LocalWorld,
    records: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in world.aws.env().items():
        monkeypatch.setenv(name, value)

    argv = ["failures", "--bucket", world.output_bucket, "--reason", "unsupported-media"]
    assert main([*argv, "--since", "2025-01-03"]) == 0

    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert (result["bucket"], result["count"], result["by_reason"]) == (
        world.output_bucket,
        1,
        {"unsupported-media": 1},
    )
    [record] = result["records"]
    assert record["source"]["key"] == "c.ogg"
    assert record["record_key"] == world.failure_key("c.ogg")
    assert "1 failure record(s)" in captured.err
    assert main([*argv, "--json"]) == 0  # the old flag still works: JSON is the default now
    assert json.loads(capsys.readouterr().out)["count"] == 2


def dlq_message(key: str, request_id: str) -> dict[str, Any]:
    """What Lambda puts on a DLQ: the original event as body, the error as message attributes."""
    event = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": key}}}]}
    return {
        "MessageBody": json.dumps(event),
        "MessageAttributes": {
            "RequestID": {"DataType": "String", "StringValue": request_id},
            "ErrorCode": {"DataType": "Number", "StringValue": "200"},
            "ErrorMessage": {"DataType": "String", "StringValue": f"RetryableError: {key} timed out"},
        },
    }


def drain(world: LocalWorld, queue_url: str) -> list[dict[str, Any]]:
    sqs = world.aws.sqs()
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", []):
        messages.extend(dict(m) for m in batch)
    return messages


def queue_depth(world: LocalWorld, queue_url: str) -> int:
    attributes = world.aws.sqs().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.fixture
def queues(world: LocalWorld) -> tuple[str, str]:
    parking = str(world.stack.resource("ParkingQueue").ref)
    dlq = str(world.stack.resource("TranscribeDeadLetterQueue").ref)
    sqs = world.aws.sqs()
    for n in range(3):
        sqs.send_message(QueueUrl=parking, **dlq_message(f"calls/{n}.wav", f"request-{n}"))
    return parking, dlq


def test_redrive_moves_bodies_and_attributes_and_empties_the_source(
    world: LocalWorld, queues: tuple[str, str]
) -> None:
    parking, dlq = queues

    assert redrive(world.aws.sqs(), parking, dlq, wait_s=0) == 3

    assert queue_depth(world, parking) == 0
    arrived = sorted(drain(world, dlq), key=lambda m: m["MessageAttributes"]["RequestID"]["StringValue"])
    expected = [dlq_message(f"calls/{n}.wav", f"request-{n}") for n in range(3)]
    assert [m["Body"] for m in arrived] == [e["MessageBody"] for e in expected]
    assert [m["MessageAttributes"] for m in arrived] == [e["MessageAttributes"] for e in expected]


def test_redrive_max_and_dry_run(world: LocalWorld, queues: tuple[str, str]) -> None:
    parking, dlq = queues
    sqs = world.aws.sqs()

    assert redrive(sqs, parking, dlq, dry_run=True, wait_s=0) == 3
    assert queue_depth(world, dlq) == 0
    assert redrive(sqs, parking, dlq, max_messages=2, wait_s=0) == 2  # dry run left them visible

    assert queue_depth(world, dlq) == 2
    assert queue_depth(world, parking) == 1


def test_redrive_command_reports_what_moved(
    world: LocalWorld,
    queues: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parking, dlq = queues
    for name, value in world.aws.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("scripts.operate.RECEIVE_WAIT_S", 0)  # moto answers at once

    assert main(["redrive", "--from", parking, "--to", dlq, "--dry-run"]) == 0
    assert main(["redrive", "--from", parking, "--to", dlq]) == 0

    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == [
        {"from": parking, "to": dlq, "dry_run": True, "moved": 3},
        {"from": parking, "to": dlq, "dry_run": False, "moved": 3},
    ]
    assert f"moved 3 message(s) from {parking} to {dlq}" in captured.err
    assert queue_depth(world, parking) == 0
    assert queue_depth(world, dlq) == 3


def test_sendable_attributes_drops_what_send_message_refuses() -> None:
    received: Any = {
        "AWS.SNS.MOBILE.MPNS.Type": {"DataType": "String", "StringValue": "token"},
        "Amazon.Foo": {"DataType": "String", "StringValue": "x"},
        "RequestID": {
            "DataType": "String",
            "StringValue": "r-1",
            "StringListValues": [],
            "BinaryListValues": [],
        },
        "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }

    assert sendable_attributes(received) == {
        "RequestID": {"DataType": "String", "StringValue": "r-1"},
        "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
