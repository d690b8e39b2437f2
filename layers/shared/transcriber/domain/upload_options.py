"""Deepgram options per upload: from the object's S3 metadata (``x-amz-meta-dg-language: es``) or,
for direct invokes and S3 Batch Operations, from the event's ``options`` field.

The stack sets an allow-list (``UPLOAD_OPTIONS``); an option off the list, one the pipeline never
lets an uploader set (``callback``, ``tag``, ``extra``...) or a value of the wrong shape is a
permanent ``option-refused`` failure that names the option. Accepted options are laid over the
stack's ``DeepgramOptions`` (the same query building: lowercase booleans, repeated keys), are part
of the idempotency identity, and are reported with the transcript (metadata and result).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from email.header import decode_header, make_header
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from transcriber.domain import speakers
from transcriber.errors import ErrorDetails, PermanentError, configuration_error
from transcriber.observability import redact_url

if TYPE_CHECKING:
    from transcriber.domain.env import DeepgramOptions, EnvReader

# S3 user metadata names that carry options: ``x-amz-meta-dg-<option, '_' written '-'>``.
METADATA_PREFIX = "dg-"
DEFAULT_ALLOWED = (
    "language",
    "model",
    "keyterm",
    "diarize",
    "diarize_model",
    "detect_language",
    "multichannel",
    "redact",
)  # as in template.yaml's UploadOptions
# Never settable per upload, whatever the allow-list says: a callback sends the transcript
# elsewhere, tags and extras are the stack's usage accounting.
NEVER_ALLOWED = frozenset({"callback", "callback_method", "tag", "extra"})
MAX_VALUES = 100  # Deepgram's own ceiling for keyterm (100 terms)
MAX_VALUE_CHARS = 100
# The options as they go in the transcript's S3 metadata (ASCII, and S3 allows 2 KB in all).
MAX_METADATA_CHARS = 512

_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*|multi")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # model names, diarize_model, redact entities
_TERM = re.compile(r"[^\x00-\x1f\x7f]{1,100}")  # a key term: printable, no control characters
_BOOLEAN_OPTIONS = frozenset(
    {
        "diarize",
        "multichannel",
        "mip_opt_out",
        "numerals",
        "profanity_filter",
        "filler_words",
        "dictation",
        "measurements",
        "smart_format",
        "punctuate",
        "paragraphs",
        "utterances",
    }
)
_REPEATED_OPTIONS = frozenset({"keyterm", "redact", "language_hint", "detect_language"})


def refused(option: str, why: str) -> PermanentError:
    option = option[:64]  # an uploader's name: bounded in the record
    message = f"option {option!r} refused: {why}"
    return PermanentError(ErrorDetails(reason="option-refused", message=message, extra={"option": option}))


def _is_bool(value: str) -> bool:
    return value in {"true", "false"}


def _check_language(value: str) -> bool:
    return bool(_LANGUAGE.fullmatch(value))


def _check_detect_language(value: str) -> bool:
    return _is_bool(value) or _check_language(value)


def _check_name(value: str) -> bool:
    return bool(_NAME.fullmatch(value))


def _check_term(value: str) -> bool:
    return bool(_TERM.fullmatch(value)) and value == value.strip()


# What a value of each option may look like; an allowed option not listed here takes a name.
_VALUE_CHECKS: dict[str, Callable[[str], bool]] = dict.fromkeys(_BOOLEAN_OPTIONS, _is_bool)
_VALUE_CHECKS |= {
    "language": _check_language,
    "language_hint": _check_language,
    "detect_language": _check_detect_language,
    "keyterm": _check_term,
}
# Ours, not Deepgram's (transcriber.domain.speakers): the caption layout (speakers are checked apart).
_VALUE_CHECKS |= {name: partial(speakers.caption_value_ok, name) for name in speakers.CAPTION_OPTIONS}


# Options whose values take a name (model names, diarize_model, redact entities); see well_formed.
NAME_OPTIONS = frozenset({"model", "diarize_model", "redact"})
# Options whose value shape this module knows; profiles check others only for printable text.
CHECKED_OPTIONS = frozenset(_VALUE_CHECKS) | NAME_OPTIONS


def well_formed(name: str, value: str) -> bool:
    """Whether ``value`` has the shape of option ``name``; an option not in ``_VALUE_CHECKS`` takes a name."""
    return _VALUE_CHECKS.get(name, _check_name)(value)


def option_name(raw: str) -> str:
    """``diarize-model`` (metadata style) and ``diarize_model`` are the same option."""
    return raw.strip().lower().replace("-", "_")


def from_metadata(metadata: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The ``dg-*`` user metadata of an object (boto3 gives names without ``x-amz-meta-``),
    as raw (option, value) pairs; a comma-separated value of a repeated option is split. S3
    metadata is ASCII: non-ASCII values arrive as RFC 2047 encoded words, which are decoded."""
    pairs: list[tuple[str, str]] = []
    for key, value in sorted(metadata.items()):
        if key.lower().startswith(METADATA_PREFIX):
            pairs.extend(_split(option_name(key[len(METADATA_PREFIX) :]), _decoded(value)))
    return tuple(pairs)


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):  # malformed encoded word, unknown charset: take it as sent
        return value


