"""The retry function's work in-process: backoff on the dead-letter queue, parking with a reason."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import responses
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import ClientError

from tests.core.conftest import (
    LISTEN_URL,
    UPLOAD_ETAG,
    FakeLambdaContext,
    failure_key,
    mid_request,
    s3_event,
    sqs_record,
    transcript_body,
    transcript_key,
)
from tests.core.test_completion import Bus
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import BlockedError, RetryableError
from transcriber.pipeline.dead_letter import DeadLetterRetrier
from transcriber.services.capacity import build_governor
from transcriber.services.completion import TRANSCRIPTION_FAILED

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory
    from transcriber.domain.retry import DeadLetterRetryPolicy


@pytest.fixture
def retrier(
    aws: Aws, make_transcriber: TranscriberFactory, dead_letter_policy: DeadLetterRetryPolicy
) -> DeadLetterRetrier:
    return DeadLetterRetrier(make_transcriber(DEEPGRAM_MAX_ATTEMPTS="1"), dead_letter_policy, aws.sqs)


def dead_lettered(aws: Aws, body: str, receives: int) -> SQSRecord:
    """The message as the retry function receives it on its ``receives``-th delivery."""
    aws.sqs.send_message(
        QueueUrl=aws.dead_letter_queue_url,
        MessageBody=body,
        MessageAttributes={"ErrorMessage": {"DataType": "String", "StringValue": "deepgram-unavailable"}},
    )
    message: Any = {}
    for _ in range(receives):
        received = aws.admin.sqs.receive_message(
            QueueUrl=aws.dead_letter_queue_url,
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )
        message = received["Messages"][0]
    return sqs_record(message)


def test_a_recovered_event_is_transcribed(
    aws: Aws, deepgram: responses.RequestsMock, retrier: DeadLetterRetrier, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("late.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    result = retrier.process_record(dead_lettered(aws, json.dumps(s3_event("late.wav")), 1), lambda_context)

    assert result["transcribed"] == 1
    assert aws.output_keys() == [transcript_key("late.wav")]


@pytest.fixture
def delays(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The visibility timeouts the retrier sets, in order (moto keeps no history of them)."""
    recorded: list[int] = []
    monkeypatch.setattr(
        aws.sqs, "change_message_visibility", lambda **kw: recorded.append(kw["VisibilityTimeout"])
    )
    return recorded


def fails_again(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    *,
    receives: int,
    status: int = 503,
    keys: tuple[str, ...] = ("late.wav",),
) -> RetryableError:
    """Deliver a dead-lettered event for ``keys`` whose Deepgram calls all answer ``status``."""
    for key in keys:
        aws.upload(key)
        deepgram.add(responses.POST, LISTEN_URL, status=status, json={"err_code": "E", "err_msg": "still"})
    with pytest.raises(RetryableError) as raised:
        retrier.process_record(dead_lettered(aws, json.dumps(s3_event(*keys)), receives), lambda_context)
    return raised.value


def test_a_still_failing_event_is_hidden_for_a_growing_jittered_delay(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    delays: list[int],
) -> None:
    fails_again(aws, deepgram, retrier, lambda_context, receives=2)

    assert len(delays) == 1
    assert 60 <= delays[0] <= 120  # second attempt: ceiling 60 * 2, equal jitter keeps half
    assert aws.output_keys() == []


NOW = 1_800_000_000.0


