"""After the transcript JSON is stored: the derived formats, then the completion event.

``Completion.finish`` runs on every successful processing of an object, the first one and every
replay (a retry, a duplicate delivery): it reads the stored JSON back from the output bucket (so no
second Deepgram request is ever needed), writes every derived format again (same content), and
publishes ``Transcript Created``. A failed write or publish raises, the object is retried, and the
replay completes what is missing. So the event is delivered at least once: a consumer de-duplicates
on ``detail.deepgram.request_id`` (``detail.replayed`` is true on a replay).

``Completion.failed`` publishes ``Transcription Failed`` after the failure record is written; a
publish failure there is logged and counted (``CompletionEventsFailed``), not raised: the failure
record in the output bucket stays the source of truth, and retrying the object would pay Deepgram
again for a permanent failure.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain import formats, speakers
from transcriber.errors import BlockedError, ErrorDetails, PermanentError, RetryableError, TranscriptionError
from transcriber.observability import logger, metrics
from transcriber.services.storage import utc_now

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef
    from transcriber.domain.work import WorkResult
    from transcriber.services.storage import Storage

EVENT_SOURCE = "deepgram-s3-transcriber"
TRANSCRIPT_CREATED = "Transcript Created"
TRANSCRIPTION_FAILED = "Transcription Failed"
DETAIL_VERSION = "1"
# A bus that does not exist or a role without events:PutEvents: every object alike, until fixed.
_DEPLOYMENT_FAULTS = frozenset({"AccessDeniedException", "AccessDenied", "ResourceNotFoundException"})


class EventPublisher:
    """``events:PutEvents`` of one event; every failure leaves here classified."""

    def __init__(self, client: Callable[[], EventBridgeClient], bus_name: str) -> None:
        self._client_factory = client
        self._client: EventBridgeClient | None = None
        self.bus_name = bus_name

    @property
    def client(self) -> EventBridgeClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, ensure_ascii=False),
            "EventBusName": self.bus_name,
        }
        try:
            response = self.client.put_events(Entries=[entry])  # type: ignore[list-item]
        except (ClientError, BotoCoreError) as exc:
            raise _publish_error(exc, self.bus_name) from exc
        if response.get("FailedEntryCount"):
            failed = response["Entries"][0]
            why = f"{detail_type} on {self.bus_name}: {failed.get('ErrorCode')} {failed.get('ErrorMessage')}"
            raise RetryableError(ErrorDetails(reason="event-publish-failed", message=why))


def _publish_error(exc: ClientError | BotoCoreError, bus_name: str) -> TranscriptionError:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _DEPLOYMENT_FAULTS:
            return BlockedError(
                ErrorDetails(
                    reason="event-bus-unusable",
                    message=f"event bus {bus_name}: {code}; check EventBusName and the function's role",
                )
            )
        message = f"event bus {bus_name}: {code}"
    else:
        message = f"event bus {bus_name}: {type(exc).__name__}"
    return RetryableError(ErrorDetails(reason="event-publish-failed", message=message))


class Completion:
    def __init__(self, settings: Settings, storage: Storage, events: Callable[[], EventBridgeClient]) -> None:
        self.settings = settings
        self.storage = storage
        self.publisher = EventPublisher(events, settings.event_bus_name)
        self.derived = tuple(f for f in settings.output_formats if f in formats.DERIVED_FORMATS)

    def finish(
        self, obj: S3ObjectRef, result: WorkResult, started_at: str, answer: IO[bytes] | None = None
    ) -> dict[str, str]:
        """Derived formats and the ``Transcript Created`` event; returns the output key per format.
        ``answer``: the JSON just written, still in hand (a seekable spool); without it (a replay)
        the stored JSON is read back, a chunk at a time."""
        keys = {"json": str(result.key)}
        if not self.derived and not self.settings.completion_events:
            return keys
        begun = time.monotonic()
        if answer is not None:
            rendered = self._render(obj, answer)
        else:
            with tempfile.TemporaryFile() as stored:
                self.storage.read_output(keys["json"], stored)
                rendered = self._render(obj, stored)
        try:
            keys |= self._write(obj, rendered)
        finally:
            rendered.close()
        _report_repairs(rendered.repairs)
        metrics.add_metric(
            name="FormatsLatency", unit=MetricUnit.Milliseconds, value=(time.monotonic() - begun) * 1000
        )
        if self.settings.completion_events:
            detail = self._created_detail(obj, result, rendered.summary, keys, started_at)
            not_made = {n.format: n.reason for n in rendered.not_made if n.format in self.derived}
            if not_made:  # only then: the event keeps its published shape otherwise
                detail["outputs"]["not_made"] = not_made
            self.publisher.publish(TRANSCRIPT_CREATED, detail)
            metrics.add_metric(name="CompletionEventsPublished", unit=MetricUnit.Count, value=1)
        return keys

    def _render(self, obj: S3ObjectRef, source: IO[bytes]) -> formats.Rendered:
        try:
            style = speakers.style_for(self.settings.caption_style, obj.options or ())
            return formats.render(source, self.derived, style)
        except formats.TranscriptFormatError as exc:
            raise PermanentError(ErrorDetails(reason="transcript-unreadable", message=str(exc))) from exc

    def _write(self, obj: S3ObjectRef, rendered: formats.Rendered) -> dict[str, str]:
        """Each derived format written (or, not made, an earlier version's removed) at once: the
        S3 calls are independent, so the object waits for the slowest, not for their sum."""
        request_id = rendered.summary.request_id
        with ThreadPoolExecutor(max_workers=max(1, len(self.derived))) as pool:
            calls: list[tuple[str, Future[Any]]] = []
            for name in self.derived:
                file = rendered.files.get(name)
                if file is None:
                    self._report_not_made(name, rendered)
                    # An earlier version of the object may have left one: it would contradict this transcript.
                    calls.append((name, pool.submit(self.storage.delete_format, obj, name)))
                    continue
                content_type = formats.CONTENT_TYPES[name]
                write = pool.submit(self.storage.write_format, obj, name, file, content_type, request_id)
                calls.append((name, write))
            if self.settings.completion_events:
                _ = self.publisher.client  # made while the writes are in flight: a cold start's first event
            # In the formats' order: the first failure raises, once every call has ended.
            return {name: key for name, key in ((name, call.result()) for name, call in calls) if key}

    @staticmethod
    def _report_not_made(name: str, rendered: formats.Rendered) -> None:
        why = {n.format: n for n in rendered.not_made}
        not_made = why.get(name, formats.NotMade(name, rendered.skipped.get(name, "not-made")))
        logger.info(
            "No %s file: %s",
            name,
            not_made.reason,
            extra={"format": name, "skip_reason": not_made.reason, "skip_detail": not_made.detail},
        )
        metrics.add_metric(name="CaptionsSkipped", unit=MetricUnit.Count, value=1)

    def _created_detail(
        self,
        obj: S3ObjectRef,
        result: WorkResult,
        summary: formats.TranscriptSummary,
        keys: dict[str, str],
        started_at: str,
    ) -> dict[str, Any]:
        options = result.options
        model = (options or {}).get("model") or self.settings.deepgram.model
        detail: dict[str, Any] = {
            "version": DETAIL_VERSION,
            "environment": self.settings.environment_name,
            "source": _source(obj),
            "outputs": {"bucket": self.storage.output_bucket, "keys": keys},
            "audio": {
                "duration_s": summary.duration_s,
                "channels": summary.channels,
                "detected_language": summary.detected_languages[0] if summary.detected_languages else None,
                "detected_languages": summary.detected_languages,
                "words": summary.words,
            },
            "deepgram": {
                "request_id": summary.request_id or result.request_id,
                "model": model,
                "model_names": summary.model_names,
                "delivery": result.delivery,
            },
            "replayed": result.replayed,
            "timings": {
                "started_at": started_at,
                "transcribed_at": result.transcribed_at,
                "completed_at": utc_now(),
                "deepgram_latency_s": result.deepgram_latency_s,
            },
        }
        if options is not None:
            detail["deepgram"]["options"] = options
        names = speakers.speakers_detail(obj.options or ())
        if names is not None:
            detail["speakers"] = names
        if result.estimated_cost_usd is not None:
            detail["estimated_cost_usd"] = result.estimated_cost_usd
        return detail

    def failed(self, obj: S3ObjectRef, record: dict[str, Any], failure_key: str) -> None:
        """``Transcription Failed``, best effort (see the module's docstring)."""
        if not self.settings.completion_events:
            return
        detail = {
            "version": DETAIL_VERSION,
            "environment": self.settings.environment_name,
            "source": _source(obj),
            "outputs": {"bucket": self.storage.output_bucket, "keys": {"failure": failure_key}},
            "error": {
                key: record.get(key)
                for key in (
                    "reason",
                    "message",
                    "http_status",
                    "deepgram_error_code",
                    "deepgram_request_id",
                    "attempts",
                )
            },
            "timings": {"started_at": record.get("first_attempt_at"), "failed_at": record.get("failed_at")},
        }
        try:
            self.publisher.publish(TRANSCRIPTION_FAILED, detail)
        except TranscriptionError as exc:
            metrics.add_metric(name="CompletionEventsFailed", unit=MetricUnit.Count, value=1)
            logger.error("Could not publish the failure event", extra={"error": exc.as_record()})
            return
        metrics.add_metric(name="CompletionEventsPublished", unit=MetricUnit.Count, value=1)


def _report_repairs(repairs: formats.Repairs) -> None:
    """A malformed answer's formats were made from what was valid in it: say so, and count it."""
    if not repairs.any:
        return
    metrics.add_metric(name="AnswerRepaired", unit=MetricUnit.Count, value=1)
    logger.warning(
        "Deepgram's answer was malformed; its formats were made from what is valid in it",
        extra={
            "words_skipped": repairs.words_skipped,
            "words_retimed": repairs.words_retimed,
            "paragraphs_skipped": repairs.paragraphs_skipped,
        },
    )


def _source(obj: S3ObjectRef) -> dict[str, Any]:
    return {"bucket": obj.bucket, "key": obj.key, "version_id": obj.version_id, "etag": obj.etag}
