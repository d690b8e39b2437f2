""" "Is this version superseded?" is answered once for one object's path through the Transcriber.

S3 answers it with a HEAD of the source key (preflight's, which also reads the per-upload options,
or the one the ordering makes when preflight made none); later steps use that answer, carried with
the object, instead of asking S3 again. Only a refused conditional write (another writer changed the
transcript's key) or a failure record (S3 can't write one conditionally) asks again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import responses

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    etag_of,
    transcript_body,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory

V1, V2 = b"RIFF version one", b"RIFF version two"
# No HEAD before Deepgram for an event with a media extension, size and ETag: the ordering asks S3.
DECISIVE = {"UPLOAD_OPTIONS": "none"}
# Every feature on: preflight's HEAD reads the options and answers the ordering with them.
ALL_ON = {"OUTPUT_FORMATS": "json,txt,srt,vtt", "COMPLETION_EVENTS": "true"}
SETTINGS = pytest.mark.parametrize("env", [DECISIVE, ALL_ON], ids=["decisive-event", "every-feature-on"])


def ref(body: bytes = V1) -> S3ObjectRef:
    return S3ObjectRef(INPUT_BUCKET, "k.wav", size=len(body), etag=etag_of(body), sequencer="0A")


def source_heads(aws: Aws) -> list[str]:
    """The HEADs of the source key: each one is S3 asked which version of the key is current."""
    heads: list[str] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") == INPUT_BUCKET:
            heads.append(params["Key"])

    aws.s3.meta.events.register("provide-client-params.s3.HeadObject", seen)
    return heads


def answer(deepgram: responses.RequestsMock, request_id: str) -> None:
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id=request_id))


@SETTINGS
def test_a_new_object_asks_once(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    env: dict[str, str],
) -> None:
    aws.upload("k.wav", V1)
    answer(deepgram, "req-1")
    heads = source_heads(aws)

    assert make_transcriber(**env).process(ref(), lambda_context).status == "transcribed"

    assert heads == ["k.wav"]


@SETTINGS
def test_a_stale_record_asks_once(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    env: dict[str, str],
) -> None:
    """The record names a transcript that is gone: the record is dropped and the object done again,
    with the answer the ordering already has (before: asked again when dropping and when writing)."""
    transcriber = make_transcriber(**env)
    aws.upload("k.wav", V1)
    answer(deepgram, "req-1")
    answer(deepgram, "req-2")
    assert transcriber.process(ref(), lambda_context).status == "transcribed"
    aws.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("k.wav"))
    heads = source_heads(aws)

    again = transcriber.process(ref(), lambda_context)

    assert (again.status, again.request_id) == ("transcribed", "req-2")
    assert heads == ["k.wav"]


@SETTINGS
def test_a_superseded_record_whose_bytes_are_the_latest_again_asks_once(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    env: dict[str, str],
) -> None:
    """The record says superseded, but V1's bytes were uploaded again: one answer serves the
    replay's check, the dropping of the record and the write (before: three HEADs)."""
    aws.upload("k.wav", V1)
    aws.upload("k.wav", V2)
    answer(deepgram, "req-1")
    assert make_transcriber(**DECISIVE).process(ref(), lambda_context).reason == "superseded"
    aws.upload("k.wav", V1)
    answer(deepgram, "req-2")
    heads = source_heads(aws)

    outcome = make_transcriber(**env).process(ref(), lambda_context)

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert heads == ["k.wav"]
