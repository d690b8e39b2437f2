"""S3's errors, classified as the pipeline's: missing and denied are permanent, throttling and
outages retryable."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.errors import ErrorDetails, PermanentError, RetryableError, TranscriptionError

MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound", "NoSuchBucket"})
DENIED_CODES = frozenset({"403", "AccessDenied", "Forbidden", "KMS.AccessDeniedException"})
THROTTLE_CODES = frozenset({"503", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})


def classify_s3_error(exc: ClientError | BotoCoreError, action: str, uri: str) -> TranscriptionError:
    if isinstance(exc, BotoCoreError):
        return RetryableError(
            ErrorDetails(reason="s3-unreachable", message=f"{action} {uri}: {type(exc).__name__}")
        )
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = f"{action} {uri}: {code or status}"
    if code in MISSING_CODES:
        return PermanentError(ErrorDetails(reason="s3-object-missing", message=message, http_status=status))
    if code in DENIED_CODES:
        return PermanentError(ErrorDetails(reason="s3-access-denied", message=message, http_status=status))
    if code in THROTTLE_CODES or (isinstance(status, int) and status >= 500):
        return RetryableError(ErrorDetails(reason="s3-throttled", message=message, http_status=status))
    return PermanentError(ErrorDetails(reason="s3-error", message=message, http_status=status))
