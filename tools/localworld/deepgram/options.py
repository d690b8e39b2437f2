"""Validation of ``/v1/listen`` query options, as strict as Deepgram's.

Names come from Deepgram's OpenAPI description of ``POST /v1/listen`` plus the raw-audio
options (``sample_rate``, ``channels``). Booleans must be lowercase ``true``/``false``:
Python's ``urlencode`` writes ``True``, a classic client bug the emulator must catch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BOOLEAN_OPTIONS = frozenset(
    {
        "detect_entities",
        "diarize",
        "dictation",
        "filler_words",
        "intents",
        "measurements",
        "mip_opt_out",
        "multichannel",
        "numerals",
        "paragraphs",
        "profanity_filter",
        "punctuate",
        "sentiment",
        "smart_format",
        "topics",
        "utterances",
    }
)
# Options that may appear more than once (lists are repeated keys).
REPEATABLE_OPTIONS = frozenset(
    {
        "custom_intent",
        "custom_topic",
        "detect_language",
        "extra",
        "keyterm",
        "keywords",
        "language_hint",
        "redact",
        "replace",
        "search",
        "tag",
    }
)
STRING_OPTIONS = frozenset(
    {
        "callback",
        "callback_method",
        "channels",
        "custom_intent_mode",
        "custom_topic_mode",
        "diarize_model",
        "encoding",
        "language",
        "model",
        "sample_rate",
        "summarize",
        "utt_split",
        "version",
    }
)
KNOWN_OPTIONS = BOOLEAN_OPTIONS | REPEATABLE_OPTIONS | STRING_OPTIONS
DEFAULT_MODEL = "base"
MAX_TAG_LENGTH = 128
# Deepgram's own words (seen in the wild) for keywords sent to a Nova-3 model.
KEYWORDS_ON_NOVA_3 = "Keywords are not supported for Nova-3. Please use `keyterm` instead."
# A BCP-47 tag, loosely: a 2-3 letter language, then subtags ("en", "en-US", "zh-Hant-TW").
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class InvalidOption(ValueError):
    """A query option Deepgram would refuse with INVALID_QUERY_PARAMETER."""


# Deepgram's pay-as-you-go ceilings for requests that carry audio-intelligence options.
INTELLIGENCE_OPTIONS = ("summarize", "topics", "intents", "sentiment")
INTELLIGENCE_CONCURRENCY = 10
DETECT_ENTITIES_CONCURRENCY = 5


@dataclass(frozen=True)
class ListenOptions:
    """The options that change the emulator's answer; ``pairs`` keeps everything sent."""

    pairs: tuple[tuple[str, str], ...] = ()
    model: str = DEFAULT_MODEL
    model_given: bool = False
    language: str = "en"
    punctuate: bool = False
    smart_format: bool = False
    diarize: bool = False
    utterances: bool = False
    paragraphs: bool = False
    multichannel: bool = False
    utt_split: float = 0.8
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    callback: str | None = None
    callback_method: str = "POST"
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int = 1
    detect_language: bool = False
    # detect_language=<code> (repeated): the languages to choose among; empty: any.
    detect_language_among: tuple[str, ...] = ()
    redact: tuple[str, ...] = ()  # what to redact (localworld.deepgram.redaction)

    @property
    def formatted(self) -> bool:
        """Whether words get punctuation and capitals."""
        return self.punctuate or self.smart_format

    @property
    def intelligence_ceiling(self) -> int | None:
        """Deepgram's lower concurrency ceiling for audio-intelligence requests ("the lower of the
        rate limits is applied"): 5 with ``detect_entities``, 10 with summarize, topics, intents or
        sentiment; None for plain transcription."""
        sent = dict(self.pairs)
        if sent.get("detect_entities") == "true":
            return DETECT_ENTITIES_CONCURRENCY
        if any(sent.get(name, "false") != "false" for name in INTELLIGENCE_OPTIONS):
            return INTELLIGENCE_CONCURRENCY
        return None


def _fail(message: str) -> InvalidOption:
    return InvalidOption(f"Failed to deserialize query parameters: {message}")


def _boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise _fail(f"{name}: provided string was not `true` or `false`")
    return value == "true"


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _fail(f"{name}: invalid digit found in string") from None
    if number < 1:
        raise _fail(f"{name}: must be a positive integer")
    return number


