"""The retry function's work: re-run dead-lettered events with long, growing backoff.

Lambda puts an event on the dead-letter queue after its own retries failed. Each message is the
original event; it is re-run through the same per-object code (idempotent, so objects that did
finish cost nothing). A retryable failure hides the message for an exponentially growing time
(up to ``RETRY_MAX_DELAY_SECONDS``), and after the last attempt a failure record says the
event is parked; SQS's redrive policy then moves the message to the parking queue.

Waiting for Deepgram capacity (``deepgram-capacity``) is not a failure of the event: such a
message is sent again as a new message (with the attempts it had really used, ``PriorAttempts``,
and a ``CapacityDeferrals`` count) and the old one deleted, so SQS's receive count, which drives
the redrive to the parking queue, never counts capacity waits. A backfill task's object deferred
here (``CapacityRequeue.defer``, attribute ``CapacityLane: backfill``) is re-run in the backfill
lane, so it waits for the backfill's share of the pool, as its task did. An object another
invocation is transcribing (``in-progress-elsewhere``) is requeued the same way: that invocation
writes the outcome, or its record expires with its deadline; parking it would leave a failure
record beside the transcript it then writes.

A blocked error (a deployment fault: a missing secret or capacity table, a revoked key, no credit)
is no failure of the event either: it is requeued the same way, without using an attempt, so it
never parks and never gets a failure record. It waits ``BLOCKED_RETRY_DELAY_SECONDS`` between
tries (``BlockedUntil``: SQS delays a message 900 s at most, so a longer wait is several hops of
one SendMessage each, nothing run). It waits until the fault is fixed, without end: each requeue is
a new message, so the queue's retention (14 days) restarts and never drops it; ``BlockedSince``
says how long it has waited (logged, ``DeadLetterBlockedWaits``).

Only what can legitimately land on the queue is re-run (``admissible_source``): an event the
transcribe function was invoked with asynchronously (S3 notification, EventBridge ``Object
Created``, SNS, a direct payload), or the existing-bucket rule's undelivered EventBridge event, as
the functions, the rule or the operator's redrive sent it. Any other body is parked with a reason
before it is read further, so its per-upload options never reach Deepgram; ``PriorAttempts`` is
trusted only within ``[0, RetryMaxAttempts]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain.events import Source, detect_source, parse_event
from transcriber.errors import BlockedError, PermanentError, RetryableError, TranscriptionError
from transcriber.observability import logger, metrics
from transcriber.pipeline.adapters import handle_event, process_all
from transcriber.pipeline.workflow import IN_PROGRESS_REASON
from transcriber.services.capacity import BACKFILL_LANE, CAPACITY_REASON
from transcriber.services.capacity_requeue import CAPACITY_LANE
from transcriber.services.storage import utc_now

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from mypy_boto3_sqs import SQSClient

    from transcriber.domain.events import S3ObjectRef
    from transcriber.domain.retry import DeadLetterRetryPolicy
    from transcriber.pipeline.workflow import LambdaContextLike, Transcriber


PRIOR_ATTEMPTS = "PriorAttempts"
CAPACITY_DEFERRALS = "CapacityDeferrals"
BLOCKED_UNTIL = "BlockedUntil"  # epoch seconds: not run again before then
BLOCKED_SINCE = "BlockedSince"  # epoch seconds of the first blocked try
MAX_DELAY_SECONDS = 900  # SQS's largest DelaySeconds
UNEXPECTED_SHAPE_REASON = "dead-letter-unexpected-shape"
# What an asynchronous invocation of the transcribe function can carry (Lambda's dead-letter
# message body is the event unchanged). Batch Operations and SQS event source mappings invoke
# synchronously, so their shapes never land here.
ASYNC_INVOKE_SOURCES = frozenset({Source.S3, Source.S3_TEST, Source.EVENTBRIDGE, Source.SNS, Source.DIRECT})
RULE_ARN_ATTRIBUTE = "RULE_ARN"  # set by EventBridge on a rule's dead letters


class DeadLetterRetrier:
    def __init__(
        self,
        transcriber: Transcriber,
        policy: DeadLetterRetryPolicy,
        sqs: SQSClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transcriber = transcriber
        self.policy = policy
        self._sqs = sqs
        self._clock = clock

    def process_record(self, record: SQSRecord, lambda_context: LambdaContextLike) -> dict[str, Any]:
        """Raises to keep the message (BatchProcessor reports it as a batch item failure)."""
        receives = int(record.attributes.approximate_receive_count or 1)
        # Used before a capacity requeue; an attribute is only a claim, so it is kept in bounds.
        prior = _bounded(_attribute(record, PRIOR_ATTEMPTS), self.policy.max_attempts)
        attempt = receives + prior
        logger.append_keys(dlq_message_id=record.message_id, dlq_attempt=attempt)
        lambda_error = _attribute(record, "ErrorMessage")
        logger.info("Retrying dead-lettered event", extra={"lambda_error": lambda_error})
        try:
            event = json.loads(record.body)
        except ValueError:
            self._park(record, "dead-letter-not-json", "the dead-letter message body is not JSON")
            return {"parked": True}
        refusal = admissible_source(event, from_rule=_attribute(record, RULE_ARN_ATTRIBUTE) is not None)
        if refusal:
            self._park(record, *refusal)
            return {"parked": True}
        waiting = self._blocked_wait_left(record)
        if waiting > 0:  # still within a blocked wait longer than SQS's longest delay
            self._requeue(record, attempt - 1, waiting, {})
            return {"deferred": "blocked"}
        try:
            return self._rerun(record, event, lambda_context)
        except PermanentError as exc:  # only an unrecognisable event gets here: objects record their own
            self._park(record, exc.reason, str(exc))
            return {"parked": True}
        except RetryableError as exc:
            return self._later(record, exc, event, receives=receives, attempt=attempt)

    def _rerun(self, record: SQSRecord, event: Any, lambda_context: LambdaContextLike) -> dict[str, Any]:
        """The event through the per-object code. A backfill task's deferred object keeps the
        backfill lane (at most its share of the pool), not the live uploads' slots; the attribute
        is only a claim, and one that can only lower its own priority."""
        if _attribute(record, CAPACITY_LANE) != BACKFILL_LANE:
            return handle_event(event, lambda_context, self.transcriber)
        objects = [replace(obj, lane=BACKFILL_LANE) for obj in parse_event(event)]
        return process_all(objects, lambda_context, self.transcriber)

    def _later(
        self, record: SQSRecord, exc: RetryableError, event: Any, *, receives: int, attempt: int
    ) -> dict[str, Any]:
        """Requeue (blocked, capacity, in progress elsewhere: no attempt used), back off, or park;
        raises to keep the message for its backoff."""
        if isinstance(exc, BlockedError):
            self._requeue_blocked(record, attempt - 1, exc)
            return {"deferred": "blocked"}
        if exc.reason == CAPACITY_REASON:
            self._requeue_for_capacity(record, attempt - 1)
            return {"deferred": CAPACITY_REASON}
        if exc.reason == IN_PROGRESS_REASON:
            self._requeue_while_in_progress(record, attempt - 1)
            return {"deferred": IN_PROGRESS_REASON}
        if self._back_off(record, attempt, exc, event) and receives < self.policy.max_attempts:
            # Attempts carried over a requeue ran out before SQS's receive count did.
            self._park(record, exc.reason, str(exc))
            return {"parked": True}
        raise exc

    def _requeue(self, record: SQSRecord, used_attempts: int, delay: float, counts: dict[str, str]) -> int:
        """Send the event again, later (at most SQS's 900 s), as a new message that remembers the
        attempts it used and ``counts``; the caller then lets the old message be deleted."""
        attributes = {
            name: {"DataType": "String", "StringValue": str(value["stringValue"])}
            for name, value in (record.get("messageAttributes") or {}).items()
            if value.get("stringValue") is not None
        }
        attributes[PRIOR_ATTEMPTS] = {"DataType": "Number", "StringValue": str(used_attempts)}
        for name, value in counts.items():
            attributes[name] = {"DataType": "Number", "StringValue": value}
        seconds = max(0, min(MAX_DELAY_SECONDS, int(delay)))
        self._sqs.send_message(
            QueueUrl=self.policy.dead_letter_queue_url,
            MessageBody=record.body,
            DelaySeconds=seconds,
            MessageAttributes=attributes,  # type: ignore[arg-type]
        )
        return seconds

    def _blocked_wait_left(self, record: SQSRecord) -> float:
        """Seconds left of the blocked wait this message carries (an attribute: only a claim, so
        never more than the policy's blocked delay)."""
        until = _bounded(_attribute(record, BLOCKED_UNTIL), 2**40)
        return min(until - self._clock(), self.policy.blocked_delay_s)

    def _requeue_blocked(self, record: SQSRecord, used_attempts: int, exc: BlockedError) -> None:
        """A deployment fault: wait ``blocked_delay_s``, using no attempt (see the module's docstring)."""
        now = self._clock()
        since = _bounded(_attribute(record, BLOCKED_SINCE), 2**40) or int(now)
        counts = {BLOCKED_SINCE: str(since), BLOCKED_UNTIL: str(int(now + self.policy.blocked_delay_s))}
        delay = self._requeue(record, used_attempts, self.policy.blocked_delay_s, counts)
        metrics.add_metric(name="DeadLetterBlockedWaits", unit=MetricUnit.Count, value=1)
        logger.error(
            "Blocked until a person fixes the deployment; event requeued without using an attempt",
            extra={
                "blocked_for_s": int(now) - since,
                "delay_s": delay,
                "attempts_used": used_attempts,
                "error": exc.as_record(),
            },
        )

    def _requeue_for_capacity(self, record: SQSRecord, used_attempts: int) -> None:
        deferrals = _bounded(_attribute(record, CAPACITY_DEFERRALS), 1_000_000) + 1
        delay = self._requeue(
            record, used_attempts, self.policy.delay(1), {CAPACITY_DEFERRALS: str(deferrals)}
        )
        metrics.add_metric(name="DeadLetterCapacityDeferrals", unit=MetricUnit.Count, value=1)
        logger.info(
            "Waiting for Deepgram capacity; event requeued without using an attempt",
            extra={"delay_s": delay, "capacity_deferrals": deferrals, "attempts_used": used_attempts},
        )

    def _requeue_while_in_progress(self, record: SQSRecord, used_attempts: int) -> None:
        """Another invocation is transcribing the object: it writes the outcome, or its record
        expires with its deadline. Not a failure of the event: parking it here would leave a
        failure record beside the transcript the other invocation is about to write."""
        delay = self._requeue(record, used_attempts, self.policy.delay(1), {})
        metrics.add_metric(name="DeadLetterInProgressDeferrals", unit=MetricUnit.Count, value=1)
        logger.info(
            "Another invocation is transcribing it; event requeued without using an attempt",
            extra={"delay_s": delay, "attempts_used": used_attempts},
        )

    def _back_off(self, record: SQSRecord, attempt: int, exc: RetryableError, event: Any) -> bool:
        """Hide the message for the backoff; True when its attempts are used up (parked)."""
        if attempt >= self.policy.max_attempts:
            self._record_parked(event, exc, attempt)
            delay = 0  # the next receive moves it to the parking queue (redrive policy)
        else:
            delay = self.policy.delay(attempt)
        metrics.add_metric(name="DeadLetterRetriesDeferred", unit=MetricUnit.Count, value=1)
        logger.warning(
            "Dead-lettered event still failing; backing off",
            extra={"attempt": attempt, "delay_s": delay, "error": exc.as_record()},
        )
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.policy.dead_letter_queue_url,
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=delay,
            )
        except (ClientError, BotoCoreError):
            # The message still comes back after the queue's own visibility timeout.
            logger.exception("Could not extend the message's visibility")
        return attempt >= self.policy.max_attempts

    def _record_parked(self, event: Any, exc: RetryableError, attempts: int) -> None:
        """Leave a failure record per object still failing, so a person sees why the event is
        parked; objects of the event that have their transcript (of that version) keep it alone."""
        record = {
            **exc.as_record(),
            "class": "parked",
            "message": (
                f"gave up after {attempts} dead-letter attempts; the event is in the parking queue "
                f"(last error: {exc.details.message})"
            ),
            "attempts": attempts,
            "parking_queue": self.policy.parking_queue_url,
            "failed_at": utc_now(),
        }
        storage = self.transcriber.storage
        for obj in parse_event(event):
            if obj.bucket not in self.transcriber.settings.allowed_buckets:
                continue  # refused before any call: its own failure record says so
            if self._succeeded(obj):
                continue  # this object of the event did succeed: it is not parked
            key = storage.write_failure(obj, record)
            self.transcriber.completion.failed(obj, record, key)  # best effort, like every failure
        metrics.add_metric(name="DeadLetterEventsParked", unit=MetricUnit.Count, value=1)

    def _succeeded(self, obj: S3ObjectRef) -> bool:
        try:
            return self.transcriber.storage.transcript_of(obj)
        except TranscriptionError:
            return False  # can't tell: a parked record too many beats a failing object without one

    def _park(self, record: SQSRecord, reason: str, message: str) -> None:
        """An event that can never succeed goes straight to the parking queue, with the reason."""
        logger.error("Parking an event that cannot be retried", extra={"reason": reason, "detail": message})
        self._sqs.send_message(
            QueueUrl=self.policy.parking_queue_url,
            MessageBody=record.body,
            MessageAttributes={
                "ParkedReason": {"DataType": "String", "StringValue": reason},
                "ParkedMessage": {"DataType": "String", "StringValue": message[:1024]},
            },
        )
        metrics.add_metric(name="DeadLetterEventsParked", unit=MetricUnit.Count, value=1)


def admissible_source(event: Any, *, from_rule: bool) -> tuple[str, str] | None:
    """None when the event has a shape that can land on the dead-letter queue; otherwise the
    reason and message it is parked with."""
    try:
        source = detect_source(event)
    except PermanentError as exc:
        return exc.reason, str(exc)
    if from_rule and source is not Source.EVENTBRIDGE:
        return (
            UNEXPECTED_SHAPE_REASON,
            f"an EventBridge rule's dead letter must be an aws.s3 event, not {source}",
        )
    if source not in ASYNC_INVOKE_SOURCES:
        return (
            UNEXPECTED_SHAPE_REASON,
            f"a {source} event is never invoked asynchronously: it cannot be a dead letter",
        )
    return None


def _bounded(value: str | None, most: int) -> int:
    """A count from a message attribute: a whole number within ``[0, most]``, else 0."""
    try:
        number = int(value or 0)
    except ValueError:
        return 0
    return min(max(number, 0), most)


def _attribute(record: SQSRecord, name: str) -> str | None:
    attribute = (record.get("messageAttributes") or {}).get(name) or {}
    value = attribute.get("stringValue")
    return str(value) if value is not None else None
