"""Reading settings from the environment, and the stack's Deepgram options: types the domain
modules read their own settings with (``transcriber.config`` builds ``Settings`` from them).

Every error names the variable at fault, and never echoes a value that could be a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from transcriber.domain.speakers import OUTPUT_OPTIONS
from transcriber.errors import configuration_error

# The function writes Deepgram's synchronous answer; a callback would answer elsewhere.
UNSUPPORTED_OPTIONS = frozenset({"callback", "callback_method"})


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
