"""Derived outputs made from the stored transcript JSON: plain text, SRT and WebVTT captions.

Memory stays bounded whatever the size of Deepgram's answer: the stored JSON is read with ijson,
one event at a time, and only one word or one paragraph is ever built as a Python object. What is
derived goes to temporary files (``/tmp`` on Lambda), which the caller uploads and closes. Captions
of a multichannel answer are spooled per channel and merged by start time (``heapq.merge``), so
they are bounded too.

* ``txt``: the paragraphs when Deepgram returned them (``paragraphs=true``), else the words; when
  diarized, one ``Speaker N:`` turn per line (per paragraph), or the speaker's name when the upload
  named them (``CaptionStyle.speakers``); when the results hold several channels
  (``multichannel=true``), one section per channel headed ``[Channel N]``, spooled per channel and
  joined at the end. Speaker and channel numbers are Deepgram's (from 0).
* ``srt`` / ``vtt``: cues laid out by ``CaptionStyle``: at most ``line_length`` characters a line
  (42), ``max_lines`` lines (2), ``max_cue_s`` seconds (7) and ``words_per_cue`` words (8), a new
  cue at every speaker change, timed to the first word's start and the last word's end. A
  diarized cue carries its speaker: a ``Alice: `` prefix in SRT (counted in the line's length), a
  ``<v Alice>`` voice span in WebVTT; with several channels the label names the channel too. SRT
  is numbered from ``start_index`` (1). deepgram-captions (the library this was modelled on) only
  counts words and holds the whole answer in memory; with the character and time limits off, the
  cues are the ones it makes (the tests check that).
* An answer without any word gives an empty ``txt`` and no caption file (``Rendered.skipped``).

A malformed but valid-JSON answer (a bug, a proxy, a hostile endpoint) never stops the formats: the
stored JSON stays as it came, and the formats are made from what is valid in it.

* A word is used when it is an object whose ``punctuated_word`` or ``word`` is a string with a
  visible character; its text is put on one line (whitespace collapsed, control characters dropped,
  ``-->`` made ``->``). Anything else is skipped and counted (``Rendered.repairs``).
* Its times are finite numbers from 0 to 100 hours; a missing or invalid ``start`` is the previous
  word's end, an ``end`` before the start is the start, and a word that starts before the previous
  word of its channel starts with it (cues stay in time order, as WebVTT requires).
* A speaker is a non-negative integer (not a boolean); anything else is no speaker.
* A paragraph is used when it is an object whose ``sentences`` is a list holding at least one
  object with a ``text`` string; the text comes from the words when no paragraph is usable.
* Metadata fields of the wrong type are left out (``request_id``, ``created``: strings;
  ``duration``: a finite number; ``channels``: an integer up to 1024), and every value put in a NOTE is one
  line without ``-->``. Integers too large for the C parser are read by ijson's Python backend.
* A format that still cannot be made is left out with a reason (``Rendered.not_made``) while the
  others are made.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import shutil
import tempfile
import textwrap
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

FORMATS = ("json", "txt", "srt", "vtt")
DERIVED_FORMATS = ("txt", "srt", "vtt")
CAPTION_FORMATS = ("srt", "vtt")
CONTENT_TYPES = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
DEFAULT_WORDS_PER_CUE = 8  # deepgram-captions' default line length
DEFAULT_LINE_LENGTH = 42  # characters: the broadcast norm (BBC, Netflix)
DEFAULT_MAX_LINES = 2
DEFAULT_MAX_CUE_SECONDS = 7.0
MAX_SECONDS = 360_000.0  # 100 hours: a word time past it is not a time (odd answers)
MAX_CHANNELS = 1024  # a channel count past it is not one (odd answers)
EMPTY_TRANSCRIPT = "empty-transcript"
RENDER_FAILED = "render-failed"  # a defect of ours on an odd answer: the other formats are still made
DEEPGRAM = "Deepgram"
# Deepgram names its models with slugs ("general-nova-3", "2-general-nova"). A model name in words is
# an engine answering in Deepgram's shape that says what it is: the transcript credits it instead.
_MODEL_SLUG = re.compile(r"[\w.:-]+")

_CHANNEL = "results.channels.item"
_ALTERNATIVE = f"{_CHANNEL}.alternatives.item"
_LANGUAGE = f"{_CHANNEL}.detected_language"
# Items of the first alternative that are built one at a time.
_ITEMS = {f"{_ALTERNATIVE}.words.item": "word", f"{_ALTERNATIVE}.paragraphs.paragraphs.item": "paragraph"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ARROWS = re.compile(r"-{2,}>")  # "--->" too: replacing "-->" alone would leave one
# Integers past 64 bits are valid JSON that ijson's C backend refuses; its Python backend reads them.
_OVERFLOW = "integer overflow"


class TranscriptFormatError(ValueError):
    """The stored JSON is not a readable Deepgram answer."""


@dataclass(frozen=True)
class NotMade:
    """A requested format that was not made, and why: ``reason`` is a short code
    (``empty-transcript``, ``render-failed``), ``detail`` says more (no answer text in it)."""

    format: str
    reason: str
    detail: str = ""


@dataclass
class Repairs:
    """What of a malformed answer was left out or mended to make the formats (see the module's
    docstring); all zero for an answer of Deepgram's shape."""

    words_skipped: int = 0
    words_retimed: int = 0
    paragraphs_skipped: int = 0

    @property
    def any(self) -> bool:
        return bool(self.words_skipped or self.words_retimed or self.paragraphs_skipped)


