"""The per-object work, as a short pipeline of steps passing one typed record (``WorkResult``):

preflight (``pipeline.preflight``) -> is it already done (the idempotency record, then the
transcript in the bucket) -> capacity and the Deepgram call (``pipeline.deepgram_call``) -> keep the
paid answer and write the transcript (``pipeline.outputs``) -> formats and the completion event
(``services.completion``). A permanent failure becomes its failure record (``pipeline.outputs``).

It knows nothing of Lambda events: ``transcriber.pipeline.adapters`` turns events into objects and
outcomes into the reply each caller expects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain.work import Order, WorkResult
from transcriber.errors import (
    ErrorDetails,
    PermanentError,
    RetryableError,
    error_from_record,
)
from transcriber.observability import logger, metrics
from transcriber.pipeline.outcome import LambdaContextLike, Outcome
from transcriber.pipeline.outputs import OUTPUT_WRITE_ATTEMPTS, skipped
from transcriber.pipeline.preflight import (
    EVENT_ONLY_FAILURES,
    MAX_MEDIA_BYTES,
    MEDIA_CONTENT_TYPES,
    object_identity,
    refuse_foreign_bucket,
    refuse_invalid_name,
    refuse_too_large,
    skip_reason,
)
from transcriber.services.storage import utc_now

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef
    from transcriber.domain.retry import InvocationRetryPolicy
    from transcriber.pipeline.already_done import AlreadyDone
    from transcriber.pipeline.deepgram_call import DeepgramCall
    from transcriber.pipeline.outputs import AnswerWriter, FailureRecorder
    from transcriber.pipeline.preflight import Preflight
    from transcriber.services.answers import AnswerKeeper
    from transcriber.services.capacity import CapacityRequeue
    from transcriber.services.completion import Completion
    from transcriber.services.deepgram import DeepgramClient, Transcript
    from transcriber.services.secrets import ApiKeyProvider
    from transcriber.services.storage import Storage

__all__ = [
    "EVENT_ONLY_FAILURES",
    "IDEMPOTENCY_KEY_PREFIX",
    "MAX_MEDIA_BYTES",
    "MEDIA_CONTENT_TYPES",
    "OUTPUT_WRITE_ATTEMPTS",
    "LambdaContextLike",
    "Outcome",
    "Parts",
    "Transcriber",
    "object_identity",
    "refuse_foreign_bucket",
    "refuse_invalid_name",
    "refuse_too_large",
    "skip_reason",
]

# Shared by every function that transcribes, so a retry never pays twice for one object version.
IDEMPOTENCY_KEY_PREFIX = "transcription"


# Another invocation holds the object's idempotency record: it will write the outcome, or its
# record expires with its deadline and the next try does the work.
IN_PROGRESS_REASON = "in-progress-elsewhere"


@dataclass
class Parts:
    """The Transcriber's collaborators, built by ``transcriber.compose`` (the one place that builds)."""

    preflight: Preflight
    done: AlreadyDone
    call: DeepgramCall
    writer: AnswerWriter
    failures: FailureRecorder
    completion: Completion
    storage: Storage
    persistence: DynamoDBPersistenceLayer
    idempotency: IdempotencyConfig
    retry: InvocationRetryPolicy
    capacity_requeue: CapacityRequeue | None = None  # SQS ways in: see transcriber.pipeline.adapters