@pytest.fixture
def sent(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the retrier sends to SQS (sent for real too)."""
    calls: list[dict[str, Any]] = []
    real = aws.sqs.send_message

    def send(**params: Any) -> Any:
        calls.append(params)
        return real(**params)

    monkeypatch.setattr(aws.sqs, "send_message", send)
    return calls


def attributes_of(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}


def test_a_blocked_event_is_requeued_without_using_an_attempt_and_never_parked(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    dead_letter_policy: DeadLetterRetryPolicy,
    lambda_context: FakeLambdaContext,
    delays: list[int],
    sent: list[dict[str, Any]],
) -> None:
    """A 402 (no credit) on the message's last receive: it waits, with no failure record."""
    retrier = DeadLetterRetrier(make_transcriber(), dead_letter_policy, aws.sqs, clock=lambda: NOW)
    aws.upload("late.wav")
    deepgram.add(responses.POST, LISTEN_URL, status=402, json={"err_code": "E", "err_msg": "no credit"})
    record = dead_lettered_with(aws, json.dumps(s3_event("late.wav")), {"PriorAttempts": "1"}, receives=2)
    sent.clear()

    result = retrier.process_record(record, lambda_context)  # attempt 3 of 3

    assert result == {"deferred": "blocked"}
    assert aws.output_keys() == []  # no failure record: a person fixes the account, the event waits
    assert delays == []  # not hidden: a new message, so SQS's receive count starts again
    (requeued,) = sent
    assert requeued["QueueUrl"] == aws.dead_letter_queue_url
    assert requeued["DelaySeconds"] == 900  # SQS's longest; the rest of the hour is BlockedUntil
    assert attributes_of(requeued) == {
        "PriorAttempts": "2",  # the attempts the retryable errors used, not this one
        "BlockedSince": str(int(NOW)),
        "BlockedUntil": str(int(NOW) + 3600),
    }


def test_a_blocked_wait_longer_than_sqs_allows_is_hops_that_run_nothing(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    dead_letter_policy: DeadLetterRetryPolicy,
    lambda_context: FakeLambdaContext,
    sent: list[dict[str, Any]],
) -> None:
    retrier = DeadLetterRetrier(make_transcriber(), dead_letter_policy, aws.sqs, clock=lambda: NOW)
    aws.upload("late.wav")
    waiting = {"PriorAttempts": "1", "BlockedSince": "1", "BlockedUntil": str(int(NOW) + 1200)}
    record = dead_lettered_with(aws, json.dumps(s3_event("late.wav")), waiting)
    sent.clear()

    assert retrier.process_record(record, lambda_context) == {"deferred": "blocked"}

    assert len(deepgram.calls) == 0
    (hop,) = sent
    assert hop["DelaySeconds"] == 900
    assert attributes_of(hop) == waiting  # still one attempt used, still blocked since then
    forged = {"BlockedUntil": str(int(NOW) + 10**9)}  # only a claim: at most the blocked delay
    record = dead_lettered_with(aws, json.dumps(s3_event("late.wav")), forged)
    sent.clear()
    retrier.process_record(record, lambda_context)
    assert sent[0]["DelaySeconds"] == 900


def test_a_missing_capacity_table_is_a_deployment_fault_that_waits(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    dead_letter_policy: DeadLetterRetryPolicy,
    lambda_context: FakeLambdaContext,
    sent: list[dict[str, Any]],
) -> None:
    transcriber = make_transcriber(CAPACITY_TABLE="deleted-with-another-stack")
    transcriber.call.capacity = build_governor(transcriber.settings, aws.dynamodb)  # as compose does
    retrier = DeadLetterRetrier(transcriber, dead_letter_policy, aws.sqs, clock=lambda: NOW)
    aws.upload("late.wav")

    with pytest.raises(BlockedError) as raised:  # the transcribe function: Lambda retries, then dead letter
        transcriber.process(S3ObjectRef(bucket="core-input", key="late.wav"), lambda_context)
    assert raised.value.details.extra["deployment_fault"] is True
    record = dead_lettered(aws, json.dumps(s3_event("late.wav")), receives=3)  # the last attempt
    sent.clear()
    assert retrier.process_record(record, lambda_context) == {"deferred": "blocked"}

    assert aws.output_keys() == []
    assert len(deepgram.calls) == 0
    assert attributes_of(sent[0])["PriorAttempts"] == "2"


def test_a_parked_object_emits_its_failure_event(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    dead_letter_policy: DeadLetterRetryPolicy,
    lambda_context: FakeLambdaContext,
    delays: list[int],
) -> None:
    bus = Bus(aws)
    transcriber = make_transcriber(COMPLETION_EVENTS="true", DEEPGRAM_MAX_ATTEMPTS="1")
    retrier = DeadLetterRetrier(transcriber, dead_letter_policy, aws.sqs)

    fails_again(aws, deepgram, retrier, lambda_context, receives=3)

    (event,) = bus.events()
    assert event["detail-type"] == TRANSCRIPTION_FAILED
    assert event["detail"]["source"]["key"] == "late.wav"
    assert event["detail"]["outputs"]["keys"] == {"failure": failure_key("late.wav")}
    assert (event["detail"]["error"]["reason"], event["detail"]["error"]["attempts"]) == (
        "deepgram-unavailable",
        3,
    )


def test_the_last_attempt_leaves_a_parked_failure_record_per_object(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    delays: list[int],
) -> None:
    fails_again(aws, deepgram, retrier, lambda_context, receives=3, keys=("one.wav", "two.wav"))

    assert delays == [0]  # the next receive moves it to the parking queue (redrive policy)
    assert aws.output_keys() == [failure_key("one.wav"), failure_key("two.wav")]
    record = aws.output(failure_key("one.wav"))
    assert record is not None
    assert (record["class"], record["attempts"], record["reason"]) == ("parked", 3, "deepgram-unavailable")
    assert record["parking_queue"] == aws.parking_queue_url


def test_a_failed_visibility_change_is_logged_not_raised_over_the_real_error(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    aws.upload("late.wav")
    deepgram.add(responses.POST, LISTEN_URL, status=503, body="later")
    record = dead_lettered(aws, json.dumps(s3_event("late.wav")), 1)

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ReceiptHandleIsInvalid"}}, "ChangeMessageVisibility")

    monkeypatch.setattr(aws.sqs, "change_message_visibility", refuse)

    with pytest.raises(RetryableError) as raised:
        retrier.process_record(record, lambda_context)

    assert raised.value.reason == "deepgram-unavailable"  # the message comes back after the queue's timeout
    assert "Could not extend the message's visibility" in caplog.messages


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "dead-letter-not-json"),
        (json.dumps({"unexpected": "shape"}), "unrecognised-event"),
    ],
)
def test_an_event_that_can_never_succeed_is_parked_with_its_reason(
    aws: Aws, retrier: DeadLetterRetrier, lambda_context: FakeLambdaContext, body: str, reason: str
) -> None:
    result = retrier.process_record(dead_lettered(aws, body, 1), lambda_context)

    assert result == {"parked": True}
    parked = aws.admin.sqs.receive_message(QueueUrl=aws.parking_queue_url, MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert [m["Body"] for m in parked] == [body]
    assert parked[0]["MessageAttributes"]["ParkedReason"]["StringValue"] == reason


def test_parking_writes_records_only_for_the_objects_still_failing(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    delays: list[int],
) -> None:
    aws.upload("done.wav")
    aws.upload("stuck.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    deepgram.add(responses.POST, LISTEN_URL, status=503, json={"err_code": "E", "err_msg": "still"})
    event = s3_event("done.wav", "stuck.wav")
    foreign = s3_event("elsewhere.wav", bucket="not-our-bucket")["Records"]
    event["Records"].extend(foreign)

    with pytest.raises(RetryableError):
        retrier.process_record(dead_lettered(aws, json.dumps(event), 3), lambda_context)

    assert delays == [0]
    assert aws.output_keys() == sorted(
        [
            transcript_key("done.wav"),
            failure_key("stuck.wav"),
            failure_key("elsewhere.wav", "not-our-bucket"),
        ]
    )
    parked = aws.output(failure_key("stuck.wav"))
    assert parked is not None
    assert parked["class"] == "parked"
    refused = aws.output(failure_key("elsewhere.wav", "not-our-bucket"))
    assert refused is not None
    assert refused["reason"] == "foreign-bucket"  # not overwritten by the parked record


# ------------------------------------------------------------------ only what can land here is re-run


def dead_lettered_with(aws: Aws, body: str, attributes: dict[str, str], receives: int = 1) -> SQSRecord:
    """A dead-lettered message carrying these (string) message attributes, on its ``receives``-th delivery."""
    aws.sqs.send_message(
        QueueUrl=aws.dead_letter_queue_url,
        MessageBody=body,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )
    message: Any = {}
    for _ in range(receives):
        message = aws.admin.sqs.receive_message(
            QueueUrl=aws.dead_letter_queue_url,
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )["Messages"][0]
    return sqs_record(message)


def _parked(aws: Aws) -> list[tuple[str, str]]:
    messages = aws.admin.sqs.receive_message(
        QueueUrl=aws.parking_queue_url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
    ).get("Messages", [])
    return [(m["Body"], m["MessageAttributes"]["ParkedReason"]["StringValue"]) for m in messages]


PAID_OPTIONS = {"model": "whisper-large", "keyterm": ["a", "b"]}
NOT_DEAD_LETTERS = {
    # An SQS event reaches the function through an event source mapping (synchronous): never a dead letter.
    "sqs-envelope": {
        "Records": [
            {
                "eventSource": "aws:sqs",
                "messageId": "m",
                "body": json.dumps({"bucket": "core-input", "key": "late.wav", "options": PAID_OPTIONS}),
            }
        ]
    },
    # Batch Operations invokes synchronously too.
    "batch-operations": {
        "invocationSchemaVersion": "2.0",
        "invocationId": "i",
        "job": {"id": "j", "userArguments": {"options": "model=whisper-large"}},
        "tasks": [{"taskId": "t", "s3BucketName": "core-input", "s3Key": "late.wav", "s3VersionId": None}],
    },
}


@pytest.mark.parametrize("shape", NOT_DEAD_LETTERS)
def test_a_body_that_cannot_be_a_dead_letter_is_parked_before_any_request(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    shape: str,
) -> None:
    aws.upload("late.wav")
    body = json.dumps(NOT_DEAD_LETTERS[shape])

    result = retrier.process_record(dead_lettered(aws, body, 1), lambda_context)

    assert result == {"parked": True}
    assert len(deepgram.calls) == 0, "its per-upload options never reached Deepgram"
    assert aws.output_keys() == []
    assert _parked(aws) == [(body, "dead-letter-unexpected-shape")]


def test_a_rules_dead_letter_must_be_an_s3_eventbridge_event(
    aws: Aws, deepgram: responses.RequestsMock, retrier: DeadLetterRetrier, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("late.wav")
    body = json.dumps({"bucket": "core-input", "key": "late.wav", "options": PAID_OPTIONS})
    record = dead_lettered_with(aws, body, {"RULE_ARN": "arn:aws:events:us-east-1:123456789012:rule/r"})

    assert retrier.process_record(record, lambda_context) == {"parked": True}
    assert len(deepgram.calls) == 0
    assert _parked(aws) == [(body, "dead-letter-unexpected-shape")]


@pytest.mark.parametrize("claimed", ["-1000", "many"])
def test_prior_attempts_are_trusted_only_within_bounds(
    aws: Aws,
    deepgram: responses.RequestsMock,
    retrier: DeadLetterRetrier,
    lambda_context: FakeLambdaContext,
    dead_letter_policy: DeadLetterRetryPolicy,
    delays: list[int],
    claimed: str,
) -> None:
    """A claimed negative or unreadable count neither buys more paid attempts nor crashes the batch:
    on the last receive the event is parked as any other."""
    aws.upload("late.wav")
    deepgram.add(responses.POST, LISTEN_URL, status=503, json={"err_code": "E", "err_msg": "down"})
    receives = dead_letter_policy.max_attempts
    record = dead_lettered_with(aws, json.dumps(s3_event("late.wav")), {"PriorAttempts": claimed}, receives)

    with pytest.raises(RetryableError):
        retrier.process_record(record, lambda_context)

    assert delays == [0], "parked: the next receive moves it to the parking queue"
    failure = aws.output(failure_key("late.wav"))
    assert failure is not None
    assert failure["class"] == "parked"


def test_a_last_attempt_that_finds_the_object_in_progress_waits_and_leaves_no_failure_record(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    dead_letter_policy: DeadLetterRetryPolicy,
    lambda_context: FakeLambdaContext,
    sent: list[dict[str, Any]],
) -> None:
    """The joint of the dead-letter retries and a duplicate delivery: while one invocation waits on
    Deepgram, the retry's last attempt finds the object in progress. Parked, it would leave a
    failure record beside the transcript the first invocation then writes (make chaos saw it)."""
    aws.upload("busy.wav")
    busy = S3ObjectRef(bucket="core-input", key="busy.wav", etag=UPLOAD_ETAG, size=16)
    retrier = DeadLetterRetrier(make_transcriber(), dead_letter_policy, aws.sqs)

    with mid_request(deepgram, make_transcriber(), busy):
        record = dead_lettered_with(aws, json.dumps(s3_event("busy.wav")), {"PriorAttempts": "2"})
        sent.clear()
        result = retrier.process_record(record, lambda_context)  # attempt 3 of 3

    assert result == {"deferred": "in-progress-elsewhere"}
    (requeued,) = sent
    assert requeued["QueueUrl"] == aws.dead_letter_queue_url
    assert attributes_of(requeued)["PriorAttempts"] == "2"  # this try used no attempt
    assert aws.output_keys() == [transcript_key("busy.wav")]  # and no failure record beside it
