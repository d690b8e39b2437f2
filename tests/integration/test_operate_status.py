"""``make status`` (``scripts/operate.py status``) for each state an object can be in, and ``make
upload``, against the local world: moto server over HTTP, the real transcribe function, the Deepgram
emulator. Resource names come from a CloudFormation stack in moto carrying the template's own
resolved outputs, as ``--stack`` reads them after a deploy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import boto3
import pytest

from scripts.operate import main
from transcriber.domain import upload_options
from transcriber.services.answers import identity_name

if TYPE_CHECKING:
    from localworld.aws_faults import AwsFaultProxy
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

ROOT = Path(__file__).resolve().parents[2]
STACK = "transcriber-status-test"


@pytest.fixture
def stack(world: LocalWorld, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stack as ``describe_stacks`` shows it once deployed: the template's resolved outputs, with
    the InputPrefix output a non-empty Settings.Uploads.InputPrefix gives (a marker queue stands for
    the resources)."""
    for name, value in world.aws.env().items():
        monkeypatch.setenv(name, value)
    outputs = {
        name: {"Value": value} for name, value in world.stack.outputs.items() if isinstance(value, str)
    }
    outputs["InputPrefix"] = {"Value": "uploads/"}
    template = {
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"{STACK}-marker"}}},
        "Outputs": outputs,
    }
    boto3.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    return STACK


