"""An S3 record named with the configuration's wildcard (``s3:ObjectCreated:*``), as some tools and
tests emit it, is an upload: the real handler transcribes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


@pytest.mark.parametrize("name", ["s3:ObjectCreated:*", "ObjectCreated:*", "s3:ObjectCreated:Put"])
def test_a_wildcard_event_name_is_read_as_an_upload(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes, name: str
) -> None:
    event = uploads.put("wildcard/call.wav", sample_audio)
    event["Records"][0]["eventName"] = name

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload["transcribed"] == 1, result.payload
    assert sum(1 for request in world.emulator.requests if request.status == 200) == 1
    world.aws.s3().head_object(Bucket=world.output_bucket, Key=world.transcript_key("wildcard/call.wav"))


def test_a_restore_that_has_only_begun_is_still_not_an_upload(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("wildcard/archived.wav", sample_audio)
    event["Records"][0]["eventName"] = "s3:ObjectRestore:Post"

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload["transcribed"] == 0, result.payload
    assert world.emulator.requests == []
