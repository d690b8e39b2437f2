"""Deepgram's 200 answer in bounded memory (spooled, validated as a stream) and kept when its write
fails, so the retry writes it without paying Deepgram again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import responses
from botocore.exceptions import ClientError

from tests.core.conftest import LISTEN_URL, OUTPUT_BUCKET, UPLOAD_ETAG, transcript_body, transcript_key
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import BlockedError, RetryableError
from transcriber.pipeline.workflow import OUTPUT_WRITE_ATTEMPTS
from transcriber.services.answers import AnswerKeeper, KeptAnswers
from transcriber.services.deepgram import MAX_ANSWER_DEPTH, SPOOL_MEMORY_BYTES, DeepgramClient, Transcript

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, Sleeps, TranscriberFactory
    from transcriber.pipeline.workflow import Transcriber


def client() -> DeepgramClient:
    return DeepgramClient("https://api.deepgram.test")


def call() -> Transcript:
    return client().transcribe_url(
        api_key="k", media_url="https://bucket/x.wav", options=[], connect_timeout_s=1, read_timeout_s=2
    )


def long_body(words: int) -> bytes:
    document = transcript_body(" ".join(f"word{i}" for i in range(words)), request_id="req-long")
    document["metadata"]["duration"] = 3600.5
    document["metadata"]["channels"] = 2
    return json.dumps(document).encode()


# -- the client: spooled, validated, summarised -----------------------------------------------


def test_a_large_answer_is_spooled_to_a_file_unchanged_and_summarised() -> None:
    body = long_body(40_000)
    assert len(body) > 2 * SPOOL_MEMORY_BYTES
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, body=body, status=200)
        transcript = call()

    with transcript:
        assert transcript.body._rolled  # type: ignore[attr-defined]  # on disk, not in memory
        assert transcript.size == len(body)
        assert transcript.rewind().read() == body
        assert (transcript.request_id, transcript.duration_s, transcript.channels) == ("req-long", 3600.5, 2)
    assert transcript.body.closed


def test_a_small_answer_stays_in_memory() -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, json=transcript_body(), status=200)
        transcript = call()

    assert not transcript.body._rolled  # type: ignore[attr-defined]
    assert json.loads(transcript.rewind().read()) == transcript_body()
    assert (transcript.request_id, transcript.duration_s, transcript.channels) == ("req-1", 2.5, 1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'"just a string"',
        json.dumps({"metadata": {}, "results": {"channels": {"0": {}}}}).encode(),  # not a list
        json.dumps(transcript_body()).encode() + b" trailing",
        json.dumps(transcript_body()).encode()[:-5],  # cut short, framing intact
        b'{"metadata": {"request_id": "r"}, "results": {"channels": [' + b"[" * MAX_ANSWER_DEPTH + b"]}}",
        b"\xff\xfe not utf-8",
    ],
)
def test_a_200_that_is_not_a_whole_transcript_is_an_invalid_response(body: bytes) -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, body=body, status=200)
        with pytest.raises(RetryableError) as raised:
            call()

    assert raised.value.reason == "deepgram-invalid-response"
    assert raised.value.details.http_status == 200


def test_an_answer_shorter_than_its_content_length_is_a_dropped_connection() -> None:
    body = json.dumps(transcript_body()).encode()
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST,
            LISTEN_URL,
            body=body[:20],
            status=200,
            headers={"Content-Length": str(len(body))},
            auto_calculate_content_length=False,
        )
        with pytest.raises(RetryableError) as raised:
            call()

    assert raised.value.reason == "deepgram-connection"
    assert "cut off" in raised.value.details.message


def test_an_answer_still_arriving_after_the_budget_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 100.0, 200.0, 300.0])
    monkeypatch.setattr("transcriber.services.deepgram.time.monotonic", lambda: next(clock))
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, json=transcript_body(), status=200)
        with pytest.raises(RetryableError) as raised:
            call()

    assert raised.value.reason == "deepgram-timeout"
    assert "still arriving" in raised.value.details.message


def test_a_temporary_directory_that_refuses_the_answer_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tempfile.SpooledTemporaryFile.write", full)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, json=transcript_body(), status=200)
        with pytest.raises(RetryableError) as raised:
            call()

    assert raised.value.reason == "answer-spool-failed"
    assert "No space left on device" in raised.value.details.message


# -- the workflow: the answer is kept when its write fails --------------------------------------


def obj(key: str = "talks/a.wav") -> S3ObjectRef:
    return S3ObjectRef(bucket="core-input", key=key, size=1000, etag=UPLOAD_ETAG)


class FailingPuts:
    """Makes the output bucket's PutObject of transcripts fail ``times`` times with ``code``."""

    def __init__(
        self, transcriber: Transcriber, code: str, times: int, prefixes: tuple[str, ...] = ("transcripts/",)
    ) -> None:
        self.s3 = transcriber.storage._s3
        self.real = self.s3.put_object
        self.code, self.left, self.calls, self.prefixes = code, times, 0, prefixes

    def __call__(self, **params: Any) -> Any:
        if params["Key"].startswith(self.prefixes) and self.left > 0:
            self.left -= 1
            self.calls += 1
            status = 403 if self.code == "AccessDenied" else 503
            error = {
                "Error": {"Code": self.code, "Message": "x"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }
            raise ClientError(error, "PutObject")  # type: ignore[arg-type]
        return self.real(**params)


def failing_puts(
    monkeypatch: pytest.MonkeyPatch,
    transcriber: Transcriber,
    code: str,
    times: int,
    prefixes: tuple[str, ...] = ("transcripts/",),
) -> FailingPuts:
    puts = FailingPuts(transcriber, code, times, prefixes)
    monkeypatch.setattr(puts.s3, "put_object", puts)
    return puts


def test_a_failed_write_is_tried_again_in_the_invocation(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    puts = failing_puts(monkeypatch, transcriber, "SlowDown", OUTPUT_WRITE_ATTEMPTS - 1)

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert puts.calls == OUTPUT_WRITE_ATTEMPTS - 1
    assert len(sleeps.delays) == OUTPUT_WRITE_ATTEMPTS - 1
    assert len(deepgram.calls) == 1
    assert aws.output(transcript_key("talks/a.wav")) == transcript_body()


def test_an_answer_whose_write_failed_is_written_by_the_next_attempt_without_a_request(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())  # the only answer there is
    puts = failing_puts(monkeypatch, transcriber, "SlowDown", OUTPUT_WRITE_ATTEMPTS)

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "s3-throttled"
    assert puts.calls == OUTPUT_WRITE_ATTEMPTS

    outcome = transcriber.process(obj(), lambda_context)  # Lambda's retry, same container

    assert (outcome.status, outcome.request_id, outcome.replayed) == ("transcribed", "req-1", False)
    assert len(deepgram.calls) == 1
    assert aws.output(transcript_key("talks/a.wav")) == transcript_body()
    assert not transcriber.keeper.container.directory.exists()  # kept in the record, not in /tmp
    again = transcriber.process(obj(), lambda_context)
    assert again.replayed  # the record now says written


def another_container(make_transcriber: TranscriberFactory, tmp_path: Path, name: str) -> Transcriber:
    """A Transcriber with its own /tmp: a cold container, or the retry function."""
    other = make_transcriber()
    other.keeper = AnswerKeeper(other.storage, KeptAnswers(tmp_path / name))
    return other


def test_another_container_writes_a_kept_answer_from_the_idempotency_record(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    failing_puts(monkeypatch, transcriber, "AccessDenied", 1)

    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.details.extra["answer_kept_in"] == "record"
    outcome = another_container(make_transcriber, tmp_path, "cold").process(obj(), lambda_context)

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-1")
    assert len(deepgram.calls) == 1
    assert aws.output(transcript_key("talks/a.wav")) == transcript_body()


def test_a_long_kept_answer_waits_in_the_output_bucket_for_another_container(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    body = long_body(500)
    deepgram.add(responses.POST, LISTEN_URL, body=body, status=200)
    transcriber = make_transcriber()
    transcriber.keeper.max_record_bytes = 1024  # too long for the record
    failing_puts(monkeypatch, transcriber, "SlowDown", OUTPUT_WRITE_ATTEMPTS)

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.details.extra["answer_kept_in"] == "s3"
    staged = aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kept-answers/").get("Contents", [])
    assert len(staged) == 1
    outcome = another_container(make_transcriber, tmp_path, "cold").process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert len(deepgram.calls) == 1
    stored = aws.s3.get_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("talks/a.wav"))
    assert stored["Body"].read() == body
    assert stored["Metadata"]["deepgram-request-id"] == "req-long"
    assert aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kept-answers/").get("KeyCount") == 0


def test_an_answer_only_the_container_kept_is_paid_again_elsewhere(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The weakest place: the output bucket refused the staging object too, so only this
    container's /tmp has it; the same container writes it free, another one pays again."""
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id="req-2"))
    transcriber = make_transcriber()
    transcriber.keeper.max_record_bytes = 0
    failing_puts(monkeypatch, transcriber, "AccessDenied", 2, prefixes=("transcripts/", "kept-answers/"))

    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)
    assert raised.value.details.extra["answer_kept_in"] == "container"

    outcome = another_container(make_transcriber, tmp_path, "cold").process(obj(), lambda_context)

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert len(deepgram.calls) == 2


def test_a_record_that_cannot_say_written_keeps_the_copy_and_the_replay_writes_it_again(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, body=long_body(500), status=200)
    transcriber = make_transcriber()
    transcriber.keeper.max_record_bytes = 1024  # a staging object, so forgetting it shows
    failing_puts(monkeypatch, transcriber, "SlowDown", OUTPUT_WRITE_ATTEMPTS)
    with pytest.raises(RetryableError):
        transcriber.process(obj(), lambda_context)
    retry = another_container(make_transcriber, tmp_path, "retry")
    real_save = retry._persistence.save_success
    refusals = iter(
        [ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")]
    )

    def save_success(**kwargs: Any) -> None:
        refusal = next(refusals, None)
        if refusal is not None:
            raise refusal
        real_save(**kwargs)

    monkeypatch.setattr(retry._persistence, "save_success", save_success)

    assert retry.process(obj(), lambda_context).status == "transcribed"
    staged = aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kept-answers/")
    assert staged["KeyCount"] == 1  # still kept: the record still points at it
    again = retry.process(obj(), lambda_context)  # a duplicate delivery: written again, not paid

    assert again.status == "transcribed"
    assert len(deepgram.calls) == 1
    assert aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kept-answers/")["KeyCount"] == 0
    assert retry.process(obj(), lambda_context).replayed  # now the record says written


def test_a_superseded_object_forgets_its_kept_answer(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    failing_puts(monkeypatch, transcriber, "AccessDenied", 1)
    with pytest.raises(BlockedError):
        transcriber.process(obj(), lambda_context)
    aws.upload("talks/a.wav", b"a newer recording")  # a new upload replaces the object

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert len(deepgram.calls) == 1
    assert aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="transcripts/").get("KeyCount") == 0


def test_a_denied_write_is_not_retried_in_the_invocation_but_kept(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    puts = failing_puts(monkeypatch, transcriber, "AccessDenied", 1)

    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)

    assert raised.value.reason == "output-bucket-unwritable"
    assert puts.calls == 1
    assert transcriber.process(obj(), lambda_context).status == "transcribed"
    assert len(deepgram.calls) == 1


def test_no_write_retry_when_it_would_eat_the_time_kept_for_outputs(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    puts = failing_puts(monkeypatch, transcriber, "SlowDown", 5)
    real_call = transcriber.deepgram.transcribe_url

    def slow_call(**kwargs: Any) -> Transcript:
        transcript = real_call(**kwargs)
        lambda_context.remaining_ms = int(transcriber.retry.reserve_s * 1000) - 1  # Deepgram took the rest
        return transcript

    monkeypatch.setattr(transcriber.deepgram, "transcribe_url", slow_call)

    with pytest.raises(RetryableError):
        transcriber.process(obj(), lambda_context)

    assert puts.calls == 1


def test_a_failed_failure_record_delete_keeps_the_written_answer_too(
    aws: Aws,
    deepgram: responses.RequestsMock,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.upload("talks/a.wav")
    # The key failed before (its transcript key holds the delete marker a failure record leaves),
    # so the success deletes the failure record: only then is there a DELETE to fail.
    aws.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("talks/a.wav"))
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    s3 = transcriber.storage._s3
    real_delete = s3.delete_object
    failures = iter([True, True])

    def delete(**params: Any) -> Any:
        if next(failures, False):
            error = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
            raise ClientError(error, "DeleteObject")  # type: ignore[arg-type]
        return real_delete(**params)

    monkeypatch.setattr(s3, "delete_object", delete)

    with pytest.raises(RetryableError):
        transcriber.process(obj(), lambda_context)
    with pytest.raises(RetryableError):  # the kept answer is used, and still kept when it fails again
        transcriber.process(obj(), lambda_context)
    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.status == "transcribed"
    assert len(deepgram.calls) == 1


def test_an_answer_that_cannot_be_kept_still_raises_the_write_error(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    transcriber = make_transcriber()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    transcriber.keeper = AnswerKeeper(transcriber.storage, KeptAnswers(blocker / "kept"), max_record_bytes=0)
    failing_puts(monkeypatch, transcriber, "AccessDenied", 2, prefixes=("transcripts/", "kept-answers/"))

    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)

    assert "answer_kept_in" not in raised.value.details.extra
    assert transcriber.process(obj(), lambda_context).status == "transcribed"  # pays again
    assert len(deepgram.calls) == 2


# -- the kept answers' own rules -------------------------------------------------------------


def spooled(body: bytes, request_id: str = "r") -> Transcript:
    import io

    return Transcript(
        body=io.BytesIO(body),
        size=len(body),
        request_id=request_id,
        duration_s=1.5,
        channels=1,
        latency_s=0.2,
    )


def test_kept_answers_are_found_by_identity_and_forgotten(tmp_path: Path) -> None:
    kept = KeptAnswers(tmp_path)
    identity = {"bucket": "b", "key": "k", "version": "v1"}

    assert kept.keep(identity, spooled(b'{"a": 1}'), "bytes")
    assert kept.take({"bucket": "b", "key": "k", "version": "v2"}) is None
    found = kept.take(identity)
    assert found is not None
    transcript, delivery = found
    with transcript:
        assert transcript.rewind().read() == b'{"a": 1}'
        assert (transcript.request_id, transcript.duration_s, transcript.size, delivery) == (
            "r",
            1.5,
            8,
            "bytes",
        )
    kept.forget(identity)
    assert kept.take(identity) is None
    assert list(tmp_path.iterdir()) == []


def test_kept_answers_stay_within_their_budget_oldest_first(tmp_path: Path) -> None:
    kept = KeptAnswers(tmp_path, max_bytes=25)
    first, second, third = ({"key": name} for name in ("first", "second", "third"))

    assert kept.keep(first, spooled(b"x" * 10), "url")
    assert kept.keep(second, spooled(b"y" * 10), "url")
    assert kept.keep(third, spooled(b"z" * 10), "url")  # the first makes room
    assert not kept.keep({"key": "huge"}, spooled(b"h" * 26), "url")  # never fits

    assert kept.take(first) is None
    assert kept.take(second) is not None
    assert kept.take(third) is not None
    assert kept.take({"key": "huge"}) is None


def test_the_default_place_is_the_containers_temporary_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", "/sandbox-tmp")

    assert KeptAnswers().directory == Path("/sandbox-tmp/transcriber-kept-answers")


def test_s3_receives_the_answer_unchanged(aws: Aws) -> None:
    from transcriber.services.storage import Storage

    storage = Storage(aws.s3, OUTPUT_BUCKET, "transcripts/", "failures/")
    body = long_body(30_000)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, body=body, status=200)
        mock.add_passthru("https://")
        transcript = call()

    with transcript:
        key = storage.write_transcript(obj(), transcript, "url")

    stored = aws.s3.get_object(Bucket=OUTPUT_BUCKET, Key=key)
    assert stored["Body"].read() == body
    assert stored["Metadata"]["deepgram-request-id"] == "req-long"


# -- a kept answer is checked before it becomes a transcript ---------------------------------


def test_a_replaced_staging_copy_is_discarded_and_only_then_paid_again(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, body=long_body(500), status=200)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id="req-2"))
    transcriber = make_transcriber()
    transcriber.keeper.max_record_bytes = 1024  # kept in the staging prefix
    failing_puts(monkeypatch, transcriber, "SlowDown", OUTPUT_WRITE_ATTEMPTS)
    with pytest.raises(RetryableError):
        transcriber.process(obj(), lambda_context)
    (staged,) = aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kept-answers/")["Contents"]
    forged = json.dumps(transcript_body("not what was paid for", request_id="forged")).encode()
    aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=staged["Key"], Body=forged)

    outcome = another_container(make_transcriber, tmp_path, "cold").process(obj(), lambda_context)

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert len(deepgram.calls) == 2  # paid again only because the copy was not the paid answer
    assert aws.output(transcript_key("talks/a.wav")) == transcript_body(request_id="req-2")
    assert aws.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="kept-answers/").get("KeyCount") == 0