@dataclass
class TranscriptSummary:
    """What the completion event says about a transcript, read from the stored JSON."""

    request_id: str | None = None
    created: str | None = None
    duration_s: float | None = None
    channels: int = 0
    model_names: list[str] = field(default_factory=list)
    detected_languages: list[str] = field(default_factory=list)
    words: int = 0
    paragraphs: int = 0

    @property
    def empty(self) -> bool:
        return self.words == 0

    @property
    def maker(self) -> str:
        """Who made the transcript, as the answer's ``model_info`` says: Deepgram, unless a model
        is named in words rather than a slug (an engine saying what it is)."""
        stated = [name for name in self.model_names if not _MODEL_SLUG.fullmatch(name)]
        return "; ".join(dict.fromkeys(stated)) or DEEPGRAM


@dataclass
class Rendered:
    """The derived files (format -> temporary file, at offset 0) and what was not made, and why."""

    summary: TranscriptSummary
    files: dict[str, IO[bytes]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # format -> reason code (not_made's)
    not_made: list[NotMade] = field(default_factory=list)
    repairs: Repairs = field(default_factory=Repairs)

    def skip(self, name: str, reason: str, detail: str = "") -> None:
        self.skipped[name] = reason
        self.not_made.append(NotMade(name, reason, detail))

    def close(self) -> None:
        for file in self.files.values():
            file.close()


@dataclass(frozen=True)
class CaptionStyle:
    """How captions are laid out; 0 turns a limit off. The defaults are the broadcast norm
    (42 characters a line, two lines, about 7 s a cue) on top of deepgram-captions' 8 words."""

    words_per_cue: int = DEFAULT_WORDS_PER_CUE
    line_length: int = DEFAULT_LINE_LENGTH
    max_lines: int = DEFAULT_MAX_LINES
    max_cue_s: float = DEFAULT_MAX_CUE_SECONDS
    start_index: int = 1  # the first SRT cue's number
    speakers: tuple[tuple[int, str], ...] = ()  # speaker numbers -> names (domain.speakers)

    def name(self, speaker: int) -> str:
        return dict(self.speakers).get(speaker, f"Speaker {speaker}")

    def label(self, channel: int, speaker: int | None, multichannel: bool, cut: bool = True) -> str:
        """Who speaks a cue or a turn: ``Alice``, ``Speaker 0``, ``Channel 1 Speaker 0``. With ``cut``,
        at most a third of a line, so the words keep most of the first line: the channel and the
        number shorten first (``C1 S0``), then a name is cut, or gives way to its number where its cut
        would read as another speaker's. Names are per speaker number, so not used per channel."""
        named = speaker is not None and not multichannel and speaker in dict(self.speakers)
        label = self._full_label(channel, speaker, multichannel, named)
        room = max(1, self.line_length // 3)
        if not cut or not self.line_length or len(label) <= room:
            return label
        head = f"C{channel} " if multichannel else ""
        if speaker is None:
            return head.rstrip()[:room]
        return self._short_name(head, speaker, room) if named else f"{head}S{speaker}"[:room]

    def _full_label(self, channel: int, speaker: int | None, multichannel: bool, named: bool) -> str:
        parts = [f"Channel {channel}"] if multichannel else []
        if speaker is not None:
            parts.append(self.name(speaker) if named else f"Speaker {speaker}")
        return " ".join(parts)

    def _short_name(self, head: str, speaker: int, room: int) -> str:
        """A named speaker's label cut to ``room``, or its number where the cut would read as
        another speaker's name."""
        short = self.name(speaker)[: room - len(head)].rstrip()
        others = {name[: room - len(head)].rstrip() for number, name in self.speakers if number != speaker}
        return f"{head}{short}" if short and short not in others else f"{head}S{speaker}"[:room]

    def wrap(self, text: str, prefix: str = "") -> list[str]:
        """The cue's lines, the first one after ``prefix`` (which counts toward its length)."""
        if not self.line_length:
            return [prefix + text]
        return textwrap.wrap(
            text, self.line_length, initial_indent=prefix, break_long_words=True, break_on_hyphens=False
        )


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    channel: int
    speaker: int | None
    text: str


def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT); hours go past 24."""
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def _backend(source: IO[bytes]) -> Any:
    """ijson's default (C) backend, or its Python one when the C one overflows on this answer."""
    source.seek(0)
    try:
        for _ in ijson.basic_parse(source, use_float=True):
            pass
    except ijson.JSONError as exc:
        if _OVERFLOW not in str(exc):
            raise TranscriptFormatError(f"the stored transcript is not JSON: {exc}") from exc
        return ijson.get_backend("python")
    return ijson


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _count(value: Any) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CHANNELS else 0
    )


