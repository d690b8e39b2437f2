"""Writing what the work came to: a paid answer as the transcript (kept for the retry when its
write fails), or a permanent failure as its failure record."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from transcriber.domain import cost, speakers, upload_options
from transcriber.domain.work import Order, WorkResult
from transcriber.errors import BlockedError, ErrorDetails, RetryableError, TranscriptionError
from transcriber.observability import logger, metrics, redact_url
from transcriber.pipeline.outcome import LambdaContextLike, Outcome, remaining_s
from transcriber.pipeline.preflight import EVENT_ONLY_FAILURES
from transcriber.services.storage import WriteRaced, utc_now
from transcriber.services.usage import record_cost, record_failure_reason

if TYPE_CHECKING:
    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef
    from transcriber.domain.retry import InvocationRetryPolicy
    from transcriber.errors import PermanentError
    from transcriber.services.answers import AnswerKeeper
    from transcriber.services.completion import Completion
    from transcriber.services.deepgram import Transcript
    from transcriber.services.storage import Storage, TranscriptSlot

DELIVERY_METRICS = {"url": "DeliveredByUrl", "bytes": "DeliveredByBytes"}
# Writes of one transcript within an invocation (each is botocore's own 2 attempts), while time allows.
OUTPUT_WRITE_ATTEMPTS = 3


class Superseded(Exception):
    """A newer version's transcript holds the key: ours is not written."""


class AnswerWriter:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        keeper: AnswerKeeper,
        retry: InvocationRetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.keeper = keeper  # answers paid for whose write failed, kept for the retry
        self.retry = retry
        self._sleep = sleep

    def write(
        self,
        obj: S3ObjectRef,
        query: list[tuple[str, str]],
        identity: dict[str, Any],
        answer: tuple[Transcript, str],
        *,
        context: LambdaContextLike,
        kept: dict[str, Any] | None,
        slot: TranscriptSlot | None = None,
    ) -> WorkResult:
        """Write a paid answer (fresh, or ``kept`` by an earlier attempt) with how it was delivered,
        over what ``slot`` saw at the transcript key before Deepgram was paid (None: look now).
        A fresh answer whose write fails is kept and the result says where, so the idempotency
        record holds it for the retry (which writes it with no new Deepgram request)."""
        transcript, delivery = answer
        usd = cost.estimate_usd(self.settings.pricing, transcript.duration_s, transcript.channels, query)
        more_metadata = upload_options.metadata(query) | cost.metadata(transcript.duration_s, usd)
        more_metadata |= speakers.speakers_metadata(obj.options or ())  # names: ours, not Deepgram's
        paid = WorkResult(
            request_id=transcript.request_id,
            duration_s=transcript.duration_s,
            delivery=delivery,
            options=upload_options.in_force(query),
            estimated_cost_usd=usd,
            deepgram_latency_s=round(transcript.latency_s, 3),
        )
        try:
            key = self._write_decided(obj, (transcript, delivery), context, more_metadata, slot)
        except Superseded:
            # A newer version's transcript is there: its outcome wins; ours is not written (but
            # Deepgram was paid for it, so its cost counts).
            logger.info("A newer version replaced the object; not writing its transcript")
            record_cost(usd)
            return WorkResult(superseded=True, request_id=transcript.request_id)
        except TranscriptionError as exc:
            if kept is not None or not exc.retryable:
                raise
            where = self.keeper.keep(identity, transcript, delivery)
            if where is None:
                raise
            logger.warning(
                "Writing the transcript failed; Deepgram's answer is kept for the retry",
                extra={"kept_in": where["where"], "deepgram_request_id": transcript.request_id},
            )
            return WorkResult(**{**paid.to_record(), "kept": where, "write_error": exc.as_record()})
        record_written(transcript, delivery, usd)
        logger.info(
            "Transcript written",
            extra={
                "transcript_key": key,
                "deepgram_request_id": transcript.request_id,
                "identity": identity,
                "delivery": delivery,
            },
        )
        return WorkResult(**{**paid.to_record(), "key": key, "transcribed_at": utc_now()})

    def _write_decided(
        self,
        obj: S3ObjectRef,
        answer: tuple[Transcript, str],
        context: LambdaContextLike,
        extra_metadata: dict[str, str],
        slot: TranscriptSlot | None,
    ) -> str:
        """The transcript written over what was seen at its key, in the order already decided
        (``Storage.decided``: preflight's answer, or S3's now when none was learned). Another
        version's transcript already at the key (written since that decision) is decided over
        first; ours stands unless another writer changes the key meanwhile (S3 refuses the
        conditional write); then it is decided once more, over the transcript that writer put there."""
        if self.storage.decided(obj).order is Order.SUPERSEDED:
            raise Superseded
        slot = slot or self.storage.look_transcript(obj)
        if self._newer(obj, slot):  # another version's transcript landed after the decision
            raise Superseded
        key = self._write_transcript(obj, answer, context, extra_metadata, slot)
        if key is None:
            logger.info("Another writer changed the transcript's key meanwhile; deciding again")
            slot = self.storage.look_transcript(obj)
            if self._newer(obj, slot):
                raise Superseded
            key = self._write_transcript(obj, answer, context, extra_metadata, slot)
        if key is None:
            raise RetryableError(
                ErrorDetails(reason="output-write-raced", message="the transcript's key kept changing")
            )
        return key

    def _newer(self, obj: S3ObjectRef, slot: TranscriptSlot) -> bool:
        """Whether the transcript another writer put at the key is of a newer version than ``obj``
        (``Storage.redecided``: by the events' order, else by the source key's current version)."""
        stored = slot.stored
        if stored is None or stored.made_from(obj):
            return False
        return self.storage.redecided(obj, stored).order is Order.SUPERSEDED

    def _write_transcript(
        self,
        obj: S3ObjectRef,
        answer: tuple[Transcript, str],
        context: LambdaContextLike,
        extra_metadata: dict[str, str],
        slot: TranscriptSlot,
    ) -> str | None:
        """Write the answer over ``slot``; None when S3 refused it because another writer changed
        the key since. A retryable failure is tried again while one more write fits in the time
        left (the answer is already paid for: a retry of the invocation would cost more)."""
        if slot.failure_possible:
            # Before the transcript: a failure record must never outlive it (see TranscriptSlot).
            self.storage.delete_failure(obj)
        transcript, delivery = answer
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.storage.write_transcript(obj, transcript, delivery, extra_metadata, over=slot)
            except WriteRaced:
                return None
            except TranscriptionError as exc:
                if not exc.retryable or isinstance(exc, BlockedError) or attempt >= OUTPUT_WRITE_ATTEMPTS:
                    raise
                delay = self.retry.delay(attempt, None)
                if remaining_s(context) - delay < self.retry.reserve_s:
                    raise
                logger.warning(
                    "Writing the transcript failed; retrying",
                    extra={"attempt": attempt, "delay_s": round(delay, 3), "error": exc.as_record()},
                )
                self._sleep(delay)