class Transcriber:
    def __init__(self, settings: Settings, parts: Parts) -> None:
        self.settings = settings
        self.capacity_requeue = parts.capacity_requeue
        self.retry = parts.retry
        self.storage = parts.storage  # the outputs
        self.completion = parts.completion
        self.preflight = parts.preflight
        self.call = parts.call
        self.writer = parts.writer
        self.failures = parts.failures
        self.done = parts.done
        self.idempotency = parts.idempotency
        self._persistence = parts.persistence
        self._transcribe_once = idempotent_function(
            data_keyword_argument="identity",
            persistence_store=self._persistence,
            config=self.idempotency,
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )(self._transcribe)

    # The steps' collaborators, where callers and tests reach them.
    @property
    def keeper(self) -> AnswerKeeper:
        return self.writer.keeper

    @keeper.setter
    def keeper(self, keeper: AnswerKeeper) -> None:
        self.writer.keeper = keeper

    @property
    def api_keys(self) -> ApiKeyProvider:
        return self.call.api_keys

    @property
    def deepgram(self) -> DeepgramClient:
        return self.call.deepgram

    # -- one object --------------------------------------------------------------------------
    def process(self, obj: S3ObjectRef, context: LambdaContextLike) -> Outcome:
        """Transcribe one object: an outcome for done, skipped or failed; ``RetryableError`` when
        it must be tried again later (the caller hands it back to Lambda, SQS or the job)."""
        self.idempotency.register_lambda_context(context)  # type: ignore[arg-type]
        logger.append_keys(bucket=obj.bucket, object_key=obj.key, version_id=obj.version_id)
        logger.set_correlation_id(obj.key)
        started_at = utc_now()
        in_hand: list[Transcript] = []  # the answer paid for in this invocation, if any
        try:
            obj, reason = self.preflight.look(obj)  # rebound: a failure record names what was read
            if reason is not None:
                return skipped(obj, reason)
            obj = self.preflight.check(obj)
            self.api_keys.prefetch()  # read while the idempotency write and the transcript's HEAD run
            return self._run(obj, context, started_at, in_hand)
        except IdempotencyAlreadyInProgressError:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            raise RetryableError(
                ErrorDetails(reason=IN_PROGRESS_REASON, message="another invocation is transcribing it")
            ) from None
        except IdempotencyPersistenceLayerError as exc:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            raise RetryableError(
                ErrorDetails(reason="idempotency-store-error", message=type(exc).__name__)
            ) from exc
        except PermanentError as exc:
            return self.failures.failed(obj, self.preflight.explained(obj, exc), started_at)
        except RetryableError as exc:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            logger.warning("Transcription will be retried", extra={"error": exc.as_record()})
            raise
        finally:
            close_all(in_hand)

    def _run(
        self, obj: S3ObjectRef, context: LambdaContextLike, started_at: str, in_hand: list[Transcript]
    ) -> Outcome:
        """The steps after preflight, in order; an error leaves through ``process``."""
        result = self._transcribe_current(obj, context, in_hand)
        if result.superseded:
            return skipped(obj, "superseded")
        outputs = self.completion.finish(obj, result, started_at, answer_of(in_hand))
        if result.replayed:
            logger.info("Already transcribed; no new Deepgram request", extra={"transcript_key": result.key})
        return Outcome(
            "transcribed",
            obj.bucket,
            obj.key,
            obj.version_id or obj.etag,
            output_key=result.key,
            request_id=result.request_id,
            replayed=result.replayed,
            delivery=result.delivery,
            options=result.options,
            estimated_cost_usd=result.estimated_cost_usd,
            outputs=outputs,
        )

    def _transcribe_current(
        self, obj: S3ObjectRef, context: LambdaContextLike, in_hand: list[Transcript]
    ) -> WorkResult:
        """The idempotent transcription; a replay is trusted only while the transcript it names
        still exists and was made from this version (else the stale record is dropped and the
        object done again, unless a newer version has superseded it meanwhile)."""
        identity = object_identity(obj)
        result = self._once(identity, obj, context, in_hand)
        held = self._held(obj, identity, result, context)
        if held is not None:
            return held
        # The one answer to "is it superseded?" (preflight's, else S3's now): it travels with ``obj``
        # to the write. A superseded record stands while it is so; the same bytes uploaded again
        # after another version are the latest version again, with the same identity.
        obj = self.storage.decided(obj)
        if result.superseded and obj.order is Order.SUPERSEDED:
            return result
        logger.warning(
            "The stored result is stale (its transcript is gone or another version's, the version "
            "it was superseded by is gone, or its kept answer is gone); doing it again",
            extra={"transcript_key": result.key},
        )
        self._persistence.delete_record(data=identity, exception=RuntimeError("stale idempotency record"))
        if obj.order is Order.SUPERSEDED:
            return WorkResult(superseded=True)
        return self._once(identity, obj, context, in_hand)

    def _held(
        self, obj: S3ObjectRef, identity: dict[str, Any], result: WorkResult, context: LambdaContextLike
    ) -> WorkResult | None:
        """The result as it answers for ``obj``: this invocation's as it is, a kept answer written
        now, a replay whose transcript still holds. None: a superseded record (the ordering judges
        it), or a stale one."""
        if result.kept is not None:
            if not result.replayed:
                # This invocation paid for the answer and could not write it: the record keeps it.
                raise error_from_record(result.write_error or {}, answer_kept_in=result.kept["where"])
            return self._write_kept(obj, identity, result, context)
        if not result.replayed:
            return result
        if result.superseded:
            return None
        return self.done.replay_holds(obj, result)

    def _once(
        self,
        identity: dict[str, Any],
        obj: S3ObjectRef,
        context: LambdaContextLike,
        in_hand: list[Transcript],
    ) -> WorkResult:
        """``_transcribe`` behind the idempotency store (the Powertools boundary: a dict there)."""
        record = self._transcribe_once(identity=identity, obj=obj, context=context, in_hand=in_hand)
        return WorkResult.from_record(record)

    def _transcribe(
        self,
        *,
        identity: dict[str, Any],
        obj: S3ObjectRef,
        context: LambdaContextLike,
        in_hand: list[Transcript],
    ) -> dict[str, Any]:
        """Pay Deepgram for ``obj`` unless the transcript in the bucket says the work is done (the
        idempotency record is the fast path, not the only guard: it expires). The answer stays
        ``in_hand`` (a spool: bounded memory) so the formats are made from it, not read back."""
        query = self.preflight.query(obj)
        # When the output bucket can't be read, nothing is paid for (the error defers the object).
        slot = self.storage.look_transcript(obj)
        done = self.done.in_bucket(obj, query, slot)
        if done is not None:
            return done.to_record()
        transcript, delivery = self.call.call(obj, query, context)
        in_hand.append(transcript)  # the caller closes it
        answer = (transcript, delivery)
        written = self.writer.write(obj, query, identity, answer, context=context, kept=None, slot=slot)
        return written.to_record()

    def _write_kept(
        self, obj: S3ObjectRef, identity: dict[str, Any], result: WorkResult, context: LambdaContextLike
    ) -> WorkResult | None:
        """A stored result whose answer was paid for but not written: write it now, with no
        Deepgram request, and make the record say so. None when the kept copy is gone."""
        kept = result.kept or {}
        transcript = self.keeper.take(identity, kept)
        if transcript is None:
            return None
        logger.info(
            "Writing the answer kept by an earlier attempt; no new Deepgram request",
            extra={"kept_in": kept["where"], "deepgram_request_id": transcript.request_id},
        )
        query = self.preflight.query(obj)
        with transcript:
            answer = (transcript, str(kept.get("delivery") or "url"))
            written = self.writer.write(obj, query, identity, answer, context=context, kept=kept)
        # The record first: until it says written, the kept copy must stay (a replay writes it again).
        try:
            self._persistence.save_success(data=identity, result=written.to_record())
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "The transcript is written but its record still says kept; a replay writes it again",
                extra={"error": type(exc).__name__},
            )
            return written
        self.keeper.forget(identity, kept)
        return written


def answer_of(in_hand: list[Transcript]) -> IO[bytes] | None:
    """The JSON paid for and written in this invocation, rewound for the formats; None: none."""
    return in_hand[0].rewind() if in_hand else None


def close_all(in_hand: list[Transcript]) -> None:
    for transcript in in_hand:
        transcript.close()


def mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools calls this when it answers from the idempotency store instead of running."""
    if isinstance(response, dict):
        response = {**response, "replayed": True}
    return response