def read_summary(source: IO[bytes], backend: Any = ijson) -> TranscriptSummary:
    """The answer's metadata (one small object), from the start of ``source``."""
    source.seek(0)
    try:
        metadata = next(backend.items(source, "metadata", use_float=True), None)
    except ijson.JSONError as exc:
        raise TranscriptFormatError(f"the stored transcript is not JSON: {exc}") from exc
    summary = TranscriptSummary()
    if not isinstance(metadata, dict):
        return summary
    summary.request_id = _text_or_none(metadata.get("request_id"))
    summary.created = _text_or_none(metadata.get("created"))
    summary.duration_s = _number_or_none(metadata.get("duration"))
    summary.channels = _count(metadata.get("channels"))
    info = metadata.get("model_info")
    if isinstance(info, dict):
        summary.model_names = [
            m["name"] for m in info.values() if isinstance(m, dict) and _text_or_none(m.get("name"))
        ]
    return summary


@dataclass(frozen=True)
class Item:
    kind: str  # channel (its start) | word | paragraph
    channel: int
    value: dict[str, Any]


class _Walker:
    """Turns ijson events into the words and paragraphs of each channel's first alternative."""

    def __init__(self, summary: TranscriptSummary, backend: Any = ijson) -> None:
        self.summary = summary
        self.backend = backend
        self.channel = -1
        self.alternative = -1
        self._builder: Any = None
        self._kind = ""
        self._prefix = ""

    def feed(self, prefix: str, event: str, value: Any) -> Item | None:
        if self._builder is not None:
            self._builder.event(event, value)
            if event == "end_map" and prefix == self._prefix:
                item = Item(self._kind, self.channel, self._builder.value)
                self._builder = None
                return item
            return None
        if event == "start_map":
            return self._start_map(prefix)
        if prefix == _LANGUAGE and event == "string":
            self.summary.detected_languages.append(value)
        return None

    def _start_map(self, prefix: str) -> Item | None:
        if prefix == _CHANNEL:
            self.channel += 1
            self.alternative = -1
            return Item("channel", self.channel, {})
        if prefix == _ALTERNATIVE:
            self.alternative += 1
        elif self.alternative == 0 and prefix in _ITEMS:
            self._builder = ijson.ObjectBuilder()
            self._builder.event("start_map", None)
            self._kind, self._prefix = _ITEMS[prefix], prefix
        return None


