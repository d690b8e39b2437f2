"""One error taxonomy: every failure is classified once, as retryable or permanent, with a reason.

Retryable errors must reach Lambda (or SQS) so the work is tried again; permanent errors end in a
failure record. ``BlockedError`` is retryable work that no amount of quick retrying will fix (no
credit, revoked key, missing secret): it stays queued, backing off long, until a person acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorDetails:
    """What is known about a failure, safe to log and to store in a failure record."""

    reason: str
    message: str
    http_status: int | None = None
    deepgram_code: str | None = None
    request_id: str | None = None
    retry_after_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TranscriptionError(Exception):
    """Base class; ``retryable`` says whether trying again later can succeed."""

    retryable: bool = False
    error_class: str = "error"

    def __init__(self, details: ErrorDetails) -> None:
        super().__init__(f"{details.reason}: {details.message}")
        self.details = details

    @property
    def reason(self) -> str:
        return self.details.reason

    def as_record(self) -> dict[str, Any]:
        d = self.details
        return {
            "class": self.error_class,
            "retryable": self.retryable,
            "reason": d.reason,
            "message": d.message,
            "http_status": d.http_status,
            "deepgram_error_code": d.deepgram_code,
            "deepgram_request_id": d.request_id,
            **d.extra,
        }


class RetryableError(TranscriptionError):
    """Transient: throttling, outages, timeouts, dropped connections."""

    retryable = True
    error_class = "retryable"


class BlockedError(RetryableError):
    """Affects every object until a person acts (credit, key, configuration): keep the work waiting."""

    error_class = "blocked"


class PermanentError(TranscriptionError):
    """Retrying the same request cannot succeed: bad audio, bad options, no access to the model."""

    error_class = "permanent"


class ConfigurationError(BlockedError):
    """The deployment is misconfigured (missing variable, bad secret): fix it, then redrive."""

    error_class = "configuration"


def configuration_error(reason: str, message: str) -> ConfigurationError:
    return ConfigurationError(ErrorDetails(reason=reason, message=message))


_CLASSES: dict[str, type[TranscriptionError]] = {
    cls.error_class: cls for cls in (RetryableError, BlockedError, PermanentError, ConfigurationError)
}


def error_from_record(record: dict[str, Any], **extra: Any) -> TranscriptionError:
    """The error ``as_record`` described (stored in an idempotency record), raised again."""
    known = {"class", "retryable", "reason", "message", "http_status"}
    known |= {"deepgram_error_code", "deepgram_request_id"}
    details = ErrorDetails(
        reason=str(record["reason"]),
        message=str(record["message"]),
        http_status=record.get("http_status"),
        deepgram_code=record.get("deepgram_error_code"),
        request_id=record.get("deepgram_request_id"),
        extra={k: v for k, v in record.items() if k not in known} | extra,
    )
    return _CLASSES.get(str(record.get("class")), RetryableError)(details)
