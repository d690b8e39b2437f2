"""Deepgram error bodies in the shapes clients meet in the wild.

Deepgram answers errors in several shapes (see shared/notes/deepgram-api.md): a legacy
``{"err_code", "err_msg", "request_id"}`` object, a modern ``{"category", "message",
"details", "request_id"}`` object, a bare JSON string, or something that is not JSON at
all (a proxy's HTML page). Clients must parse all of them, so the emulator can produce
each on demand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import quote, quote_plus

# "empty", "no-channels" and "deep-json" (JSON nested 100,000 deep) are broken success bodies, for
# a fault injected with status 200. "echo" is a legacy body whose message quotes the request back
# (the media URL and the key, percent-encoded, doubly percent-encoded and +-encoded), as a proxy
# or a verbose error page might: for checking that clients scrub what comes back.
BodyStyle = Literal["legacy", "modern", "string", "text", "html", "empty", "no-channels", "deep-json", "echo"]
BODY_STYLES: tuple[str, ...] = get_args(BodyStyle)

CORRUPT_AUDIO_MSG = "Bad Request: failed to process audio: corrupt or unsupported data"


@dataclass(frozen=True)
class ErrorSpec:
    """What Deepgram says for one kind of failure."""

    err_code: str
    err_msg: str
    reason: str  # HTTP reason phrase, used by the text and html styles


# Default body per status, used by fault injection. Messages follow Deepgram's docs where
# they are documented and are plausible stand-ins where they are not.
ERROR_CATALOG: dict[int, ErrorSpec] = {
    400: ErrorSpec("Bad Request", CORRUPT_AUDIO_MSG, "Bad Request"),
    401: ErrorSpec("INVALID_AUTH", "Invalid credentials.", "Unauthorized"),
    402: ErrorSpec(
        "ASR_PAYMENT_REQUIRED",
        "Project does not have enough credits for an ASR request and does not have an overage agreement.",
        "Payment Required",
    ),
    403: ErrorSpec(
        "INSUFFICIENT_PERMISSIONS",
        "Project does not have access to the requested model.",
        "Forbidden",
    ),
    404: ErrorSpec("NOT_FOUND", "Not Found.", "Not Found"),
    405: ErrorSpec("METHOD_NOT_ALLOWED", "Method Not Allowed.", "Method Not Allowed"),
    408: ErrorSpec("SLOW_UPLOAD", "Request timed out: the upload was too slow.", "Request Timeout"),
    413: ErrorSpec("PAYLOAD_TOO_LARGE", "Payload too large.", "Payload Too Large"),
    429: ErrorSpec(
        "TOO_MANY_REQUESTS",
        "Too many requests. Please try again later",
        "Too Many Requests",
    ),
    500: ErrorSpec("INTERNAL_SERVER_ERROR", "Please try again later", "Internal Server Error"),
    502: ErrorSpec("BAD_GATEWAY", "Please try again later", "Bad Gateway"),
    503: ErrorSpec("SERVICE_UNAVAILABLE", "Please try again later", "Service Unavailable"),
    504: ErrorSpec("GATEWAY_TIMEOUT", "Please try again later", "Gateway Timeout"),
}


def spec_for(status: int) -> ErrorSpec:
    """The catalog entry for ``status``, or a generic one for statuses not listed."""
    if status in ERROR_CATALOG:
        return ERROR_CATALOG[status]
    if status >= 500:
        return ErrorSpec("INTERNAL_SERVER_ERROR", "Please try again later", "Server Error")
    return ErrorSpec("Bad Request", f"Request failed with status {status}.", "Error")


JSON = "application/json"


def render_error(
    status: int,
    request_id: str,
    *,
    style: BodyStyle = "legacy",
    err_code: str | None = None,
    err_msg: str | None = None,
    echo: tuple[str, ...] = (),
) -> tuple[bytes, str]:
    """Body bytes and content type for an error answer in the given style (``echo``: the request's
    values that the "echo" style quotes back)."""
    spec = spec_for(status)
    code = err_code or spec.err_code
    msg = err_msg or spec.err_msg
    # "html": what a load balancer in front of the API answers, not JSON at all.
    page = (
        f"<html><head><title>{status} {spec.reason}</title></head>"
        f"<body><center><h1>{status} {spec.reason}</h1></center></body></html>\n"
    )
    hollow = {"metadata": {"request_id": request_id, "channels": 0}, "results": {"channels": []}}
    bodies: dict[str, tuple[bytes, str]] = {
        "legacy": (json.dumps({"err_code": code, "err_msg": msg, "request_id": request_id}).encode(), JSON),
        "modern": (
            json.dumps({"category": code, "message": msg, "details": msg, "request_id": request_id}).encode(),
            JSON,
        ),
        "string": (json.dumps(msg).encode(), JSON),
        "text": (msg.encode(), "text/plain; charset=utf-8"),
        "html": (page.encode(), "text/html"),
        "empty": (b"", JSON),
        "no-channels": (json.dumps(hollow).encode(), JSON),
        "deep-json": (b"[" * 100_000 + b"]" * 100_000, JSON),
        "echo": (
            json.dumps({"err_code": code, "err_msg": _echo(msg, echo), "request_id": request_id}).encode(),
            JSON,
        ),
    }
    return bodies[style]


def _echo(message: str, values: tuple[str, ...]) -> str:
    forms = [
        form
        for value in values
        for form in (quote(quote(value, safe=""), safe=""), quote_plus(value), quote(value, safe=""))
    ]
    return f"{message} (request: {' | '.join(forms)})"