def iter_items(source: IO[bytes], summary: TranscriptSummary, backend: Any = ijson) -> Iterator[Item]:
    """Each word and paragraph of every channel's first alternative, in document order."""
    source.seek(0)
    walker = _Walker(summary, backend)
    try:
        for prefix, event, value in backend.parse(source, use_float=True):
            item = walker.feed(prefix, event, value)
            if item is not None:
                yield item
    except ijson.JSONError as exc:
        raise TranscriptFormatError(f"the stored transcript is not JSON: {exc}") from exc
    summary.channels = max(summary.channels, walker.channel + 1)


def _speaker(value: dict[str, Any]) -> int | None:
    speaker = value.get("speaker")
    return speaker if isinstance(speaker, int) and not isinstance(speaker, bool) and speaker >= 0 else None


@dataclass(frozen=True)
class Word:
    """A usable word of the answer: its text on one line, its times as the answer gave them (None
    when not a usable time: ``_Cues`` mends them) and its speaker."""

    text: str
    start: float | None
    end: float | None
    speaker: int | None


def clean_text(value: Any) -> str:
    """Answer text as one caption-safe line: "" when it is not a string."""
    return caption_text(value) if isinstance(value, str) else ""


def clean_word(value: Any) -> Word | None:
    """The answer's word as a ``Word``, or None when it has no usable text (the module's rule)."""
    if not isinstance(value, dict):
        return None
    text = clean_text(value.get("punctuated_word")) or clean_text(value.get("word"))
    if not text:
        return None
    return Word(text, _time(value.get("start")), _time(value.get("end")), _speaker(value))


def _time(value: Any) -> float | None:
    seconds = _number_or_none(value)
    return seconds if seconds is not None and 0 <= seconds < MAX_SECONDS else None


def sentence_texts(paragraph: dict[str, Any]) -> list[str]:
    """A paragraph's usable sentence texts (the module's rule)."""
    sentences = paragraph.get("sentences")
    if not isinstance(sentences, list):
        return []
    texts = (clean_text(s.get("text")) for s in sentences if isinstance(s, dict))
    return [text for text in texts if text]


def _spool() -> IO[bytes]:
    return tempfile.TemporaryFile()  # handed to the caller, who closes it


class _Text:
    """Plain text of one source (words or paragraphs), spooled per channel; ``assemble`` joins the
    channels, each headed ``[Channel N]`` when the answer has more than one."""

    def __init__(self, style: CaptionStyle) -> None:
        self.style = style  # for the speakers' names
        self.files: dict[int, IO[bytes]] = {}
        self.channel = -1
        self.speaker: int | None = None
        self.line_open = False

    def _write(self, text: str) -> None:
        self.files[self.channel].write(text.encode("utf-8"))

    def enter(self, channel: int) -> None:
        if channel == self.channel:
            return
        self.end_line()
        self.files[channel] = _spool()
        self.channel, self.speaker = channel, None

    def end_line(self) -> None:
        if self.line_open:
            self._write("\n")
            self.line_open = False

    def word(self, channel: int, word: Word) -> None:
        self.enter(channel)
        speaker, text = word.speaker, word.text
        if speaker is not None and speaker != self.speaker:
            self.end_line()
            self._write(f"{self.style.name(speaker)}: {text}")
        else:
            self._write(f" {text}" if self.line_open else text)
        self.speaker, self.line_open = speaker, True

    def paragraph(self, channel: int, paragraph: dict[str, Any], sentences: list[str]) -> None:
        self.enter(channel)
        body = " ".join(sentences)
        speaker = _speaker(paragraph)
        label = f"{self.style.name(speaker)}: " if speaker is not None else ""
        first = self.files[channel].tell() == 0
        self._write(f"{'' if first else chr(10)}{label}{body}\n")

    def assemble(self) -> IO[bytes]:
        self.end_line()
        out = _spool()
        multichannel = len(self.files) > 1
        for index, channel in enumerate(sorted(self.files)):
            if multichannel:
                out.write(f"{chr(10) if index else ''}[Channel {channel}]\n".encode())
            file = self.files[channel]
            file.seek(0)
            shutil.copyfileobj(file, out)
        self.close()
        return out

    def close(self) -> None:
        for file in self.files.values():
            file.close()


