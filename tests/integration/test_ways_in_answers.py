"""What each way in gets back from the real handler: SQS partial batch failures, S3 Batch
Operations result codes, and a clear permanent error for an event of no known shape."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.shapes import sqs_event

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory
    from localworld.world import LocalWorld


def batch_event(world: LocalWorld, key: str, schema: str = "2.0") -> dict[str, Any]:
    task: dict[str, Any] = {"taskId": "task-1", "s3Key": key.replace(" ", "+"), "s3VersionId": None}
    if schema == "1.0":
        task["s3BucketArn"] = f"arn:aws:s3:::{world.input_bucket}"
    else:
        task["s3Bucket"] = world.input_bucket
    return {
        "invocationSchemaVersion": schema,
        "invocationId": "inv-1",
        "job": {"id": "job-1"},
        "tasks": [task],
    }


def put(world: LocalWorld, key: str, body: bytes) -> None:
    world.aws.s3().put_object(Bucket=world.input_bucket, Key=key, Body=body)


def test_one_bad_sqs_message_does_not_hold_back_the_others(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    put(world, "sqs/good.wav", sample_audio)
    good = json.dumps({"bucket": world.input_bucket, "key": "sqs/good.wav"})
    event = sqs_event("{garbage", good, json.dumps({"what": "is this"}))

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "msg-0"}, {"itemIdentifier": "msg-2"}]}
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    json_outputs = [item["Key"] for item in listing["Contents"] if item["Key"].endswith(".json")]
    assert json_outputs == [world.transcript_key("sqs/good.wav")]
    assert any("unrecognised-event" in line and "msg-0" in line for line in result.logs)


def test_a_retryable_failure_in_one_sqs_message_is_reported_for_that_message_only(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    put(world, "sqs/first.wav", sample_audio)
    put(world, "sqs/second.wav", sample_audio)
    world.emulator.faults.next(1, status=503)
    bodies = [
        json.dumps({"bucket": world.input_bucket, "key": f"sqs/{name}.wav"}) for name in ("first", "second")
    ]

    result = start_function(DEEPGRAM_MAX_ATTEMPTS="1").invoke(sqs_event(*bodies))

    assert result.error is None, result.logs
    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}


@pytest.mark.parametrize("schema", ["1.0", "2.0"])
def test_batch_operations_success(
    world: LocalWorld, start_function: FunctionFactory, schema: str, sample_audio: bytes
) -> None:
    put(world, "backfill/old call.wav", sample_audio)

    result = start_function().invoke(batch_event(world, "backfill/old call.wav", schema))

    assert result.error is None, result.logs
    assert result.payload == {
        "invocationSchemaVersion": schema,
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": "inv-1",
        "results": [
            {
                "taskId": "task-1",
                "resultCode": "Succeeded",
                "resultString": world.transcript_key("backfill/old call.wav"),
            }
        ],
    }


def test_batch_operations_retryable_failure_is_temporary(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    put(world, "backfill/busy.wav", sample_audio)
    world.emulator.faults.next(1, status=429)

    result = start_function(DEEPGRAM_MAX_ATTEMPTS="1").invoke(batch_event(world, "backfill/busy.wav"))

    assert result.error is None, result.logs
    [task] = result.payload["results"]
    assert task["resultCode"] == "TemporaryFailure"
    assert task["resultString"].startswith("deepgram-throttled")


def test_batch_operations_permanent_failure_names_the_reason(
    world: LocalWorld, start_function: FunctionFactory
) -> None:
    put(world, "backfill/notes.wav", b"not audio, just notes\n" * 20)

    result = start_function().invoke(batch_event(world, "backfill/notes.wav"))

    assert result.error is None, result.logs
    [task] = result.payload["results"]
    assert task["resultCode"] == "PermanentFailure"
    notes = world.failure_key("backfill/notes.wav")
    assert task["resultString"] == f"deepgram-unsupported-audio: see {notes}"


@pytest.mark.parametrize("event", [{"detail": {}}, {"Records": [{"eventSource": "aws:kinesis"}]}, ["nope"]])
def test_an_event_of_no_known_shape_is_a_permanent_error(
    world: LocalWorld, start_function: FunctionFactory, event: Any
) -> None:
    result = start_function().invoke(event)

    assert result.error is not None
    assert result.error["errorType"] == "PermanentError"
    assert result.error["errorMessage"].startswith("unrecognised-event")
    assert "accepted event shapes" in result.error["errorMessage"]
    assert world.emulator.requests == []
