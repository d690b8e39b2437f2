"""The outputs in the output bucket: the key mapping (``output_key``), transcripts, derived formats,
failure records and kept answers, and which version of a key an outcome belongs to (``decided``,
``redecided``; the rules are ``transcriber.domain.ordering``). The input object is read by
``transcriber.services.source`` (its names are re-exported here)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain.events import has_dot_segments, sequencer_value, version_or_none
from transcriber.domain.formats import DERIVED_FORMATS
from transcriber.domain.ordering import by_current_object, by_sequencer
from transcriber.domain.work import Order
from transcriber.errors import BlockedError, ErrorDetails, PermanentError, TranscriptionError
from transcriber.observability import logger
from transcriber.services.s3_errors import MISSING_CODES, classify_s3_error
from transcriber.services.source import (
    SSE_C_MESSAGE,
    SSE_C_REASON,
    SSE_C_REFUSAL,
    ObjectInfo,
    ObjectStream,
    SourceObjects,
    sse_c_refused,
)

__all__ = [
    "SSE_C_MESSAGE",
    "SSE_C_REASON",
    "SSE_C_REFUSAL",
    "ObjectInfo",
    "ObjectStream",
    "SourceObjects",
    "Storage",
    "StoredTranscript",
    "TranscriptSlot",
    "WriteRaced",
    "classify_s3_error",
    "metadata_value",
    "output_key",
    "sse_c_refused",
    "utc_now",
]

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from transcriber.domain.events import S3ObjectRef
    from transcriber.services.deepgram import Transcript

MAX_KEY_BYTES = 1024
COPY_CHUNK_BYTES = 1024 * 1024  # reading a stored output back: memory held is about this much
LONG_KEY_FOLDER = "_long-keys/"
UNSAFE_KEY_FOLDER = "_unsafe-keys/"
BUCKETS_FOLDER = "_buckets/"
_RESERVED_FOLDERS = (LONG_KEY_FOLDER, UNSAFE_KEY_FOLDER, BUCKETS_FOLDER)
# S3 user metadata is ASCII and at most 2 KB (names and values); we keep well inside it.
METADATA_BUDGET = 1800
_METADATA_SAFE = "-_.~:=+/"
_SAFE_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class StoredTranscript:
    """The transcript already at an object's output key, as its S3 metadata describes it: which
    source version it was made from, with which Deepgram options, and Deepgram's request id."""

    key: str
    metadata: dict[str, str]
    etag: str | None = None  # S3's, quoted: what a conditional write over it names

    def made_from(self, obj: S3ObjectRef) -> bool:
        """Made from ``obj``'s version (by version id, else by ETag)."""
        return _same_source(obj, self.metadata)

    def answers(self, obj: S3ObjectRef, options: Mapping[str, str]) -> bool:
        """Whether this transcript is the work ``obj`` asks for, so Deepgram must not be paid for it
        again: made from the same content (this version, or the same ETag: a copy in place makes a
        new version of the same bytes) with the same Deepgram options (``options``: as
        ``upload_options.metadata`` records them)."""
        recorded_version = self.metadata.get("source-version-id")
        recorded_etag = self.metadata.get("source-etag")
        same_version = bool(recorded_version) and recorded_version == metadata_value(obj.version_id, 128)
        same_content = bool(recorded_etag) and recorded_etag == metadata_value(obj.etag, 128)
        recorded = {k: v for k, v in self.metadata.items() if k in _OPTIONS_METADATA}
        return (same_version or same_content) and bool(recorded) and recorded == dict(options)

    def _recorded(self, name: str) -> str | None:
        value = self.metadata.get(name)
        return unquote(value) if value else None

    @property
    def request_id(self) -> str | None:
        return self._recorded("deepgram-request-id")

    @property
    def delivery(self) -> str | None:
        return self._recorded("delivery")

    @property
    def estimated_cost_usd(self) -> float | None:
        value = self.metadata.get("estimated-cost-usd")
        try:
            return float(value) if value else None
        except ValueError:
            return None

    def options(self) -> dict[str, str] | None:
        """The options in force it was made with, ``{option: value}`` (repeated values joined with
        commas); None when only their hash is recorded (a query over 512 characters)."""
        text = self.metadata.get("deepgram-options")
        if text is None:
            return None
        options: dict[str, str] = {}
        for name, value in parse_qsl(text, keep_blank_values=True):
            options[name] = f"{options[name]},{value}" if name in options else value
        return options


