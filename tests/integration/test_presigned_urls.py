"""The local S3 checks presigned URLs as S3 does (``localworld.s3_presign``): through the real handler,
a URL that expires before Deepgram fetches it ends as the classified failure the README promises."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

PRESIGN_EXPIRY_S = 60  # the smallest PRESIGN_EXPIRY_SECONDS the function accepts


def test_a_url_that_expires_before_deepgram_fetches_it_is_a_remote_content_failure(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    """Deepgram fetches later than the URL's expiry (S3's clock reads the expiry plus a second when
    the fetch arrives): S3 answers 403 "Request has expired", Deepgram 400 REMOTE_CONTENT_ERROR, and
    in url mode that is a permanent failure record that names the expiry, after one request."""
    event = uploads.put("late/a.wav", sample_audio)
    function = start_function(DELIVERY_MODE="url", PRESIGN_EXPIRY_SECONDS=str(PRESIGN_EXPIRY_S))
    world.moto.presign_check.verifier.clock_offset_s = PRESIGN_EXPIRY_S + 1

    result = function.invoke(event)

    assert result.error is None, result.logs
    body = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.failure_key("late/a.wav"))["Body"]
    record = json.loads(body.read())
    assert record["reason"] == "deepgram-remote-content"
    assert record["deepgram_error_code"] == "REMOTE_CONTENT_ERROR"
    assert "403 Forbidden" in record["message"]
    assert "the URL expired before Deepgram fetched it (raise PRESIGN_EXPIRY_SECONDS)" in record["message"]
    assert len(world.emulator.requests) == 1  # permanent: not retried, not billed again
    assert [(path, code) for _, path, code in world.moto.presign_check.refusals[-1:]] == [
        (f"/{world.input_bucket}/late/a.wav", "AccessDenied")
    ]


def test_in_auto_mode_an_expired_url_falls_back_to_the_bytes(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("late/b.wav", sample_audio)
    function = start_function(DELIVERY_MODE="auto", PRESIGN_EXPIRY_SECONDS=str(PRESIGN_EXPIRY_S))
    world.moto.presign_check.verifier.clock_offset_s = PRESIGN_EXPIRY_S + 1

    result = function.invoke(event)

    assert result.error is None, result.logs
    transcript = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.transcript_key("late/b.wav"))
    assert transcript["Metadata"]["delivery"] == "bytes"
    assert [r.json is not None for r in world.emulator.requests] == [True, False]  # the URL, then the bytes


def test_a_fresh_presigned_url_is_fetched_through_the_check(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("fresh/a.wav", sample_audio)
    refused_before = len(world.moto.presign_check.refusals)

    result = start_function(DELIVERY_MODE="url").invoke(event)

    assert result.error is None, result.logs
    key = world.transcript_key("fresh/a.wav")
    transcript = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)
    assert transcript["Metadata"]["delivery"] == "url"
    assert len(world.moto.presign_check.refusals) == refused_before
