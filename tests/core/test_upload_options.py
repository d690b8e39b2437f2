"""Per-upload options and the cost estimate in the workflow: the metadata HEAD, the query Deepgram
receives, refusals as failure records, the idempotency identity, and what the transcript carries."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    UPLOAD_ETAG,
    failure_key,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef
from transcriber.observability import metrics

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory
    from transcriber.pipeline.workflow import Transcriber


def obj(key: str = "calls/es.wav", options: tuple[tuple[str, str], ...] | None = None) -> S3ObjectRef:
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=16, etag=UPLOAD_ETAG, options=options)


def answer(deepgram: responses.RequestsMock, duration: float = 120.0, channels: int = 1) -> None:
    body = {
        "metadata": {"request_id": "req-1", "duration": duration, "channels": channels},
        "results": {"channels": [{"alternatives": [{"transcript": "hola", "confidence": 0.9, "words": []}]}]},
    }
    deepgram.add(responses.POST, LISTEN_URL, json=body)


def sent_query(deepgram: responses.RequestsMock, index: int = 0) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(str(deepgram.calls[index].request.url)).query)


def heads(aws: Aws, deepgram: responses.RequestsMock) -> list[int]:
    """For each HEAD of an input object, how many Deepgram requests were made before it: one HEAD,
    before the request, reads both the metadata and the ordering facts."""
    calls: list[int] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        if params["Bucket"] == INPUT_BUCKET:
            calls.append(len(deepgram.calls))

    aws.s3.meta.events.register("provide-client-params.s3.HeadObject", seen)
    return calls


def test_metadata_options_reach_deepgram_and_the_transcript(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload(
        "calls/es.wav",
        Metadata={"dg-language": "es", "dg-keyterm": "Acme Widget,Zorblax", "dg-diarize": "true"},
    )
    seen = heads(aws, deepgram)
    answer(deepgram, duration=120.0)
    metrics.clear_metrics()

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert seen == [0]  # the one HEAD that reads the metadata and the ordering facts
    query = sent_query(deepgram)
    assert ("language", "es") in query
    assert ("diarize", "true") in query
    assert [v for k, v in query if k == "keyterm"] == ["Acme Widget", "Zorblax"]
    assert ("model", "nova-3") in query  # the stack's options still apply
    assert outcome.options is not None
    assert outcome.options["language"] == "es"
    assert outcome.options["keyterm"] == "Acme Widget,Zorblax"
    # 2 minutes at nova-3 + diarization + key terms
    assert outcome.estimated_cost_usd == pytest.approx(2 * (0.0043 + 0.002 + 0.0013))
    head = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("calls/es.wav"))
    assert "language=es" in head["Metadata"]["deepgram-options"]
    assert head["Metadata"]["audio-seconds"] == "120.000"
    assert float(head["Metadata"]["estimated-cost-usd"]) == pytest.approx(outcome.estimated_cost_usd)
    assert metrics.metric_set["EstimatedCostUSD"]["Value"] == [outcome.estimated_cost_usd]


def test_a_refused_option_is_a_failure_record_naming_it_and_no_request(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("calls/es.wav", Metadata={"dg-language": "es", "dg-callback": "https://evil.example/x"})

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "option-refused")
    assert not deepgram.calls
    record = aws.output(failure_key("calls/es.wav"))
    assert record is not None
    assert record["reason"] == "option-refused"
    assert record["option"] == "callback"
    assert "'callback'" in record["message"]
    assert record["upload_options"] == {"callback": "https://evil.example/x", "language": "es"}


def test_event_options_are_used_without_reading_the_metadata(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("calls/es.wav", Metadata={"dg-language": "de"})
    seen = heads(aws, deepgram)
    answer(deepgram)

    outcome = transcriber.process(obj(options=(("language", "es"),)), lambda_context)

    assert outcome.status == "transcribed"
    assert seen == [1]  # none before Deepgram: only the ordering rule's, after it
    assert ("language", "es") in sent_query(deepgram)


def test_without_an_allow_list_no_head_is_made_and_event_options_are_refused(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    transcriber = make_transcriber(UPLOAD_OPTIONS="none")
    aws.upload("calls/es.wav", Metadata={"dg-language": "es"})
    seen = heads(aws, deepgram)
    answer(deepgram)

    assert transcriber.process(obj(), lambda_context).status == "transcribed"
    assert seen == [1]  # none before Deepgram: only the ordering rule's, after it
    assert ("language", "en") in sent_query(deepgram)
    refused = transcriber.process(obj("calls/other.wav", options=(("language", "es"),)), lambda_context)
    assert (refused.status, refused.reason) == ("failed", "option-refused")


def test_the_options_are_part_of_the_idempotency_identity(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("calls/es.wav")
    answer(deepgram)
    answer(deepgram)

    first = transcriber.process(obj(options=(("language", "es"),)), lambda_context)
    again = transcriber.process(obj(options=(("language", "es"),)), lambda_context)
    other = transcriber.process(obj(options=(("language", "de"),)), lambda_context)
    plain = transcriber.process(obj(options=()), lambda_context)

    assert (first.replayed, again.replayed, other.replayed, plain.replayed) == (False, True, False, False)
    assert again.options == first.options
    assert len(deepgram.calls) == 3


def test_multichannel_is_estimated_per_channel(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("calls/stereo.wav", Metadata={"dg-multichannel": "true"})
    answer(deepgram, duration=60.0, channels=2)

    outcome = transcriber.process(obj("calls/stereo.wav"), lambda_context)

    assert ("multichannel", "true") in sent_query(deepgram)
    assert outcome.estimated_cost_usd == pytest.approx(2 * 0.0043)


def test_failures_are_counted_by_reason(
    aws: Aws,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(metrics.provider, "namespace", "DeepgramTranscriber")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "transcriber")  # as the template sets it
    aws.upload("calls/es.wav", Metadata={"dg-summarize": "v2"})
    capsys.readouterr()

    transcriber.process(obj(), lambda_context)

    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [blob] = [b for b in blobs if "TranscriptionsFailedByReason" in b]
    assert (blob["reason"], blob["service"]) == ("option-refused", "transcriber")
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "DeepgramTranscriber"
    assert sorted(directive["Dimensions"][0]) == ["reason", "service"]


def test_a_model_outside_the_deployments_family_is_refused_before_any_request(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    """Whisper is another limit (5 concurrent) and another price: not an uploader's choice unless
    the operator lists its family (``UPLOAD_MODELS``); nova-3's own variants stay allowed."""
    aws.upload("calls/es.wav", Metadata={"dg-model": "whisper-large"})

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "option-refused")
    assert not deepgram.calls
    record = aws.output(failure_key("calls/es.wav"))
    assert record is not None
    assert record["option"] == "model"
    assert "'whisper-large' is not in this stack's model families (nova-3)" in record["message"]

    aws.upload("calls/med.wav", Metadata={"dg-model": "nova-3-medical"})
    answer(deepgram)
    assert transcriber.process(obj("calls/med.wav"), lambda_context).status == "transcribed"
    assert ("model", "nova-3-medical") in sent_query(deepgram)


def test_an_operator_may_allow_whisper_per_upload(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    transcriber = make_transcriber(UPLOAD_MODELS="nova-3,whisper")
    aws.upload("calls/es.wav", Metadata={"dg-model": "whisper-large"})
    answer(deepgram)

    assert transcriber.process(obj(), lambda_context).status == "transcribed"
    assert ("model", "whisper-large") in sent_query(deepgram)
