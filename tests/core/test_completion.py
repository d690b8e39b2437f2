"""Derived formats and completion events in-process: what is written, what is published, and what
happens when a write or a publish fails (moto's S3, SQS and EventBridge; Deepgram is ``responses``)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import responses

from samstack import resolve_stack
from tests.core.conftest import (
    ENV,
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    REGION,
    SETTINGS,
    UPLOAD_ETAG,
    etag_of,
    transcript_body,
)
from transcriber.config import Settings
from transcriber.domain.cost import DEFAULT_PRICE_PER_MINUTE
from transcriber.domain.events import S3ObjectRef
from transcriber.domain.work import WorkResult
from transcriber.errors import BlockedError, PermanentError, RetryableError
from transcriber.observability import metrics
from transcriber.services.clients import AWS_CLIENT_CONFIG
from transcriber.services.completion import (
    EVENT_SOURCE,
    TRANSCRIPT_CREATED,
    TRANSCRIPTION_FAILED,
    Completion,
    EventPublisher,
)
from transcriber.services.storage import Storage, output_key

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory
    from transcriber.pipeline.workflow import Transcriber

ALL_ON = {"OUTPUT_FORMATS": "json,txt,srt,vtt", "COMPLETION_EVENTS": "true"}
KEY = "talks/a.wav"
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def obj(key: str = KEY, etag: str = UPLOAD_ETAG) -> S3ObjectRef:
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=16, etag=etag)


def key_of(extension: str, source_key: str = KEY) -> str:
    return output_key(SETTINGS.transcript_prefix, source_key, f".{extension}")


def answer(deepgram: responses.RequestsMock, body: dict[str, Any] | None = None) -> None:
    deepgram.add(responses.POST, LISTEN_URL, json=body or transcript_body())


class Bus:
    """moto's default event bus with a rule sending every completion event to a queue."""

    def __init__(self, aws: Aws) -> None:
        self.sqs = aws.admin.sqs
        self.client: EventBridgeClient = boto3.client("events", region_name=REGION, config=AWS_CLIENT_CONFIG)
        self.queue_url = aws.admin.sqs.create_queue(QueueName="core-completion-events")["QueueUrl"]
        queue_arn = aws.admin.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.client.put_rule(Name="completion", EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
        self.client.put_targets(Rule="completion", Targets=[{"Id": "queue", "Arn": queue_arn}])

    def events(self) -> list[dict[str, Any]]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def bus(aws: Aws) -> Bus:
    return Bus(aws)


FailCalls = Callable[..., None]


@pytest.fixture
def fail_calls(aws: Aws) -> Iterator[FailCalls]:
    """``fail_calls(client, "PutObject", matches, status, code, times=None)``: that call answers an
    AWS error (a real ``ClientError`` from botocore) when ``matches(params)``, ``times`` times (None:
    until the test ends)."""
    registered: list[tuple[Any, str, Any]] = []

    def fail(
        client: Any,
        operation: str,
        matches: Callable[[dict[str, Any]], bool],
        status: int,
        code: str,
        times: int | None = None,
    ) -> None:
        left = [times]

        def answer(params: dict[str, Any], **_: Any) -> Any:
            if not matches(params) or left[0] == 0:
                return None
            if left[0] is not None:
                left[0] -= 1
            parsed = {
                "Error": {"Code": code, "Message": code},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }
            return SimpleNamespace(status_code=status, headers={}, content=b""), parsed

        event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"
        client.meta.events.register(event, answer)
        registered.append((client, event, answer))

    yield fail
    for client, event, handler in registered:
        client.meta.events.unregister(event, handler)


def make(make_transcriber: TranscriberFactory, **env: str) -> Transcriber:
    return make_transcriber(**{**ALL_ON, **env})


def test_the_derived_formats_are_written_at_once_not_one_after_another(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """The three format PUTs are independent: each waits here until all three are in flight, which
    only writes made at once can be (one after another, the first would wait alone and fail)."""
    aws.upload(KEY)
    answer(deepgram, transcript_body("the quick brown fox jumps over the lazy dog"))
    all_three = threading.Barrier(3, timeout=10)

    def in_flight_together(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith((".txt", ".srt", ".vtt")):
            all_three.wait()

    aws.s3.meta.events.register("provide-client-params.s3.PutObject", in_flight_together)

    outcome = make(make_transcriber).process(obj(), lambda_context)

    assert sorted(outcome.outputs or {}) == ["json", "srt", "txt", "vtt"]


def test_the_event_bus_client_is_made_while_the_formats_are_written(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cold container's first event needs an EventBridge client: it is built while the three PUTs
    wait on S3, not after them (each PUT here waits for it; made after them, they would time out)."""
    aws.upload(KEY)
    answer(deepgram, transcript_body("the quick brown fox jumps over the lazy dog"))
    client_made = threading.Event()
    made_in_time: list[bool] = []
    real_events = aws.events

    def events() -> Any:
        client = real_events()
        client_made.set()
        return client

    def wait_for_the_client(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith((".txt", ".srt", ".vtt")):
            made_in_time.append(client_made.wait(timeout=5))

    monkeypatch.setattr(aws, "events", events)
    aws.s3.meta.events.register("provide-client-params.s3.PutObject", wait_for_the_client)

    outcome = make(make_transcriber).process(obj(), lambda_context)

    assert sorted(outcome.outputs or {}) == ["json", "srt", "txt", "vtt"]
    assert made_in_time == [True, True, True]


def test_every_format_lands_beside_the_json_and_one_created_event_names_them(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram, transcript_body("the quick brown fox jumps over the lazy dog", request_id="req-7"))

    outcome = make(make_transcriber, CAPTION_WORDS_PER_CUE="4").process(obj(), lambda_context)

    keys = {ext: key_of(ext) for ext in ("json", "txt", "srt", "vtt")}
    assert outcome.outputs == keys
    assert aws.output_keys() == sorted(keys.values())
    for ext, content_type in (("txt", "text/plain"), ("srt", "application/x-subrip"), ("vtt", "text/vtt")):
        head = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=keys[ext])
        assert head["ContentType"] == f"{content_type}; charset=utf-8"
        assert head["Metadata"]["deepgram-request-id"] == "req-7"
        assert head["Metadata"]["source-key"] == KEY
    srt = aws.s3.get_object(Bucket=OUTPUT_BUCKET, Key=keys["srt"])["Body"].read().decode()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,900\nthe quick brown fox\n\n2\n")
    assert srt.count(" --> ") == 3

    [event] = bus.events()
    assert (event["source"], event["detail-type"]) == (EVENT_SOURCE, TRANSCRIPT_CREATED)
    detail = event["detail"]
    assert detail["source"] == {"bucket": INPUT_BUCKET, "key": KEY, "version_id": None, "etag": UPLOAD_ETAG}
    assert detail["outputs"] == {"bucket": OUTPUT_BUCKET, "keys": keys}
    assert detail["audio"] == {
        "duration_s": 2.5,
        "channels": 1,
        "detected_language": None,
        "detected_languages": [],
        "words": 9,
    }
    assert detail["deepgram"]["request_id"] == "req-7"
    assert detail["deepgram"]["model"] == "nova-3"
    assert detail["deepgram"]["delivery"] == "url"
    # The cost estimate (transcriber.domain.cost, on by default): 2.5 s of audio at the base price per minute.
    assert (
        detail["estimated_cost_usd"]
        == outcome.estimated_cost_usd
        == round(2.5 / 60 * DEFAULT_PRICE_PER_MINUTE, 6)
    )
    assert detail["replayed"] is False
    assert detail["environment"] == "test"


def test_a_second_delivery_writes_the_formats_again_and_says_it_replayed(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    transcriber = make(make_transcriber)
    transcriber.process(obj(), lambda_context)
    aws.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=key_of("vtt"))

    again = transcriber.process(obj(), lambda_context)

    assert again.replayed
    assert len(deepgram.calls) == 1
    assert key_of("vtt") in aws.output_keys()
    assert [e["detail"]["replayed"] for e in bus.events()] == [False, True]


def test_a_failed_format_write_is_completed_by_the_retry_without_a_second_request(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
    fail_calls: FailCalls,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    transcriber = make(make_transcriber)
    fail_calls(aws.s3, "PutObject", lambda p: p["url_path"].endswith(".srt"), 503, "SlowDown", times=1)

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "s3-throttled"
    assert key_of("json") in aws.output_keys()
    assert key_of("srt") not in aws.output_keys()
    assert bus.events() == []  # the event only once every output is there

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert outcome.replayed
    assert len(deepgram.calls) == 1
    assert key_of("srt") in aws.output_keys()
    [event] = bus.events()
    assert event["detail"]["replayed"] is True


def test_an_unwritable_output_prefix_blocks_the_work(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    fail_calls: FailCalls,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    fail_calls(aws.s3, "PutObject", lambda p: p["url_path"].endswith(".txt"), 403, "AccessDenied")

    with pytest.raises(BlockedError) as raised:
        make(make_transcriber).process(obj(), lambda_context)

    assert raised.value.reason == "output-bucket-unwritable"


def test_a_failed_publish_is_retried_and_the_replay_publishes_without_a_second_request(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    transcriber = make(make_transcriber)
    events = transcriber.completion.publisher.client
    failures = {"left": 1}

    def throttled(params: dict[str, Any], **_: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            entries = [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}]
            parsed = {"FailedEntryCount": 1, "Entries": entries, "ResponseMetadata": {"HTTPStatusCode": 200}}
            return SimpleNamespace(status_code=200, headers={}, content=b""), parsed
        return None

    events.meta.events.register("before-call.eventbridge.PutEvents", throttled)

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "event-publish-failed"
    assert "ThrottlingException" in raised.value.details.message
    assert aws.output_keys() == sorted(key_of(e) for e in ("json", "srt", "txt", "vtt"))  # nothing lost

    again = transcriber.process(obj(), lambda_context)

    assert again.replayed
    assert len(deepgram.calls) == 1
    [event] = bus.events()
    assert event["detail"]["replayed"] is True


@pytest.mark.parametrize(
    ("status", "code", "error_type", "reason"),
    [
        (400, "ResourceNotFoundException", BlockedError, "event-bus-unusable"),
        (400, "AccessDeniedException", BlockedError, "event-bus-unusable"),
        (500, "InternalException", RetryableError, "event-publish-failed"),
    ],
)
def test_publish_errors_are_classified(
    aws: Aws, fail_calls: FailCalls, status: int, code: str, error_type: type[Exception], reason: str
) -> None:
    client = boto3.client("events", region_name=REGION, config=AWS_CLIENT_CONFIG)
    fail_calls(client, "PutEvents", lambda p: True, status, code)
    publisher = EventPublisher(lambda: client, "transcripts")

    with pytest.raises(error_type) as raised:
        publisher.publish(TRANSCRIPT_CREATED, {})

    assert getattr(raised.value, "reason", None) == reason
    assert "transcripts" in str(raised.value)


def test_an_unreachable_bus_is_retryable(aws: Aws) -> None:
    client = boto3.client(
        "events", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=AWS_CLIENT_CONFIG
    )

    with pytest.raises(RetryableError) as raised:
        EventPublisher(lambda: client, "default").publish(TRANSCRIPT_CREATED, {})

    assert raised.value.reason == "event-publish-failed"


def test_a_permanent_failure_publishes_transcription_failed(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    deepgram.add(
        responses.POST,
        LISTEN_URL,
        status=400,
        json={"err_code": "Bad Request", "err_msg": "corrupt or unsupported data", "request_id": "req-bad"},
    )

    outcome = make(make_transcriber).process(obj(), lambda_context)

    assert outcome.status == "failed"
    [event] = bus.events()
    assert event["detail-type"] == TRANSCRIPTION_FAILED
    detail = event["detail"]
    assert detail["error"]["reason"] == "deepgram-unsupported-audio"
    assert detail["error"]["deepgram_request_id"] == "req-bad"
    assert detail["error"]["http_status"] == 400
    assert detail["outputs"]["keys"] == {"failure": outcome.output_key}


def test_a_failure_event_that_cannot_be_published_does_not_change_the_outcome(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    fail_calls: FailCalls,
) -> None:
    aws.upload(KEY)
    deepgram.add(
        responses.POST, LISTEN_URL, status=400, json={"err_code": "Bad Request", "err_msg": "corrupt"}
    )
    transcriber = make(make_transcriber)
    fail_calls(transcriber.completion.publisher.client, "PutEvents", lambda p: True, 500, "InternalException")

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "failed"
    assert aws.output(outcome.output_key or "") is not None


def test_nothing_is_derived_or_published_when_both_are_off(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    transcriber = make(make_transcriber, OUTPUT_FORMATS="json", COMPLETION_EVENTS="false")

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.outputs == {"json": key_of("json")}
    assert aws.output_keys() == [key_of("json")]
    assert bus.events() == []


def test_events_alone_still_read_the_stored_json_for_their_facts(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram)

    make(make_transcriber, OUTPUT_FORMATS="json").process(obj(), lambda_context)

    assert aws.output_keys() == [key_of("json")]
    [event] = bus.events()
    assert event["detail"]["audio"]["words"] == 4


def test_an_empty_transcript_writes_empty_text_and_removes_stale_captions(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload(KEY)
    for ext in ("srt", "vtt"):  # left by an earlier version of the object that had speech
        aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key_of(ext), Body=b"1\n")
    answer(deepgram, transcript_body(""))

    outcome = make(make_transcriber).process(obj(), lambda_context)

    assert outcome.outputs == {"json": key_of("json"), "txt": key_of("txt")}
    assert aws.output_keys() == [key_of("json"), key_of("txt")]
    assert aws.s3.get_object(Bucket=OUTPUT_BUCKET, Key=key_of("txt"))["Body"].read() == b""


def test_the_event_carries_the_options_and_cost_when_the_result_has_them(aws: Aws, bus: Bus) -> None:
    settings = Settings.from_env({**ENV, **ALL_ON, "OUTPUT_FORMATS": "json"})
    storage = Storage(aws.s3, OUTPUT_BUCKET, settings.transcript_prefix, settings.failure_prefix)
    aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key_of("json"), Body=json.dumps(transcript_body()).encode())
    completion = Completion(settings, storage, lambda: bus.client)
    result = WorkResult(
        key=key_of("json"),
        request_id="req-1",
        options={"model": "nova-2", "language": "es"},
        estimated_cost_usd=0.0043,
        deepgram_latency_s=1.25,
        transcribed_at="2026-11-26T00:00:01.000Z",
    )

    completion.finish(obj(), result, "2026-11-26T00:00:00.000Z")

    [event] = bus.events()
    detail = event["detail"]
    assert detail["estimated_cost_usd"] == 0.0043
    assert detail["deepgram"]["options"] == {"model": "nova-2", "language": "es"}
    assert detail["deepgram"]["model"] == "nova-2"
    assert detail["timings"]["deepgram_latency_s"] == 1.25
    assert detail["timings"]["started_at"] == "2026-11-26T00:00:00.000Z"


def test_a_stored_transcript_that_is_not_json_is_a_permanent_failure(aws: Aws, bus: Bus) -> None:
    settings = Settings.from_env({**ENV, **ALL_ON})
    storage = Storage(aws.s3, OUTPUT_BUCKET, settings.transcript_prefix, settings.failure_prefix)
    aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key_of("json"), Body=b"<html>")

    with pytest.raises(PermanentError) as raised:
        Completion(settings, storage, lambda: bus.client).finish(obj(), WorkResult(key=key_of("json")), "t")

    assert raised.value.reason == "transcript-unreadable"


def test_reading_a_missing_stored_transcript_is_classified(aws: Aws) -> None:
    storage = Storage(aws.s3, OUTPUT_BUCKET, "transcripts/", "failures/")

    with pytest.raises(PermanentError) as raised:
        storage.read_output("transcripts/gone.json", io.BytesIO())

    assert raised.value.reason == "s3-object-missing"


SAMPLES = Path(__file__).resolve().parents[2] / "events" / "completion"


def shape(value: Any) -> Any:
    """The keys of nested objects (what a consumer relies on), not the values; ``options`` holds
    whatever Deepgram options were in force, so only its presence counts."""
    if isinstance(value, dict):
        return {key: None if key == "options" else shape(item) for key, item in value.items()}
    return None


def test_the_event_samples_have_the_published_shape_and_match_the_sample_rule(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    created = json.loads((SAMPLES / "transcript-created.json").read_text(encoding="utf-8"))
    failed = json.loads((SAMPLES / "transcription-failed.json").read_text(encoding="utf-8"))
    # What the code publishes: a success whose result carries options and a cost, then a failure.
    settings = Settings.from_env({**ENV, **ALL_ON})
    storage = Storage(aws.s3, OUTPUT_BUCKET, settings.transcript_prefix, settings.failure_prefix)
    aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key_of("json"), Body=json.dumps(transcript_body()).encode())
    result = WorkResult(key=key_of("json"), options={"model": "nova-3"}, estimated_cost_usd=0.01)
    Completion(settings, storage, lambda: bus.client).finish(obj(), result, "2026-11-26T00:00:00.000Z")
    aws.upload(KEY)
    deepgram.add(
        responses.POST, LISTEN_URL, status=400, json={"err_code": "Bad Request", "err_msg": "corrupt"}
    )
    make(make_transcriber).process(obj(), lambda_context)
    published = {event["detail-type"]: event for event in bus.events()}

    for sample, event in (
        (created, published[TRANSCRIPT_CREATED]),
        (failed, published[TRANSCRIPTION_FAILED]),
    ):
        assert shape(sample["detail"]) == shape(event["detail"])
        # EventBridge's envelope (moto's leaves out "account", which AWS sends)
        assert set(event) - {"detail"} <= set(sample) - {"detail"}
        assert (sample["source"], sample["detail-type"]) == (event["source"], event["detail-type"])
    # The template's sample rule receives both samples, and nothing of another environment.
    stack = resolve_stack(
        TEMPLATE, {"DeepgramSecretId": "deepgram/local/api-key", "EnvironmentName": "local"}
    )
    pattern = stack.resource("CompletionEventsSampleRule").properties["EventPattern"]
    bus.client.put_rule(Name="completion", EventPattern=json.dumps(pattern))
    other_environment = {**created, "detail": {**created["detail"], "environment": "prod"}}
    entries = [
        {"Source": e["source"], "DetailType": e["detail-type"], "Detail": json.dumps(e["detail"])}
        for e in (created, failed, other_environment)
    ]
    assert bus.client.put_events(Entries=entries)["FailedEntryCount"] == 0  # type: ignore[arg-type]
    received = bus.events()
    assert sorted(e["detail-type"] for e in received) == [TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED]
    assert {e["detail"]["environment"] for e in received} == {"local"}


def test_formats_without_events_publish_nothing(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    deepgram.add(
        responses.POST, LISTEN_URL, status=400, json={"err_code": "Bad Request", "err_msg": "corrupt"}
    )
    transcriber = make(make_transcriber, COMPLETION_EVENTS="false")

    outcome = transcriber.process(obj(), lambda_context)
    # Other bytes uploaded over it: the latest version (its own ETag), whose transcription fails.
    newer = b"RIFF....WAVEfmt2"
    aws.upload(KEY, newer)
    failed = transcriber.process(obj(key=KEY, etag=etag_of(newer)), lambda_context)

    assert set(outcome.outputs or {}) == {"json", "txt", "srt", "vtt"}
    assert failed.status == "failed"
    assert bus.events() == []


def test_a_stale_caption_that_cannot_be_deleted_blocks_the_work(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    fail_calls: FailCalls,
) -> None:
    aws.upload(KEY)
    answer(deepgram, transcript_body(""))
    fail_calls(aws.s3, "DeleteObject", lambda p: p["url_path"].endswith(".srt"), 403, "AccessDenied")

    with pytest.raises(BlockedError) as raised:
        make(make_transcriber).process(obj(), lambda_context)

    assert raised.value.reason == "output-bucket-unwritable"
    assert "deleting" in raised.value.details.message


def test_the_latest_versions_failure_removes_an_older_versions_formats_too(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    transcriber = make(make_transcriber, COMPLETION_EVENTS="false")
    assert set(transcriber.process(obj(), lambda_context).outputs or {}) == {"json", "txt", "srt", "vtt"}
    newer = b"RIFF....WAVEfmt2"
    aws.upload(KEY, newer)
    deepgram.add(
        responses.POST, LISTEN_URL, status=400, json={"err_code": "Bad Request", "err_msg": "corrupt"}
    )

    failed = transcriber.process(obj(etag=etag_of(newer)), lambda_context)

    # The older version's text and captions no more stand beside the newer version's failure
    # than its JSON does.
    assert failed.status == "failed"
    assert aws.output_keys() == [failed.output_key]


def test_formats_not_made_are_named_in_the_event_and_a_repaired_answer_is_counted(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A malformed answer: no word is valid (one has no text, one a null start), so there are no
    captions; the event says which formats were not made and why, and the repair is counted."""
    body = transcript_body("hello")
    body["results"]["channels"][0]["alternatives"][0]["words"] = [
        {"word": "   ", "start": 0.0, "end": 0.4},
        {"word": 7, "start": None, "end": 0.8},
    ]
    aws.upload(KEY)
    answer(deepgram, body)
    metrics.clear_metrics()

    outcome = make(make_transcriber).process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    (event,) = bus.events()
    assert event["detail"]["outputs"]["not_made"] == {"srt": "empty-transcript", "vtt": "empty-transcript"}
    assert set(event["detail"]["outputs"]["keys"]) == {"json", "txt"}
    assert metrics.metric_set["AnswerRepaired"]["Value"] == [1]
    assert any(r.levelname == "WARNING" and "malformed" in r.getMessage() for r in caplog.records)


def test_an_event_of_a_well_formed_answer_has_no_not_made_field(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    bus: Bus,
) -> None:
    aws.upload(KEY)
    answer(deepgram)
    metrics.clear_metrics()

    make(make_transcriber).process(obj(), lambda_context)

    (event,) = bus.events()
    assert "not_made" not in event["detail"]["outputs"]
    assert "AnswerRepaired" not in metrics.metric_set
