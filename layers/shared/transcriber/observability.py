"""Powertools Logger, Metrics and Tracer shared by every function, plus log redaction."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer()

# A presigned URL is a bearer credential until it expires: keep its shape in logs, not its secrets.
_SIGNED_PARAMS = re.compile(
    r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&#\s\"']+"
)


_AUTH_VALUE = re.compile(r"(?i)\b(Token|Bearer)\s+[^\s\"',;]+")


def redact_url(url: str) -> str:
    return _SIGNED_PARAMS.sub(r"\1REDACTED", url)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Text from outside (an error body may echo our request) made safe to log and store: the
    given secrets in any common encoding, Authorization values and presigned-URL credentials."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, "[REDACTED]")
    return redact_url(_AUTH_VALUE.sub(r"\1 [REDACTED]", text))