def record_written(transcript: Transcript, delivery: str, usd: float) -> None:
    """The metrics of a transcript written from a paid answer."""
    record_cost(usd)
    metrics.add_metric(name="TranscriptionsSucceeded", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=DELIVERY_METRICS[delivery], unit=MetricUnit.Count, value=1)
    metrics.add_metric(
        name="DeepgramLatency", unit=MetricUnit.Milliseconds, value=transcript.latency_s * 1000
    )
    if transcript.duration_s is not None:
        metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=transcript.duration_s)


def skipped(obj: S3ObjectRef, reason: str) -> Outcome:
    logger.info("Skipping object", extra={"skip_reason": reason})
    metrics.add_metric(name="TranscriptionsSkipped", unit=MetricUnit.Count, value=1)
    return Outcome("skipped", obj.bucket, obj.key, obj.version_id or obj.etag, reason=reason)


class FailureRecorder:
    """A permanent failure: its record in the output bucket, its event; never over a newer version."""

    def __init__(self, storage: Storage, completion: Completion) -> None:
        self.storage = storage
        self.completion = completion

    def failed(self, obj: S3ObjectRef, exc: PermanentError, started_at: str) -> Outcome:
        event_only = exc.reason in EVENT_ONLY_FAILURES
        # Asked again, not taken from preflight: the Deepgram call took time, and S3 can't write a
        # failure record conditionally over a newer version's outcome.
        if not event_only and self.storage.redecided(obj).order is Order.SUPERSEDED:
            return skipped(obj, "superseded")  # the newer version's outcome stands alone
        if not event_only:
            self.storage.clear_for_failure(obj)  # first: the record never exists without its marker
        record = failure_record(obj, exc, started_at)
        # Event-only failures (a foreign bucket, an invalid name) are never transcribed: no marker.
        key = self.storage.write_failure(obj, record, marked=True)
        metrics.add_metric(name="TranscriptionsFailed", unit=MetricUnit.Count, value=1)
        record_failure_reason(exc.reason)
        logger.error("Transcription failed permanently", extra={"failure_key": key, "error": exc.as_record()})
        self.completion.failed(obj, record, key)
        return Outcome(
            "failed",
            obj.bucket,
            obj.key,
            obj.version_id or obj.etag,
            output_key=key,
            reason=exc.reason,
            request_id=exc.details.request_id,
        )


def failure_record(obj: S3ObjectRef, exc: PermanentError, started_at: str) -> dict[str, Any]:
    record = {
        **exc.as_record(),
        "attempts": exc.details.extra.get("attempts", 0),
        "first_attempt_at": started_at,
        "failed_at": utc_now(),
    }
    if obj.options:  # the per-upload options asked for (as read, when they were refused)
        record["upload_options"] = {
            # People's names stay out of records an operator reads (they may have been refused).
            k: f"<{len(v)} characters>" if k == speakers.SPEAKERS else redact_url(v)
            for k, v in upload_options.in_force(obj.options).items()
        }
    return record
