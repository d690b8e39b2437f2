"""Never pay twice for one answer: a long recording's answer (tens of MB) fits the default memory,
and an answer whose write failed is written by the retry without a second Deepgram request.

The real transcribe handler runs in the Docker-free runtime, which kills a container over its
``MemorySize`` (256 MB, the template's default) as Lambda does; the emulator answers with a valid
Deepgram 200 of at least 60 MiB on demand; output writes fail through the AWS fault proxy."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from transcriber.pipeline.workflow import OUTPUT_WRITE_ATTEMPTS
from transcriber.services.answers import MAX_RECORD_BYTES
from transcriber.services.clients import MAX_ATTEMPTS
from transcriber.services.deepgram import SPOOL_MEMORY_BYTES

if TYPE_CHECKING:
    from localworld.aws_faults import AwsFaultProxy
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

LONG_ANSWER_BYTES = 60 * 1024 * 1024
DEFAULT_MEMORY_MB = 256
# Where memory is not what is shown: too long for the idempotency record (its gzip, about 590 KiB, is
# three times MAX_RECORD_BYTES), so a staging object, and spooled to disk (over SPOOL_MEMORY_BYTES),
# at an eighth of the 60 MiB answer's cost to make, write and copy (the test: 14 s -> 5 s).
STAGED_ANSWER_BYTES = 8 * 1024 * 1024


def answers_of(world: LocalWorld, status: int = 200) -> int:
    """Deepgram's answers with ``status`` (a 200 is a billed transcription)."""
    return sum(1 for request in world.emulator.requests if request.status == status)


def test_a_60_mb_answer_is_transcribed_within_the_default_memory(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    function = start_function()
    assert function.memory_mb == DEFAULT_MEMORY_MB  # the template's default, enforced
    event = uploads.put("long/meeting.wav", sample_audio)
    world.emulator.faults.next(1, kind="long_answer", answer_bytes=LONG_ANSWER_BYTES)

    result = function.invoke(event)

    assert result.error is None, result.error
    assert result.max_memory_mb is not None
    assert result.max_memory_mb <= DEFAULT_MEMORY_MB
    assert answers_of(world) == 1
    stored = world.aws.s3().get_object(
        Bucket=world.output_bucket, Key=world.transcript_key("long/meeting.wav")
    )
    body = stored["Body"].read()
    assert len(body) >= LONG_ANSWER_BYTES
    request_id = world.emulator.requests[-1].request_id
    assert stored["Metadata"]["deepgram-request-id"] == request_id
    assert body.startswith(
        b'{"metadata": {"transaction_key": "deprecated", "request_id": "' + request_id.encode()
    )
    assert body.rstrip().endswith(b"}")  # whole, as Deepgram sent it


def test_an_answer_whose_write_failed_is_written_by_the_retry_without_paying_again(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    event = uploads.put("write-fails/a.wav", sample_audio)
    transcript = world.transcript_key("write-fails/a.wav")
    aws_fault_proxy.fail("PUT", transcript, 503, "SlowDown")
    function = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})

    first = function.invoke(event)

    assert first.error is not None
    assert first.error["errorMessage"].startswith("s3-throttled")
    # The write was tried again within the invocation (each try is botocore's own attempts).
    puts = aws_fault_proxy.requests_to("PUT", world.transcript_prefix)
    assert [r.status for r in puts] == [503] * (MAX_ATTEMPTS * OUTPUT_WRITE_ATTEMPTS)
    assert "Deepgram's answer is kept for the retry" in "\n".join(first.logs)

    aws_fault_proxy.clear()
    second = function.invoke(event, request_id=first.request_id)  # Lambda's retry of the event

    assert second.error is None, second.logs
    assert not second.cold_start  # the same container, which kept the answer
    assert answers_of(world) == 1  # Deepgram answered (and billed) once
    assert len(world.emulator.requests) == 1
    stored = world.aws.s3().get_object(Bucket=world.output_bucket, Key=transcript)
    assert stored["Metadata"]["deepgram-request-id"] == world.emulator.requests[0].request_id