_OPTIONS_METADATA = frozenset({"deepgram-options", "deepgram-options-sha256"})


@dataclass(frozen=True, slots=True)
class TranscriptSlot:
    """What one HEAD of an object's transcript key says: the transcript there (None: none), and
    whether a failure record may exist for the key. Every failure record is written after its
    key is marked (``write_failure``): a transcript there, or else the delete marker a DELETE of
    the transcript key leaves in the versioned output bucket. A key that answers 404 without a
    marker never had a failure record, so its success needs no DELETE of one."""

    stored: StoredTranscript | None
    failure_possible: bool = False


class WriteRaced(Exception):
    """A conditional write of a transcript was refused: another writer changed the key since it was read."""


_RACED_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


def output_key(
    prefix: str,
    source_key: str,
    suffix: str = ".json",
    *,
    bucket: str | None = None,
    home_bucket: str | None = None,
) -> str:
    """The one output key mapping. For the stack's input bucket (``bucket`` None or ``home_bucket``):
    ``<prefix><source key>.json``; for any other allowed bucket:
    ``<prefix>_buckets/<bucket>/<source key>.json``, so one key in two buckets never shares an output.
    A key too long for S3 goes under ``_long-keys/<sha256>``, and a key with ``.``/``..`` segments
    (URLs would rewrite it into another key) or one that starts with a folder of this mapping
    (``_buckets/``, ``_long-keys/``, ``_unsafe-keys/``: it could collide with a mapped key) under
    ``_unsafe-keys/<sha256>`` (the full source key is inside the object and in its metadata)."""
    if bucket is not None and bucket != home_bucket:
        prefix = f"{prefix}{BUCKETS_FOLDER}{_bucket_folder(bucket)}/"
    digest = hashlib.sha256(source_key.encode("utf-8")).hexdigest()
    if has_dot_segments(source_key) or source_key.startswith(_RESERVED_FOLDERS):
        return f"{prefix}{UNSAFE_KEY_FOLDER}{digest}{suffix}"
    key = f"{prefix}{source_key}{suffix}"
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES:
        return key
    return f"{prefix}{LONG_KEY_FOLDER}{digest}{suffix}"


def _bucket_folder(bucket: str) -> str:
    """A bucket's folder under ``_buckets/``: its name; a name that could not be an S3 bucket
    (refused, but its failure record still lands somewhere) by its hash."""
    if _SAFE_BUCKET.fullmatch(bucket) and ".." not in bucket:
        return bucket
    return "_invalid-" + hashlib.sha256(bucket.encode("utf-8", "surrogatepass")).hexdigest()


