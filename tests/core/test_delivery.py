"""Delivery modes in-process: the URL, the object's bytes streamed in the body, and auto's fallback."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import requests
import responses

from tests.core.conftest import INPUT_BUCKET, LISTEN_URL, OUTPUT_BUCKET, etag_of, transcript_body
from transcriber.config import Settings
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import ConfigurationError, RetryableError
from transcriber.services.deepgram import UPLOAD_CHUNK_BYTES, _Upload

if TYPE_CHECKING:
    from requests import PreparedRequest

    from tests.core.conftest import Aws, FakeLambdaContext, Sleeps, TranscriberFactory

AUDIO = b"RIFF" + bytes(range(256)) * 4096  # 1 MiB and a bit: several upload chunks
CANT_FETCH = {
    "err_code": "REMOTE_CONTENT_ERROR",
    "err_msg": "The remote server hosting the media returned a client error: 403 Forbidden",
    "request_id": "req-remote",
}
FETCH_FLAKED = {
    "err_code": "REMOTE_CONTENT_ERROR",
    "err_msg": "The remote server hosting the media failed to return valid data.",
    "request_id": "req-flaky",
}


def obj(key: str = "talks/a.wav") -> S3ObjectRef:
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=len(AUDIO), etag=etag_of(AUDIO))


@dataclass
class Received:
    """What the fake Deepgram saw: per request, the content type and the whole body it read."""

    content_types: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def listen(self, deepgram: responses.RequestsMock, *answers: tuple[int, Any]) -> None:
        """Answer the next requests in order; a body that is an exception is raised mid-upload."""
        queue = list(answers)

        def callback(request: PreparedRequest) -> tuple[int, dict[str, str], str]:
            self.content_types.append(str(request.headers["Content-Type"]))
            body: Any = request.body  # bytes, str, or our streaming upload
            status, answer = queue[0]
            if isinstance(answer, Exception):
                queue.pop(0)
                next(iter(body))  # part of the upload, then the drop
                raise answer
            if isinstance(body, str):
                body = body.encode()
            read = body if isinstance(body, bytes) else b"".join(body)
            assert int(request.headers["Content-Length"]) == len(read)
            self.bodies.append(read)
            queue.pop(0)  # answered only once the whole body was read
            return status, {}, json.dumps(answer)

        deepgram.add_callback(responses.POST, LISTEN_URL, callback=callback)


@pytest.fixture
def received() -> Received:
    return Received()


def count_gets(aws: Aws) -> list[str]:
    gets: list[str] = []
    aws.s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    return gets


# -- bytes ---------------------------------------------------------------------------------


def test_bytes_mode_streams_the_object_in_the_body_with_its_media_type(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    received.listen(deepgram, (200, transcript_body()))

    outcome = make_transcriber(DELIVERY_MODE="bytes").process(obj(), lambda_context)

    assert (outcome.status, outcome.delivery) == ("transcribed", "bytes")
    assert received.content_types == ["audio/wav"]
    assert hashlib.sha256(received.bodies[0]).hexdigest() == hashlib.sha256(AUDIO).hexdigest()
    head = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=outcome.output_key or "")
    assert head["Metadata"]["delivery"] == "bytes"


@pytest.mark.parametrize("stored_type", ["application/json", "binary/octet-stream", "text/plain"])
def test_a_non_media_content_type_is_sent_as_octet_stream(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    stored_type: str,
) -> None:
    """Deepgram reads an application/json body as the remote-file form; it detects containers itself."""
    aws.upload("talks/a.wav", AUDIO, ContentType=stored_type)
    received.listen(deepgram, (200, transcript_body()))

    make_transcriber(DELIVERY_MODE="bytes").process(obj(), lambda_context)

    assert received.content_types == ["application/octet-stream"]


def test_an_s3_read_failing_mid_upload_is_retried_from_a_new_get(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """The object's own read breaks (S3 reset the GET): ours, retryable, classified as S3's."""
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    gets = count_gets(aws)
    broken: list[bool] = []

    def reset(*_: Any) -> bytes:
        raise ConnectionResetError("reset by S3")

    def break_the_first_body(parsed: dict[str, Any], **_: Any) -> None:
        if not broken:
            broken.append(True)
            parsed["Body"].read = reset

    aws.s3.meta.events.register("after-call.s3.GetObject", break_the_first_body)
    received.listen(deepgram, (200, transcript_body()))  # the first upload dies before an answer

    outcome = make_transcriber(DELIVERY_MODE="bytes").process(obj(), lambda_context)

    assert (outcome.status, outcome.delivery) == ("transcribed", "bytes")
    assert gets == ["talks/a.wav", "talks/a.wav"]
    assert received.bodies == [AUDIO]


def test_an_object_body_shorter_than_its_length_is_a_retryable_s3_error() -> None:
    class Short:
        def read(self, size: int = -1, /) -> bytes:
            return b""

    with pytest.raises(RetryableError) as raised:
        list(_Upload(Short(), 10, deadline=time.monotonic() + 60))
    assert raised.value.reason == "s3-read-interrupted"


def test_the_upload_is_read_a_chunk_at_a_time_and_ends_at_its_length() -> None:
    class Source:
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.data = memoryview(AUDIO + b"trailing bytes past the length")

        def read(self, size: int = -1, /) -> bytes:
            self.sizes.append(size)
            chunk, self.data = bytes(self.data[:size]), self.data[size:]
            return chunk

    source = Source()
    upload = _Upload(source, len(AUDIO), deadline=time.monotonic() + 60)

    assert len(upload) == len(AUDIO)
    assert b"".join(upload) == AUDIO
    assert max(source.sizes) == UPLOAD_CHUNK_BYTES


def test_an_upload_past_its_deadline_is_a_retryable_timeout() -> None:
    class Endless:
        def read(self, size: int = -1, /) -> bytes:
            return b"\0" * size

    with pytest.raises(RetryableError) as raised:
        for _ in _Upload(Endless(), 10 * UPLOAD_CHUNK_BYTES, deadline=time.monotonic() - 1):
            pass
    assert raised.value.reason == "deepgram-timeout"


def test_a_dropped_upload_is_retried_from_a_new_get_of_the_object(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
) -> None:
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    gets = count_gets(aws)
    received.listen(
        deepgram, (0, requests.ConnectionError("connection reset by peer")), (200, transcript_body())
    )

    outcome = make_transcriber(DELIVERY_MODE="bytes").process(obj(), lambda_context)

    assert (outcome.status, outcome.delivery) == ("transcribed", "bytes")
    assert gets == ["talks/a.wav", "talks/a.wav"]  # a stream is sent once: the retry opened it again
    assert received.bodies == [AUDIO]
    assert len(sleeps.delays) == 1


def test_an_sse_c_object_is_refused_with_a_clear_permanent_reason(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """S3 answers a GET without the customer key with 400 InvalidRequest (moto does not model SSE-C)."""
    aws.upload("talks/a.wav", AUDIO)
    refusal = {
        "Error": {
            "Code": "InvalidRequest",
            "Message": "The object was stored using a form of Server Side Encryption. The correct "
            "parameters must be provided to retrieve the object.",
        },
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }

    def refuse(**_: Any) -> tuple[SimpleNamespace, dict[str, Any]]:
        return SimpleNamespace(status_code=400, headers={}), refusal

    # A before-call handler that returns a response replaces the call (botocore's stubs say None).
    aws.s3.meta.events.register("before-call.s3.GetObject", refuse, unique_id="sse-c")  # type: ignore[arg-type]
    outcome = make_transcriber(DELIVERY_MODE="bytes").process(obj(), lambda_context)
    aws.s3.meta.events.unregister("before-call.s3.GetObject", unique_id="sse-c")

    assert (outcome.status, outcome.reason) == ("failed", "s3-sse-c-unsupported")
    record = aws.output(outcome.output_key or "")
    assert record is not None
    assert "customer-provided key (SSE-C)" in record["message"]
    assert record["delivery"] == "bytes"
    assert len(deepgram.calls) == 0


def test_an_sse_c_object_seen_by_head_is_refused_before_any_request(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/a.wav", AUDIO)

    def add_sse_c(parsed: dict[str, Any], **_: Any) -> None:
        parsed["SSECustomerAlgorithm"] = "AES256"

    aws.s3.meta.events.register("after-call.s3.HeadObject", add_sse_c)
    unknown_size = S3ObjectRef(bucket=INPUT_BUCKET, key="talks/a.wav")  # the event lacks size: a HEAD

    outcome = make_transcriber(DELIVERY_MODE="url").process(unknown_size, lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "s3-sse-c-unsupported")
    assert len(deepgram.calls) == 0


# -- auto ----------------------------------------------------------------------------------


def test_auto_sends_the_bytes_once_when_deepgram_cannot_fetch_the_url(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
) -> None:
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    received.listen(deepgram, (400, CANT_FETCH), (200, transcript_body()))

    outcome = transcriber.process(obj(), lambda_context)  # DELIVERY_MODE's default: auto

    assert (outcome.status, outcome.delivery) == ("transcribed", "bytes")
    assert received.content_types == ["application/json", "audio/wav"]
    assert "url" in json.loads(received.bodies[0])
    assert received.bodies[1] == AUDIO
    assert sleeps.delays == []  # a different request, not a retry of the same one


def test_auto_falls_back_only_once(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
) -> None:
    """The bytes answered the same way (say a proxy rewrote it): a failure record, no third request."""
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    received.listen(deepgram, (400, CANT_FETCH), (400, CANT_FETCH))

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.reason, outcome.delivery) == ("failed", "deepgram-remote-content", None)
    assert len(received.content_types) == 2
    record = aws.output(outcome.output_key or "")
    assert record is not None
    assert (record["delivery"], record["attempts"]) == ("bytes", 2)


def test_auto_retries_the_url_on_a_transient_remote_content_error(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    received.listen(deepgram, (400, FETCH_FLAKED), (200, transcript_body()))

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.delivery) == ("transcribed", "url")
    assert received.content_types == ["application/json", "application/json"]


def test_url_mode_never_sends_the_bytes(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    received.listen(deepgram, (400, CANT_FETCH))

    outcome = make_transcriber(DELIVERY_MODE="url").process(obj(), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "deepgram-remote-content")
    record = aws.output(outcome.output_key or "")
    assert record is not None
    assert record["delivery"] == "url"
    assert "DELIVERY_MODE=auto or bytes" in record["message"]


def test_one_billable_request_per_object_version_across_modes(
    aws: Aws,
    deepgram: responses.RequestsMock,
    received: Received,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """The idempotency record names the object version, not the mode: a redeploy in another mode
    (or the retry function of another stack configuration) does not pay again."""
    aws.upload("talks/a.wav", AUDIO, ContentType="audio/wav")
    received.listen(deepgram, (200, transcript_body()))

    first = make_transcriber(DELIVERY_MODE="url").process(obj(), lambda_context)
    second = make_transcriber(DELIVERY_MODE="bytes").process(obj(), lambda_context)
    third = make_transcriber(DELIVERY_MODE="auto").process(obj(), lambda_context)

    assert [o.replayed for o in (first, second, third)] == [False, True, True]
    assert {o.delivery for o in (first, second, third)} == {"url"}
    assert len(received.content_types) == 1


# -- settings ------------------------------------------------------------------------------


def test_delivery_mode_is_auto_unless_set_and_refuses_unknown_modes() -> None:
    env = {"OUTPUT_BUCKET": "o", "INPUT_BUCKET": "i", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t"}
    assert Settings.from_env(env).delivery_mode == "auto"
    assert Settings.from_env({**env, "DELIVERY_MODE": "Bytes"}).delivery_mode == "bytes"
    with pytest.raises(ConfigurationError, match="DELIVERY_MODE must be one of url, bytes, auto"):
        Settings.from_env({**env, "DELIVERY_MODE": "body"})


if TYPE_CHECKING:
    from transcriber.pipeline.workflow import Transcriber
