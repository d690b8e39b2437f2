"""Preflight: everything decided before the idempotency store and Deepgram are asked.

The object's name and bucket, the skip rules, its size, then (one HEAD of the key's current object,
when the event is not decisive or per-upload options are read from the object's metadata) its
archive tier, SSE-C, its per-upload options and whether a newer upload replaced it; then the
options and (once per container) the event bus are checked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from transcriber.domain import keyterms, speakers, upload_options
from transcriber.domain.archive import archived_refusal
from transcriber.domain.events import invalid_name
from transcriber.domain.ordering import by_current_object
from transcriber.domain.work import Order
from transcriber.errors import ErrorDetails, PermanentError, TranscriptionError
from transcriber.services.source import SSE_C_REASON, sse_c_refused

if TYPE_CHECKING:
    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef
    from transcriber.services.event_bus import EventBusCheck
    from transcriber.services.source import ObjectInfo, SourceObjects

MEDIA_CONTENT_TYPES = ("audio/", "video/")
MAX_MEDIA_BYTES = 2 * 1024**3  # Deepgram refuses files over 2 GB: don't pay for the attempt
# Failures decided from the event alone: no S3 call is made for them, not even to order them.
EVENT_ONLY_FAILURES = frozenset({"foreign-bucket", "invalid-object-name"})


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


def object_identity(obj: S3ObjectRef) -> dict[str, Any]:
    """The idempotency identity of one object version: bucket, key and the content's ETag, known
    whether or not the event carried a version id (preflight makes sure of the ETag), and the
    options Deepgram is paid for. Our own options (captions, speakers' names) are not in it: a replay
    renders the formats again with them, so renaming a speaker never pays Deepgram twice."""
    identity = {"bucket": obj.bucket, "key": obj.key, "etag": obj.etag or obj.version_id}
    return identity | upload_options.identity_part(speakers.for_deepgram(obj.options or ()))


def _other_bytes(obj: S3ObjectRef, info: ObjectInfo) -> bool:
    return bool(obj.etag and info.etag and info.etag != obj.etag)


class Preflight:
    def __init__(self, settings: Settings, source: SourceObjects, bus: EventBusCheck | None = None) -> None:
        self.settings = settings
        self.source = source
        self.bus = bus  # None: completion events are off

    def look(self, obj: S3ObjectRef) -> tuple[S3ObjectRef, str | None]:
        """The object as it will be transcribed (size, ETag, version, options filled in), or the
        reason it is skipped; ``PermanentError`` when it can never be transcribed."""
        refuse_invalid_name(obj)
        reason = skip_reason(obj, self.settings)
        if reason != "own-output":
            refuse_foreign_bucket(obj, self.settings)
        if reason is None:
            refuse_too_large(obj.size)  # from the event's size, before any AWS call
            obj, reason = self.resolve(obj)
        return obj, reason

    def check(self, obj: S3ObjectRef) -> S3ObjectRef:
        """The looked-at object's size and options, and the event bus its completion event goes to
        (``BlockedError`` while it is missing), checked before any Deepgram request."""
        if self.bus is not None:
            self.bus.check()  # one DescribeEventBus per container, once the bus is found
        refuse_too_large(obj.size)
        obj = replace(obj, options=self.settings.upload_options.validate(obj.options or ()))
        keyterms.refuse_over_limit(self.query(obj))
        return obj

    def query(self, obj: S3ObjectRef) -> list[tuple[str, str]]:
        """The Deepgram query for this object: the stack's options, its folder's profile's
        (``transcriber.domain.profiles``), then its own, each laid over the one before."""
        folder = self.settings.profiles.options_for(obj.key, self.settings.deepgram)
        return upload_options.overlay(folder, obj.options or ()).query()

    def resolve(self, obj: S3ObjectRef) -> tuple[S3ObjectRef, str | None]:
        """Fill in size/ETag/version with one HEAD when the event lacks them or the extension is not
        decisive; then judge by extension, else by content type. When that HEAD reads the key's
        current object (the event names no version) and its ETag is not the event's, a newer
        upload has replaced this one: superseded, before paying Deepgram."""
        allowed = extension_of(obj.key) in self.settings.allowed_extensions
        reads_metadata = self.settings.upload_options.reads_metadata(obj.options)  # per-upload options
        if self._decisive(obj, allowed=allowed, reads_metadata=reads_metadata):
            return obj, None
        info, order = self._current(obj)
        if info is None:
            return obj, "superseded"
        obj = replace(
            obj, size=info.size, etag=info.etag or obj.etag, version_id=info.version_id, order=order
        )
        if reads_metadata:
            obj = replace(obj, options=upload_options.from_metadata(info.metadata))
        self._refuse_unreadable(obj, info)
        return obj, self._judged(info, allowed=allowed)

    def _current(self, obj: S3ObjectRef) -> tuple[ObjectInfo | None, Order | None]:
        """The HEAD of the key's current object and the order it tells (``domain.ordering``), which
        travels with the object; no info: a newer upload (other bytes) replaced it. A newer version
        of the same bytes (its transcript is ``obj``'s too: a replay may answer), or no current
        object (deleted since): the HEAD of ``obj``'s own version. None: not told, decided later."""
        try:
            info = self.source.describe(obj, current=True)
        except PermanentError as exc:
            if exc.reason != "s3-object-missing" or not obj.version_id:
                raise
            return self.source.describe(obj), None
        order = by_current_object(obj, info.version_id, info.etag)
        if order is not Order.SUPERSEDED:
            return info, None if order is Order.UNKNOWN else order
        if _other_bytes(obj, info):
            return None, order
        return self.source.describe(obj), order  # the same bytes again: this version's own facts

    def _decisive(self, obj: S3ObjectRef, *, allowed: bool, reads_metadata: bool) -> bool:
        """The event alone says enough. Without a HEAD, an archived object is told by S3's refusal
        to read it (see ``explained``); only a refusal of restored copies needs a HEAD of every object."""
        known = obj.size is not None and bool(obj.etag)
        return allowed and known and self.settings.transcribe_restored and not reads_metadata

    def _refuse_unreadable(self, obj: S3ObjectRef, info: ObjectInfo) -> None:
        if info.sse_customer_algorithm:
            raise sse_c_refused(obj.uri)
        archived = archived_refusal(obj, info.archive, transcribe_restored=self.settings.transcribe_restored)
        if archived is not None:
            raise archived

    def _judged(self, info: ObjectInfo, *, allowed: bool) -> str | None:
        if info.size == 0:
            return "empty-object"
        if not allowed and not info.content_type.lower().startswith(MEDIA_CONTENT_TYPES):
            return "not-media"
        return None

    def explained(self, obj: S3ObjectRef, exc: PermanentError) -> PermanentError:
        """Deepgram could not fetch the URL of an object that skipped the HEAD: one HEAD tells
        whether it is archived, or stored with a customer-provided key (SSE-C) that a presigned
        URL can't carry (Deepgram's fetch was refused before any transcription)."""
        if exc.reason != "deepgram-remote-content":
            return exc
        try:
            state = self.source.describe(obj).archive
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
