"""The input object (the source of a transcript): what S3 says of it (one HEAD), its presigned
URL for Deepgram, the stream of its bytes, and the refusal of objects stored with a
customer-provided key (SSE-C). Read only: nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain.archive import ArchiveState, from_refused_read
from transcriber.domain.events import version_or_none
from transcriber.errors import ErrorDetails, PermanentError, RetryableError
from transcriber.services.s3_errors import classify_s3_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from transcriber.domain.events import S3ObjectRef


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
    archive: ArchiveState = field(default_factory=ArchiveState)
    metadata: dict[str, str] = field(default_factory=dict)  # user metadata, without x-amz-meta-


SSE_C_REASON = "s3-sse-c-unsupported"


def sse_c_refused(uri: str, http_status: int | None = None) -> PermanentError:
    return PermanentError(
        ErrorDetails(reason=SSE_C_REASON, message=f"{uri}: {SSE_C_REFUSAL}", http_status=http_status)
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


class SourceObjects:
    """The objects of the buckets this stack transcribes, as read by the function."""

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    def describe(self, obj: S3ObjectRef, *, current: bool = False) -> ObjectInfo:
        """One HEAD: of ``obj``'s version, or (``current``) of whatever the key holds now."""
        params: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id and not current:
            params["VersionId"] = obj.version_id
        try:
            head = self._s3.head_object(**params)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 400:
                refusal = self._customer_key_refusal(params, obj.uri)
                if refusal is not None:
                    raise refusal from exc
            raise classify_s3_error(exc, "reading", obj.uri) from exc
        except BotoCoreError as exc:
            raise classify_s3_error(exc, "reading", obj.uri) from exc
        return ObjectInfo(
            size=int(head.get("ContentLength", 0)),
            etag=str(head.get("ETag", "")).strip('"'),
            version_id=version_or_none(head.get("VersionId")) or obj.version_id,
            content_type=str(head.get("ContentType", "")),
            sse_customer_algorithm=head.get("SSECustomerAlgorithm"),
            archive=ArchiveState(
                str(head.get("StorageClass") or "STANDARD"), head.get("ArchiveStatus"), head.get("Restore")
            ),
            metadata=dict(head.get("Metadata") or {}),
        )

    def _customer_key_refusal(self, params: dict[str, Any], uri: str) -> PermanentError | None:
        """A HEAD answered a bare 400: what S3 answers for an object stored with a customer-provided
        key (SSE-C) read without it, and a HEAD has no body to say so. A one-byte GET says it in words."""
        try:
            self._s3.get_object(**params, Range="bytes=0-0")["Body"].close()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "InvalidRequest" and SSE_C_MESSAGE in str(error.get("Message", "")):
                return sse_c_refused(uri, 400)
        except BotoCoreError:
            pass
        return None

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
            if error.get("Code") == "InvalidObjectState":
                raise from_refused_read(obj, error) from exc
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
