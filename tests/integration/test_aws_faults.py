"""The error taxonomy's AWS rows that moto cannot produce (S3 403 AccessDenied, 503 SlowDown), through
the real handler over real HTTP: the function's ``AWS_ENDPOINT_URL`` is a fault-injecting proxy in
front of moto (``localworld.aws_faults``), so its HeadObject, its PutObject and Deepgram's GET of the
presigned URL can be answered with the errors real S3 gives."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from transcriber.pipeline.workflow import OUTPUT_WRITE_ATTEMPTS
from transcriber.services.clients import MAX_ATTEMPTS

if TYPE_CHECKING:
    from localworld.aws_faults import AwsFaultProxy
    from localworld.lambda_runtime import LocalFunction
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

# The layer's clients use botocore's standard retry mode with a bounded number of attempts.
BOTOCORE_ATTEMPTS = MAX_ATTEMPTS


def proxied(start_function: FunctionFactory, proxy: AwsFaultProxy, **extra_env: str) -> LocalFunction:
    """The transcribe function with every AWS call (and every presigned URL) going through the proxy."""
    return start_function(extra_env={"AWS_ENDPOINT_URL": proxy.url, **extra_env})


@pytest.fixture
def function(start_function: FunctionFactory, aws_fault_proxy: AwsFaultProxy) -> LocalFunction:
    return proxied(start_function, aws_fault_proxy)


def failure_record(world: LocalWorld, key: str) -> dict[str, object]:
    body = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.failure_key(key))["Body"].read()
    record: dict[str, object] = json.loads(body)
    return record


def output_keys(world: LocalWorld) -> list[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return [item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json")]


def test_access_denied_on_head_leaves_a_failure_record(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    function: LocalFunction,
    sample_audio: bytes,
) -> None:
    # No extension: the function must HEAD the object to learn it is audio.
    event = uploads.put("denied/no-extension", sample_audio, ContentType="audio/wav")
    source = f"{world.input_bucket}/denied/no-extension"  # the upload, not its outputs
    aws_fault_proxy.fail("HEAD", source, 403, "AccessDenied")

    result = function.invoke(event)

    assert result.error is None, result.logs
    record = failure_record(world, "denied/no-extension")
    assert record["reason"] == "s3-access-denied"
    assert record["class"] == "permanent"
    assert record["http_status"] == 403
    assert world.emulator.requests == []
    heads = aws_fault_proxy.requests_to("HEAD", source)
    # not retried by botocore: the describe, then the ordering check before the failure record is
    # written (denied too: it falls back to the sequencer and writes)
    assert [r.status for r in heads] == [403, 403]
    assert output_keys(world) == [world.failure_key("denied/no-extension")]


def test_persistent_throttling_on_head_is_raised_for_lambda_to_retry(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    function: LocalFunction,
    sample_audio: bytes,
) -> None:
    event = uploads.put("slow/no-extension", sample_audio, ContentType="audio/wav")
    aws_fault_proxy.fail("HEAD", "slow/no-extension", 503, "SlowDown")

    result = function.invoke(event)

    assert result.error is not None
    assert result.error["errorType"] == "RetryableError"
    assert result.error["errorMessage"].startswith("s3-throttled")
    # botocore retried SlowDown itself before the ClientError reached the code.
    assert len(aws_fault_proxy.requests_to("HEAD", "slow/no-extension")) == BOTOCORE_ATTEMPTS
    assert world.emulator.requests == []
    assert output_keys(world) == []  # no failure record, no transcript


def test_throttled_transcript_write_is_retried_and_a_later_invocation_succeeds(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    event = uploads.put("slow-write/a.wav", sample_audio)
    transcript = world.transcript_key("slow-write/a.wav")
    aws_fault_proxy.fail("PUT", transcript, 503, "SlowDown")
    function = proxied(start_function, aws_fault_proxy)

    first = function.invoke(event)

    assert first.error is not None
    assert first.error["errorType"] == "RetryableError"
    assert first.error["errorMessage"].startswith("s3-throttled")
    assert len(world.emulator.requests) == 1
    # Tried again within the invocation while time allowed (each try is botocore's own attempts).
    assert [r.status for r in aws_fault_proxy.requests_to("PUT", world.transcript_prefix)] == [503] * (
        MAX_ATTEMPTS * OUTPUT_WRITE_ATTEMPTS
    )
    assert output_keys(world) == []

    aws_fault_proxy.clear()
    second = function.invoke(event)  # Lambda's retry of the same event

    assert second.error is None, second.logs
    # The idempotency record was released, so the retry ran (not "in progress"), and it wrote the
    # answer the first attempt kept: Deepgram was not asked (and paid) again.
    assert len(world.emulator.requests) == 1
    assert output_keys(world) == [transcript]


def test_deepgram_denied_the_presigned_url_is_a_remote_content_failure_in_url_mode(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    event = uploads.put("policy/a.wav", sample_audio)
    aws_fault_proxy.fail("GET", "policy/a.wav", 403, "AccessDenied")
    function = start_function(DELIVERY_MODE="url", extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})

    result = function.invoke(event)

    assert result.error is None, result.logs
    record = failure_record(world, "policy/a.wav")
    assert record["reason"] == "deepgram-remote-content"
    assert record["deepgram_error_code"] == "REMOTE_CONTENT_ERROR"
    message = str(record["message"])
    assert "403" in message
    assert "presigned" in message
    assert "bucket policy" in message
    assert len(world.emulator.requests) == 1  # permanent: not retried
    fetches = aws_fault_proxy.requests_to("GET", "policy/a.wav")
    assert [(r.status, r.fault) for r in fetches] == [(403, "AccessDenied")]
    assert "X-Amz-Signature=" in fetches[0].query  # it was the presigned (SigV4) URL


def test_in_auto_mode_a_denied_url_falls_back_to_the_functions_own_get(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    function: LocalFunction,
    sample_audio: bytes,
) -> None:
    """The default mode: Deepgram's fetch is denied, so the function GETs the object itself; denied
    too (the same policy), the record names S3's refusal of the function's role."""
    event = uploads.put("policy/a.wav", sample_audio)
    aws_fault_proxy.fail("GET", "policy/a.wav", 403, "AccessDenied")

    result = function.invoke(event)

    assert result.error is None, result.logs
    record = failure_record(world, "policy/a.wav")
    assert (record["reason"], record["delivery"]) == ("s3-access-denied", "bytes")
    assert len(world.emulator.requests) == 1  # the bytes were never sent
    fetches = aws_fault_proxy.requests_to("GET", "policy/a.wav")
    assert ["X-Amz-Signature=" in r.query for r in fetches] == [True, False]  # Deepgram's, then ours


def test_the_proxy_forwards_boto3_traffic_and_counts_faults(
    world: LocalWorld, aws_fault_proxy: AwsFaultProxy, sample_audio: bytes
) -> None:
    s3 = world.aws_via(aws_fault_proxy.url).s3()
    bucket, key = world.input_bucket, "proxy/a key ü.wav"

    s3.put_object(Bucket=bucket, Key=key, Body=sample_audio, ContentType="audio/wav")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(sample_audio)
    assert head["ContentType"] == "audio/wav"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == sample_audio
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="proxy/")["Contents"]] == [key]
    # Straight to moto: the proxy really stored it there.
    assert world.aws.s3().get_object(Bucket=bucket, Key=key)["Body"].read() == sample_audio

    rule = aws_fault_proxy.fail("GET", "a key ü", 403, "AccessDenied", times=2)  # matched decoded
    for _ in range(2):
        with pytest.raises(ClientError) as denied:
            s3.get_object(Bucket=bucket, Key=key)
        error = denied.value.response
        assert error["Error"]["Code"] == "AccessDenied"
        assert error["Error"]["Message"] == "Access Denied"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert error["ResponseMetadata"]["RequestId"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == sample_audio
    assert rule.hits == 2
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(sample_audio)  # HEAD not matched

    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket, Prefix="proxy/").get("KeyCount") == 0

    log = [(r.method, r.decoded_path, r.status, r.fault) for r in aws_fault_proxy.requests]
    path = f"/{bucket}/{key}"
    assert log == [
        ("PUT", path, 200, None),
        ("HEAD", path, 200, None),
        ("GET", path, 200, None),
        ("GET", f"/{bucket}", 200, None),
        ("GET", path, 403, "AccessDenied"),
        ("GET", path, 403, "AccessDenied"),
        ("GET", path, 200, None),
        ("HEAD", path, 200, None),
        ("DELETE", path, 204, None),
        ("GET", f"/{bucket}", 200, None),
    ]
