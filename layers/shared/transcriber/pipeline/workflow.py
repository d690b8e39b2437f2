"""The per-object workflow: skip rules, the Deepgram call with retries, idempotency, outputs.

It knows nothing of Lambda events: ``transcriber.pipeline.adapters`` turns events into objects and
outcomes into the answer each caller expects."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Protocol

import boto3
import requests
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain import cost, keyterms, speakers, upload_options
from transcriber.domain.archive import archived_refusal
from transcriber.domain.events import invalid_name
from transcriber.domain.retry import InvocationRetryPolicy
from transcriber.errors import (
    BlockedError,
    ErrorDetails,
    PermanentError,
    RetryableError,
    TranscriptionError,
    error_from_record,
)
from transcriber.observability import logger, metrics, redact_url
from transcriber.services.answers import AnswerKeeper, KeptAnswers
from transcriber.services.capacity import CAPACITY_REASON, Unlimited
from transcriber.services.clients import new_client
from transcriber.services.completion import Completion
from transcriber.services.deepgram import DeepgramClient, Transcript
from transcriber.services.secrets import ApiKeyProvider
from transcriber.services.storage import SSE_C_REASON, Storage, StoredTranscript, sse_c_refused, utc_now
from transcriber.services.usage import record_cost, record_deepgram_error, record_failure_reason

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef
    from transcriber.services.capacity import CapacityRequeue, Governor

# Shared by every function that transcribes, so a retry never pays twice for one object version.
IDEMPOTENCY_KEY_PREFIX = "transcription"
MEDIA_CONTENT_TYPES = ("audio/", "video/")
MAX_MEDIA_BYTES = 2 * 1024**3  # Deepgram refuses files over 2 GB: don't pay for the attempt
DELIVERY_METRICS = {"url": "DeliveredByUrl", "bytes": "DeliveredByBytes"}
# Writes of one transcript within an invocation (each is botocore's own 2 attempts), while time allows.
OUTPUT_WRITE_ATTEMPTS = 3


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass
class Outcome:
    status: str  # transcribed | skipped | failed | retrying
    bucket: str
    key: str
    version: str | None = None
    output_key: str | None = None
    reason: str | None = None
    request_id: str | None = None
    replayed: bool = False
    delivery: str | None = None  # url | bytes: how the media reached Deepgram
    options: dict[str, str] | None = None  # the Deepgram options in force (transcribed)
    estimated_cost_usd: float | None = None  # transcribed: see transcriber.domain.cost
    outputs: dict[str, str] | None = None  # format -> key in the output bucket (transcriber.domain.formats)


def skip_reason(obj: S3ObjectRef, settings: Settings) -> str | None:
    """Why an object needs no Deepgram call, judged from the event alone (no AWS call)."""
    if obj.key.endswith("/"):
        return "folder-placeholder"
    if obj.size == 0:
        return "empty-object"
    if obj.bucket == settings.output_bucket and obj.key.startswith(
        (settings.transcript_prefix, settings.failure_prefix, settings.kept_answer_prefix)
    ):
        return "own-output"  # never transcribe our own transcripts: that would loop
    return None


def refuse_invalid_name(obj: S3ObjectRef) -> None:
    """A bucket or key that can't name an S3 object is permanent, before any AWS or Deepgram call."""
    problem = invalid_name(obj)
    if problem is not None:
        raise PermanentError(ErrorDetails(reason="invalid-object-name", message=problem))


def refuse_foreign_bucket(obj: S3ObjectRef, settings: Settings) -> None:
    """Only the buckets the stack is configured for (INPUT_BUCKET, ALLOWED_BUCKETS) are read: any
    other bucket an event names is permanent, before any AWS or Deepgram call."""
    if obj.bucket not in settings.allowed_buckets:
        raise PermanentError(
            ErrorDetails(
                reason="foreign-bucket",
                message=(
                    f"{obj.bucket[:80]!r} is not a bucket this stack transcribes "
                    f"(INPUT_BUCKET, ALLOWED_BUCKETS: {', '.join(sorted(settings.allowed_buckets))})"
                ),
            )
        )


def object_identity(obj: S3ObjectRef) -> dict[str, Any]:
    """The idempotency identity of one object version: bucket, key and the content's ETag, known
    whether or not the event carried a version id (``_resolve`` makes sure of the ETag), and the
    options Deepgram is paid for. Our own options (captions, speakers' names) are not in it: a replay
    renders the formats again with them, so renaming a speaker never pays Deepgram twice."""
    identity = {"bucket": obj.bucket, "key": obj.key, "etag": obj.etag or obj.version_id}
    return identity | upload_options.identity_part(speakers.for_deepgram(obj.options or ()))