def caption_text(text: str) -> str:
    """A word as caption text: one line, whitespace collapsed, and no ``-->`` (which would end a
    cue's text in SRT and WebVTT); hostile or odd answers must still make parseable captions."""
    return _ARROWS.sub("->", " ".join(_CONTROL.sub(" ", text).split()))


def _end_of(text: str, visible: int) -> int:
    """Where in ``text`` its first ``visible`` non-space characters end."""
    shown = [index for index, char in enumerate(text) if not char.isspace()]
    return shown[min(visible, len(shown)) - 1] + 1


class _Cues:
    """Lays one channel's words out in cues (``CaptionStyle``), spooled as JSON lines. The first
    line's room is measured after the label the cue will carry (``multichannel``: the answer's
    metadata says so, or this is not the first channel; a label the writer finds shorter only
    leaves more room)."""

    def __init__(self, style: CaptionStyle, channel: int, multichannel: bool) -> None:
        self.style = style
        self.channel = channel
        self.multichannel = multichannel
        self.words: list[str] = []
        self.widths: list[int] = []  # of the cue's lines so far, the first one's label included
        self.start = self.end = 0.0
        self.last_start = 0.0  # of the channel's previous word: no word starts before it
        self.speaker: int | None = None
        self.file = _spool()

    def times(self, word: Word) -> tuple[float, float]:
        """The word's times, mended where the answer's are missing, invalid or out of order."""
        start = max(self.last_start, self.end if word.start is None else word.start)
        end = max(start, start if word.end is None else word.end)
        self.last_start = start
        return start, end

    def add(self, word: Word) -> bool:
        """Lay the word out; True when its times had to be mended."""
        text, speaker = word.text, word.speaker
        start, end = self.times(word)
        mended = (start, end) != (word.start, word.end)
        if self.words and not self._fits(text, end, speaker):
            self.flush()
        if not self.words:
            self.start, self.speaker = start, speaker
            self.widths = [len(line) for line in self._lines(text)]
            if len(self.widths) > self.style.max_lines:
                self._split_long_word(text, start, end)
                return mended
        else:
            self.widths = self._widths_with(text)
        self.words.append(text)
        self.end = max(self.end, end)
        return mended

    def _prefix(self) -> str:
        label = self.style.label(self.channel, self.speaker, self.multichannel)
        return f"{label}: " if label else ""

    def _lines(self, text: str) -> list[str]:
        return self.style.wrap(text, self._prefix())

    def _widths_with(self, text: str) -> list[int]:
        """The cue's line widths with ``text`` added: greedy, as ``textwrap`` fills lines, without
        wrapping the whole cue again for each word (a word with a space, or longer than a line,
        takes textwrap's own path)."""
        width = self.style.line_length
        if not width:
            return [self.widths[0] + 1 + len(text)]
        if " " in text or len(text) > width:
            return [len(line) for line in self._lines(" ".join([*self.words, text]))]
        if self.widths[-1] + 1 + len(text) <= width:
            return [*self.widths[:-1], self.widths[-1] + 1 + len(text)]
        return [*self.widths, len(text)]

    def _fits(self, text: str, end: float, speaker: int | None) -> bool:
        style = self.style
        return (
            speaker == self.speaker
            and (not style.words_per_cue or len(self.words) < style.words_per_cue)
            and (not style.max_cue_s or end - self.start <= style.max_cue_s)
            and len(self._widths_with(text)) <= style.max_lines
        )

    def _split_long_word(self, text: str, start: float, end: float) -> None:
        """A word longer than a whole cue (no speech has one; a hostile answer may): a cue per
        piece that fits, sharing its time."""
        pieces = []
        while text:
            shown = self._lines(text)[: self.style.max_lines]
            cut = _end_of(
                text, sum(len("".join(line.split())) for line in shown) - len(self._prefix().replace(" ", ""))
            )
            pieces.append(text[:cut].strip())
            text = text[cut:].strip()
        step = (end - start) / len(pieces)
        for index, piece in enumerate(pieces):
            self._write(start + index * step, start + (index + 1) * step, piece)

    def flush(self) -> None:
        if self.words:
            self._write(self.start, self.end, " ".join(self.words))
            self.words = []

    def _write(self, start: float, end: float, text: str) -> None:
        if self.style.max_cue_s:
            end = min(end, start + self.style.max_cue_s)  # one word said for longer than a cue
        cue = [start, end, self.channel, self.speaker, text]
        self.file.write(json.dumps(cue, ensure_ascii=False).encode("utf-8") + b"\n")

    def read(self) -> Iterator[Cue]:
        self.flush()
        self.file.seek(0)
        for line in self.file:
            start, end, channel, speaker, text = json.loads(line)
            yield Cue(start, end, channel, speaker, text)


