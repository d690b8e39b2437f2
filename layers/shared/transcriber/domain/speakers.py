"""Named speakers and caption settings per upload: options of ours, never sent to Deepgram.

An upload names its speakers in its metadata, ``x-amz-meta-dg-speakers: 0=Alice,1=Bob`` (Deepgram's
speaker numbers, from 0; non-ASCII names as RFC 2047 encoded words, which S3 clients write), and may
set its captions' layout (``x-amz-meta-dg-caption-line-length: 32``...). They go through the same
allow-list as Deepgram's options (``transcriber.domain.upload_options``), are part of the object's
idempotency identity (other names, other outputs), and are taken out of the query before it is
sent: Deepgram would refuse an option it does not know.

A malformed value is a permanent ``option-refused`` failure naming the option, before any Deepgram
request: a caption with a wrong name is worse than none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import quote

from transcriber.domain.formats import CaptionStyle

SPEAKERS = "speakers"
MAX_SPEAKERS = 20
MAX_SPEAKER = 99  # Deepgram's speaker numbers are small; a larger one is a typo
MAX_NAME_CHARS = 32
# Letters (any script), digits, spaces and . ' - : what names are made of, and nothing a caption
# format gives a meaning to (<, >, &, "-->", line breaks).
_NAME = re.compile(r"[^\W_](?:(?:[^\W_]|[ .'-])*[^\W_])?")
_ENTRY = re.compile(r"\s*(\d{1,3})\s*=\s*(.*?)\s*")

# Caption settings an upload may set: option -> (CaptionStyle field, lowest, highest); 0 = off
# where the lowest is 0.
CAPTION_OPTIONS: dict[str, tuple[str, int, int]] = {
    "caption_line_length": ("line_length", 0, 200),
    "caption_max_lines": ("max_lines", 1, 5),
    "caption_max_seconds": ("max_cue_s", 0, 60),
    "caption_words_per_cue": ("words_per_cue", 1, 50),
    "caption_start_index": ("start_index", 0, 1_000_000),
}
OUTPUT_OPTIONS = frozenset({SPEAKERS, *CAPTION_OPTIONS})
# The names' share of the transcript's metadata (storage.METADATA_BUDGET holds the rest under 2 KB).
MAX_METADATA_CHARS = 256
DEFAULT_OUTPUT_OPTIONS = (SPEAKERS, *CAPTION_OPTIONS)  # as in template.yaml's UploadOutputOptions


def parse_speakers(value: str) -> tuple[tuple[int, str], ...]:
    """``0=Alice,1=Bob`` as ((0, "Alice"), (1, "Bob")); ``ValueError`` saying what is wrong."""
    entries = [part for part in value.split(",") if part.strip()]
    if not entries:
        raise ValueError("no speaker named")
    if len(entries) > MAX_SPEAKERS:
        raise ValueError(f"at most {MAX_SPEAKERS} speakers")
    names: dict[int, str] = {}
    for entry in entries:
        number, name = _speaker_entry(entry)
        if number in names:
            raise ValueError(f"speaker {number} is named twice")
        names[number] = name
    return tuple(sorted(names.items()))


def _speaker_entry(entry: str) -> tuple[int, str]:
    """One ``0=Alice`` entry; ``ValueError`` saying what is wrong."""
    match = _ENTRY.fullmatch(entry)
    if match is None:
        raise ValueError("each entry is <speaker number>=<name>")
    number, name = int(match.group(1)), " ".join(match.group(2).split())
    if number > MAX_SPEAKER:
        raise ValueError(f"speaker numbers go from 0 to {MAX_SPEAKER}")
    if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        raise ValueError(f"a name is 1 to {MAX_NAME_CHARS} letters, digits, spaces, . ' or -")
    return number, name


def caption_value_ok(option: str, value: str) -> bool:
    _, lowest, highest = CAPTION_OPTIONS[option]
    return value.isascii() and value.isdigit() and lowest <= int(value) <= highest


def style_for(stack: CaptionStyle, upload: Iterable[tuple[str, str]]) -> CaptionStyle:
    """The stack's caption style with the upload's settings and speakers' names laid over it
    (values already validated by the upload-option policy)."""
    changes: dict[str, object] = {}
    for option, value in upload:
        if option == SPEAKERS:
            changes["speakers"] = parse_speakers(value)
        elif option in CAPTION_OPTIONS:
            changes[CAPTION_OPTIONS[option][0]] = int(value)
    return replace(stack, **changes) if changes else stack  # type: ignore[arg-type]


def speakers_metadata(upload: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The speakers' names as the transcript's S3 user metadata (ASCII: percent-encoded UTF-8),
    ``speakers: 0=Alice,1=Bob``; nothing when the upload named none, or when the names would not
    fit their share of S3's 2 KB of metadata (they are still in the formats and the event)."""
    for option, value in upload:
        if option == SPEAKERS:
            text = ",".join(f"{number}={name}" for number, name in parse_speakers(value))
            encoded = quote(text, safe="=,' ")
            return {SPEAKERS: encoded} if len(encoded) <= MAX_METADATA_CHARS else {}
    return {}


def speakers_detail(upload: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """The names for the ``Transcript Created`` event: ``{"0": "Alice"}``; None when unnamed."""
    for option, value in upload:
        if option == SPEAKERS:
            return {str(number): name for number, name in parse_speakers(value)}
    return None


def for_deepgram(upload: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The upload's options without ours: only these may ever reach Deepgram's query."""
    return tuple(pair for pair in upload if pair[0] not in OUTPUT_OPTIONS)