# Failures decided from the event alone: no S3 call is made for them, not even to order them.
EVENT_ONLY_FAILURES = frozenset({"foreign-bucket", "invalid-object-name"})


def refuse_too_large(size: int | None) -> None:
    """Deepgram refuses files over 2 GB: fail before paying for the attempt."""
    if size is not None and size > MAX_MEDIA_BYTES:
        raise PermanentError(
            ErrorDetails(
                reason="too-large",
                message=f"{size} bytes is over Deepgram's 2 GB limit for pre-recorded audio",
            )
        )


def extension_of(key: str) -> str:
    return PurePosixPath(key).suffix.lower().lstrip(".")


class Transcriber:
    def __init__(
        self,
        settings: Settings,
        *,
        session: boto3.session.Session | None = None,
        s3: S3Client | None = None,
        secretsmanager: SecretsManagerClient | None = None,
        dynamodb: DynamoDBClient | None = None,
        http: requests.Session | None = None,
        events: EventBridgeClient | None = None,
        retry: InvocationRetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        capacity: Governor | None = None,
        kept_answers: KeptAnswers | None = None,
    ) -> None:
        self.settings = settings
        self.capacity = capacity or Unlimited()  # a slot of the Deepgram pool per request
        self.capacity_requeue: CapacityRequeue | None = None  # SQS ways in: see transcriber.pipeline.adapters
        self.retry = retry or InvocationRetryPolicy(max_attempts=settings.deepgram_max_attempts)
        self._sleep = sleep
        # One boto3 session for every client: each session loads the endpoint and service models
        # again, which is most of a cold start's first-invocation time.
        session = session or boto3.session.Session()
        s3_client = s3 or new_client(session, "s3")
        secretsmanager = secretsmanager or new_client(session, "secretsmanager")
        dynamodb = dynamodb or new_client(session, "dynamodb")
        self.storage = Storage(
            s3_client,
            settings.output_bucket,
            settings.transcript_prefix,
            settings.failure_prefix,
            home_bucket=settings.input_bucket,
            kept_answer_prefix=settings.kept_answer_prefix,
        )
        # Derived formats and completion events; the EventBridge client is made on first use.
        self.completion = Completion(
            settings, self.storage, (lambda: events) if events else (lambda: new_client(session, "events"))
        )
        # Answers paid for whose write failed, kept for the retry (transcriber.services.answers).
        self.keeper = AnswerKeeper(self.storage, kept_answers or KeptAnswers())
        self.api_keys = ApiKeyProvider(settings.deepgram_secret_id, settings.secret_max_age_s, secretsmanager)
        self.deepgram = DeepgramClient(settings.deepgram_api_url, http)
        self.idempotency = IdempotencyConfig(
            expires_after_seconds=settings.idempotency_ttl_s, response_hook=_mark_replayed
        )
        persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb)
        self._persistence = persistence
        self._transcribe_once = idempotent_function(
            data_keyword_argument="identity",
            persistence_store=persistence,
            config=self.idempotency,
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )(self._transcribe)

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
            refuse_invalid_name(obj)
            reason = skip_reason(obj, self.settings)
            if reason != "own-output":
                refuse_foreign_bucket(obj, self.settings)
            if reason is None:
                refuse_too_large(obj.size)  # from the event's size, before any AWS call
                obj, reason = self._resolve(obj)
            if reason is not None:
                return self._skipped(obj, reason)
            refuse_too_large(obj.size)
            obj = replace(obj, options=self.settings.upload_options.validate(obj.options or ()))
            keyterms.refuse_over_limit(self._query(obj))  # before any Deepgram request
            result = self._transcribe_current(obj, context, in_hand)
            superseded = bool(result.get("superseded"))
            outputs = (
                None if superseded else self.completion.finish(obj, result, started_at, answer_of(in_hand))
            )
        except IdempotencyAlreadyInProgressError:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            raise RetryableError(
                ErrorDetails(reason="in-progress-elsewhere", message="another invocation is transcribing it")
            ) from None
        except IdempotencyPersistenceLayerError as exc:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            raise RetryableError(
                ErrorDetails(reason="idempotency-store-error", message=type(exc).__name__)
            ) from exc
        except PermanentError as exc:
            return self._failed(obj, self._explained(obj, exc), started_at)
        except RetryableError as exc:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            logger.warning("Transcription will be retried", extra={"error": exc.as_record()})
            raise
        finally:
            close_all(in_hand)
        replayed = bool(result.pop("replayed", False))
        if result.get("superseded"):
            return self._skipped(obj, "superseded")
        if replayed:
            logger.info(
                "Already transcribed; no new Deepgram request", extra={"transcript_key": result["key"]}
            )
        return Outcome(
            "transcribed",
            obj.bucket,
            obj.key,
            obj.version_id or obj.etag,
            output_key=result["key"],
            request_id=result.get("request_id"),
            replayed=replayed,
            delivery=result.get("delivery"),
            options=result.get("options"),
            estimated_cost_usd=result.get("estimated_cost_usd"),
            outputs=outputs,
        )

    def _transcribe_current(
        self, obj: S3ObjectRef, context: LambdaContextLike, in_hand: list[Transcript]
    ) -> dict[str, Any]:
        """The idempotent transcription; a replay is trusted only while the transcript it names
        still exists and was made from this version (else the stale record is dropped and the
        object done again, unless a newer version has superseded it meanwhile)."""
        identity = object_identity(obj)
        result: dict[str, Any] = self._transcribe_once(
            identity=identity, obj=obj, context=context, in_hand=in_hand
        )
        if "kept" in result:
            if not result.get("replayed"):
                # This invocation paid for the answer and could not write it: the record keeps it.
                raise error_from_record(result["write_error"], answer_kept_in=result["kept"]["where"])
            written = self._write_kept(obj, identity, result, context)
            if written is not None:
                return written
        elif not result.get("replayed"):
            return result
        else:
            held = self._replay_holds(obj, result)
            if held is not None:
                return held
        logger.warning(
            "The stored result is stale (its transcript is gone or another version's, the version "
            "it was superseded by is gone, or its kept answer is gone); doing it again",
            extra={"transcript_key": result.get("key")},
        )
        self._persistence.delete_record(data=identity, exception=RuntimeError("stale idempotency record"))
        if self.storage.superseded(obj):
            return {"superseded": True}
        again: dict[str, Any] = self._transcribe_once(
            identity=identity, obj=obj, context=context, in_hand=in_hand
        )
        return again

    def _replay_holds(self, obj: S3ObjectRef, result: dict[str, Any]) -> dict[str, Any] | None:
        """A stored result that still answers for ``obj`` (None when it does not): its transcript
        exists and is this version's, and the replay reports that transcript's request id and
        options; or (a superseded result) a newer object still replaces it: the same bytes uploaded
        again after another version are the latest version again, with the same identity."""
        if result.get("superseded"):
            return result if self.storage.superseded(obj) else None
        try:
            stored = self.storage.stored_transcript(obj)
        except TranscriptionError as exc:  # can't read the output: trust the record, never pay twice
            logger.warning("Can't check the stored result's transcript", extra={"error": exc.as_record()})
            return result
        if stored is None or not stored.made_from(obj):
            return None
        return result | reported(stored)

    def _resolve(self, obj: S3ObjectRef) -> tuple[S3ObjectRef, str | None]:
        """Fill in size/ETag/version with one HEAD when the event lacks them or the extension is not
        decisive; then judge by extension, else by content type. When that HEAD reads the key's
        current object (the event names no version) and its ETag is not the event's, a newer
        upload has replaced this one: superseded, before paying Deepgram."""
        allowed = extension_of(obj.key) in self.settings.allowed_extensions
        reads_metadata = self.settings.upload_options.reads_metadata(obj.options)  # per-upload options
        # Without a HEAD, an archived object is told by S3's refusal to read it (see _explained);
        # only a refusal of restored copies needs a HEAD of every object.
        if (
            allowed
            and obj.size is not None
            and obj.etag
            and self.settings.transcribe_restored
            and not reads_metadata
        ):
            return obj, None
        info = self.storage.describe(obj)
        if obj.version_id is None and obj.etag and info.etag and info.etag != obj.etag:
            return obj, "superseded"
        obj = replace(obj, size=info.size, etag=info.etag or obj.etag, version_id=info.version_id)
        if reads_metadata:
            obj = replace(obj, options=upload_options.from_metadata(info.metadata))
        if info.sse_customer_algorithm:
            raise sse_c_refused(obj.uri)
        archived = archived_refusal(obj, info.archive, transcribe_restored=self.settings.transcribe_restored)
        if archived is not None:
            raise archived
        if info.size == 0:
            return obj, "empty-object"
        if not allowed and not info.content_type.lower().startswith(MEDIA_CONTENT_TYPES):
            return obj, "not-media"
        return obj, None

    def _explained(self, obj: S3ObjectRef, exc: PermanentError) -> PermanentError:
        """Deepgram could not fetch the URL of an object that skipped the HEAD: one HEAD tells
        whether it is archived, or stored with a customer-provided key (SSE-C) that a presigned
        URL can't carry (Deepgram's fetch was refused before any transcription)."""
        if exc.reason != "deepgram-remote-content":
            return exc
        try:
            state = self.storage.describe(obj).archive
        except PermanentError as refused:
            if refused.reason != SSE_C_REASON:
                return exc
            refused.details.extra.update(exc.details.extra)
            return refused
        except TranscriptionError:
            return exc
        archived = archived_refusal(obj, state, transcribe_restored=True)
        if archived is None:
            return exc
        archived.details.extra.update(exc.details.extra)
        return archived

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
        done = self._done_in_bucket(obj)
        if done is not None:
            return done
        transcript, delivery = self._call_deepgram(obj, context)
        in_hand.append(transcript)  # the caller closes it
        return self._write_answer(obj, identity, transcript, delivery, context=context, kept=None)

    def _done_in_bucket(self, obj: S3ObjectRef) -> dict[str, Any] | None:
        """The result of work already done, read from the transcript at ``obj``'s output key: made
        from this version, or from the same bytes (a copy in place), with the same options. A
        transcript of a newer upload supersedes ``obj``. None: there is work to pay for. When the
        output bucket can't be read, nothing is paid for (the error defers the object)."""
        stored = self.storage.stored_transcript(obj)
        if stored is None:
            return None
        if not stored.made_from(obj) and self.storage.older_than(obj, stored.metadata):
            return {"superseded": True}
        if not stored.answers(obj, upload_options.metadata(self._query(obj))):
            return None
        logger.info(
            "The transcript in the bucket is this work's; no Deepgram request",
            extra={"transcript_key": stored.key, "deepgram_request_id": stored.request_id},
        )
        return {
            "key": stored.key,
            "delivery": stored.delivery,
            "options": upload_options.in_force(self._query(obj)),
            "estimated_cost_usd": stored.estimated_cost_usd,
            "replayed": True,
        } | reported(stored)

    def _write_answer(
        self,
        obj: S3ObjectRef,
        identity: dict[str, Any],
        transcript: Transcript,
        delivery: str,
        *,
        context: LambdaContextLike,
        kept: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Write a paid answer (fresh, or ``kept`` by an earlier attempt). A fresh answer whose
        write fails is kept and the result says where, so the idempotency record holds it for the
        retry (which comes back through ``_write_kept``) instead of the retry paying again."""
        query = self._query(obj)
        usd = cost.estimate_usd(self.settings.pricing, transcript.duration_s, transcript.channels, query)
        more_metadata = upload_options.metadata(query) | cost.metadata(transcript.duration_s, usd)
        more_metadata |= speakers.speakers_metadata(obj.options or ())  # names: ours, not Deepgram's
        answer = {
            "request_id": transcript.request_id,
            "duration_s": transcript.duration_s,
            "delivery": delivery,
            "options": upload_options.in_force(query),
            "estimated_cost_usd": usd,
            "deepgram_latency_s": round(transcript.latency_s, 3),
        }
        try:
            if self.storage.superseded(obj):
                # A newer version of the key exists: its outcome wins; ours is not written (but
                # Deepgram was paid for it, so its cost counts).
                logger.info("A newer version replaced the object; not writing its transcript")
                record_cost(usd)
                return {"superseded": True, "request_id": transcript.request_id}
            key = self._write_transcript(obj, transcript, delivery, context, more_metadata)
            self.storage.delete_failure(obj)
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
            return answer | {"kept": where, "write_error": exc.as_record()}
        record_cost(usd)
        metrics.add_metric(name="TranscriptionsSucceeded", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name=DELIVERY_METRICS[delivery], unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="DeepgramLatency", unit=MetricUnit.Milliseconds, value=transcript.latency_s * 1000
        )
        if transcript.duration_s is not None:
            metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=transcript.duration_s)
        logger.info(
            "Transcript written",
            extra={
                "transcript_key": key,
                "deepgram_request_id": transcript.request_id,
                "identity": identity,
                "delivery": delivery,
            },
        )
        return answer | {"key": key, "transcribed_at": utc_now()}

    def _write_kept(
        self, obj: S3ObjectRef, identity: dict[str, Any], result: dict[str, Any], context: LambdaContextLike
    ) -> dict[str, Any] | None:
        """A stored result whose answer was paid for but not written: write it now, with no
        Deepgram request, and make the record say so. None when the kept copy is gone."""
        kept: dict[str, Any] = result["kept"]
        transcript = self.keeper.take(identity, kept)
        if transcript is None:
            return None
        logger.info(
            "Writing the answer kept by an earlier attempt; no new Deepgram request",
            extra={"kept_in": kept["where"], "deepgram_request_id": transcript.request_id},
        )
        with transcript:
            written = self._write_answer(
                obj, identity, transcript, str(kept.get("delivery") or "url"), context=context, kept=kept
            )
        # The record first: until it says written, the kept copy must stay (a replay writes it again).
        try:
            self._persistence.save_success(data=identity, result=written)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "The transcript is written but its record still says kept; a replay writes it again",
                extra={"error": type(exc).__name__},
            )
            return written
        self.keeper.forget(identity, kept)
        return written

    def _write_transcript(
        self,
        obj: S3ObjectRef,
        transcript: Transcript,
        delivery: str,
        context: LambdaContextLike,
        extra_metadata: dict[str, str],
    ) -> str:
        """Write the answer; a retryable failure is tried again while one more write fits in the
        time left (the answer is already paid for: a retry of the invocation would cost more)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.storage.write_transcript(obj, transcript, delivery, extra_metadata)
            except TranscriptionError as exc:
                if not exc.retryable or isinstance(exc, BlockedError) or attempt >= OUTPUT_WRITE_ATTEMPTS:
                    raise
                delay = self.retry.delay(attempt, None)
                if self._remaining_s(context) - delay < self.retry.reserve_s:
                    raise
                logger.warning(
                    "Writing the transcript failed; retrying",
                    extra={"attempt": attempt, "delay_s": round(delay, 3), "error": exc.as_record()},
                )
                self._sleep(delay)

    def _query(self, obj: S3ObjectRef) -> list[tuple[str, str]]:
        """The Deepgram query for this object: the stack's options, its folder's profile's
        (``transcriber.domain.profiles``), then its own, each laid over the one before."""
        folder = self.settings.profiles.options_for(obj.key, self.settings.deepgram)
        return upload_options.overlay(folder, obj.options or ()).query()

    def _call_deepgram(self, obj: S3ObjectRef, context: LambdaContextLike) -> tuple[Transcript, str]:
        """The Deepgram request with in-invocation retries; in auto mode, the bytes once after
        Deepgram could not fetch the URL. Returns the transcript and how the media was delivered."""
        api_key = self.api_keys.get()
        delivery = "bytes" if self.settings.delivery_mode == "bytes" else "url"
        reread_key = False
        attempt = 0
        while True:
            attempt += 1
            try:
                # A slot of the Deepgram pool, released as soon as Deepgram answers.
                with self.capacity.slot(context, self._query(obj), obj.lane):
                    return self._send(delivery, obj, api_key, context), delivery
            except TranscriptionError as exc:
                exc.details.extra.update(attempts=attempt, delivery=delivery)
                record_deepgram_error(exc)
                if self._falls_back(exc, delivery):
                    delivery = "bytes"
                    continue
                if exc.reason == "deepgram-invalid-credentials" and not reread_key:
                    # The key may have been rotated since we cached it: read it again, once.
                    logger.warning("Deepgram refused the key; re-reading the secret")
                    reread_key = True
                    api_key = self.api_keys.get(force_fetch=True)
                    continue
                self._sleep(self._retry_delay(exc, attempt, context))

    def _falls_back(self, exc: TranscriptionError, delivery: str) -> bool:
        """Auto mode: Deepgram could not fetch the URL (and retrying won't change that), so the
        bytes go instead. That request was refused before any transcription, so it is not billed."""
        if (
            self.settings.delivery_mode != "auto"
            or delivery != "url"
            or exc.reason != "deepgram-remote-content"
        ):
            return False
        logger.warning(
            "Deepgram could not fetch the URL; sending the object's bytes", extra={"error": exc.as_record()}
        )
        metrics.add_metric(name="DeliveryFallbacks", unit=MetricUnit.Count, value=1)
        return True

    def _retry_delay(self, exc: TranscriptionError, attempt: int, context: LambdaContextLike) -> float:
        """How long to wait before trying again; raises ``exc`` when it must not be retried here."""
        if not exc.retryable or isinstance(exc, BlockedError) or attempt >= self.retry.max_attempts:
            raise exc
        if exc.reason == CAPACITY_REASON:  # the governor already waited as long as time allows
            raise exc
        delay = self.retry.delay(attempt, exc.details.retry_after_s)
        if self._remaining_s(context) - delay < self.retry.reserve_s + self.retry.min_request_s:
            raise exc
        logger.warning(
            "Deepgram call failed; retrying",
            extra={"attempt": attempt, "delay_s": round(delay, 3), "error": exc.as_record()},
        )
        return delay

    def _send(self, delivery: str, obj: S3ObjectRef, api_key: str, context: LambdaContextLike) -> Transcript:
        connect_s, read_s = self._timeouts(context)
        if delivery == "url":
            media_url = self.storage.presign_get(obj, self.settings.presign_expiry_s)
            logger.info("Sending presigned URL to Deepgram", extra={"media_url": redact_url(media_url)})
            return self.deepgram.transcribe_url(
                api_key=api_key,
                media_url=media_url,
                options=self._query(obj),
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            )
        # A stream can be sent once: every attempt opens the object again.
        stream = self.storage.open_stream(obj)
        try:
            refuse_too_large(stream.length)
            logger.info("Streaming the object to Deepgram", extra={"content_length": stream.length})
            metrics.add_metric(name="BytesStreamed", unit=MetricUnit.Bytes, value=stream.length)
            return self.deepgram.transcribe_stream(
                api_key=api_key,
                stream=stream,
                length=stream.length,
                content_type=stream.content_type,
                options=self._query(obj),
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            )
        finally:
            stream.close()

    @staticmethod
    def _remaining_s(context: LambdaContextLike) -> float:
        return context.get_remaining_time_in_millis() / 1000

    def _timeouts(self, context: LambdaContextLike) -> tuple[float, float]:
        budget = self._remaining_s(context) - self.retry.reserve_s
        if budget < self.retry.min_request_s:
            raise RetryableError(
                ErrorDetails(
                    reason="insufficient-time",
                    message=f"only {budget:.1f} s left for Deepgram; leaving the object for a retry",
                )
            )
        connect_s = min(self.retry.max_connect_timeout_s, budget / 4)
        return connect_s, budget - connect_s

    # -- outcomes ----------------------------------------------------------------------------
    def _skipped(self, obj: S3ObjectRef, reason: str) -> Outcome:
        logger.info("Skipping object", extra={"skip_reason": reason})
        metrics.add_metric(name="TranscriptionsSkipped", unit=MetricUnit.Count, value=1)
        return Outcome("skipped", obj.bucket, obj.key, obj.version_id or obj.etag, reason=reason)

    def _failed(self, obj: S3ObjectRef, exc: PermanentError, started_at: str) -> Outcome:
        event_only = exc.reason in EVENT_ONLY_FAILURES
        if not event_only and self.storage.superseded(obj):
            return self._skipped(obj, "superseded")  # the newer version's outcome stands alone
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
        key = self.storage.write_failure(obj, record)
        if not event_only:
            self.storage.delete_stale_transcript(obj)
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


def answer_of(in_hand: list[Transcript]) -> IO[bytes] | None:
    """The JSON paid for and written in this invocation, rewound for the formats; None: none."""
    return in_hand[0].rewind() if in_hand else None


def close_all(in_hand: list[Transcript]) -> None:
    for transcript in in_hand:
        transcript.close()


def reported(stored: StoredTranscript) -> dict[str, Any]:
    """What a replay reports of the transcript in the bucket: its request id and options."""
    facts: dict[str, Any] = {"request_id": stored.request_id}
    options = stored.options()
    if options is not None:
        facts["options"] = options
    return {name: value for name, value in facts.items() if value is not None}


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools calls this when it answers from the idempotency store instead of running."""
    if isinstance(response, dict):
        response = {**response, "replayed": True}
    return response
