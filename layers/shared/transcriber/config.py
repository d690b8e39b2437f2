"""Typed settings for the functions, read from the environment once per cold start.

Every error names the variable at fault, and never echoes a value that could be a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from transcriber.domain.cost import Pricing
from transcriber.domain.formats import CaptionStyle
from transcriber.domain.keyterms import KeytermCount
from transcriber.domain.profiles import Profiles
from transcriber.domain.speakers import OUTPUT_OPTIONS
from transcriber.domain.upload_options import UploadOptionPolicy
from transcriber.errors import configuration_error
from transcriber.services.capacity import BACKFILL_LANE, PoolSettings

DEFAULT_BACKFILL_PERCENT = 60  # of the pool a backfill may hold; the rest is kept for live uploads
DEFAULT_API_URL = "https://api.deepgram.com"
DEFAULT_EXTENSIONS = (
    "wav,mp3,m4a,mp4,flac,ogg,opus,webm,aac,amr,mov,mkv,wma,aiff,mpeg,mpga"  # as in template.yaml
)
# The function writes Deepgram's synchronous answer; a callback would answer elsewhere.
UNSUPPORTED_OPTIONS = frozenset({"callback", "callback_method"})
# How the media reaches Deepgram: "url" (a presigned GET Deepgram fetches), "bytes" (the object
# streamed from S3 in the request body), "auto" (the URL, then the bytes once if Deepgram can't fetch it).
DELIVERY_MODES = ("url", "bytes", "auto")
DEFAULT_DELIVERY_MODE = "auto"
# Outputs beside Deepgram's JSON (always written), made from the stored JSON (transcriber.domain.formats).
OUTPUT_FORMATS = ("json", "txt", "srt", "vtt")
DEFAULT_OUTPUT_FORMATS = "json,txt,srt,vtt"  # as in template.yaml
DEFAULT_CAPTION_WORDS_PER_CUE = 8
DEFAULT_EVENT_BUS = "default"


@dataclass(frozen=True)
class DeepgramOptions:
    """Deepgram query options, one field each: the field's name is the option's name, its
    variable is ``DEEPGRAM_<NAME>`` and its type says how both are read and sent.

    The template sets them all in one query string, ``DEEPGRAM_OPTIONS`` (its DeepgramOptions
    parameter): a field's option there is read with the field's type, any other option goes to
    ``extra``. A non-empty ``DEEPGRAM_<NAME>`` overrides that one option (sam local --env-vars,
    one function's override); ``DEEPGRAM_EXTRA_OPTIONS`` adds options that have no field."""

    model: str = "nova-3"  # always sent: Deepgram's own default is the old base model
    language: str = "en"
    smart_format: bool = True
    punctuate: bool = True
    diarize: bool = False
    utterances: bool = False
    paragraphs: bool = False
    tag: tuple[str, ...] = ()  # empty: the environment's name, so usage can be split per stack
    # Anything else, as a query string (DEEPGRAM_EXTRA_OPTIONS); never one of the fields above.
    extra: tuple[tuple[str, str], ...] = field(default=(), metadata={"env": "DEEPGRAM_EXTRA_OPTIONS"})

    def query(self) -> list[tuple[str, str]]:
        """Query pairs as Deepgram wants them: lowercase booleans, lists as repeated keys."""
        pairs: list[tuple[str, str]] = []
        for option in fields(self):
            value = getattr(self, option.name)
            if option.name == "extra":
                pairs.extend(value)
            elif isinstance(value, bool):
                pairs.append((option.name, "true" if value else "false"))
            elif isinstance(value, tuple):
                pairs.extend((option.name, item) for item in value)
            else:
                pairs.append((option.name, str(value)))
        return pairs

    @classmethod
    def from_env(cls, reader: EnvReader, environment_name: str) -> DeepgramOptions:
        base = options_string(reader, OPTIONS_VARIABLE)
        values: dict[str, Any] = {}
        for option in fields(cls):
            name = option_variable(option.name)
            default = base.get(option.name, option.default)
            if option.name == "extra":
                values[option.name] = (*default, *reader.extra_options(name))
            elif isinstance(option.default, bool):
                values[option.name] = reader.boolean(name, default=default)
            elif isinstance(option.default, tuple):
                values[option.name] = reader.csv(name) or default
            else:
                values[option.name] = reader.text(name, default=str(default))
        values["tag"] = values["tag"] or (environment_name,)
        return cls(**values)


# The template's one Deepgram options string (the DeepgramOptions parameter).
OPTIONS_VARIABLE = "DEEPGRAM_OPTIONS"


def options_string(reader: EnvReader, name: str) -> dict[str, Any]:
    """``DeepgramOptions`` field values from a query string: each field's option read with its type
    (booleans true/false, ``tag`` repeatable), every other option in ``extra``, in order."""
    typed = {f.name: f.default for f in fields(DeepgramOptions) if f.name != "extra"}
    values: dict[str, Any] = {}
    extra: list[tuple[str, str]] = []
    for key, value in reader.query_string(name):
        if key not in typed:
            extra.append((key, value))
        elif isinstance(typed[key], tuple):
            values[key] = (*values.get(key, ()), value)
        elif key in values:
            raise configuration_error("invalid-configuration", f"{name} sets {key!r} more than once")
        elif isinstance(typed[key], bool):
            values[key] = parse_boolean(value, f"{name}'s {key}")
        else:
            values[key] = value
    return {**values, "extra": tuple(extra)}


def parse_boolean(value: str, what: str) -> bool:
    """Deepgram's lowercase booleans, and the spellings people write in configuration."""
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise configuration_error("invalid-configuration", f"{what} must be true or false, got {value!r}")


def option_variable(option: str) -> str:
    """The environment variable that sets one Deepgram option."""
    declared = {f.name: f.metadata.get("env") for f in fields(DeepgramOptions)}
    return declared.get(option) or f"DEEPGRAM_{option.upper()}"


# Options with a dedicated variable, so DEEPGRAM_EXTRA_OPTIONS can't set them a second time.
DEDICATED_OPTIONS = frozenset(f.name for f in fields(DeepgramOptions) if f.name != "extra")


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
    kept_answer_prefix: str  # paid answers whose write failed, waiting for the retry
    deepgram_max_attempts: int = 4
    input_bucket: str | None = None
    delivery_mode: str = DEFAULT_DELIVERY_MODE
    transcribe_restored: bool = True  # restored copies of archived objects (see transcriber.domain.archive)
    capacity: PoolSettings | None = None  # the Deepgram capacity pool; None: no governor
    upload_options: UploadOptionPolicy = field(default_factory=UploadOptionPolicy)
    pricing: Pricing = field(default_factory=Pricing)
    # The buckets whose objects this stack transcribes: INPUT_BUCKET plus ALLOWED_BUCKETS (the
    # template puts ExistingBucketName there). Any other bucket an event names is refused.
    allowed_buckets: frozenset[str] = frozenset()
    output_formats: tuple[str, ...] = OUTPUT_FORMATS
    caption_words_per_cue: int = DEFAULT_CAPTION_WORDS_PER_CUE
    # The captions' layout (its words_per_cue is caption_words_per_cue); an upload may change it.
    caption_style: CaptionStyle = field(default_factory=CaptionStyle)
    completion_events: bool = True
    event_bus_name: str = DEFAULT_EVENT_BUS
    profiles: Profiles = field(default_factory=Profiles)  # Deepgram options per key prefix

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = EnvReader(env)
        environment_name = reader.text("ENVIRONMENT_NAME", default="dev")
        settings = cls(
            environment_name=environment_name,
            output_bucket=reader.required("OUTPUT_BUCKET"),
            deepgram_secret_id=reader.required("DEEPGRAM_SECRET_ID"),
            deepgram_api_url=reader.https_url("DEEPGRAM_API_URL", default=DEFAULT_API_URL),
            idempotency_table=reader.required("IDEMPOTENCY_TABLE"),
            deepgram=DeepgramOptions.from_env(reader, environment_name),
            allowed_extensions=frozenset(
                ext.lower().lstrip(".") for ext in reader.csv("ALLOWED_EXTENSIONS", DEFAULT_EXTENSIONS)
            ),
            secret_max_age_s=reader.integer("SECRET_MAX_AGE_SECONDS", default=300, minimum=0),
            presign_expiry_s=reader.integer("PRESIGN_EXPIRY_SECONDS", default=3600, minimum=60),
            idempotency_ttl_s=reader.integer("IDEMPOTENCY_TTL_SECONDS", default=30 * 86400, minimum=60),
            transcript_prefix=reader.prefix("TRANSCRIPT_PREFIX", default="transcripts/"),
            failure_prefix=reader.prefix("FAILURE_PREFIX", default="failures/"),
            kept_answer_prefix=reader.prefix("KEPT_ANSWER_PREFIX", default="kept-answers/"),
            deepgram_max_attempts=reader.integer("DEEPGRAM_MAX_ATTEMPTS", default=4, minimum=1),
            input_bucket=reader.text("INPUT_BUCKET", default="") or None,
            delivery_mode=reader.choice("DELIVERY_MODE", DELIVERY_MODES, default=DEFAULT_DELIVERY_MODE),
            transcribe_restored=reader.boolean("TRANSCRIBE_RESTORED_OBJECTS", default=True),
            capacity=pool_settings(reader),
            upload_options=UploadOptionPolicy.from_env(reader),
            pricing=Pricing.from_env(reader),
            allowed_buckets=frozenset(reader.csv("ALLOWED_BUCKETS")),
            output_formats=reader.choices("OUTPUT_FORMATS", OUTPUT_FORMATS, default=DEFAULT_OUTPUT_FORMATS),
            caption_words_per_cue=reader.integer(
                "CAPTION_WORDS_PER_CUE", default=DEFAULT_CAPTION_WORDS_PER_CUE, minimum=1
            ),
            completion_events=reader.boolean("COMPLETION_EVENTS", default=True),
            event_bus_name=reader.text("EVENT_BUS_NAME", default=DEFAULT_EVENT_BUS),
        )
        over_limit = KeytermCount.of(settings.deepgram.query()).problem()
        if over_limit is not None:
            raise configuration_error("invalid-configuration", f"{OPTIONS_VARIABLE}: {over_limit}")
        settings = replace(
            settings,
            profiles=Profiles.from_env(reader, settings.deepgram, UNSUPPORTED_OPTIONS),
            upload_options=settings.upload_options.for_model(settings.deepgram.model),
            caption_style=caption_style(reader, settings.caption_words_per_cue),
        )
        if settings.input_bucket:
            settings = replace(settings, allowed_buckets=settings.allowed_buckets | {settings.input_bucket})
        if not settings.allowed_buckets:
            raise configuration_error(
                "missing-configuration",
                "environment variable INPUT_BUCKET (or ALLOWED_BUCKETS) is not set: "
                "the function must know which buckets it transcribes",
            )
        if settings.output_bucket in settings.allowed_buckets - {settings.input_bucket}:
            raise configuration_error(
                "invalid-configuration", "ALLOWED_BUCKETS must not name OUTPUT_BUCKET: it would loop"
            )
        if settings.input_bucket == settings.output_bucket:
            # Transcripts written into the bucket that triggers the function would trigger it again.
            raise configuration_error(
                "invalid-configuration", "INPUT_BUCKET and OUTPUT_BUCKET must differ: the pipeline would loop"
            )
        prefixes = (settings.transcript_prefix, settings.failure_prefix, settings.kept_answer_prefix)
        if len(set(prefixes)) < len(prefixes):
            raise configuration_error(
                "invalid-configuration",
                "TRANSCRIPT_PREFIX, FAILURE_PREFIX and KEPT_ANSWER_PREFIX must differ",
            )
        return settings


def caption_style(reader: EnvReader, words_per_cue: int) -> CaptionStyle:
    """The captions' layout (``transcriber.domain.formats.CaptionStyle``); 0 turns a length limit off."""
    default = CaptionStyle()
    return CaptionStyle(
        words_per_cue=words_per_cue,
        line_length=reader.integer("CAPTION_LINE_LENGTH", default=default.line_length, minimum=0),
        max_lines=reader.integer("CAPTION_MAX_LINES", default=default.max_lines, minimum=1),
        max_cue_s=reader.integer("CAPTION_MAX_CUE_SECONDS", default=int(default.max_cue_s), minimum=0),
        start_index=reader.integer("CAPTION_START_INDEX", default=default.start_index, minimum=0),
    )


def pool_settings(reader: EnvReader) -> PoolSettings | None:
    """The capacity pool (``transcriber.services.capacity``): on when ``CAPACITY_TABLE`` names a table."""
    table = reader.text("CAPACITY_TABLE", default="")
    if not table:
        return None
    defaults = PoolSettings(table=table)
    return PoolSettings(
        table=table,
        name=reader.text("CAPACITY_POOL", default=defaults.name),
        size=reader.integer("CAPACITY_POOL_SIZE", default=defaults.size, minimum=1),
        ai_ceiling=reader.integer("CAPACITY_AI_CEILING", default=defaults.ai_ceiling, minimum=1),
        entities_size=reader.integer("CAPACITY_ENTITIES_SIZE", default=defaults.entities_size, minimum=1),
        whisper_size=reader.integer("CAPACITY_WHISPER_SIZE", default=defaults.whisper_size, minimum=1),
        lane_patience_s={
            BACKFILL_LANE: reader.integer("CAPACITY_BACKFILL_WAIT_SECONDS", default=120, minimum=0)
        },
        lane_shares={
            BACKFILL_LANE: reader.integer(
                "CAPACITY_BACKFILL_PERCENT", default=DEFAULT_BACKFILL_PERCENT, minimum=1
            )
            / 100
        },
    )


class EnvReader:
    """Reads typed values from the environment; every error names the variable, never its value."""

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

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self._raw(name) or default).lower()
        if value not in choices:
            raise configuration_error("invalid-configuration", f"{name} must be one of {', '.join(choices)}")
        return value

    def choices(self, name: str, choices: tuple[str, ...], default: str) -> tuple[str, ...]:
        """A comma-separated subset of ``choices``, in their order; the first choice always included."""
        values = {value.lower() for value in self.csv(name, default)}
        unknown = sorted(values - set(choices))
        if unknown:
            raise configuration_error(
                "invalid-configuration", f"{name} lists {', '.join(unknown)}; allowed: {', '.join(choices)}"
            )
        return tuple(choice for choice in choices if choice in values or choice == choices[0])

    def csv(self, name: str, default: str = "") -> tuple[str, ...]:
        value = self._raw(name) or default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        return default if value is None else parse_boolean(value, name)

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

    def query_string(self, name: str) -> tuple[tuple[str, str], ...]:
        """Deepgram options as a URL query string; the options this pipeline can't honour refused."""
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
            if key in UNSUPPORTED_OPTIONS:
                raise configuration_error(
                    "invalid-configuration", f"{name} sets {key!r}, which this pipeline does not support"
                )
            if key in OUTPUT_OPTIONS:  # ours: it would reach Deepgram (and a person's name with it)
                raise configuration_error(
                    "invalid-configuration",
                    f"{name} sets {key!r}: a caption setting (Settings.Outputs), not Deepgram's",
                )
        return tuple(pairs)

    def extra_options(self, name: str) -> tuple[tuple[str, str], ...]:
        pairs = self.query_string(name)
        for key, _ in pairs:
            if key in DEDICATED_OPTIONS:
                own = option_variable(key)
                raise configuration_error(
                    "invalid-configuration",
                    f"{name} sets {key!r}; use {OPTIONS_VARIABLE} or its own variable ({own})",
                )
        return pairs
