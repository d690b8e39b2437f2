"""Typed settings for the functions, read from the environment once per cold start.

Every error names the variable at fault, and never echoes a value that could be a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from transcriber.errors import configuration_error

DEFAULT_API_URL = "https://api.deepgram.com"
DEFAULT_EXTENSIONS = (
    "wav,mp3,m4a,mp4,flac,ogg,opus,webm,aac,amr,mov,mkv,wma,aiff,mpeg,mpga"  # as in template.yaml
)
# Options with a dedicated variable, so DEEPGRAM_EXTRA_OPTIONS can't set them a second time.
DEDICATED_OPTIONS = frozenset(
    {"model", "language", "smart_format", "punctuate", "diarize", "utterances", "paragraphs", "tag"}
)
# The function writes Deepgram's synchronous answer; a callback would answer elsewhere.
UNSUPPORTED_OPTIONS = frozenset({"callback", "callback_method"})


@dataclass(frozen=True)
class DeepgramOptions:
    model: str
    language: str
    smart_format: bool
    punctuate: bool
    diarize: bool
    utterances: bool
    paragraphs: bool
    tags: tuple[str, ...]
    extra: tuple[tuple[str, str], ...]

    def query(self) -> list[tuple[str, str]]:
        """Query pairs as Deepgram wants them: lowercase booleans, lists as repeated keys."""
        pairs: list[tuple[str, str]] = [("model", self.model), ("language", self.language)]
        for name in ("smart_format", "punctuate", "diarize", "utterances", "paragraphs"):
            pairs.append((name, "true" if getattr(self, name) else "false"))
        pairs.extend(("tag", tag) for tag in self.tags)
        pairs.extend(self.extra)
        return pairs


@dataclass(frozen=True)
class Settings:
    environment_name: str
    output_bucket: str
    deepgram_secret_id: str
    deepgram_api_url: str
    idempotency_table: str
    deepgram: DeepgramOptions
    allowed_extensions: frozenset[str]
    secret_max_age_s: int
    presign_expiry_s: int
    idempotency_ttl_s: int
    transcript_prefix: str
    failure_prefix: str
    deepgram_max_attempts: int = 4
    input_bucket: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        environment_name = reader.text("ENVIRONMENT_NAME", default="dev")
        tags = reader.csv("DEEPGRAM_TAG") or (environment_name,)
        settings = cls(
            environment_name=environment_name,
            output_bucket=reader.required("OUTPUT_BUCKET"),
            deepgram_secret_id=reader.required("DEEPGRAM_SECRET_ID"),
            deepgram_api_url=reader.https_url("DEEPGRAM_API_URL", default=DEFAULT_API_URL),
            idempotency_table=reader.required("IDEMPOTENCY_TABLE"),
            deepgram=DeepgramOptions(
                model=reader.text("DEEPGRAM_MODEL", default="nova-3"),
                language=reader.text("DEEPGRAM_LANGUAGE", default="en"),
                smart_format=reader.boolean("DEEPGRAM_SMART_FORMAT", default=True),
                punctuate=reader.boolean("DEEPGRAM_PUNCTUATE", default=True),
                diarize=reader.boolean("DEEPGRAM_DIARIZE", default=False),
                utterances=reader.boolean("DEEPGRAM_UTTERANCES", default=False),
                paragraphs=reader.boolean("DEEPGRAM_PARAGRAPHS", default=False),
                tags=tags,
                extra=reader.extra_options("DEEPGRAM_EXTRA_OPTIONS"),
            ),
            allowed_extensions=frozenset(
                ext.lower().lstrip(".") for ext in reader.csv("ALLOWED_EXTENSIONS", DEFAULT_EXTENSIONS)
            ),
            secret_max_age_s=reader.integer("SECRET_MAX_AGE_SECONDS", default=300, minimum=0),
            presign_expiry_s=reader.integer("PRESIGN_EXPIRY_SECONDS", default=3600, minimum=60),
            idempotency_ttl_s=reader.integer("IDEMPOTENCY_TTL_SECONDS", default=30 * 86400, minimum=60),
            transcript_prefix=reader.prefix("TRANSCRIPT_PREFIX", default="transcripts/"),
            failure_prefix=reader.prefix("FAILURE_PREFIX", default="failures/"),
            deepgram_max_attempts=reader.integer("DEEPGRAM_MAX_ATTEMPTS", default=4, minimum=1),
            input_bucket=reader.text("INPUT_BUCKET", default="") or None,
        )
        if settings.input_bucket == settings.output_bucket:
            # Transcripts written into the bucket that triggers the function would trigger it again.
            raise configuration_error(
                "invalid-configuration", "INPUT_BUCKET and OUTPUT_BUCKET must differ: the pipeline would loop"
            )
        if settings.transcript_prefix == settings.failure_prefix:
            raise configuration_error(
                "invalid-configuration", "TRANSCRIPT_PREFIX and FAILURE_PREFIX must differ"
            )
        return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def required(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            raise configuration_error("missing-configuration", f"environment variable {name} is not set")
        return value

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def csv(self, name: str, default: str = "") -> tuple[str, ...]:
        value = self._raw(name) or default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in {"true", "1", "yes"}:
            return True
        if value.lower() in {"false", "0", "no"}:
            return False
        raise configuration_error("invalid-configuration", f"{name} must be true or false, got {value!r}")

    def integer(self, name: str, default: int, minimum: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise configuration_error(
                "invalid-configuration", f"{name} must be an integer, got {value!r}"
            ) from None
        if number < minimum:
            raise configuration_error("invalid-configuration", f"{name} must be at least {minimum}")
        return number

    def prefix(self, name: str, default: str) -> str:
        value = self._raw(name) or default
        return value if value.endswith("/") else value + "/"

    def https_url(self, name: str, default: str) -> str:
        value = (self._raw(name) or default).rstrip("/")
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc:
            # Deepgram refuses plain HTTP, and the API key must never cross the network in clear.
            raise configuration_error("insecure-api-url", f"{name} must be an https:// URL")
        return value

    def extra_options(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._raw(name)
        if value is None:
            return ()
        try:
            pairs = parse_qsl(value, keep_blank_values=False, strict_parsing=True)
        except ValueError:
            raise configuration_error(
                "invalid-configuration", f"{name} must be a query string such as 'keyterm=acme&redact=pii'"
            ) from None
        for key, _ in pairs:
            if key in DEDICATED_OPTIONS:
                raise configuration_error(
                    "invalid-configuration",
                    f"{name} sets {key!r}; use its own variable (DEEPGRAM_{key.upper()})",
                )
            if key in UNSUPPORTED_OPTIONS:
                raise configuration_error(
                    "invalid-configuration", f"{name} sets {key!r}, which this pipeline does not support"
                )
        return tuple(pairs)


@dataclass(frozen=True)
class RetrySettings:
    """The retry function's settings: how it backs off on the dead-letter queue."""

    dead_letter_queue_url: str
    parking_queue_url: str
    max_attempts: int
    base_delay_s: int
    max_delay_s: int
    blocked_delay_s: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetrySettings:
        reader = _Reader(os.environ if env is None else env)
        # SQS caps a message's visibility timeout at 12 hours.
        max_visibility = 43200
        settings = cls(
            dead_letter_queue_url=reader.required("DEAD_LETTER_QUEUE_URL"),
            parking_queue_url=reader.required("PARKING_QUEUE_URL"),
            max_attempts=reader.integer("RETRY_MAX_ATTEMPTS", default=8, minimum=1),
            base_delay_s=reader.integer("RETRY_BASE_DELAY_SECONDS", default=60, minimum=0),
            max_delay_s=reader.integer("RETRY_MAX_DELAY_SECONDS", default=3600, minimum=0),
            blocked_delay_s=reader.integer("BLOCKED_RETRY_DELAY_SECONDS", default=3600, minimum=0),
        )
        for name, value in (
            ("RETRY_MAX_DELAY_SECONDS", settings.max_delay_s),
            ("BLOCKED_RETRY_DELAY_SECONDS", settings.blocked_delay_s),
        ):
            if value > max_visibility:
                raise configuration_error("invalid-configuration", f"{name} must be at most {max_visibility}")
        return settings
