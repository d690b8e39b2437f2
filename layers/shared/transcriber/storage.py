"""S3 access: what we need to know about the input object, the presigned URL, and the outputs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.errors import BlockedError, ErrorDetails, PermanentError, RetryableError, TranscriptionError
from transcriber.events import has_dot_segments

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from transcriber.deepgram import Transcript
    from transcriber.events import S3ObjectRef

MAX_KEY_BYTES = 1024
COPY_CHUNK_BYTES = 1024 * 1024  # reading a stored output back: memory held is about this much
LONG_KEY_FOLDER = "_long-keys/"
UNSAFE_KEY_FOLDER = "_unsafe-keys/"
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound", "NoSuchBucket"})
_DENIED_CODES = frozenset({"403", "AccessDenied", "Forbidden", "KMS.AccessDeniedException"})
_THROTTLE_CODES = frozenset({"503", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})


# S3 answers a GET without the customer key of an SSE-C object with 400 InvalidRequest.
SSE_C_MESSAGE = "Server Side Encryption"
SSE_C_REFUSAL = (
    "the object is encrypted with a customer-provided key (SSE-C): neither Deepgram (a presigned "
    "URL can't carry the key) nor the function (it is given no key) can read it; re-encrypt it with "
    "SSE-S3 or SSE-KMS (copy-object) to transcribe it"
)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    version_id: str | None
    content_type: str
    sse_customer_algorithm: str | None = None


def sse_c_refused(uri: str, http_status: int | None = None) -> PermanentError:
    return PermanentError(
        ErrorDetails(
            reason="s3-sse-c-unsupported", message=f"{uri}: {SSE_C_REFUSAL}", http_status=http_status
        )
    )


class ObjectStream:
    """An open GET of the input object: read it once, front to back, then close it. Read failures
    are classified here (retryable: a new GET can succeed), so they cross the HTTP client as ours."""

    def __init__(self, body: Any, length: int, content_type: str, uri: str) -> None:
        self._body = body
        self.length = length
        self.content_type = content_type
        self._uri = uri

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read(size)
        except (BotoCoreError, OSError) as exc:
            raise RetryableError(
                ErrorDetails(
                    reason="s3-read-interrupted", message=f"reading {self._uri}: {type(exc).__name__}"
                )
            ) from exc
        return data

    def close(self) -> None:
        self._body.close()


def output_key(prefix: str, source_key: str, suffix: str = ".json") -> str:
    """``<prefix><source key>.json``; a key too long for S3 goes under ``_long-keys/<sha256>``, and
    a key with ``.``/``..`` segments (URLs would rewrite it into another key) under
    ``_unsafe-keys/<sha256>`` (the full source key is inside the object and in its metadata)."""
    digest = hashlib.sha256(source_key.encode("utf-8")).hexdigest()
    if has_dot_segments(source_key):
        return f"{prefix}{UNSAFE_KEY_FOLDER}{digest}{suffix}"
    key = f"{prefix}{source_key}{suffix}"
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES:
        return key
    return f"{prefix}{LONG_KEY_FOLDER}{digest}{suffix}"


def classify_s3_error(exc: ClientError | BotoCoreError, action: str, uri: str) -> TranscriptionError:
    if isinstance(exc, BotoCoreError):
        return RetryableError(
            ErrorDetails(reason="s3-unreachable", message=f"{action} {uri}: {type(exc).__name__}")
        )
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = f"{action} {uri}: {code or status}"
    if code in _MISSING_CODES:
        return PermanentError(ErrorDetails(reason="s3-object-missing", message=message, http_status=status))
    if code in _DENIED_CODES:
        return PermanentError(ErrorDetails(reason="s3-access-denied", message=message, http_status=status))
    if code in _THROTTLE_CODES or (isinstance(status, int) and status >= 500):
        return RetryableError(ErrorDetails(reason="s3-throttled", message=message, http_status=status))
    return PermanentError(ErrorDetails(reason="s3-error", message=message, http_status=status))


class Storage:
    def __init__(self, s3: S3Client, output_bucket: str, transcript_prefix: str, failure_prefix: str) -> None:
        self._s3 = s3
        self.output_bucket = output_bucket
        self.transcript_prefix = transcript_prefix
        self.failure_prefix = failure_prefix

    def describe(self, obj: S3ObjectRef) -> ObjectInfo:
        params: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            params["VersionId"] = obj.version_id
        try:
            head = self._s3.head_object(**params)
        except (ClientError, BotoCoreError) as exc:
            raise classify_s3_error(exc, "reading", obj.uri) from exc
        return ObjectInfo(
            size=int(head.get("ContentLength", 0)),
            etag=str(head.get("ETag", "")).strip('"'),
            version_id=head.get("VersionId") or obj.version_id,
            content_type=str(head.get("ContentType", "")),
            sse_customer_algorithm=head.get("SSECustomerAlgorithm"),
        )

    def open_stream(self, obj: S3ObjectRef) -> ObjectStream:
        """GET the object (the event's version) for streaming; the caller reads and closes it."""
        params: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            params["VersionId"] = obj.version_id
        try:
            response = self._s3.get_object(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "InvalidRequest" and SSE_C_MESSAGE in str(error.get("Message", "")):
                raise sse_c_refused(obj.uri, 400) from exc
            raise classify_s3_error(exc, "reading", obj.uri) from exc
        except BotoCoreError as exc:
            raise classify_s3_error(exc, "reading", obj.uri) from exc
        body = response["Body"]
        if response.get("SSECustomerAlgorithm"):
            body.close()
            raise sse_c_refused(obj.uri)
        return ObjectStream(
            body, int(response.get("ContentLength", 0)), str(response.get("ContentType", "")), obj.uri
        )

    def presign_get(self, obj: S3ObjectRef, expiry_s: int) -> str:
        params: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            params["VersionId"] = obj.version_id  # exactly the version the event announced
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expiry_s)

    def transcript_key(self, source_key: str) -> str:
        return output_key(self.transcript_prefix, source_key)

    def failure_key(self, source_key: str) -> str:
        return output_key(self.failure_prefix, source_key)

    def write_transcript(self, obj: S3ObjectRef, transcript: Transcript, delivery: str) -> str:
        key = self.transcript_key(obj.key)
        metadata = _source_metadata(obj) | {
            "deepgram-request-id": transcript.request_id or "",
            "delivery": delivery,
        }
        self._put(key, transcript.body, metadata)
        return key

    def write_failure(self, obj: S3ObjectRef, record: dict[str, Any]) -> str:
        """The failure record: which object (``source``), then what went wrong (``record``)."""
        key = self.failure_key(obj.key)
        source = {"bucket": obj.bucket, "key": obj.key, "version_id": obj.version_id, "etag": obj.etag}
        body = json.dumps({"source": source, **record}, ensure_ascii=False, indent=2).encode("utf-8")
        self._put(key, body, _source_metadata(obj) | {"failure-reason": str(record.get("reason", ""))})
        return key

    def delete_failure(self, obj: S3ObjectRef) -> None:
        """A success supersedes an earlier failure record (deleting a missing key is a no-op)."""
        key = self.failure_key(obj.key)
        try:
            self._s3.delete_object(Bucket=self.output_bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _output_error(exc, "deleting", f"s3://{self.output_bucket}/{key}") from exc

    # -- derived formats (transcriber.formats, transcriber.completion) ------------------------
    def format_key(self, source_key: str, extension: str) -> str:
        """Where one format of a transcript lands: the transcripts' key mapping with the format's
        extension instead of ``.json`` (long and unsafe keys included)."""
        return output_key(self.transcript_prefix, source_key, f".{extension}")

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
        key = self.format_key(obj.key, extension)
        metadata = _source_metadata(obj) | {"deepgram-request-id": request_id or ""}
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
        key = self.format_key(obj.key, extension)
        try:
            self._s3.delete_object(Bucket=self.output_bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _output_error(exc, "deleting", f"s3://{self.output_bucket}/{key}") from exc

    def _put(self, key: str, body: bytes, metadata: dict[str, str]) -> None:
        try:
            self._s3.put_object(
                Bucket=self.output_bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                Metadata={k: v for k, v in metadata.items() if v},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _output_error(exc, "writing", f"s3://{self.output_bucket}/{key}") from exc


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


def _source_metadata(obj: S3ObjectRef) -> dict[str, str]:
    # S3 metadata is ASCII and at most 2 KB in all: percent-encode the key, and hash it if too long.
    encoded_key = quote(obj.key, safe="/")
    metadata = {
        "source-bucket": quote(obj.bucket, safe="")[:255],  # unchanged for a valid name
        "source-version-id": obj.version_id or "",
        "source-etag": obj.etag or "",
    }
    if len(encoded_key) <= 1024:
        metadata["source-key"] = encoded_key
    else:
        metadata["source-key-sha256"] = hashlib.sha256(obj.key.encode("utf-8")).hexdigest()
    return metadata


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
