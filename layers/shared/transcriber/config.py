"""Typed settings for the functions, read from the environment once per cold start.

Every error names the variable at fault, and never echoes a value that could be a secret. The
readers and the Deepgram options' type live in ``transcriber.domain.env`` (the domain modules read
their own settings with them, below this module); they are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from transcriber.domain.capacity_core import BACKFILL_LANE, PoolSettings
from transcriber.domain.cost import Pricing
from transcriber.domain.env import (
    DEDICATED_OPTIONS,
    OPTIONS_VARIABLE,
    UNSUPPORTED_OPTIONS,
    DeepgramOptions,
    EnvReader,
    option_variable,
    options_string,
    parse_boolean,
)
from transcriber.domain.formats import CaptionStyle
from transcriber.domain.keyterms import KeytermCount
from transcriber.domain.profiles import Profiles
from transcriber.domain.upload_options import UploadOptionPolicy
from transcriber.errors import configuration_error

__all__ = [
    "DEDICATED_OPTIONS",
    "OPTIONS_VARIABLE",
    "UNSUPPORTED_OPTIONS",
    "DeepgramOptions",
    "EnvReader",
    "Settings",
    "caption_style",
    "option_variable",
    "options_string",
    "parse_boolean",
    "pool_settings",
]

DEFAULT_BACKFILL_PERCENT = 60  # of the pool a backfill may hold; the rest is kept for live uploads
DEFAULT_API_URL = "https://api.deepgram.com"
DEFAULT_EXTENSIONS = (
    "wav,mp3,m4a,mp4,flac,ogg,opus,webm,aac,amr,mov,mkv,wma,aiff,mpeg,mpga"  # as in template.yaml
)
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
    # Where a backfill task whose lane is full hands its object (the dead-letter queue); empty: none.
    capacity_deferral_queue_url: str = ""
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
            presign_expiry_s=reader.integer("PRESIGN_EXPIRY_SECONDS", default=900, minimum=60),
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
            capacity_deferral_queue_url=reader.text("CAPACITY_DEFERRAL_QUEUE_URL", default=""),
        )
        return _completed(settings, reader)


def _completed(settings: Settings, reader: EnvReader) -> Settings:
    """The settings read from the environment, with what depends on them, checked as a whole."""
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
    _refuse_loops(settings)
    return settings


def _refuse_loops(settings: Settings) -> None:
    """Buckets and prefixes that would make the pipeline transcribe its own outputs, or none at all."""
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
            BACKFILL_LANE: reader.integer("CAPACITY_BACKFILL_WAIT_SECONDS", default=5, minimum=0)
        },
        lane_shares={
            BACKFILL_LANE: reader.integer(
                "CAPACITY_BACKFILL_PERCENT", default=DEFAULT_BACKFILL_PERCENT, minimum=1
            )
            / 100
        },
    )