def test_a_long_answer_whose_write_failed_is_kept_and_written_by_the_retry(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    event = uploads.put("write-fails/long.wav", sample_audio)
    transcript = world.transcript_key("write-fails/long.wav")
    aws_fault_proxy.fail("PUT", transcript, 403, "AccessDenied")  # a bucket policy, fixed later
    function = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})
    world.emulator.faults.next(1, kind="long_answer", answer_bytes=LONG_ANSWER_BYTES)

    first = function.invoke(event)

    assert first.error is not None
    assert first.error["errorType"] == "BlockedError"
    assert first.error["errorMessage"].startswith("output-bucket-unwritable")
    assert first.max_memory_mb is not None
    assert first.max_memory_mb <= DEFAULT_MEMORY_MB

    aws_fault_proxy.clear()
    second = function.invoke(event, request_id=first.request_id)

    assert second.error is None, second.error
    assert answers_of(world) == 1
    head = world.aws.s3().head_object(Bucket=world.output_bucket, Key=transcript)
    assert head["ContentLength"] >= LONG_ANSWER_BYTES


def test_a_long_answer_whose_write_failed_is_written_by_the_retry_function_without_paying_again(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
    fast_retry_env: dict[str, str],
) -> None:
    """Another function, in another container: the kept answer is durable (too long for the
    idempotency record, so a staging object in the output bucket), not only the first container's."""
    assert 4 * max(MAX_RECORD_BYTES, SPOOL_MEMORY_BYTES) < STAGED_ANSWER_BYTES
    event = uploads.put("write-fails/elsewhere.wav", sample_audio)
    transcript = world.transcript_key("write-fails/elsewhere.wav")
    aws_fault_proxy.fail("PUT", transcript, 403, "AccessDenied")
    function = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})
    world.emulator.faults.next(1, kind="long_answer", answer_bytes=STAGED_ANSWER_BYTES)

    first = function.invoke(event)

    assert first.error is not None
    assert first.error["errorMessage"].startswith("output-bucket-unwritable")
    staged = world.aws.s3().list_objects_v2(Bucket=world.output_bucket, Prefix="kept-answers/")
    assert [item["Size"] for item in staged.get("Contents", [])] >= [STAGED_ANSWER_BYTES]
    function.close()  # the container that kept nothing of its own is gone

    aws_fault_proxy.clear()
    retry = start_function("RetryFunction", timeout_s=None, extra_env=None, **fast_retry_env)
    result = retry.invoke(dead_lettered(event, first.request_id))

    assert result.payload == {"batchItemFailures": []}, result.logs
    assert answers_of(world) == 1  # Deepgram answered (and billed) once
    head = world.aws.s3().head_object(Bucket=world.output_bucket, Key=transcript)
    assert head["ContentLength"] >= STAGED_ANSWER_BYTES
    assert head["Metadata"]["deepgram-request-id"] == world.emulator.requests[0].request_id
    left = world.aws.s3().list_objects_v2(Bucket=world.output_bucket, Prefix="kept-answers/")
    assert left["KeyCount"] == 0  # the staging copy goes once the transcript is written


def dead_lettered(event: dict[str, object], request_id: str) -> dict[str, object]:
    """The SQS record the retry function receives for an event Lambda gave up on."""
    return {
        "Records": [
            {
                "messageId": "m-kept",
                "receiptHandle": "not-a-real-handle",
                "body": json.dumps(event),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795435200000"},
                "messageAttributes": {
                    "RequestID": {"stringValue": request_id, "dataType": "String"},
                    "ErrorCode": {"stringValue": "200", "dataType": "Number"},
                },
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dead-letter",
                "awsRegion": "us-east-1",
            }
        ]
    }
