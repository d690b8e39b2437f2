"""An object stored with a customer-provided key (SSE-C) ends as a failure record with a clear
permanent reason, never a misleading one: a presigned URL can't carry the key, so Deepgram can't
fetch it, and the function is given no key. The local S3 refuses such reads as S3 does (a HEAD a
bare 400, a GET ``InvalidRequest``); through the real transcribe handler and the emulator."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32)}


def failure_record(world: LocalWorld, key: str) -> dict[str, Any]:
    body = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.failure_key(key))["Body"]
    record: dict[str, Any] = json.loads(body.read())
    return record


def listen(world: LocalWorld) -> list[int | None]:
    return [r.status for r in world.emulator.requests if r.path == "/v1/listen"]


def test_an_sse_c_upload_notified_by_s3_gets_the_sse_c_reason(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    """The event carries size and ETag, so no HEAD comes first: Deepgram's fetch is refused
    (not billed), and then the function finds out why."""
    event = uploads.put("sse-c/notified.wav", sample_audio, **SSE_C)

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert (outcome["status"], outcome["reason"]) == ("failed", "s3-sse-c-unsupported")
    assert 200 not in listen(world)
    record = failure_record(world, "sse-c/notified.wav")
    assert record["reason"] == "s3-sse-c-unsupported"
    assert "customer-provided key" in record["message"]


def test_an_sse_c_object_named_by_a_direct_invocation_is_refused_before_deepgram(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    uploads.put("sse-c/direct.wav", sample_audio, **SSE_C)

    result = start_function().invoke({"bucket": world.input_bucket, "key": "sse-c/direct.wav"})

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert (outcome["status"], outcome["reason"]) == ("failed", "s3-sse-c-unsupported")
    assert listen(world) == []  # the HEAD found it: no Deepgram request at all
