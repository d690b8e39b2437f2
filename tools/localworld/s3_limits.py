"""What S3 refuses and moto does not, where a promise of the product depends on it.

* ``S3MetadataLimit``: a PUT (or a multipart upload's start, or a copy that replaces metadata)
  whose ``x-amz-meta-*`` headers add up to more than 2 KB (the UTF-8 bytes of every name, without
  the prefix, and value) is refused with ``400 MetadataTooLarge``. Without it, a write that fails on
  AWS after a paid Deepgram answer would pass here.
* ``S3CustomerKeys``: an object stored with a customer-provided key (SSE-C) can't be read or
  HEADed without that key's headers: S3 answers a GET (presigned too) ``400 InvalidRequest`` and a
  HEAD a bare ``400``. moto stores such objects in the clear and serves them to anyone, so a
  product that can't read SSE-C objects (a presigned URL can't carry the key) would look fine here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from localworld.s3_presign import Refusal, refuse

MAX_USER_METADATA_BYTES = 2048
_META_PREFIX = "HTTP_X_AMZ_META_"
_MOTO_RESET = "/moto-api/reset"
_SSE_C_ALGORITHM = "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_CUSTOMER_ALGORITHM"
_SSE_C_REFUSAL = Refusal(
    400,
    "InvalidRequest",
    "The object was stored using a form of Server Side Encryption. The correct parameters must be "
    "provided to retrieve the object.",
)
_TOO_LARGE = Refusal(
    400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size."
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def user_metadata_bytes(environ: dict[str, Any]) -> int:
    """The size S3 measures: UTF-8 bytes of each user metadata name (no prefix) and value. WSGI
    hands header values over as latin-1 strings of the bytes the client sent."""
    size = 0
    for name, value in environ.items():
        if name.startswith(_META_PREFIX):
            size += len(name.removeprefix(_META_PREFIX)) + len(str(value).encode("latin-1", "replace"))
    return size


def _is_s3(environ: dict[str, Any]) -> bool:
    """A request for S3: signed (header or query) for the s3 service, or with SigV2, which only
    S3 still takes (boto3's default presigned URLs)."""
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    query = str(environ.get("QUERY_STRING", ""))
    sigv4 = "/s3/aws4_request" in auth or "%2Fs3%2Faws4_request" in query
    return sigv4 or auth.startswith("AWS ") or "AWSAccessKeyId=" in query


class S3MetadataLimit:
    """WSGI middleware in front of moto: refuses S3 writes over the user-metadata limit."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self.refusals: list[tuple[str, str, int]] = []  # (method, path, metadata bytes)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if method not in {"PUT", "POST"} or not _is_s3(environ):
            return self._app(environ, start_response)
        size = user_metadata_bytes(environ)
        if size <= MAX_USER_METADATA_BYTES:
            return self._app(environ, start_response)
        self.refusals.append((method, str(environ.get("PATH_INFO", "/")), size))
        _drain(environ)  # the connection stays usable for the client's next request
        return refuse(start_response, _TOO_LARGE, method)


def _drain(environ: dict[str, Any]) -> None:
    stream = environ.get("wsgi.input")
    left = int(environ.get("CONTENT_LENGTH") or 0)
    while stream is not None and left > 0:
        chunk = stream.read(min(left, 1024 * 1024))
        if not chunk:
            break
        left -= len(chunk)


class S3CustomerKeys:
    """WSGI middleware in front of moto: remembers which keys were last written with SSE-C and
    refuses GET and HEAD of them without the customer key's headers, as S3 does. (The last PUT
    decides for the key, whatever version a read names: enough for the product's reads.)"""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._encrypted: set[str] = set()  # PATH_INFO of keys stored with SSE-C

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/"))
        if path == _MOTO_RESET:  # every object is gone, so is what was known of them
            with self._lock:
                self._encrypted.clear()
        if not _is_s3(environ) or path.count("/") < 2:  # bucket-level requests pass
            return self._app(environ, start_response)
        with self._lock:
            if method == "PUT" and "HTTP_X_AMZ_COPY_SOURCE" not in environ:
                (self._encrypted.add if environ.get(_SSE_C_ALGORITHM) else self._encrypted.discard)(path)
            elif method == "DELETE":
                self._encrypted.discard(path)
            refused = (
                method in {"GET", "HEAD"} and path in self._encrypted and not environ.get(_SSE_C_ALGORITHM)
            )
        if not refused:
            return self._app(environ, start_response)
        return refuse(start_response, _SSE_C_REFUSAL, method)