def from_event(value: Any) -> tuple[tuple[str, str], ...]:
    """The ``options`` of a direct payload (``{"language": "es", "keyterm": ["a", "b"]}``) or of a
    Batch Operations job's ``userArguments`` (a query string, ``language=es&keyterm=a``), as raw
    pairs; ``ValueError`` when the field itself is malformed (the event is, then)."""
    if isinstance(value, str):
        try:
            return tuple(
                pair
                for name, text in parse_qsl(value, keep_blank_values=True, strict_parsing=bool(value))
                for pair in _split(option_name(name), text)
            )
        except ValueError:
            raise ValueError("options must be a query string such as 'language=es&keyterm=acme'") from None
    if not isinstance(value, Mapping):
        raise ValueError("options must be an object of option names to values")
    pairs: list[tuple[str, str]] = []
    for name, item in value.items():
        for one in item if isinstance(item, list) else [item]:
            pairs.extend(_split(option_name(str(name)), _text(str(name), one)))
    return tuple(pairs)


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        raise ValueError(f"options.{name}: values must be strings, numbers, booleans or lists of them")
    return str(value)


def _split(name: str, value: str) -> list[tuple[str, str]]:
    """One (option, value) pair, or one per comma-separated value of a repeated option (key terms
    may hold spaces; a comma separates them)."""
    if name in _REPEATED_OPTIONS:
        return [(name, part.strip()) for part in value.split(",") if part.strip()] or [(name, "")]
    return [(name, value.strip())]


