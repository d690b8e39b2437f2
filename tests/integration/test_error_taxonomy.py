"""One test per row of the error taxonomy, through the real handler over real HTTP: the emulator
answers each Deepgram failure in its documented shape and the function must classify it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


def failure_record(world: LocalWorld, key: str) -> dict[str, object]:
    body = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.failure_key(key))["Body"].read()
    record: dict[str, object] = json.loads(body)
    return record


def transcript_exists(world: LocalWorld, key: str) -> bool:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket, Prefix=world.transcript_key(key))
    return listing.get("KeyCount", 0) == 1


@pytest.mark.parametrize(
    ("status", "style", "reason"),
    [
        (408, "legacy", "deepgram-request-timeout"),
        (429, "legacy", "deepgram-throttled"),
        (500, "string", "deepgram-unavailable"),
        (502, "html", "deepgram-unavailable"),
        (503, "modern", "deepgram-unavailable"),
        (504, "text", "deepgram-processing-timeout"),
    ],
)
def test_transient_statuses_are_retried_within_the_invocation(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    status: int,
    style: str,
    reason: str,
    sample_audio: bytes,
) -> None:
    world.emulator.faults.next(2, status=status, style=style)  # type: ignore[arg-type]

    result = start_function().invoke(uploads.put(f"transient/{status}.wav", sample_audio))

    assert result.error is None, result.logs
    assert [r.status for r in world.emulator.requests] == [status, status, 200]
    assert transcript_exists(world, f"transient/{status}.wav")
    assert sum(f'"reason":"{reason}"' in line for line in result.logs) == 2


def test_transient_errors_that_outlast_the_attempts_are_raised_for_lambda_to_retry(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.faults.next(2, status=503)

    result = start_function(DEEPGRAM_MAX_ATTEMPTS="2").invoke(uploads.put("outage/a.wav", sample_audio))

    assert result.error is not None
    assert result.error["errorType"] == "RetryableError"
    assert result.error["errorMessage"].startswith("deepgram-unavailable")
    assert len(world.emulator.requests) == 2
    assert not transcript_exists(world, "outage/a.wav")


def test_retry_after_is_honoured(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.retry_after = 2  # whole seconds, as an HTTP header carries them
    world.emulator.faults.next(1, status=429)
    try:
        result = start_function().invoke(uploads.put("throttled/a.wav", sample_audio))
    finally:
        world.emulator.retry_after = None

    assert result.error is None, result.logs
    first, second = world.emulator.requests
    assert second.time - first.time >= 1.9
    assert any('"delay_s":2.0' in line for line in result.logs)


def test_a_dropped_connection_is_retried(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.faults.next(1, kind="drop")

    result = start_function().invoke(uploads.put("dropped/a.wav", sample_audio))

    assert result.error is None, result.logs
    assert any('"reason":"deepgram-connection"' in line for line in result.logs)
    assert transcript_exists(world, "dropped/a.wav")


def test_a_deepgram_that_never_answers_times_out_within_the_lambda_deadline(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.faults.next(1, kind="stall", stall_seconds=30)
    event = uploads.put("stalled/a.wav", sample_audio)
    # 25 s of Lambda: 15 s are kept back for writing, so Deepgram gets under 10 s and one attempt.
    result = start_function(timeout_s=25).invoke(event)

    assert result.error is not None
    assert result.error["errorType"] == "RetryableError"
    assert result.error["errorMessage"].startswith("deepgram-timeout")
    assert len(world.emulator.requests) == 1


@pytest.mark.parametrize(
    ("status", "reason", "http_status"),
    [(403, "deepgram-insufficient-permissions", 403), (404, "deepgram-not-found", 404)],
)
def test_permanent_statuses_leave_a_failure_record(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    status: int,
    reason: str,
    http_status: int,
    sample_audio: bytes,
) -> None:
    world.emulator.faults.next(1, status=status, style="modern")

    result = start_function().invoke(uploads.put(f"permanent/{status}.wav", sample_audio))

    assert result.error is None
    record = failure_record(world, f"permanent/{status}.wav")
    assert record["reason"] == reason
    assert record["http_status"] == http_status
    assert record["class"] == "permanent"
    assert record["attempts"] == 1
    assert record["deepgram_request_id"] == world.emulator.requests[0].request_id


def test_a_model_the_project_cannot_use_is_permanent(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.allowed_models = {"nova-2"}
    try:
        result = start_function().invoke(uploads.put("model/a.wav", sample_audio))
    finally:
        world.emulator.allowed_models = None

    assert result.error is None
    assert failure_record(world, "model/a.wav")["reason"] == "deepgram-insufficient-permissions"


def test_bad_options_are_permanent(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    result = start_function(DEEPGRAM_EXTRA_OPTIONS="no_such_option=1").invoke(
        uploads.put("opts/bad.wav", sample_audio)
    )

    assert result.error is None
    record = failure_record(world, "opts/bad.wav")
    assert record["reason"] == "deepgram-invalid-options"
    assert record["deepgram_error_code"] == "INVALID_QUERY_PARAMETER"


def test_no_credit_keeps_the_work_waiting(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.faults.next(1, status=402)

    result = start_function().invoke(uploads.put("credit/a.wav", sample_audio))

    assert result.error is not None  # raised, so Lambda keeps it: no failure record, no drop
    assert result.error["errorType"] == "BlockedError"
    assert result.error["errorMessage"].startswith("deepgram-payment-required")
    assert len(world.emulator.requests) == 1  # blocked errors are not retried in a tight loop
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("mode", "reason"), [("url", "deepgram-remote-content"), ("auto", "s3-object-missing")]
)
def test_an_object_deleted_before_processing_is_a_permanent_failure(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    mode: str,
    reason: str,
) -> None:
    """In url mode only Deepgram's fetch tells; auto's own GET then says exactly what happened."""
    event = uploads.put("gone/a.wav", sample_audio)
    world.aws.s3().delete_object(Bucket=world.input_bucket, Key="gone/a.wav")

    result = start_function(DELIVERY_MODE=mode).invoke(event)

    assert result.error is None
    record = failure_record(world, "gone/a.wav")
    assert record["reason"] == reason
    assert len(world.emulator.requests) == 1
    if mode == "url":
        assert "presigned" in str(record["message"])


def test_a_missing_object_found_by_head_is_an_s3_failure(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("gone/no-extension", sample_audio, ContentType="audio/wav")
    world.aws.s3().delete_object(Bucket=world.input_bucket, Key="gone/no-extension")

    result = start_function().invoke(event)

    assert result.error is None
    assert failure_record(world, "gone/no-extension")["reason"] == "s3-object-missing"
    assert world.emulator.requests == []