class _Captions:
    """Cue spools per channel; ``cues()`` merges them by start time."""

    def __init__(self, style: CaptionStyle, summary: TranscriptSummary) -> None:
        self.style = style
        self.summary = summary
        self.channels: dict[int, _Cues] = {}

    def word(self, channel: int, word: Word) -> bool:
        spool = self.channels.get(channel)
        if spool is None:
            multichannel = self.summary.channels > 1 or channel > 0
            spool = self.channels[channel] = _Cues(self.style, channel, multichannel)
        return spool.add(word)

    def cues(self) -> Iterator[Cue]:
        return heapq.merge(*(spool.read() for spool in self.channels.values()), key=lambda c: c.start)

    def close(self) -> None:
        for spool in self.channels.values():
            spool.file.close()


def _cue_lines(cue: Cue, style: CaptionStyle, multichannel: bool) -> tuple[str, list[str]]:
    """The cue's label and its lines (without the label)."""
    label = style.label(cue.channel, cue.speaker, multichannel)
    prefix = f"{label}: " if label else ""
    lines = style.wrap(cue.text, prefix)
    lines[0] = lines[0][len(prefix) :]
    return label, lines


def write_srt(cues: Iterator[Cue], out: IO[bytes], style: CaptionStyle, multichannel: bool) -> None:
    """SRT numbered from ``style.start_index``; the label before the first line of every labelled
    cue: ``Alice: Hello there``."""
    for index, cue in enumerate(cues):
        label, lines = _cue_lines(cue, style, multichannel)
        if label:
            lines[0] = f"{label}: {lines[0]}"
        head = [str(style.start_index + index), f"{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}"]
        out.write(("\n" if index else "").encode() + "\n".join(head + lines).encode("utf-8") + b"\n")


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _note_safe(value: object) -> str:
    """A value from the answer on one NOTE line: a blank line or ``-->`` would end the block early."""
    return caption_text(str(value))


