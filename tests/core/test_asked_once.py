"""The question "is this version superseded?" is answered once for one object's path through the
Transcriber.

S3 answers it with a HEAD of the source key (preflight's, which also reads the per-upload options,
or the one ``Storage.decided`` makes when preflight made none); later steps use that answer, carried
with the object (``S3ObjectRef.order``), instead of asking S3 again. Only a refused conditional write
(another writer changed the transcript's key) or a failure record (S3 can't write one conditionally)
asks again (``Storage.redecided``; tests/core/test_one_decision.py, test_ordering.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    from transcriber.pipeline.outcome import Outcome

V1, V2 = b"RIFF version one", b"RIFF version two"
# No HEAD before Deepgram for an event with a media extension, size and ETag: the ordering asks S3.
DECISIVE = {"UPLOAD_OPTIONS": "none"}
# Every feature on: preflight's HEAD reads the options and answers the ordering with them.
ALL_ON = {"OUTPUT_FORMATS": "json,txt,srt,vtt", "COMPLETION_EVENTS": "true"}


@dataclass
class Case:
    aws: Aws
    deepgram: responses.RequestsMock
    make: TranscriberFactory
    context: FakeLambdaContext
    env: dict[str, str]
    source_heads: list[str]  # one per question S3 answered: which version of the key is current

    def answer(self, request_id: str) -> None:
        self.deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id=request_id))

    def process(self, env: dict[str, str] | None = None) -> Outcome:
        """V1's event for ``k.wav``, through a Transcriber with this case's settings (or ``env``)."""
        obj = S3ObjectRef(INPUT_BUCKET, "k.wav", size=len(V1), etag=etag_of(V1), sequencer="0A")
        return self.make(**(env or self.env)).process(obj, self.context)


@pytest.fixture(params=[DECISIVE, ALL_ON], ids=["decisive-event", "every-feature-on"])
def case(
    request: pytest.FixtureRequest,
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> Case:
    heads: list[str] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") == INPUT_BUCKET:
            heads.append(params["Key"])

    aws.s3.meta.events.register("provide-client-params.s3.HeadObject", seen)
    return Case(aws, deepgram, make_transcriber, lambda_context, request.param, heads)


def test_a_new_object_asks_once(case: Case) -> None:
    case.aws.upload("k.wav", V1)
    case.answer("req-1")

    assert case.process().status == "transcribed"

    assert case.source_heads == ["k.wav"]


def test_a_stale_record_asks_once(case: Case) -> None:
    """The record names a transcript that is gone: the record is dropped and the object done again,
    with the answer the ordering already has (before: asked again when dropping and when writing)."""
    case.aws.upload("k.wav", V1)
    case.answer("req-1")
    case.answer("req-2")
    assert case.process().status == "transcribed"
    case.aws.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("k.wav"))
    case.source_heads.clear()

    again = case.process()

    assert (again.status, again.request_id) == ("transcribed", "req-2")
    assert case.source_heads == ["k.wav"]


def test_a_superseded_record_whose_bytes_are_the_latest_again_asks_once(case: Case) -> None:
    """The record says superseded, but V1's bytes were uploaded again: one answer serves the
    replay's check, the dropping of the record and the write (before: three HEADs)."""
    case.aws.upload("k.wav", V1)
    case.aws.upload("k.wav", V2)
    case.answer("req-1")
    assert case.process(DECISIVE).reason == "superseded"  # paid, then not written: the record says so
    case.aws.upload("k.wav", V1)
    case.answer("req-2")
    case.source_heads.clear()

    outcome = case.process()

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert case.source_heads == ["k.wav"]


def test_a_refused_write_decides_again_from_the_transcript_another_writer_put_there(case: Case) -> None:
    """S3 refuses the conditional PUT (a newer version's transcript was written meanwhile): the one
    legitimate re-decision, made from that transcript's sequencer with no new HEAD of the source."""
    case.aws.upload("k.wav", V1)
    case.answer("ours")
    key = transcript_key("k.wav")
    raced: list[str] = []

    def newer_writer(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key and not raced:
            raced.append(key)  # once: the other writer's PUT, then ours goes on
            other = {"source-etag": "f" * 32, "source-sequencer": "0F", "deepgram-request-id": "theirs"}
            case.aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key, Body=b"{}", Metadata=other)

    case.aws.s3.meta.events.register("provide-client-params.s3.PutObject", newer_writer)

    outcome = case.process()

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert case.source_heads == ["k.wav"]


def test_a_newer_transcript_written_after_the_decision_is_never_replaced(case: Case) -> None:
    """V2 is uploaded and its transcript written while V1's request runs, with no sequencer to
    compare (direct and Batch Operations events carry none): V1's write sees another version's
    transcript at the key and decides again (S3: V2 is current) instead of writing over it."""
    case.aws.upload("k.wav", V1)
    key = transcript_key("k.wav")

    def newer_version_meanwhile(_: Any) -> tuple[int, dict[str, str], str]:
        case.aws.upload("k.wav", V2)
        theirs = {"source-etag": etag_of(V2), "deepgram-request-id": "theirs"}
        case.aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key, Body=b"{}", Metadata=theirs)
        return 200, {}, json.dumps(transcript_body(request_id="ours"))

    case.deepgram.add_callback(responses.POST, LISTEN_URL, callback=newer_version_meanwhile)
    obj = S3ObjectRef(INPUT_BUCKET, "k.wav", size=len(V1), etag=etag_of(V1))

    outcome = case.make(**case.env).process(obj, case.context)

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert (
        case.aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=key)["Metadata"]["deepgram-request-id"] == "theirs"
    )


def test_a_failure_record_asks_again(case: Case) -> None:
    """S3 can't write a failure record conditionally: before one is written, S3 is asked again
    (the Deepgram call took time), even when preflight's HEAD already answered."""
    case.aws.upload("k.wav", V1)
    refused = {"err_code": "Bad Request", "err_msg": "corrupt or unsupported data"}
    case.deepgram.add(responses.POST, LISTEN_URL, status=400, json=refused)

    assert case.process().status == "failed"

    assert case.source_heads == ["k.wav"] * (1 if case.env is DECISIVE else 2)