def container_kept(
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    kept: KeptAnswers,
) -> Transcriber:
    """A transcriber whose paid answer only its container's /tmp (``kept``) could keep."""
    transcriber = make_transcriber()
    transcriber.keeper = AnswerKeeper(transcriber.storage, kept, max_record_bytes=0)
    failing_puts(monkeypatch, transcriber, "AccessDenied", 2, prefixes=("transcripts/", "kept-answers/"))
    with pytest.raises(BlockedError) as raised:
        transcriber.process(obj(), lambda_context)
    assert raised.value.details.extra["answer_kept_in"] == "container"
    return transcriber


def test_a_truncated_container_copy_is_discarded_and_paid_again(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id="req-2"))
    kept = KeptAnswers(tmp_path / "warm")
    transcriber = container_kept(make_transcriber, lambda_context, monkeypatch, kept)
    (body,) = [p for p in kept.directory.glob("*.json") if not p.name.endswith(".meta.json")]
    body.write_bytes(body.read_bytes()[:-1] + b" ")  # same size, other bytes: the digest tells
    outcome = transcriber.process(obj(), lambda_context)  # the same container

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert len(deepgram.calls) == 2
    assert not body.exists()


def test_a_container_copy_older_than_its_bound_is_dropped(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id="req-2"))
    kept = KeptAnswers(tmp_path / "warm", max_age_s=3600)
    transcriber = container_kept(make_transcriber, lambda_context, monkeypatch, kept)
    (body,) = [p for p in kept.directory.glob("*.json") if not p.name.endswith(".meta.json")]
    old = time.time() - 3601
    os.utime(body, (old, old))

    outcome = transcriber.process(obj(), lambda_context)

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert not body.exists()


