"""Turn an incoming event into the list of S3 objects to transcribe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event

from transcriber.errors import ErrorDetails, PermanentError
from transcriber.observability import logger

ACCEPTED_SHAPES = "an S3 event notification ({'Records': [{'eventSource': 'aws:s3', ...}]})"


@dataclass(frozen=True)
class S3ObjectRef:
    """One object version to transcribe; the key is decoded (S3 events URL-encode it)."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def unrecognised_event(detail: str) -> PermanentError:
    return PermanentError(
        ErrorDetails(
            reason="unrecognised-event", message=f"{detail}; accepted event shapes: {ACCEPTED_SHAPES}"
        )
    )


def parse_event(event: Any) -> list[S3ObjectRef]:
    if not isinstance(event, Mapping):
        raise unrecognised_event(f"the event is a {type(event).__name__}, not a JSON object")
    if event.get("Event") == "s3:TestEvent":
        logger.info("Skipping s3:TestEvent", extra={"skip_reason": "s3-test-event"})
        return []
    records = event.get("Records")
    if isinstance(records, list) and records and all(_is_s3_record(r) for r in records):
        return _from_s3_notification(S3Event(dict(event)))
    raise unrecognised_event("unrecognised event")


def _is_s3_record(record: Any) -> bool:
    return isinstance(record, Mapping) and record.get("eventSource") == "aws:s3"


def _from_s3_notification(event: S3Event) -> list[S3ObjectRef]:
    objects: list[S3ObjectRef] = []
    for record in event.records:
        if not record.event_name.startswith("ObjectCreated:"):
            logger.info(
                "Skipping S3 record that is not an upload",
                extra={"event_name": record.event_name, "skip_reason": "not-object-created"},
            )
            continue
        try:
            s3_object = record.s3.get_object
            objects.append(
                S3ObjectRef(
                    bucket=record.s3.bucket.name,
                    # get_object.key is still URL-encoded: 'a+b%C3%A9.wav' is 'a bé.wav'.
                    key=_decode_key(s3_object.key),
                    version_id=s3_object.version_id or None,
                    size=int(s3_object["size"]) if s3_object.get("size") is not None else None,
                    etag=s3_object.etag or None,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise unrecognised_event(f"malformed S3 record ({type(exc).__name__}: {exc})") from None
    return objects


def _decode_key(raw_key: str) -> str:
    if not isinstance(raw_key, str) or not raw_key:
        raise ValueError("empty object key")
    return unquote_plus(raw_key)
