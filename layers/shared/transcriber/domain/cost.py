"""An estimate of what one transcript cost at Deepgram, from prices the stack sets.

An estimate, not a bill: Deepgram bills per its own plan (pay-as-you-go, growth, enterprise
discounts, minimums, rounding) and its invoice is the truth. The estimate is audio minutes
(``metadata.duration``; times ``metadata.channels`` with ``multichannel``, which Deepgram bills
per channel) times the base price per minute plus the add-on price of each option in force that
costs more (diarization, redaction, key terms, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transcriber.errors import configuration_error

if TYPE_CHECKING:
    from transcriber.domain.env import EnvReader

# Deepgram's published pay-as-you-go prices (USD per audio minute) when this was written: Nova-3
# pre-recorded; diarization, redaction, key terms as add-ons. As in template.yaml; check yours.
DEFAULT_PRICE_PER_MINUTE = 0.0043
DEFAULT_ADDONS = (("diarize", 0.002), ("redact", 0.002), ("keyterm", 0.0013), ("language:multi", 0.0009))
DEFAULT_ADDON_PRICES = ",".join(f"{name}={price}" for name, price in DEFAULT_ADDONS)


def _price(name: str, text: str, variable: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise configuration_error(
            "invalid-configuration", f"{variable}: the price of {name!r} must be a number >= 0"
        )
    return value


@dataclass(frozen=True)
class Pricing:
    """``per_minute``: USD per audio minute. ``addons``: USD per minute more, keyed by an option
    name (in force with any value but ``false``) or ``option:value`` (that value exactly)."""

    per_minute: float = DEFAULT_PRICE_PER_MINUTE
    addons: tuple[tuple[str, float], ...] = DEFAULT_ADDONS

    @classmethod
    def from_env(cls, reader: EnvReader) -> Pricing:
        variable = "DEEPGRAM_PRICE_PER_MINUTE_USD"
        per_minute = _price("base", reader.text(variable, default=str(DEFAULT_PRICE_PER_MINUTE)), variable)
        variable = "DEEPGRAM_ADDON_PRICES_USD"
        addons: list[tuple[str, float]] = []
        for part in reader.csv(variable, DEFAULT_ADDON_PRICES):
            name, sep, text = part.partition("=")
            if not sep or not name.strip():
                raise configuration_error(
                    "invalid-configuration", f"{variable} must look like 'diarize=0.002,redact=0.002'"
                )
            addons.append((name.strip(), _price(name.strip(), text.strip(), variable)))
        return cls(per_minute, tuple(addons))

    def per_minute_for(self, options: Mapping[str, str]) -> float:
        """Base price plus the add-ons that apply to these options (``{option: values}``, repeated
        values comma-joined, as ``upload_options.in_force`` gives them)."""
        price = self.per_minute
        for key, addon in self.addons:
            name, _, wanted = key.partition(":")
            given = options.get(name)
            if name == "diarize" and "diarize_model" in options:
                given = "true"  # diarize_model turns diarization on
            if given is None or given == "false":
                continue
            if not wanted or wanted in given.split(","):
                price += addon
        return price


def billable_minutes(duration_s: float | None, channels: int | None, options: Mapping[str, str]) -> float:
    """Audio minutes as Deepgram bills them: per channel with ``multichannel``."""
    if duration_s is None or duration_s <= 0:
        return 0.0
    per_channel = channels if options.get("multichannel") == "true" and channels and channels > 1 else 1
    return duration_s / 60 * per_channel


def estimate_usd(
    pricing: Pricing, duration_s: float | None, channels: int | None, query: Iterable[tuple[str, str]]
) -> float:
    """The estimated cost in USD of one transcript, rounded to a millionth of a dollar."""
    options: dict[str, str] = {}
    for name, value in query:
        options[name] = f"{options[name]},{value}" if name in options else value
    return round(billable_minutes(duration_s, channels, options) * pricing.per_minute_for(options), 6)


def estimate_transcript_usd(
    pricing: Pricing, document: Mapping[str, Any], query: Iterable[tuple[str, str]]
) -> float:
    """The estimate for a Deepgram answer: its ``metadata.duration`` and ``metadata.channels``."""
    meta = document.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    duration, channels = meta.get("duration"), meta.get("channels")
    return estimate_usd(
        pricing,
        float(duration) if isinstance(duration, int | float) else None,
        channels if isinstance(channels, int) else None,
        query,
    )


def metadata(duration_s: float | None, usd: float) -> dict[str, str]:
    """What the transcript's S3 metadata says for ``make report``: audio seconds and the estimate."""
    seconds = "" if duration_s is None else f"{duration_s:.3f}"
    return {"audio-seconds": seconds, "estimated-cost-usd": f"{usd:.6f}"}
