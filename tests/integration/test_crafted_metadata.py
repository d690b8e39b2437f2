"""A value that ends up in S3 object metadata can't make the output write fail after Deepgram
was paid: every value is ASCII (percent-encoded) and the total stays inside S3's 2 KB, which the
local S3 enforces as S3 does (moto alone accepts any size). Through the real transcribe handler,
S3 notifications from real uploads, and the emulator."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

S3_METADATA_LIMIT = 2048


def billed(world: LocalWorld) -> int:
    return sum(1 for r in world.emulator.requests if r.path == "/v1/listen" and r.status == 200)


def metadata_bytes(metadata: dict[str, str]) -> int:
    return sum(len(name.encode()) + len(value.encode()) for name, value in metadata.items())


def test_a_long_non_ascii_key_is_transcribed_with_metadata_inside_s3s_limit(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    key = "interviews/" + "ü" * 300 + ".wav"  # 612 bytes: a valid key, 1,800 characters encoded
    event = uploads.put(key, sample_audio)

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload["objects"][0]["status"] == "transcribed", result.payload
    assert billed(world) == 1
    head = world.aws.s3().head_object(Bucket=world.output_bucket, Key=world.transcript_key(key))
    metadata = head["Metadata"]
    assert metadata_bytes(metadata) <= S3_METADATA_LIMIT
    assert all(value.isascii() for value in metadata.values())
    assert "source-key-sha256" in metadata  # the encoded key gave way to its hash


def test_a_crafted_etag_and_sequencer_in_the_event_cannot_break_the_write(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event: dict[str, Any] = copy.deepcopy(uploads.put("crafted/etag.wav", sample_audio))
    s3_object = event["Records"][0]["s3"]["object"]
    s3_object["eTag"] = "é" * 700  # non-ASCII, and 1,400 bytes: over S3's limit on its own
    s3_object["sequencer"] = "0" * 1500 + "1"

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload["objects"][0]["status"] == "transcribed", result.payload
    assert billed(world) == 1
    head = world.aws.s3().head_object(
        Bucket=world.output_bucket, Key=world.transcript_key("crafted/etag.wav")
    )
    assert metadata_bytes(head["Metadata"]) <= S3_METADATA_LIMIT
    assert all(value.isascii() for value in head["Metadata"].values())
    assert head["Metadata"]["source-version-id"] == s3_object["versionId"]