def test_keeping_an_answer_sweeps_copies_older_than_their_bound(tmp_path: Path) -> None:
    kept = KeptAnswers(tmp_path, max_age_s=3600)
    assert kept.keep({"key": "old"}, spooled(b'{"old": 1}'), "url")
    (old,) = [p for p in tmp_path.glob("*.json") if not p.name.endswith(".meta.json")]
    stale = time.time() - 3601
    os.utime(old, (stale, stale))

    assert kept.keep({"key": "new"}, spooled(b'{"new": 1}'), "url")

    assert not old.exists()
    found = kept.take({"key": "new"})
    assert found is not None
    found[0].close()


def test_a_kept_answer_never_replaces_a_newer_versions_transcript_written_since(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The replay writes the kept answer with no Deepgram call; a newer version uploaded and
    transcribed just before (no sequencer to compare) is current, so the kept answer is not written."""
    aws.upload("talks/a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id="ours"))
    first = make_transcriber()
    failing_puts(monkeypatch, first, "SlowDown", OUTPUT_WRITE_ATTEMPTS)
    with pytest.raises(RetryableError):
        first.process(obj(), lambda_context)
    key = transcript_key("talks/a.wav")
    landed: list[str] = []

    def newer_version_first(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key and not landed:
            landed.append(key)
            newer = aws.upload("talks/a.wav", b"RIFF a newer recording")
            theirs = {"source-etag": newer["ETag"].strip('"'), "deepgram-request-id": "theirs"}
            aws.s3.put_object(Bucket=OUTPUT_BUCKET, Key=key, Body=b"{}", Metadata=theirs)

    aws.s3.meta.events.register("provide-client-params.s3.HeadObject", newer_version_first)

    outcome = another_container(make_transcriber, tmp_path, "retry").process(obj(), lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert len(deepgram.calls) == 1
    assert aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=key)["Metadata"]["deepgram-request-id"] == "theirs"