def write_vtt(
    cues: Iterator[Cue], out: IO[bytes], style: CaptionStyle, multichannel: bool, summary: TranscriptSummary
) -> None:
    """WebVTT with deepgram-captions' NOTE header (crediting the answer's maker); a voice span
    (``<v Alice>``) on every labelled cue."""
    note = ["NOTE", f"Transcription provided by {_note_safe(summary.maker)}"]
    facts = (
        ("Request Id", summary.request_id),
        ("Created", summary.created),
        ("Duration", summary.duration_s),
        ("Channels", summary.channels),
    )
    note += [f"{name}: {_note_safe(value)}" for name, value in facts if value]
    out.write(("WEBVTT\n\n" + "\n".join(note) + "\n\n").encode("utf-8"))
    for index, cue in enumerate(cues):
        _, lines = _cue_lines(cue, style, multichannel)
        label = style.label(cue.channel, cue.speaker, multichannel, cut=False)  # a voice is not a line
        voice = f"<v {_vtt_escape(label)}>" if label else ""
        times = f"{timestamp(cue.start, '.')} --> {timestamp(cue.end, '.')}"
        text = "\n".join(_vtt_escape(line) for line in lines)
        out.write(f"{chr(10) if index else ''}{times}\n{voice}{text}\n".encode())


class _Collector:
    """Everything one pass over the items feeds: both texts and the caption spools."""

    def __init__(self, summary: TranscriptSummary, style: CaptionStyle, repairs: Repairs) -> None:
        self.summary = summary
        self.style = style
        self.repairs = repairs
        self.words, self.paragraphs = _Text(style), _Text(style)
        self.captions = _Captions(style, summary)
        self.channels = 0  # in the results (the layout's), whatever the metadata says of the audio

    def add(self, item: Item) -> None:
        if item.kind == "channel":
            self.channels += 1
            self.words.enter(item.channel)
            self.paragraphs.enter(item.channel)
        elif item.kind == "paragraph":
            self._paragraph(item)
        else:
            self._word(item)

    def _paragraph(self, item: Item) -> None:
        sentences = sentence_texts(item.value)
        if not sentences:
            self.repairs.paragraphs_skipped += 1
            return
        self.summary.paragraphs += 1
        self.paragraphs.paragraph(item.channel, item.value, sentences)

    def _word(self, item: Item) -> None:
        word = clean_word(item.value)
        if word is None:
            self.repairs.words_skipped += 1
            return
        self.summary.words += 1
        self.words.word(item.channel, word)
        self.repairs.words_retimed += self.captions.word(item.channel, word)

    def text(self) -> IO[bytes]:
        """The paragraphs when Deepgram returned any, else the words."""
        return self.paragraphs.assemble() if self.summary.paragraphs else self.words.assemble()

    def caption(self, name: str) -> IO[bytes]:
        out = _spool()
        multichannel = self.channels > 1
        if name == "srt":
            write_srt(self.captions.cues(), out, self.style, multichannel)
        else:
            write_vtt(self.captions.cues(), out, self.style, multichannel, self.summary)
        return out

    def close(self) -> None:
        self.words.close()
        self.paragraphs.close()
        self.captions.close()


def render(source: IO[bytes], formats: Collection[str], style: CaptionStyle | None = None) -> Rendered:
    """Make the requested derived formats from the stored JSON in ``source`` (seekable); what is
    not made is in ``Rendered.not_made`` (and ``skipped``), what was mended in ``repairs``."""
    backend = _backend(source)
    summary = read_summary(source, backend)
    rendered = Rendered(summary)
    collector = _Collector(summary, style or CaptionStyle(), rendered.repairs)
    try:
        for item in iter_items(source, summary, backend):
            collector.add(item)
        for name in (f for f in DERIVED_FORMATS if f in formats):
            _make(rendered, collector, name)
    except BaseException:
        rendered.close()
        raise
    finally:
        collector.close()
    return rendered


def _make(rendered: Rendered, collector: _Collector, name: str) -> None:
    if name != "txt" and rendered.summary.empty:
        rendered.skip(name, EMPTY_TRANSCRIPT, "the answer holds no usable word")
        return
    try:
        file = collector.text() if name == "txt" else collector.caption(name)
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # Defence in depth: the rules above leave nothing to fail on (the property tests say so);
        # should one be missed, this format is reported not made and the others still are.
        rendered.skip(name, RENDER_FAILED, type(exc).__name__)
        return
    file.seek(0)
    rendered.files[name] = file
