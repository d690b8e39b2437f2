"""The per-object workflow in-process: retries, the key re-read, idempotency, skips and outcomes."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import pytest
import responses

from tests.core.conftest import (
    API_KEY,
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    SECRET_ID,
    TABLE,
    UPLOAD_ETAG,
    etag_of,
    failure_key,
    transcript_body,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import BlockedError, RetryableError

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, Sleeps, TranscriberFactory
    from transcriber.pipeline.workflow import Transcriber


def obj(key: str = "talks/a.wav", size: int | None = 16, etag: str | None = UPLOAD_ETAG) -> S3ObjectRef:
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=size, etag=etag)


def answer(deepgram: responses.RequestsMock, status: int = 200, **kwargs: Any) -> None:
    if status == 200 and "json" not in kwargs and "body" not in kwargs:
        kwargs["json"] = transcript_body()
    deepgram.add(responses.POST, LISTEN_URL, status=status, **kwargs)


def error(code: str, message: str) -> dict[str, str]:
    return {"err_code": code, "err_msg": message, "request_id": "req-err"}


# -- success -------------------------------------------------------------------------------


def test_a_transcript_is_written_from_one_authorised_remote_file_request(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram)

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.output_key, outcome.request_id) == (
        "transcribed",
        transcript_key("talks/a.wav"),
        "req-1",
    )
    request = deepgram.calls[0].request
    assert request.headers["Authorization"] == f"Token {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    media_url = json.loads(request.body or b"")["url"]
    assert media_url.startswith("https://")
    assert "X-Amz-Signature=" in media_url
    assert "model=nova-3" in str(request.url)
    assert "smart_format=true" in str(request.url)
    assert aws.output(transcript_key("talks/a.wav")) == transcript_body()


def test_the_key_is_read_while_the_idempotency_write_waits_on_dynamodb(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    """A cold container reads the key in the background once preflight passes: here the idempotency
    write waits until the read has begun (one after the other, it would wait in vain)."""
    aws.upload("talks/a.wav")
    answer(deepgram)
    key_read_begun = threading.Event()
    begun_in_time: list[bool] = []

    def note_the_read(**_: Any) -> None:
        key_read_begun.set()

    def wait_for_the_read(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == TABLE:
            begun_in_time.append(key_read_begun.wait(timeout=5))

    aws.secretsmanager.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue", note_the_read
    )
    aws.dynamodb.meta.events.register("provide-client-params.dynamodb.PutItem", wait_for_the_read)

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert begun_in_time == [True]


def test_a_success_removes_the_objects_earlier_failure_record(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav", b"v1 bytes")
    answer(deepgram, 400, json=error("Bad Request", "failed to process audio: corrupt or unsupported data"))
    first = transcriber.process(obj(etag=etag_of(b"v1 bytes")), lambda_context)
    assert first.status == "failed"
    assert aws.output_keys() == [failure_key("talks/a.wav")]

    aws.upload("talks/a.wav", b"v2 bytes")  # a new version of the object
    answer(deepgram)
    second = transcriber.process(obj(etag=etag_of(b"v2 bytes")), lambda_context)

    assert second.status == "transcribed"
    assert aws.output_keys() == [transcript_key("talks/a.wav")]


# -- retries inside the invocation ----------------------------------------------------------


def test_throttling_and_outages_are_retried_honouring_retry_after(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram, 503, body="Please try again later")
    answer(deepgram, 429, json=error("TOO_MANY_REQUESTS", "slow down"), headers={"Retry-After": "7"})
    answer(deepgram)

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert len(deepgram.calls) == 3
    assert 0 <= sleeps.delays[0] <= transcriber.retry.base_delay_s  # full jitter on the first retry
    assert sleeps.delays[1] == 7  # the server's Retry-After, not our own backoff


def test_retries_stop_after_max_attempts_and_hand_the_object_back(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
) -> None:
    aws.upload("talks/a.wav")
    transcriber = make_transcriber(DEEPGRAM_MAX_ATTEMPTS="3")
    for _ in range(3):
        answer(deepgram, 502, body="bad gateway")

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "deepgram-unavailable"
    assert raised.value.details.extra["attempts"] == 3
    assert len(sleeps.delays) == 2
    assert aws.output_keys() == []  # retryable: no failure record, the caller retries


def test_no_retry_when_the_wait_would_eat_the_time_kept_for_outputs(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
) -> None:
    aws.upload("talks/a.wav")
    # The reserve and the minimum request leave 5 s: one request, but no room for an 8 s wait.
    policy = transcriber.retry
    lambda_context.remaining_ms = int((policy.reserve_s + policy.min_request_s + 5) * 1000)
    answer(deepgram, 429, json=error("TOO_MANY_REQUESTS", "slow down"), headers={"Retry-After": "8"})

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "deepgram-throttled"
    assert sleeps.delays == []
    assert len(deepgram.calls) == 1


def test_too_little_time_left_makes_no_billable_request(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    policy = transcriber.retry
    lambda_context.remaining_ms = int((policy.reserve_s + policy.min_request_s - 1) * 1000)

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "insufficient-time"
    assert len(deepgram.calls) == 0


def test_request_timeouts_follow_the_functions_remaining_time(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    lambda_context.remaining_ms = 100_000
    answer(deepgram)

    transcriber.process(obj(), lambda_context)

    timeout = deepgram.calls[0].request.req_kwargs["timeout"]  # type: ignore[attr-defined]
    assert timeout.connect_timeout == transcriber.retry.max_connect_timeout_s
    # One budget for connecting, sending and waiting: the upload of a bytes request eats into the wait.
    assert timeout.total == pytest.approx(100 - transcriber.retry.reserve_s)


# -- the key ------------------------------------------------------------------------------


def test_a_rotated_key_is_read_again_once_and_used(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    transcriber.api_keys.get()  # cached from an earlier invocation
    aws.admin.secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString="dg-rotated-key-0123456789")
    answer(deepgram, 401, json=error("INVALID_AUTH", "Invalid credentials."))
    answer(deepgram)

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    keys = [call.request.headers["Authorization"] for call in deepgram.calls]
    assert keys == [f"Token {API_KEY}", "Token dg-rotated-key-0123456789"]


def test_a_key_refused_twice_blocks_the_work_without_a_failure_record(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram, 401, json=error("INVALID_AUTH", "Invalid credentials."))
    answer(deepgram, 401, json=error("INVALID_AUTH", "Invalid credentials."))

    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "deepgram-invalid-credentials"
    assert len(deepgram.calls) == 2
    assert aws.output_keys() == []
    assert API_KEY not in str(raised.value)


# -- idempotency --------------------------------------------------------------------------


def test_a_second_delivery_is_answered_from_the_idempotency_record(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram)

    first = transcriber.process(obj(), lambda_context)
    second = transcriber.process(obj(), lambda_context)

    assert (first.replayed, second.replayed) == (False, True)
    assert second.output_key == first.output_key
    assert len(deepgram.calls) == 1


def test_a_delivery_while_another_is_transcribing_is_deferred(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    inner: list[BaseException] = []

    def deepgram_answers_while_a_duplicate_arrives(request: Any) -> tuple[int, dict[str, str], str]:
        try:
            transcriber.process(obj(), lambda_context)
        except RetryableError as exc:
            inner.append(exc)
        return 200, {}, json.dumps(transcript_body())

    deepgram.add_callback(responses.POST, LISTEN_URL, callback=deepgram_answers_while_a_duplicate_arrives)

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert [getattr(e, "reason", None) for e in inner] == ["in-progress-elsewhere"]
    assert len(deepgram.calls) == 1


def test_an_unreachable_idempotency_store_defers_the_object(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/a.wav")
    transcriber = make_transcriber(IDEMPOTENCY_TABLE="no-such-table")

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "idempotency-store-error"
    assert len(deepgram.calls) == 0


# -- skips and permanent failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        (S3ObjectRef(INPUT_BUCKET, "folder/", size=0), "folder-placeholder"),
        (S3ObjectRef(INPUT_BUCKET, "empty.wav", size=0), "empty-object"),
        (S3ObjectRef(OUTPUT_BUCKET, transcript_key("x.wav"), size=10), "own-output"),
    ],
)
def test_objects_that_need_no_transcript_are_skipped_without_any_call(
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    ref: S3ObjectRef,
    reason: str,
) -> None:
    outcome = transcriber.process(ref, lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", reason)


def test_an_unknown_extension_is_judged_by_content_type(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("notes/readme.txt", b"hello", ContentType="text/plain")
    aws.upload("calls/recording", b"RIFF....", ContentType="audio/wav")
    answer(deepgram)

    text = transcriber.process(obj("notes/readme.txt", size=None, etag=None), lambda_context)
    audio = transcriber.process(obj("calls/recording", size=None, etag=None), lambda_context)

    assert (text.status, text.reason) == ("skipped", "not-media")
    assert audio.status == "transcribed"
    assert audio.version == aws.s3.head_object(Bucket=INPUT_BUCKET, Key="calls/recording")["ETag"].strip('"')


def test_an_object_emptied_since_the_event_is_skipped_after_head(
    aws: Aws, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("calls/blank", b"", ContentType="audio/wav")

    outcome = transcriber.process(obj("calls/blank", size=None, etag=None), lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", "empty-object")


def test_a_deleted_object_gets_a_failure_record(
    aws: Aws, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    outcome = transcriber.process(obj("gone/x", size=None, etag=None), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "s3-object-missing")
    record = aws.output(failure_key("gone/x"))
    assert record is not None
    assert record["source"]["key"] == "gone/x"
    assert record["attempts"] == 0


def test_an_object_over_two_gigabytes_fails_before_any_request(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    outcome = transcriber.process(obj(size=2 * 1024**3 + 1), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "too-large")
    assert len(deepgram.calls) == 0


def test_bad_audio_fails_once_with_deepgrams_request_id(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram, 400, json=error("Bad Request", "failed to process audio: corrupt or unsupported data"))

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.reason, outcome.request_id) == (
        "failed",
        "deepgram-unsupported-audio",
        "req-err",
    )
    record = aws.output(failure_key("talks/a.wav"))
    assert record is not None
    assert (record["class"], record["attempts"], record["http_status"]) == ("permanent", 1, 400)


def test_permanent_errors_are_not_retried(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram, 413, json={"err_code": "PAYLOAD_TOO_LARGE", "err_msg": "too big"})

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "failed"
    assert len(deepgram.calls) == 1
    assert aws.output(failure_key("talks/a.wav")) is not None


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            403,
            {"category": "INSUFFICIENT_PERMISSIONS", "message": "no model access"},
            "deepgram-insufficient-permissions",
        ),
        (404, {"err_code": "NOT_FOUND", "err_msg": "Not Found."}, "deepgram-endpoint-not-found"),
        (
            405,
            {"err_code": "METHOD_NOT_ALLOWED", "err_msg": "Method Not Allowed."},
            "deepgram-method-not-allowed",
        ),
        (301, {}, "deepgram-redirected"),
    ],
)
def test_deployment_faults_are_blocked_not_failed(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    status: int,
    body: dict[str, str],
    reason: str,
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram, status, json=body, headers={"Location": "https://elsewhere.example/v1/listen"})

    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == reason
    assert len(deepgram.calls) == 1  # not retried in the invocation: it waits for a person
    assert aws.output(failure_key("talks/a.wav")) is None


@pytest.mark.parametrize(
    ("bucket", "key", "size"),
    [
        ("Not A Bucket!", "talks/a.wav", None),  # the HEAD path: botocore would refuse the name
        ("bucket..name", "talks/a.wav", 16),  # the presign path
        (INPUT_BUCKET, "talks/../a.wav", 16),
        (INPUT_BUCKET, "./talks/a.wav", None),
    ],
)
def test_a_name_that_cannot_name_an_object_fails_before_any_other_call(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    bucket: str,
    key: str,
    size: int | None,
) -> None:
    calls: list[str] = []
    aws.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    aws.dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))

    outcome = transcriber.process(S3ObjectRef(bucket=bucket, key=key, size=size, etag="e"), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "invalid-object-name")
    assert calls == ["PutObject"]  # the failure record, and nothing else
    assert len(deepgram.calls) == 0
    record = aws.output(failure_key(key, bucket))
    assert record is not None
    assert record["source"]["key"] == key
