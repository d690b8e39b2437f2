"""One ordering decision per object, and no S3 call that can't matter: the transcript is a
conditional write over what was seen before Deepgram was paid (re-decided once when another writer
changed the key meanwhile); a failure record is written only after its marker (a delete marker at
the transcript key), so a success DELETEs a failure record only when one can exist."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import responses
from botocore.exceptions import ClientError

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    etag_of,
    failure_key,
    transcript_body,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import RetryableError

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory

ALL_ON = {"OUTPUT_FORMATS": "json,txt,srt,vtt", "COMPLETION_EVENTS": "true"}
BODY = b"RIFF one version"
REFUSED = {"err_code": "Bad Request", "err_msg": "corrupt or unsupported data"}


def ref(key: str, sequencer: str = "0A") -> S3ObjectRef:
    return S3ObjectRef(INPUT_BUCKET, key, size=len(BODY), etag=etag_of(BODY), sequencer=sequencer)


def s3_calls(aws: Aws) -> Counter[str]:
    calls: Counter[str] = Counter()
    aws.s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    return calls


def test_every_feature_on_an_object_costs_two_heads_and_four_puts(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    transcriber = make_transcriber(**ALL_ON)
    aws.upload("a.wav", BODY)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    calls = s3_calls(aws)

    assert transcriber.process(ref("a.wav"), lambda_context).status == "transcribed"

    # The input's HEAD (options and ordering), the transcript's (already done?), JSON and 3 formats.
    assert calls == Counter({"HeadObject": 2, "PutObject": 4})


def test_a_success_after_a_failure_deletes_the_failure_record_first(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    transcriber = make_transcriber()
    aws.upload("a.wav", BODY)
    deepgram.add(responses.POST, LISTEN_URL, status=400, json=REFUSED)
    assert transcriber.process(ref("a.wav"), lambda_context).status == "failed"
    assert aws.output_keys() == [failure_key("a.wav")]
    aws.upload("a.wav", b"RIFF a new version")
    order: list[str] = []

    def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("Bucket") == OUTPUT_BUCKET and model.name in ("PutObject", "DeleteObject"):
            order.append(f"{model.name} {params.get('Key')}")

    aws.s3.meta.events.register("provide-client-params.s3", seen)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    new = S3ObjectRef(INPUT_BUCKET, "a.wav", size=18, etag=etag_of(b"RIFF a new version"), sequencer="0B")

    assert transcriber.process(new, lambda_context).status == "transcribed"

    assert order == [f"DeleteObject {failure_key('a.wav')}", f"PutObject {transcript_key('a.wav')}"]
    assert aws.output_keys() == [transcript_key("a.wav")]


def test_no_failure_record_is_written_without_its_marker(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transcriber = make_transcriber()
    aws.upload("a.wav", BODY)
    deepgram.add(responses.POST, LISTEN_URL, status=400, json=REFUSED)

    def refused(**_: Any) -> Any:
        error = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
        raise ClientError(error, "DeleteObject")  # type: ignore[arg-type]

    monkeypatch.setattr(transcriber.storage._s3, "delete_object", refused)

    with pytest.raises(RetryableError):
        transcriber.process(ref("a.wav"), lambda_context)
    assert aws.output_keys() == []


def test_a_newer_transcript_written_meanwhile_is_not_overwritten(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """Another invocation writes a newer version's transcript while Deepgram answers ours: S3
    refuses our conditional write (412), one HEAD decides again, and the newer one stays."""
    transcriber = make_transcriber()
    aws.upload("a.wav", BODY)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id="ours"))
    key = transcript_key("a.wav")
    raced: list[str] = []

    def newer_writer(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key and not raced:
            raced.append(key)  # once: the other writer's PUT, then ours goes on
            other = {"source-etag": "f" * 32, "source-sequencer": "0F", "deepgram-request-id": "theirs"}
            aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key, Body=b"{}", Metadata=other)

    aws.s3.meta.events.register("provide-client-params.s3.PutObject", newer_writer)

    outcome = transcriber.process(ref("a.wav", sequencer="0A"), lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    stored = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=key)["Metadata"]
    assert stored["deepgram-request-id"] == "theirs"
