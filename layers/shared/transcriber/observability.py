"""Powertools Logger, Metrics and Tracer shared by every function, plus log redaction."""

from __future__ import annotations

import re

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer()

# A presigned URL is a bearer credential until it expires: keep its shape in logs, not its secrets.
_SIGNED_PARAMS = re.compile(
    r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId)=)[^&#\s\"']+"
)


def redact_url(url: str) -> str:
    return _SIGNED_PARAMS.sub(r"\1REDACTED", url)
