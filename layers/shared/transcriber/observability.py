"""Powertools Logger, Metrics and Tracer shared by every function, plus log redaction."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

from aws_lambda_powertools import Logger, Metrics, Tracer

Handler = TypeVar("Handler", bound=Callable[..., Any])


class LazyTracer:
    """Powertools' Tracer, built on the first invocation rather than at import: building one imports
    the X-Ray SDK (about 130 ms of a cold start), and where tracing is off (outside Lambda, SAM
    local, ``POWERTOOLS_TRACE_DISABLED``) it is never built at all."""

    def __init__(self) -> None:
        self._tracer: Tracer | None = None

    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            self._tracer = Tracer()
        return self._tracer

    def capture_lambda_handler(self, handler: Handler) -> Handler:
        traced: list[Callable[..., Any]] = []

        @functools.wraps(handler)
        def run(event: Any, context: Any) -> Any:
            if not traced:  # Powertools' own test of whether tracing is on (no X-Ray import)
                off = Tracer._is_tracer_disabled()
                traced.append(handler if off else self.tracer.capture_lambda_handler(handler))
            return traced[0](event, context)

        return run  # type: ignore[return-value]


logger = Logger()
metrics = Metrics()
tracer = LazyTracer()

# A presigned URL is a bearer credential until it expires: keep its shape in logs, not its secrets.
# The "=" may itself come back percent-encoded once or twice when a URL is quoted inside a body.
_SIGNED_PARAMS = re.compile(
    r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)"
    r"(?:=|%3D|%253D))[^&#\s\"']+"
)
_CREDENTIAL_PARAMS = frozenset({"x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature"})


_AUTH_VALUE = re.compile(r"(?i)\b(Token|Bearer)\s+[^\s\"',;]+")


def redact_url(url: str) -> str:
    return _SIGNED_PARAMS.sub(r"\1REDACTED", url)


def encodings(secret: str) -> set[str]:
    """The forms a value takes when something quotes it back: verbatim, percent-encoded (all
    reserved characters, or all but ``/``), doubly percent-encoded and ``+``-encoded (once, twice)."""
    once = quote(secret, safe="")
    return {
        secret,
        once,
        quote(secret),
        quote(once, safe=""),
        quote_plus(secret),
        quote_plus(quote_plus(secret)),
    }


def _credentials_of(value: str) -> list[str]:
    """A presigned URL's credentials (signature, credential scope, session token), if it is one."""
    if "?" not in value:
        return []
    query = urlsplit(value).query
    decoded = [v for k, v in parse_qsl(query) if k.lower() in _CREDENTIAL_PARAMS and v]
    # and as they stand in the URL (still percent-encoded once), so a quoted URL's are found too
    raw = [
        v for k, _, v in (p.partition("=") for p in query.split("&")) if k.lower() in _CREDENTIAL_PARAMS and v
    ]
    return decoded + raw


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Text from outside (an error body may echo our request) made safe to log and store: the
    given secrets, and the credentials of any presigned URL among them, in every encoding of
    ``encodings`` (percent escapes in either case), then Authorization values and presigned-URL
    credentials wherever they appear."""
    values = [v for secret in secrets if secret for v in (secret, *_credentials_of(secret))]
    forms = {form for value in values for form in encodings(value)}
    if forms:
        pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        text = re.sub(pattern, "[REDACTED]", text, flags=re.IGNORECASE)
    return redact_url(_AUTH_VALUE.sub(r"\1 [REDACTED]", text))
