"""The error taxonomy through the real handler over real HTTP: the emulator answers Deepgram failures
in their documented shapes and the function must classify them. One case per error class runs here;
the full status-by-body-shape tables run in-process in tests/core/test_error_classes.py."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta
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
    [(503, "modern", "deepgram-unavailable")],  # the other transient statuses: tests/core
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
    ("status", "style", "reason"),
    [(404, "legacy", "deepgram-endpoint-not-found")],  # the other deployment faults: tests/core
)
def test_deployment_faults_keep_the_work_waiting(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    status: int,
    style: str,
    reason: str,
    sample_audio: bytes,
) -> None:
    """A redirect, a listen path that is not there, a method it refuses, a key without the model's
    scope: the deployment is wrong, not the object. Raised as blocked (Lambda's retries, then the
    dead-letter queue's long backoff), never a failure record that consumes the event."""
    world.emulator.faults.next(1, status=status, style=style)  # type: ignore[arg-type]

    result = start_function().invoke(uploads.put(f"deployment/{status}.wav", sample_audio))

    assert result.error is not None, result.logs
    assert result.error["errorType"] == "BlockedError"
    assert result.error["errorMessage"].startswith(reason)
    assert [r.status for r in world.emulator.requests] == [status]  # no tight retry loop
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0


def test_a_model_the_key_has_no_scope_for_keeps_the_work_waiting(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.allowed_models = {"nova-2"}
    try:
        result = start_function().invoke(uploads.put("model/a.wav", sample_audio))
    finally:
        world.emulator.allowed_models = None

    assert result.error is not None, result.logs
    assert result.error["errorType"] == "BlockedError"
    assert result.error["errorMessage"].startswith("deepgram-insufficient-permissions")
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0


def test_once_the_deployment_is_fixed_the_same_event_is_transcribed(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.faults.next(1, status=404)
    event = uploads.put("deployment/later.wav", sample_audio)
    function = start_function()

    assert function.invoke(event).error is not None
    result = function.invoke(event)  # the fault is gone, as after a fixed DEEPGRAM_API_URL

    assert result.error is None, result.logs
    assert transcript_exists(world, "deployment/later.wav")


@pytest.mark.parametrize("retry_after", ["0"])  # the other nonsense values: tests/core
def test_a_retry_after_of_zero_or_nonsense_never_makes_back_to_back_requests(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    retry_after: str,
) -> None:
    world.emulator.retry_after = retry_after
    world.emulator.faults.next(2, status=429)
    try:
        result = start_function().invoke(uploads.put("throttled/zero.wav", sample_audio))
    finally:
        world.emulator.retry_after = None

    assert result.error is None, result.logs
    first, second, third = world.emulator.requests
    assert second.time - first.time >= 0.95
    assert third.time - second.time >= 0.95
    assert transcript_exists(world, "throttled/zero.wav")


def test_retry_after_as_an_http_date_is_honoured(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=10)  # well past a cold start and our own backoff
    world.emulator.retry_after = email.utils.format_datetime(when, usegmt=True)  # whole seconds
    world.emulator.faults.next(1, status=429)
    try:
        result = start_function().invoke(uploads.put("throttled/date.wav", sample_audio))
    finally:
        world.emulator.retry_after = None

    assert result.error is None, result.logs
    first, second = world.emulator.requests
    assert first.status == 429
    assert second.time >= when.timestamp() - 1.05  # not before the date (cut to whole seconds)


def test_a_200_nested_too_deep_to_parse_is_an_invalid_response(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.faults.next(1, status=200, style="deep-json")

    result = start_function(DEEPGRAM_MAX_ATTEMPTS="1").invoke(uploads.put("deep/a.wav", sample_audio))

    assert result.error is not None, result.logs
    assert result.error["errorType"] == "RetryableError"
    assert result.error["errorMessage"].startswith("deepgram-invalid-response")
    assert "RecursionError" not in "\n".join(result.logs)


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
    """Without the per-upload options' HEAD (UploadOptions=none; with it, the HEAD tells first: see
    test_upload_options.py), in url mode only Deepgram's fetch tells; auto's own GET then says
    exactly what happened."""
    event = uploads.put("gone/a.wav", sample_audio)
    version = event["Records"][0]["s3"]["object"]["versionId"]  # gone for good: that version too
    world.aws.s3().delete_object(Bucket=world.input_bucket, Key="gone/a.wav", VersionId=version)

    result = start_function(DELIVERY_MODE=mode, UPLOAD_OPTIONS="none").invoke(event)

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
    version = event["Records"][0]["s3"]["object"]["versionId"]
    world.aws.s3().delete_object(Bucket=world.input_bucket, Key="gone/no-extension", VersionId=version)

    result = start_function().invoke(event)

    assert result.error is None
    assert failure_record(world, "gone/no-extension")["reason"] == "s3-object-missing"
    assert world.emulator.requests == []