def status(key: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", "--stack", STACK, "--key", key]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_an_object_nothing_names_is_unknown(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    found = status("calls/never-uploaded.wav", capsys)

    assert (found["state"], found["states"], found["object"]) == ("unknown", [], {"exists": False})
    assert "possibly_waiting" not in found  # no queue hides anything: nothing to hint at


def test_transcribed_names_every_output(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = start_function().invoke(uploads.put("calls/done.wav", sample_audio))
    assert result.error is None, result.logs

    found = status("calls/done.wav", capsys)

    assert (found["state"], found["states"]) == ("transcribed", ["transcribed"])
    stem = world.transcript_key("calls/done.wav").removesuffix(".json")
    assert found["transcribed"] == {
        "output_bucket": world.output_bucket,
        "keys": {ext: f"{stem}.{ext}" for ext in ("json", "txt", "srt", "vtt")},
    }
    # The identity was recomputed as the function makes it: its idempotency record was found.
    assert found["idempotency_record"]["status"] == "COMPLETED"
    assert found["bucket"] == world.input_bucket  # the stack's input bucket by default


def test_failed_gives_the_reason_and_the_record(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    start_function: FunctionFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = start_function().invoke(uploads.put("calls/notes.wav", b"meeting notes, not audio"))
    assert result.error is None, result.logs

    found = status("calls/notes.wav", capsys)

    assert found["state"] == "failed"
    assert found["failed"]["reason"] == "deepgram-unsupported-audio"
    assert found["failed"]["record_key"] == world.failure_key("calls/notes.wav")
    assert "transcribed" not in found


def test_waiting_finds_the_messages_and_leaves_them_in_their_queues(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    sample_audio: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = uploads.put("calls/queued.wav", sample_audio)
    other = uploads.put("calls/other.wav", sample_audio)
    dlq = str(world.stack.outputs["DeadLetterQueueUrl"])
    parking = str(world.stack.outputs["ParkingQueueUrl"])
    sqs = world.aws.sqs()
    error: dict[str, Any] = {
        "ErrorMessage": {"DataType": "String", "StringValue": "RetryableError: deepgram-payment-required"}
    }
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(event), MessageAttributes=error)
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(other))
    sqs.send_message(QueueUrl=dlq, MessageBody="not an event")
    sqs.send_message(QueueUrl=parking, MessageBody=json.dumps(event))

    found = status("calls/queued.wav", capsys)

    assert found["state"] == "waiting"
    assert all(datetime.fromisoformat(m["sent_at"]) <= datetime.now(UTC) for m in found["waiting"])
    assert sorted((m["queue"], m["error"]) for m in found["waiting"]) == [
        ("dead-letter", "RetryableError: deepgram-payment-required"),
        ("parking", None),
    ]
    # Peeked, not taken: every message is visible again at once.
    for url, count in ((dlq, 3), (parking, 1)):
        visible = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        assert int(visible["Attributes"]["ApproximateNumberOfMessages"]) == count


def test_a_hidden_message_makes_unknown_say_where_the_object_may_be(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    sample_audio: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The retry function hides a message for its backoff (minutes to hours) and SQS can't read a
    hidden or delayed message: `unknown` then counts them, as places the object may be."""
    event = uploads.put("calls/backing-off.wav", sample_audio)
    dlq = str(world.stack.outputs["DeadLetterQueueUrl"])
    parking = str(world.stack.outputs["ParkingQueueUrl"])
    sqs = world.aws.sqs()
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(event))
    [message] = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1)["Messages"]
    sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=900)
    sqs.send_message(QueueUrl=parking, MessageBody=json.dumps(event), DelaySeconds=900)

    found = status("calls/backing-off.wav", capsys)

    assert (found["state"], found["states"]) == ("unknown", [])  # the same state names as before
    assert found["possibly_waiting"] == {"dead-letter": 1, "parking": 1}
    assert "hidden" in found["hint"]
    sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    visible = status("calls/backing-off.wav", capsys)
    assert [m["queue"] for m in visible["waiting"]] == ["dead-letter"]  # once visible, it is found
    assert "possibly_waiting" not in visible


def test_in_flight_while_the_function_holds_it(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    function = start_function()
    event = uploads.put("calls/slow.wav", sample_audio)
    world.emulator.latency = 8.0  # Deepgram takes its time: the function holds the object meanwhile
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(function.invoke(event)))
    try:
        worker.start()
        deadline = time.monotonic() + 8.0
        found = status("calls/slow.wav", capsys)
        while found["state"] != "in_flight" and time.monotonic() < deadline:
            time.sleep(0.3)
            found = status("calls/slow.wav", capsys)
    finally:
        worker.join(60)
        world.emulator.latency = 0.0

    assert found["state"] == "in_flight", found
    assert datetime.fromisoformat(found["in_flight"]["until"]) > datetime.now(UTC)  # Lambda's deadline
    assert found["idempotency_record"]["status"] == "INPROGRESS"
    assert results[0].error is None, results[0].logs
    assert status("calls/slow.wav", capsys)["state"] == "transcribed"


def test_an_answer_kept_after_its_write_failed(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = uploads.put("calls/kept.wav", sample_audio)
    aws_fault_proxy.fail("PUT", world.transcript_key("calls/kept.wav"), 503, "SlowDown")
    function = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})
    first = function.invoke(event)
    assert first.error is not None
    assert first.error["errorType"] == "RetryableError"

    found = status("calls/kept.wav", capsys)

    assert found["state"] == "answer_kept"
    kept = found["answer_kept"]
    assert kept["where"] == "record"  # a short answer fits in the idempotency record
    assert kept["deepgram_request_id"] == world.emulator.requests[-1].request_id
    assert kept["write_error"] == "s3-throttled"

    aws_fault_proxy.clear()
    assert function.invoke(event).error is None  # the retry writes the kept answer
    assert status("calls/kept.wav", capsys)["state"] == "transcribed"


def test_an_answer_staged_in_the_output_bucket(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    sample_audio: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploads.put("calls/staged.wav", sample_audio)
    s3 = world.aws.s3()
    etag = s3.head_object(Bucket=world.input_bucket, Key="calls/staged.wav")["ETag"].strip('"')
    identity = {"bucket": world.input_bucket, "key": "calls/staged.wav", "etag": etag}
    staged = f"kept-answers/{identity_name(identity)}.json"
    s3.put_object(Bucket=world.output_bucket, Key=staged, Body=b'{"metadata": {}, "results": {}}')

    found = status("calls/staged.wav", capsys)

    assert found["state"] == "answer_kept"
    assert found["answer_kept"] == {"where": "s3", "staging_key": staged}


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_upload_then_make_status_print_json(
    world: LocalWorld, stack: str, tmp_path: Path, sample_audio: bytes
) -> None:
    recording = tmp_path / "meeting one.wav"
    recording.write_bytes(sample_audio)

    uploaded = make("upload", f"STACK={stack}", f"FILE={recording}")

    assert uploaded.returncode == 0, uploaded.stderr
    result = json.loads(uploaded.stdout)
    assert (result["bucket"], result["key"], result["size"]) == (
        world.input_bucket,
        "uploads/meeting one.wav",  # the stack's InputPrefix, then the file's name
        len(sample_audio),
    )
    assert result["content_type"] == "audio/x-wav"
    body = world.aws.s3().get_object(Bucket=world.input_bucket, Key="uploads/meeting one.wav")["Body"].read()
    assert body == sample_audio

    # S3's test event in the dead-letter queue: the product logs that it skips it, on stderr here.
    test_event = (ROOT / "events" / "s3-test-event.json").read_text()
    world.aws.sqs().send_message(
        QueueUrl=str(world.stack.outputs["DeadLetterQueueUrl"]), MessageBody=test_event
    )

    where = make("status", f"STACK={stack}", "KEY=uploads/meeting one.wav")

    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    assert found["object"]["etag"] == result["etag"]
    assert found["state"] == "unknown"  # nothing delivered its notification here: no trace yet
    assert "Skipping s3:TestEvent" in where.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_status_without_stack_finds_it_from_the_buckets_tag(
    world: LocalWorld, stack: str, uploads: Uploads, sample_audio: bytes
) -> None:
    """The issue's own form, `make status BUCKET=... KEY=...`: CloudFormation tags each bucket it
    creates with aws:cloudformation:stack-name. moto's CloudFormation puts that tag on EC2 resources
    only (moto/cloudformation/parsing.py), and S3's API refuses `aws:` tags, so this template gives
    its bucket the tag in Properties.Tags, which moto applies as CloudFormation itself would."""
    tagged_stack, tagged_bucket = "transcriber-tagged", "transcriber-tagged-input"
    outputs = {
        name: {"Value": value} for name, value in world.stack.outputs.items() if isinstance(value, str)
    }
    outputs["InputBucketName"] = {"Value": tagged_bucket}
    template = {
        "Resources": {
            "InputBucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketName": tagged_bucket,
                    "Tags": [{"Key": "aws:cloudformation:stack-name", "Value": tagged_stack}],
                },
            }
        },
        "Outputs": outputs,
    }
    boto3.client("cloudformation").create_stack(StackName=tagged_stack, TemplateBody=json.dumps(template))
    world.aws.s3().put_object(Bucket=tagged_bucket, Key="calls/tagged.wav", Body=sample_audio)
    event = json.dumps(uploads.put("calls/tagged.wav", sample_audio)).replace(
        world.input_bucket, tagged_bucket
    )
    world.aws.sqs().send_message(QueueUrl=str(world.stack.outputs["DeadLetterQueueUrl"]), MessageBody=event)

    where = make("status", f"BUCKET={tagged_bucket}", "KEY=calls/tagged.wav")

    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    assert (found["bucket"], found["state"]) == (tagged_bucket, "waiting")  # the stack's queues were read
    assert f"belongs to stack {tagged_stack}" in where.stderr

    # A bucket no stack created (the world made this one directly): ask for the stack.
    untagged = make("status", f"BUCKET={world.input_bucket}", "KEY=calls/tagged.wav")
    assert untagged.returncode != 0  # make says 2 for a recipe that exits 1
    error = json.loads(untagged.stdout)
    assert "STACK=<stack>" in error["error"]
    assert error["bucket"] == world.input_bucket


def test_status_without_stack_on_a_bucket_it_cannot_read_asks_for_the_stack(
    stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--bucket", "no-such-bucket-here", "--key", "calls/a.wav"]) == 1

    error = json.loads(capsys.readouterr().out)
    assert "(NoSuchBucket)" in error["error"]
    assert "STACK=<stack>" in error["error"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_upload_sets_options_and_speakers_the_function_reads(
    world: LocalWorld,
    stack: str,
    uploads: Uploads,
    start_function: FunctionFactory,
    tmp_path: Path,
    sample_audio: bytes,
) -> None:
    recording = tmp_path / "interview.wav"
    recording.write_bytes(sample_audio)
    speakers = "0=Zoë Ångström,1=Raj"  # non-ASCII: S3 metadata is ASCII, so RFC 2047 encoded words

    uploaded = make(
        "upload",
        f"STACK={stack}",
        f"FILE={recording}",
        "OPTIONS=language=es&diarize=TRUE&keyterm=quick fox&keyterm=lazy dog",
        f"SPEAKERS={speakers}",
    )

    assert uploaded.returncode == 0, uploaded.stderr
    result = json.loads(uploaded.stdout)
    assert result["metadata"]["dg-language"] == "es"
    assert result["metadata"]["dg-speakers"].startswith("=?utf-8?")
    # What S3 holds is what the product's parser reads back.
    assert sorted(upload_options.from_metadata(result["metadata"])) == [
        ("diarize", "TRUE"),
        ("keyterm", "lazy dog"),
        ("keyterm", "quick fox"),
        ("language", "es"),
        ("speakers", speakers),
    ]

    run = start_function().invoke(uploads.next_event())

    assert run.error is None, run.logs
    [outcome] = run.payload["objects"]
    assert outcome["status"] == "transcribed", outcome
    [request] = world.emulator.requests
    assert {("language", "es"), ("diarize", "true")} <= set(request.query)
    assert [v for k, v in request.query if k == "keyterm"] == ["quick fox", "lazy dog"]
    assert all(k != "speakers" for k, _ in request.query)  # ours, never sent to Deepgram
    head = world.aws.s3().head_object(Bucket=world.output_bucket, Key=world.transcript_key(result["key"]))
    assert unquote(head["Metadata"]["speakers"]) == speakers
