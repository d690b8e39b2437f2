"""The retry function's work: re-run dead-lettered events with long, growing backoff.

Lambda puts an event on the dead-letter queue after its own retries failed. Each message is the
original event; it is re-run through the same per-object code (idempotent, so objects that did
finish cost nothing). A retryable failure hides the message for an exponentially growing time
(hours for blocked errors such as 402), and after the last attempt a failure record says the
event is parked; SQS's redrive policy then moves the message to the parking queue.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.adapters import handle_event
from transcriber.errors import BlockedError, PermanentError, RetryableError, TranscriptionError
from transcriber.events import parse_event
from transcriber.observability import logger, metrics
from transcriber.storage import utc_now

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from mypy_boto3_sqs import SQSClient

    from transcriber.events import S3ObjectRef
    from transcriber.retry import DeadLetterRetryPolicy
    from transcriber.workflow import LambdaContextLike, Transcriber


class DeadLetterRetrier:
    def __init__(self, transcriber: Transcriber, policy: DeadLetterRetryPolicy, sqs: SQSClient) -> None:
        self.transcriber = transcriber
        self.policy = policy
        self._sqs = sqs

    def process_record(self, record: SQSRecord, lambda_context: LambdaContextLike) -> dict[str, Any]:
        """Raises to keep the message (BatchProcessor reports it as a batch item failure)."""
        attempt = int(record.attributes.approximate_receive_count or 1)
        logger.append_keys(dlq_message_id=record.message_id, dlq_attempt=attempt)
        lambda_error = _attribute(record, "ErrorMessage")
        logger.info("Retrying dead-lettered event", extra={"lambda_error": lambda_error})
        try:
            event = json.loads(record.body)
        except ValueError:
            self._park(record, "dead-letter-not-json", "the dead-letter message body is not JSON")
            return {"parked": True}
        try:
            return handle_event(event, lambda_context, self.transcriber)
        except PermanentError as exc:  # only an unrecognisable event gets here: objects record their own
            self._park(record, exc.reason, str(exc))
            return {"parked": True}
        except RetryableError as exc:
            self._back_off(record, attempt, exc, event)
            raise

    def _back_off(self, record: SQSRecord, attempt: int, exc: RetryableError, event: Any) -> None:
        if attempt >= self.policy.max_attempts:
            self._record_parked(event, exc, attempt)
            delay = 0  # the next receive moves it to the parking queue (redrive policy)
        elif isinstance(exc, BlockedError):
            delay = self.policy.blocked_delay_s  # nothing succeeds until a person acts: wait long
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
            storage.write_failure(obj, record)
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


def _attribute(record: SQSRecord, name: str) -> str | None:
    attribute = (record.get("messageAttributes") or {}).get(name) or {}
    value = attribute.get("stringValue")
    return str(value) if value is not None else None
