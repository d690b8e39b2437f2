"""The per-object workflow: skip rules, the Deepgram call with retries, idempotency, outputs.

It knows nothing of Lambda events: ``transcriber.adapters`` turns events into objects and
outcomes into the answer each caller expects."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

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

from transcriber.clients import new_client
from transcriber.completion import Completion
from transcriber.deepgram import DeepgramClient, Transcript
from transcriber.errors import BlockedError, ErrorDetails, PermanentError, RetryableError, TranscriptionError
from transcriber.events import invalid_name
from transcriber.observability import logger, metrics, redact_url
from transcriber.retry import InvocationRetryPolicy
from transcriber.secrets import ApiKeyProvider
from transcriber.storage import Storage, sse_c_refused, utc_now

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from transcriber.config import Settings
    from transcriber.events import S3ObjectRef

# Shared by every function that transcribes, so a retry never pays twice for one object version.
IDEMPOTENCY_KEY_PREFIX = "transcription"
MEDIA_CONTENT_TYPES = ("audio/", "video/")
MAX_MEDIA_BYTES = 2 * 1024**3  # Deepgram refuses files over 2 GB: don't pay for the attempt
DELIVERY_METRICS = {"url": "DeliveredByUrl", "bytes": "DeliveredByBytes"}


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
    outputs: dict[str, str] | None = None  # format -> key in the output bucket (transcriber.formats)


def skip_reason(obj: S3ObjectRef, settings: Settings) -> str | None:
    """Why an object needs no Deepgram call, judged from the event alone (no AWS call)."""
    if obj.key.endswith("/"):
        return "folder-placeholder"
    if obj.size == 0:
        return "empty-object"
    if obj.bucket == settings.output_bucket and obj.key.startswith(
        (settings.transcript_prefix, settings.failure_prefix)
    ):
        return "own-output"  # never transcribe our own transcripts: that would loop
    return None


def refuse_invalid_name(obj: S3ObjectRef) -> None:
    """A bucket or key that can't name an S3 object is permanent, before any AWS or Deepgram call."""
    problem = invalid_name(obj)
    if problem is not None:
        raise PermanentError(ErrorDetails(reason="invalid-object-name", message=problem))


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
    ) -> None:
        self.settings = settings
        self.retry = retry or InvocationRetryPolicy(max_attempts=settings.deepgram_max_attempts)
        self._sleep = sleep
        # One boto3 session for every client: each session loads the endpoint and service models
        # again, which is most of a cold start's first-invocation time.
        session = session or boto3.session.Session()
        s3_client = s3 or new_client(session, "s3")
        secretsmanager = secretsmanager or new_client(session, "secretsmanager")
        dynamodb = dynamodb or new_client(session, "dynamodb")
        self.storage = Storage(
            s3_client, settings.output_bucket, settings.transcript_prefix, settings.failure_prefix
        )
        # Derived formats and completion events; the EventBridge client is made on first use.
        self.completion = Completion(
            settings, self.storage, (lambda: events) if events else (lambda: new_client(session, "events"))
        )
        self.api_keys = ApiKeyProvider(settings.deepgram_secret_id, settings.secret_max_age_s, secretsmanager)
        self.deepgram = DeepgramClient(settings.deepgram_api_url, http)
        self.query = settings.deepgram.query()
        self.idempotency = IdempotencyConfig(
            expires_after_seconds=settings.idempotency_ttl_s, response_hook=_mark_replayed
        )
        persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb)
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
        try:
            refuse_invalid_name(obj)
            reason = skip_reason(obj, self.settings)
            if reason is None:
                obj, reason = self._resolve(obj)
            if reason is not None:
                return self._skipped(obj, reason)
            refuse_too_large(obj.size)
            identity = {"bucket": obj.bucket, "key": obj.key, "version": obj.version_id or obj.etag}
            result = self._transcribe_once(identity=identity, obj=obj, context=context)
            outputs = self.completion.finish(obj, result, started_at)
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
            return self._failed(obj, exc, started_at)
        except RetryableError as exc:
            metrics.add_metric(name="TranscriptionsDeferred", unit=MetricUnit.Count, value=1)
            logger.warning("Transcription will be retried", extra={"error": exc.as_record()})
            raise
        replayed = bool(result.pop("replayed", False))
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
            outputs=outputs,
        )

    def _resolve(self, obj: S3ObjectRef) -> tuple[S3ObjectRef, str | None]:
        """Fill in size/ETag/version with one HEAD when the event lacks them or the extension is not
        decisive; then judge by extension, else by content type."""
        allowed = extension_of(obj.key) in self.settings.allowed_extensions
        if allowed and obj.size is not None and (obj.etag or obj.version_id):
            return obj, None
        info = self.storage.describe(obj)
        obj = replace(obj, size=info.size, etag=info.etag or obj.etag, version_id=info.version_id)
        if info.sse_customer_algorithm:
            raise sse_c_refused(obj.uri)
        if info.size == 0:
            return obj, "empty-object"
        if not allowed and not info.content_type.lower().startswith(MEDIA_CONTENT_TYPES):
            return obj, "not-media"
        return obj, None

    def _transcribe(
        self, *, identity: dict[str, Any], obj: S3ObjectRef, context: LambdaContextLike
    ) -> dict[str, Any]:
        transcript, delivery = self._call_deepgram(obj, context)
        key = self.storage.write_transcript(obj, transcript, delivery)
        self.storage.delete_failure(obj)
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
        return {
            "key": key,
            "request_id": transcript.request_id,
            "duration_s": transcript.duration_s,
            "delivery": delivery,
            "deepgram_latency_s": round(transcript.latency_s, 3),
            "transcribed_at": utc_now(),
        }

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
                return self._send(delivery, obj, api_key, context), delivery
            except TranscriptionError as exc:
                exc.details.extra.update(attempts=attempt, delivery=delivery)
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
                options=self.query,
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
                options=self.query,
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
        record = {
            **exc.as_record(),
            "attempts": exc.details.extra.get("attempts", 0),
            "first_attempt_at": started_at,
            "failed_at": utc_now(),
        }
        key = self.storage.write_failure(obj, record)
        metrics.add_metric(name="TranscriptionsFailed", unit=MetricUnit.Count, value=1)
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


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools calls this when it answers from the idempotency store instead of running."""
    if isinstance(response, dict):
        response = {**response, "replayed": True}
    return response