class Storage:
    def __init__(
        self,
        s3: S3Client,
        output_bucket: str,
        transcript_prefix: str,
        failure_prefix: str,
        *,
        home_bucket: str | None = None,
        kept_answer_prefix: str = "kept-answers/",
    ) -> None:
        self._s3 = s3
        self.output_bucket = output_bucket
        self.transcript_prefix = transcript_prefix
        self.failure_prefix = failure_prefix
        self.kept_answer_prefix = kept_answer_prefix  # paid answers whose write failed (answers.py)
        self.home_bucket = home_bucket  # the stack's input bucket: its outputs keep the plain keys

    def transcript_key(self, source_key: str, bucket: str | None = None) -> str:
        return output_key(self.transcript_prefix, source_key, bucket=bucket, home_bucket=self.home_bucket)

    def failure_key(self, source_key: str, bucket: str | None = None) -> str:
        return output_key(self.failure_prefix, source_key, bucket=bucket, home_bucket=self.home_bucket)

    def write_transcript(
        self,
        obj: S3ObjectRef,
        transcript: Transcript,
        delivery: str,
        extra_metadata: Mapping[str, str] | None = None,
        *,
        over: TranscriptSlot | None = None,
    ) -> str:
        """Write the transcript only over what ``over`` saw at its key (S3 conditional writes: none
        there (also when ``over`` is None), or that ETag); ``WriteRaced`` when another writer
        changed the key since.
        ``extra_metadata``: ASCII values its makers bounded (options in force, the cost estimate)."""
        key = self.transcript_key(obj.key, obj.bucket)
        own = {
            "deepgram-request-id": metadata_value(transcript.request_id, 128),
            "delivery": metadata_value(delivery, 16),
        } | dict(extra_metadata or {})
        metadata = _source_metadata(obj, reserved=_metadata_size(own)) | own
        seen = over.stored.etag if over and over.stored else None
        condition = {"IfMatch": seen} if seen else {"IfNoneMatch": "*"}
        # From the spool: botocore reads a file body a chunk at a time (and seeks back to retry).
        self._put(key, transcript.rewind(), metadata, condition)
        return key

    def write_failure(self, obj: S3ObjectRef, record: dict[str, Any], *, marked: bool = False) -> str:
        """The failure record: which object (``source``), then what went wrong (``record``). Its key
        is marked first (see ``TranscriptSlot``) unless the caller did (``marked``)."""
        if not marked and self.look_transcript(obj) == TranscriptSlot(None):
            self._delete(self.transcript_key(obj.key, obj.bucket))  # the marker: nothing else there
        key = self.failure_key(obj.key, obj.bucket)
        source = {
            "bucket": obj.bucket,
            "key": obj.key,
            "version_id": obj.version_id,
            "etag": obj.etag,
            "sequencer": obj.sequencer,
        }
        body = json.dumps({"source": source, **record}, ensure_ascii=False, indent=2).encode("utf-8")
        reason = metadata_value(str(record.get("reason", "")), 64)
        self._put(key, body, _source_metadata(obj) | {"failure-reason": reason})
        return key

    def delete_failure(self, obj: S3ObjectRef) -> None:
        """A success supersedes its own object's earlier failure record (that bucket's key; deleting
        a missing key is a no-op)."""
        self._delete(self.failure_key(obj.key, obj.bucket))

    # -- which version an outcome belongs to --------------------------------------------------
    def transcript_of(self, obj: S3ObjectRef) -> bool:
        """True when the transcript of ``obj``'s key exists and was made from this version of it."""
        metadata = self._output_metadata(self.transcript_key(obj.key, obj.bucket))
        return metadata is not None and _same_source(obj, metadata)

    def look_transcript(self, obj: S3ObjectRef) -> TranscriptSlot:
        """One HEAD of ``obj``'s transcript key: the transcript there, or whether the key was cleared."""
        key = self.transcript_key(obj.key, obj.bucket)
        uri = f"s3://{self.output_bucket}/{key}"
        try:
            head = self._s3.head_object(Bucket=self.output_bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in MISSING_CODES:
                raise _output_error(exc, "reading", uri) from exc
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return TranscriptSlot(None, failure_possible=headers.get("x-amz-delete-marker") == "true")
        except BotoCoreError as exc:
            raise _output_error(exc, "reading", uri) from exc
        stored = StoredTranscript(key, dict(head.get("Metadata", {})), head.get("ETag"))
        return TranscriptSlot(stored, failure_possible=True)  # a record may sit beside it

    def clear_for_failure(self, obj: S3ObjectRef) -> None:
        """Before a failure record is written: no transcript may sit beside it (the failure is the
        key's latest outcome; nor may the formats derived from that transcript), and the key must
        carry the delete marker that tells a later success to remove the failure record. Raises
        when that can't be done: the failure record must not be written without its marker."""
        slot = self.look_transcript(obj)
        if slot.stored is None and slot.failure_possible:
            return  # marked, and no transcript
        self._delete(self.transcript_key(obj.key, obj.bucket))  # the marker (and a stale transcript)
        if slot.stored is not None:
            for extension in DERIVED_FORMATS:  # made from that transcript: just as stale
                self._delete(self.format_key(obj.key, extension, obj.bucket))

    def decided(self, obj: S3ObjectRef) -> S3ObjectRef:
        """``obj`` with the answer to "is it superseded?": the one a step already learned
        (``obj.order``: preflight's HEAD of the key's current object, or an earlier call), else
        S3's, asked now. The one place the pipeline gets the answer; it travels with the object."""
        return obj if obj.order is not None else replace(obj, order=self._ask_order(obj))

    def redecided(self, obj: S3ObjectRef, seen: StoredTranscript | None = None) -> S3ObjectRef:
        """``obj`` with the answer asked again, as the world changed: S3 refused a conditional write
        (``seen``: the transcript another writer put there; a later event's supersedes ``obj``, else
        S3 decides), or a failure record, which S3 can't write conditionally, is to be written."""
        order = by_sequencer(obj, seen.metadata) if seen is not None else Order.UNKNOWN
        if order is Order.UNKNOWN:
            order = self._ask_order(obj)
        return replace(obj, order=order)

    def _ask_order(self, obj: S3ObjectRef) -> Order:
        """S3 decides (a HEAD of the key: its current version, else its ETag); where it can't (the
        key is deleted, or no version or ETag to compare, or the HEAD fails), the event's sequencer
        is compared with the one stored with the key's existing outputs."""
        try:
            head = self._s3.head_object(Bucket=obj.bucket, Key=obj.key)
        except (ClientError, BotoCoreError) as exc:
            logger.info("Can't read the source's current version", extra={"error": type(exc).__name__})
            return self._order_by_outputs(obj)
        current_etag = str(head.get("ETag", "")).strip('"') or None
        order = by_current_object(obj, version_or_none(head.get("VersionId")), current_etag)
        return order if order is not Order.UNKNOWN else self._order_by_outputs(obj)

    def _order_by_outputs(self, obj: S3ObjectRef) -> Order:
        if sequencer_value(obj.sequencer) is None:
            return Order.UNKNOWN  # nothing to compare: the newest event is the one that writes last
        for key in (self.transcript_key(obj.key, obj.bucket), self.failure_key(obj.key, obj.bucket)):
            try:
                metadata = self._output_metadata(key) or {}
            except TranscriptionError:
                continue  # can't tell: never lose an answer already paid for over an order check
            if by_sequencer(obj, metadata) is Order.SUPERSEDED:
                return Order.SUPERSEDED
        return Order.UNKNOWN

    def _output_metadata(self, key: str) -> dict[str, str] | None:
        """An output's user metadata; None when it does not exist."""
        try:
            head = self._s3.head_object(Bucket=self.output_bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in MISSING_CODES:
                return None
            raise _output_error(exc, "reading", f"s3://{self.output_bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise _output_error(exc, "reading", f"s3://{self.output_bucket}/{key}") from exc
        return dict(head.get("Metadata", {}))

    def _delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.output_bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _output_error(exc, "deleting", f"s3://{self.output_bucket}/{key}") from exc

    # -- derived formats (domain/formats.py, services/completion.py) ---------------------------------
    def format_key(self, source_key: str, extension: str, bucket: str | None = None) -> str:
        """Where one format of a transcript lands: the transcripts' key mapping with the format's
        extension instead of ``.json`` (other buckets, long and unsafe keys included)."""
        return output_key(
            self.transcript_prefix, source_key, f".{extension}", bucket=bucket, home_bucket=self.home_bucket
        )

    def read_output(self, key: str, into: IO[bytes]) -> None:
        """Copy one stored output into ``into``, a chunk at a time (never whole in memory)."""
        uri = f"s3://{self.output_bucket}/{key}"
        try:
            body = self._s3.get_object(Bucket=self.output_bucket, Key=key)["Body"]
            try:
                for chunk in body.iter_chunks(COPY_CHUNK_BYTES):
                    into.write(chunk)
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise classify_s3_error(exc, "reading", uri) from exc

    def write_format(
        self, obj: S3ObjectRef, extension: str, body: IO[bytes], content_type: str, request_id: str | None
    ) -> str:
        """One derived format of ``obj``'s transcript, from a file (streamed, not read into memory)."""
        key = self.format_key(obj.key, extension, obj.bucket)
        metadata = _source_metadata(obj) | {"deepgram-request-id": metadata_value(request_id, 128)}
        try:
            self._s3.put_object(
                Bucket=self.output_bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata={k: v for k, v in metadata.items() if v},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _output_error(exc, "writing", f"s3://{self.output_bucket}/{key}") from exc
        return key

    def delete_format(self, obj: S3ObjectRef, extension: str) -> None:
        """Remove a format an earlier version of the object had (a no-op when there is none)."""
        self._delete(self.format_key(obj.key, extension, obj.bucket))

    # -- paid answers waiting to be written (transcriber.services.answers) -------------------------------
    def write_kept_answer(self, name: str, transcript: Transcript) -> str:
        key = f"{self.kept_answer_prefix}{name}.json"
        metadata = {"deepgram-request-id": metadata_value(transcript.request_id, 128)}
        self._put(key, transcript.rewind(), metadata)
        return key

    def read_kept_answer(self, key: str, into: IO[bytes]) -> bool:
        """Copy a kept answer into ``into``; False when it is gone (expired, or already written)."""
        try:
            self.read_output(key, into)
        except PermanentError as exc:
            if exc.reason == "s3-object-missing":
                return False
            raise
        return True

    def delete_kept_answer(self, key: str) -> None:
        self._delete(key)

    def _put(
        self,
        key: str,
        body: bytes | IO[bytes],
        metadata: dict[str, str],
        condition: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self._s3.put_object(
                Bucket=self.output_bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                Metadata={k: v for k, v in metadata.items() if v},
                **(condition or {}),  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if condition and _raced(exc):
                raise WriteRaced(key) from exc
            raise _output_error(exc, "writing", f"s3://{self.output_bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise _output_error(exc, "writing", f"s3://{self.output_bucket}/{key}") from exc


def _raced(exc: ClientError) -> bool:
    """A conditional write refused: the precondition failed (412), a concurrent conditional write
    (409), or the transcript it named was deleted meanwhile (If-Match on a missing key: 404)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in _RACED_CODES or code in MISSING_CODES


def _same_source(obj: S3ObjectRef, metadata: dict[str, str]) -> bool:
    """Whether an output's metadata names ``obj``'s version (by version id, else by ETag)."""
    if obj.version_id and metadata.get("source-version-id"):
        return metadata["source-version-id"] == metadata_value(obj.version_id, 128)
    if obj.etag and metadata.get("source-etag"):
        return metadata["source-etag"] == metadata_value(obj.etag, 128)
    return True  # nothing tells them apart


def _output_error(exc: ClientError | BotoCoreError, action: str, uri: str) -> TranscriptionError:
    """Our own bucket refusing a write is never the object's fault: keep the work waiting
    (blocked) until the bucket, its policy or the role is fixed, instead of failing it."""
    error = classify_s3_error(exc, action, uri)
    if error.retryable:
        return error
    return BlockedError(
        ErrorDetails(
            reason="output-bucket-unwritable",
            message=f"{error.details.message}; check the output bucket's policy and the function's role",
            http_status=error.details.http_status,
        )
    )


def metadata_value(value: str | None, limit: int) -> str:
    """A value that S3 accepts as user metadata whatever it holds: percent-encoded to ASCII
    (unchanged for what S3 itself writes: hex ETags, version ids, UUIDs) and cut to ``limit``
    characters (never inside an escape)."""
    if not value:
        return ""
    encoded = quote(value, safe=_METADATA_SAFE)
    if len(encoded) <= limit:
        return encoded
    cut = encoded[:limit]
    escape = cut.rfind("%", max(0, limit - 2))
    return cut[:escape] if escape != -1 else cut


def _source_metadata(obj: S3ObjectRef, reserved: int = 200) -> dict[str, str]:
    # S3 metadata is ASCII and at most 2 KB in all: every value is encoded and bounded, and the key
    # (percent-encoded) gives way to its hash when it would not fit.
    metadata = {
        "source-bucket": metadata_value(obj.bucket, 255),  # unchanged for a valid name
        "source-version-id": metadata_value(obj.version_id, 128),
        "source-etag": metadata_value(obj.etag, 128),
        "source-sequencer": metadata_value(obj.sequencer, 64),
    }
    encoded_key = quote(obj.key, safe="/")
    if len(encoded_key) <= METADATA_BUDGET - _metadata_size(metadata) - reserved:  # reserved: added later
        metadata["source-key"] = encoded_key
    else:
        metadata["source-key-sha256"] = hashlib.sha256(obj.key.encode("utf-8", "surrogatepass")).hexdigest()
    return metadata


def _metadata_size(metadata: dict[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in metadata.items())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
