"""The Deepgram step: one billable request with a slot of the capacity pool, retried within the
invocation while time allows; in auto mode the bytes once after Deepgram could not fetch the URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from transcriber.errors import BlockedError, ErrorDetails, RetryableError, TranscriptionError
from transcriber.observability import logger, metrics, redact_url
from transcriber.pipeline.outcome import LambdaContextLike, remaining_s
from transcriber.pipeline.preflight import refuse_too_large
from transcriber.services.capacity import CAPACITY_REASON
from transcriber.services.usage import record_deepgram_error

if TYPE_CHECKING:
    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef
    from transcriber.domain.retry import InvocationRetryPolicy
    from transcriber.services.capacity import Governor
    from transcriber.services.deepgram import DeepgramClient, Transcript
    from transcriber.services.secrets import ApiKeyProvider
    from transcriber.services.source import SourceObjects

Query = list[tuple[str, str]]


class DeepgramCall:
    def __init__(
        self,
        settings: Settings,
        source: SourceObjects,
        *,
        api_keys: ApiKeyProvider,
        deepgram: DeepgramClient,
        capacity: Governor,
        retry: InvocationRetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.source = source
        self.api_keys = api_keys
        self.deepgram = deepgram
        self.capacity = capacity  # a slot of the Deepgram pool per request
        self.retry = retry
        self._sleep = sleep

    def call(self, obj: S3ObjectRef, query: Query, context: LambdaContextLike) -> tuple[Transcript, str]:
        """The Deepgram request with in-invocation retries. Returns the answer and how the media
        was delivered (url | bytes)."""
        api_key = self.api_keys.get()
        delivery = "bytes" if self.settings.delivery_mode == "bytes" else "url"
        reread_key = False
        attempt = 0
        while True:
            attempt += 1
            try:
                # A slot of the Deepgram pool, released as soon as Deepgram answers.
                with self.capacity.slot(context, query, obj.lane):
                    return self._send(delivery, obj, query, api_key, context), delivery
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
        if remaining_s(context) - delay < self.retry.reserve_s + self.retry.min_request_s:
            raise exc
        logger.warning(
            "Deepgram call failed; retrying",
            extra={"attempt": attempt, "delay_s": round(delay, 3), "error": exc.as_record()},
        )
        return delay

    def _send(
        self, delivery: str, obj: S3ObjectRef, query: Query, api_key: str, context: LambdaContextLike
    ) -> Transcript:
        connect_s, read_s = self._timeouts(context)
        if delivery == "url":
            media_url = self.source.presign_get(obj, self.settings.presign_expiry_s)
            logger.info("Sending presigned URL to Deepgram", extra={"media_url": redact_url(media_url)})
            return self.deepgram.transcribe_url(
                api_key=api_key,
                media_url=media_url,
                options=query,
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            )
        # A stream can be sent once: every attempt opens the object again.
        stream = self.source.open_stream(obj)
        try:
            refuse_too_large(stream.length)
            logger.info("Streaming the object to Deepgram", extra={"content_length": stream.length})
            metrics.add_metric(name="BytesStreamed", unit=MetricUnit.Bytes, value=stream.length)
            return self.deepgram.transcribe_stream(
                api_key=api_key,
                stream=stream,
                length=stream.length,
                content_type=stream.content_type,
                options=query,
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            )
        finally:
            stream.close()

    def _timeouts(self, context: LambdaContextLike) -> tuple[float, float]:
        budget = remaining_s(context) - self.retry.reserve_s
        if budget < self.retry.min_request_s:
            raise RetryableError(
                ErrorDetails(
                    reason="insufficient-time",
                    message=f"only {budget:.1f} s left for Deepgram; leaving the object for a retry",
                )
            )
        connect_s = min(self.retry.max_connect_timeout_s, budget / 4)
        return connect_s, budget - connect_s
