"""Deepgram options per folder of the input bucket ("profiles"), so several teams share one stack.

The profiles live in one TOML file the layer carries (``layers/shared/profiles.toml``): a table per
key prefix, holding Deepgram options the way the ``DeepgramOptions`` query string does::

    [profiles."medical/"]
    model = "nova-3-medical"
    keyterm = ["metformin", "tachycardia"]

The longest prefix that starts an object's key wins (one profile per object, never a blend). The
options in force are, from weakest to strongest: the stack's ``DeepgramOptions``, the profile's,
the upload's own (``transcriber.domain.upload_options``, still bounded by the stack's allow-list). A
stronger level replaces an option as a whole (a profile's ``keyterm`` list replaces the stack's);
only ``tag`` adds up, so usage splits per stack and per team.

The file is read and checked once per cold start: anything wrong in it (TOML syntax, an unknown
shape, a malformed value, key terms over Deepgram's bounds) is a configuration error naming the
file and the profile, before any object is read.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transcriber.domain import upload_options
from transcriber.domain.keyterms import KeytermCount
from transcriber.domain.speakers import OUTPUT_OPTIONS
from transcriber.errors import configuration_error

if TYPE_CHECKING:
    from transcriber.domain.env import DeepgramOptions, EnvReader

# Which file holds the profiles; empty: the one the layer carries.
PROFILES_VARIABLE = "DEEPGRAM_PROFILES_FILE"
# layers/shared/profiles.toml: /opt/python/profiles.toml once the layer is built.
SHIPPED_FILE = Path(__file__).resolve().parents[2] / "profiles.toml"
TABLE = "profiles"
MAX_PREFIX_CHARS = 1024  # S3's longest key


@dataclass(frozen=True)
class Profile:
    """One folder's Deepgram options, as query pairs (booleans lowercase, lists as repeated keys)."""

    prefix: str
    options: tuple[tuple[str, str], ...]

    def apply(self, stack: DeepgramOptions) -> DeepgramOptions:
        """The stack's options with this profile's laid over them; its tags add to the stack's."""
        tags = tuple(value for name, value in self.options if name == "tag")
        options = upload_options.overlay(stack, tuple(p for p in self.options if p[0] != "tag"))
        return replace(options, tag=(*options.tag, *tags)) if tags else options


@dataclass(frozen=True)
class Profiles:
    """Every profile, longest prefix first, and the file they came from."""

    profiles: tuple[Profile, ...] = ()
    source: str = ""

    def for_key(self, key: str) -> Profile | None:
        """The profile of the longest prefix that starts ``key``; None when no prefix does."""
        return next((profile for profile in self.profiles if key.startswith(profile.prefix)), None)

    def options_for(self, key: str, stack: DeepgramOptions) -> DeepgramOptions:
        profile = self.for_key(key)
        return stack if profile is None else profile.apply(stack)

    @classmethod
    def from_env(cls, reader: EnvReader, stack: DeepgramOptions, unsupported: frozenset[str]) -> Profiles:
        named = reader.text(PROFILES_VARIABLE, default="")
        path = Path(named) if named else SHIPPED_FILE
        if not named and not path.is_file():
            return cls()  # a layer built without the file: no profiles
        return cls.load(path, stack, unsupported)

    @classmethod
    def load(cls, path: Path, stack: DeepgramOptions, unsupported: frozenset[str]) -> Profiles:
        where = f"{PROFILES_VARIABLE} ({path.name})"
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise configuration_error(
                "invalid-configuration", f"{where} can't be read: {type(exc).__name__}"
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise configuration_error("invalid-configuration", f"{where} is not valid TOML: {exc}") from None
        extra = sorted(set(document) - {TABLE})
        if extra:
            raise configuration_error(
                "invalid-configuration",
                f'{where}: unknown top-level entries {", ".join(extra)}; use [{TABLE}."prefix/"]',
            )
        table = document.get(TABLE, {})
        if not isinstance(table, dict):
            raise configuration_error(
                "invalid-configuration", f"{where}: {TABLE} must be a table of prefixes"
            )
        profiles = [_profile(where, prefix, options, unsupported) for prefix, options in table.items()]
        for profile in profiles:
            problem = KeytermCount.of(profile.apply(stack).query()).problem()
            if problem is not None:
                raise configuration_error(
                    "invalid-configuration", f"{where}: profile {profile.prefix!r}: {problem}"
                )
        profiles.sort(key=lambda profile: len(profile.prefix), reverse=True)
        return cls(tuple(profiles), source=str(path))


def _profile(where: str, prefix: str, options: Any, unsupported: frozenset[str]) -> Profile:
    """One checked profile; a configuration error naming the file, the profile and the option."""
    at = f"{where}: profile {prefix[:80]!r}"
    if not prefix or len(prefix) > MAX_PREFIX_CHARS or prefix.startswith("/"):
        raise configuration_error(
            "invalid-configuration", f"{at}: a prefix is the start of an object key, such as 'medical/'"
        )
    if not isinstance(options, dict) or not options:
        raise configuration_error("invalid-configuration", f"{at} must be a table of Deepgram options")
    pairs: list[tuple[str, str]] = []
    for name, value in options.items():
        _refuse_option(at, name, unsupported)
        pairs.extend((name, text) for text in _values(at, name, value))
    return Profile(prefix, tuple(pairs))


def _refuse_option(at: str, name: str, unsupported: frozenset[str]) -> None:
    if name in unsupported:
        raise configuration_error(
            "invalid-configuration", f"{at} sets {name!r}, which this pipeline does not support"
        )
    if name in OUTPUT_OPTIONS:  # ours, not Deepgram's: set per deployment or per upload
        raise configuration_error(
            "invalid-configuration",
            f"{at} sets {name!r}: a caption setting (Settings.Outputs), not Deepgram's",
        )


def _values(at: str, name: str, value: Any) -> list[str]:
    """One option's values as text (a list repeats the option), each checked."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise configuration_error("invalid-configuration", f"{at}: {name} is an empty list")
    texts = []
    for item in values:
        text = _text(item)
        if text is None or not _well_formed(name, text):
            raise configuration_error(
                "invalid-configuration", f"{at}: {name} = {str(item)[:40]!r} is not a valid value"
            )
        texts.append(text)
    return texts


def _text(value: Any) -> str | None:
    """A TOML value as Deepgram's query text: booleans lowercase; None for tables and dates."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _well_formed(name: str, value: str) -> bool:
    if name in upload_options.CHECKED_OPTIONS:
        return upload_options.well_formed(name, value)
    return bool(value) and value == value.strip() and value.isprintable()