def _callback_url(value: str) -> str:
    """An absolute http(s) URL with a host, or INVALID_QUERY_PARAMETER.

    The reasons are those of a URL parser (Deepgram's wording is not documented).
    """
    if not value or any(c.isspace() for c in value):
        raise _fail("callback: invalid URL")
    parts = urlsplit(value)
    if not parts.scheme:
        raise _fail("callback: relative URL without a base")
    if parts.scheme not in ("http", "https"):
        raise _fail(f"callback: unsupported URL scheme `{parts.scheme}`, expected `http` or `https`")
    try:
        port = parts.port
    except ValueError:
        raise _fail("callback: invalid port number") from None
    if not parts.hostname or port == 0:
        raise _fail("callback: empty host" if not parts.hostname else "callback: invalid port number")
    return value


def _detect_language(values: list[str]) -> tuple[bool, tuple[str, ...]]:
    """``detect_language=true|false``, or language codes (repeated) to choose among."""
    if values in (["true"], ["false"]):
        return values == ["true"], ()
    for value in values:
        if not _LANGUAGE_TAG.match(value):
            raise _fail("detect_language: expected `true`, `false` or language codes")
    return True, tuple(values)


def _collect(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Check names, booleans, tags and extras; return last values, tags and extras."""
    values: dict[str, str] = {}
    tags: list[str] = []
    extra: dict[str, str] = {}
    for name, value in pairs:
        if name not in KNOWN_OPTIONS:
            raise _fail(f"unknown field `{name}`")
        if name in values and name not in REPEATABLE_OPTIONS:
            raise _fail(f"duplicate field `{name}`")
        if name in BOOLEAN_OPTIONS:
            _boolean(name, value)
        if name == "tag":
            if not value or len(value) > MAX_TAG_LENGTH:
                raise _fail(f"tag: must be between 1 and {MAX_TAG_LENGTH} characters")
            tags.append(value)
        elif name == "extra":
            key, sep, extra_value = value.partition(":")
            if not sep or not key:
                raise _fail("extra: expected `key:value`")
            extra[key] = extra_value
        values[name] = value
    return values, tags, extra


def parse_options(pairs: list[tuple[str, str]]) -> ListenOptions:
    """Check every pair and return the options that matter; raise ``InvalidOption``."""
    values, tags, extra = _collect(pairs)
    detect_language, among = _detect_language([v for n, v in pairs if n == "detect_language"] or ["false"])

    def flag(name: str) -> bool:
        return values.get(name) == "true"

    method = values.get("callback_method", "post").upper()
    if method not in ("POST", "PUT"):
        raise _fail("callback_method: unknown variant, expected `post` or `put`")
    for mode in ("custom_topic_mode", "custom_intent_mode"):
        if mode in values and values[mode] not in ("strict", "extended"):
            raise _fail(f"{mode}: unknown variant, expected `strict` or `extended`")
    if values.get("summarize", "false") not in ("true", "false", "v1", "v2"):
        raise _fail("summarize: expected `true`, `false` or `v2`")
    try:
        utt_split = float(values.get("utt_split", "0.8"))
    except ValueError:
        raise _fail("utt_split: invalid float literal") from None
    if "callback_method" in values and "callback" not in values:
        raise _fail("callback_method: requires `callback`")
    callback = _callback_url(values["callback"]) if "callback" in values else None
    model = values.get("model", "")
    if "keywords" in values and (model == "nova-3" or model.startswith("nova-3-")):
        raise InvalidOption(KEYWORDS_ON_NOVA_3)
    return ListenOptions(
        pairs=tuple(pairs),
        model=model or DEFAULT_MODEL,
        model_given=bool(model),
        language=values.get("language", "en"),
        punctuate=flag("punctuate"),
        smart_format=flag("smart_format"),
        diarize=flag("diarize") or "diarize_model" in values,
        utterances=flag("utterances"),
        paragraphs=flag("paragraphs"),
        multichannel=flag("multichannel"),
        utt_split=utt_split,
        tags=tuple(tags),
        extra=extra,
        callback=callback,
        callback_method=method,
        encoding=values.get("encoding"),
        sample_rate=_positive_int("sample_rate", values["sample_rate"]) if "sample_rate" in values else None,
        channels=_positive_int("channels", values["channels"]) if "channels" in values else 1,
        detect_language=detect_language,
        detect_language_among=among,
        redact=tuple(v for n, v in pairs if n == "redact"),
    )
