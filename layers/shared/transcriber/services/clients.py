"""How every AWS client of the layer is configured: bounded timeouts and standard retries.

botocore's defaults (60 s connect, 60 s read, legacy retries) could spend minutes on one call,
so the time a function keeps back for writing its outputs after Deepgram answers would be a
fiction. With these settings one call's worst case is known (``worst_case_call_s``), and
``InvocationRetryPolicy.reserve_s`` covers it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.config import Config

if TYPE_CHECKING:
    import boto3

CONNECT_TIMEOUT_S = 2.0
# Bounds each wait for bytes (S3 answers a PUT only once it is stored), not the whole transfer.
READ_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 2  # the first try and one retry ("standard" mode backs off up to 1 s between them)
MAX_RETRY_BACKOFF_S = 1.0

AWS_CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    # Presigned GETs must be SigV4: S3 refuses SigV2 for KMS-encrypted objects and new regions.
    signature_version="s3v4",
)


def worst_case_call_s() -> float:
    """Longest one AWS call can take with ``AWS_CLIENT_CONFIG`` before it raises."""
    return MAX_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + (MAX_ATTEMPTS - 1) * MAX_RETRY_BACKOFF_S


def new_client(session: boto3.session.Session, service: str) -> Any:
    """A client of ``service`` from the shared session, with the layer's configuration."""
    return session.client(service, config=AWS_CLIENT_CONFIG)  # type: ignore[call-overload]