@dataclass(frozen=True)
class UploadOptionPolicy:
    """Which options uploaders may set (``UPLOAD_OPTIONS``); empty turns the feature off, and then
    the object's metadata is not even read (no HEAD request for it)."""

    allowed: frozenset[str] = frozenset(DEFAULT_ALLOWED) | speakers.OUTPUT_OPTIONS
    # Model families an upload may pick (``UPLOAD_MODELS``; ``nova-3`` allows nova-3 and
    # nova-3-medical); None until ``for_model`` sets the default, the deployment's own family. A
    # model outside it (Whisper, say) is a different limit and price: the operator opts in.
    models: frozenset[str] | None = None

    @classmethod
    def from_env(
        cls, reader: EnvReader, name: str = "UPLOAD_OPTIONS", outputs: str = "UPLOAD_OUTPUT_OPTIONS"
    ) -> UploadOptionPolicy:
        """Deepgram's options from ``name``; ours (named speakers, caption layout:
        ``transcriber.domain.speakers``) from ``outputs``: one allow-list, two settings."""
        allowed = _listed(reader, name, DEFAULT_ALLOWED)
        forbidden = sorted(allowed & NEVER_ALLOWED)
        if forbidden:
            raise configuration_error(
                "invalid-configuration", f"{name} lists {', '.join(forbidden)}, which uploaders may never set"
            )
        # "none" in the first turns the feature off: the objects' metadata is not even read.
        ours = _listed(reader, outputs, speakers.DEFAULT_OUTPUT_OPTIONS) if allowed else frozenset()
        unknown = sorted(ours - speakers.OUTPUT_OPTIONS)
        if unknown:
            known = ", ".join(speakers.DEFAULT_OUTPUT_OPTIONS)
            raise configuration_error(
                "invalid-configuration", f"{outputs} lists {', '.join(unknown)}; it may list {known}"
            )
        models = frozenset(
            m.strip() for m in reader.text("UPLOAD_MODELS", default="").split(",") if m.strip()
        )
        return cls(allowed | ours, models or None)

    def for_model(self, model: str) -> UploadOptionPolicy:
        """The policy with the deployment's ``model`` family as the default model allow-list."""
        return self if self.models is not None else replace(self, models=frozenset({model_family(model)}))

    def model_allowed(self, model: str) -> bool:
        families = self.models if self.models is not None else frozenset({model_family(DEFAULT_MODEL)})
        return any(model == family or model.startswith(f"{family}-") for family in families)

    @property
    def enabled(self) -> bool:
        return bool(self.allowed)

    def reads_metadata(self, event_options: tuple[tuple[str, str], ...] | None) -> bool:
        """Whether the object's metadata must be read (one HEAD): options are allowed and the
        event did not carry its own."""
        return self.enabled and event_options is None

    def validate(self, pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """The accepted pairs, normalised (booleans lowercase), in a stable order; raises
        ``option-refused`` naming the first option that is not allowed or not well formed."""
        accepted = [(name, self._value(name, value)) for name, value in pairs]
        counts: dict[str, int] = {}
        for name, _ in accepted:
            counts[name] = counts.get(name, 0) + 1
            if counts[name] > (MAX_VALUES if name in _REPEATED_OPTIONS else 1):
                raise refused(name, "given too many times")
        return tuple(sorted(accepted, key=lambda pair: pair[0]))  # values keep their order

    def _value(self, name: str, value: str) -> str:
        """The value, normalised, of an allowed option; ``option-refused`` otherwise."""
        if name in NEVER_ALLOWED or name not in self.allowed:
            listed = ", ".join(sorted(self.allowed)) or "empty"
            raise refused(name, f"not in this stack's allow-list ({listed})")
        normalised = value.lower() if name in _BOOLEAN_OPTIONS else value
        if name == "model" and not self.model_allowed(normalised):
            families = ", ".join(sorted(self.models or ()))
            raise refused(
                name, f"{redact_url(normalised)[:40]!r} is not in this stack's model families ({families})"
            )
        if name == speakers.SPEAKERS:
            return _speakers(normalised)
        if not well_formed(name, normalised):
            raise refused(name, f"{redact_url(value)[:40]!r} is not a valid value")
        return normalised


def _speakers(value: str) -> str:
    try:
        speakers.parse_speakers(value)
    except ValueError as exc:  # says what is wrong; names are people's: not echoed
        raise refused(speakers.SPEAKERS, f"{exc} (e.g. 0=Alice,1=Bob)") from None
    return value


DEFAULT_MODEL = "nova-3"


def model_family(model: str) -> str:
    """``nova-3`` for nova-3 and nova-3-medical, ``nova-2`` for nova-2-phonecall, ``whisper`` for
    whisper-large, ``enhanced`` for enhanced-phonecall: the name up to its variant."""
    parts = model.split("-")
    return "-".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def _listed(reader: EnvReader, name: str, default: Iterable[str]) -> frozenset[str]:
    text = reader.text(name, default=",".join(default))
    if text.strip().lower() == "none":
        return frozenset()
    return frozenset(option_name(part) for part in text.split(",") if part.strip())


# Redaction only adds up: a folder's profile or an upload may ask for more of it, never less.
ADDITIVE_OPTIONS = frozenset({"redact"})


def overlay(stack: DeepgramOptions, upload: tuple[tuple[str, str], ...]) -> DeepgramOptions:
    """The stack's options with the upload's laid over them: an option that is a field of
    ``DeepgramOptions`` replaces it (a boolean read as one); any other replaces the stack's
    ``DEEPGRAM_EXTRA_OPTIONS`` pairs of that name, except ``redact``, whose values add up."""
    upload = speakers.for_deepgram(upload)  # our own options never reach Deepgram
    if not upload:
        return stack
    changes, extra = _field_changes(stack, upload)
    upload_names = {name for name, _ in extra} - ADDITIVE_OPTIONS
    kept = [pair for pair in stack.extra if pair[0] not in upload_names]
    added = [pair for pair in extra if pair not in kept and not _weakens(pair, kept)]
    return replace(stack, **changes, extra=(*kept, *added))


def _field_changes(
    stack: DeepgramOptions, upload: tuple[tuple[str, str], ...]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The upload's options split into new values of ``DeepgramOptions`` fields (a boolean read as
    one) and the other pairs, in the upload's order."""
    kinds = {f.name: f.default for f in fields(stack) if f.name != "extra"}
    changes: dict[str, Any] = {}
    extra: list[tuple[str, str]] = []
    for name, value in upload:
        if name not in kinds:
            extra.append((name, value))
        else:
            changes[name] = value == "true" if isinstance(kinds[name], bool) else value
    return changes, extra


def _weakens(pair: tuple[str, str], kept: list[tuple[str, str]]) -> bool:
    """``redact=false`` laid over a redaction already asked for."""
    name, value = pair
    return name in ADDITIVE_OPTIONS and value == "false" and any(k == name for k, _ in kept)


def in_force(query: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The query as ``{option: value}``; repeated options' values joined with commas."""
    options: dict[str, str] = {}
    for name, value in query:
        options[name] = f"{options[name]},{value}" if name in options else value
    return options


def identity_part(upload: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """What the upload's options add to the idempotency identity: nothing without any (so an
    object's identity is what it was before per-upload options existed), else their query."""
    return {"options": urlencode(upload)} if upload else {}


def metadata(query: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The options in force as S3 user metadata: a percent-encoded query string (ASCII), or its
    SHA-256 when longer than ``MAX_METADATA_CHARS`` (S3 user metadata is 2 KB in all)."""
    text = urlencode(list(query))
    if len(text) <= MAX_METADATA_CHARS:
        return {"deepgram-options": text}
    return {"deepgram-options-sha256": hashlib.sha256(text.encode("ascii")).hexdigest()}
