"""S3's limit on user metadata, which moto does not enforce: a PUT (or a multipart upload's
start, or a copy that replaces metadata) whose ``x-amz-meta-*`` headers add up to more than 2 KB
(the UTF-8 bytes of every name, without the prefix, and value) is refused with
``400 MetadataTooLarge``, as S3 refuses it. Without this, a write that fails on AWS after a paid
Deepgram answer would pass here."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

from localworld.s3_presign import Refusal, error_document

MAX_USER_METADATA_BYTES = 2048
_META_PREFIX = "HTTP_X_AMZ_META_"
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
    credential = str(environ.get("HTTP_AUTHORIZATION", "")) + str(environ.get("QUERY_STRING", ""))
    return "/s3/aws4_request" in credential or "%2Fs3%2Faws4_request" in credential


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
        request_id = secrets.token_hex(8).upper()
        body = error_document(_TOO_LARGE, request_id)
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("x-amz-request-id", request_id),
            ],
        )
        return [body]


def _drain(environ: dict[str, Any]) -> None:
    stream = environ.get("wsgi.input")
    left = int(environ.get("CONTENT_LENGTH") or 0)
    while stream is not None and left > 0:
        chunk = stream.read(min(left, 1024 * 1024))
        if not chunk:
            break
        left -= len(chunk)
