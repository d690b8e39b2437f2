"""Derived outputs made from the stored transcript JSON: plain text, SRT and WebVTT captions.

Memory stays bounded whatever the size of Deepgram's answer: the stored JSON is read with ijson,
one event at a time, and only one word or one paragraph is ever built as a Python object. What is
derived goes to temporary files (``/tmp`` on Lambda), which the caller uploads and closes. Captions
of a multichannel answer are spooled per channel and merged by start time (``heapq.merge``), so
they are bounded too.

* ``txt``: the paragraphs when Deepgram returned them (``paragraphs=true``), else the words; when
  diarized, one ``Speaker N:`` turn per line (per paragraph); when the results hold several
  channels (``multichannel=true``), one section per channel headed ``[Channel N]``, spooled per
  channel and joined at the end. Speaker and channel numbers are Deepgram's (from 0).
* ``srt`` / ``vtt``: cues of at most ``words_per_cue`` words, timed to the first word's start and
  the last word's end; a new cue at every speaker change. The cue layout is deepgram-captions'
  (the tests check that for a single-channel answer the output is exactly what
  ``deepgram_captions.srt``/``webvtt`` make of the same JSON); SRT is numbered from 1. With
  several channels every cue names its channel (SRT ``[channel N]`` line on a change, WebVTT voice).
* An answer without any word gives an empty ``txt`` and no caption file (``Rendered.skipped``).
"""

from __future__ import annotations

import heapq
import json
import re
import shutil
import tempfile
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
EMPTY_TRANSCRIPT = "empty-transcript"
DEEPGRAM = "Deepgram"
# Deepgram names its models with slugs ("general-nova-3", "2-general-nova"). A model name in words is
# an engine answering in Deepgram's shape that says what it is: the transcript credits it instead.
_MODEL_SLUG = re.compile(r"[\w.:-]+")

_CHANNEL = "results.channels.item"
_ALTERNATIVE = f"{_CHANNEL}.alternatives.item"
_LANGUAGE = f"{_CHANNEL}.detected_language"
# Items of the first alternative that are built one at a time.
_ITEMS = {f"{_ALTERNATIVE}.words.item": "word", f"{_ALTERNATIVE}.paragraphs.paragraphs.item": "paragraph"}


class TranscriptFormatError(ValueError):
    """The stored JSON is not a readable Deepgram answer."""


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
    skipped: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for file in self.files.values():
            file.close()


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


def read_summary(source: IO[bytes]) -> TranscriptSummary:
    """The answer's metadata (one small object), from the start of ``source``."""
    source.seek(0)
    try:
        metadata = next(ijson.items(source, "metadata", use_float=True), None)
    except ijson.JSONError as exc:
        raise TranscriptFormatError(f"the stored transcript is not JSON: {exc}") from exc
    summary = TranscriptSummary()
    if not isinstance(metadata, dict):
        return summary
    request_id, created, duration = (metadata.get(k) for k in ("request_id", "created", "duration"))
    summary.request_id = str(request_id) if request_id else None
    summary.created = str(created) if created else None
    summary.duration_s = float(duration) if isinstance(duration, int | float) else None
    channels = metadata.get("channels")
    summary.channels = channels if isinstance(channels, int) else 0
    info = metadata.get("model_info")
    if isinstance(info, dict):
        summary.model_names = [str(m["name"]) for m in info.values() if isinstance(m, dict) and m.get("name")]
    return summary


@dataclass(frozen=True)
class Item:
    kind: str  # channel (its start) | word | paragraph
    channel: int
    value: dict[str, Any]


class _Walker:
    """Turns ijson events into the words and paragraphs of each channel's first alternative."""

    def __init__(self, summary: TranscriptSummary) -> None:
        self.summary = summary
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


def iter_items(source: IO[bytes], summary: TranscriptSummary) -> Iterator[Item]:
    """Each word and paragraph of every channel's first alternative, in document order."""
    source.seek(0)
    walker = _Walker(summary)
    try:
        for prefix, event, value in ijson.parse(source, use_float=True):
            item = walker.feed(prefix, event, value)
            if item is not None:
                yield item
    except ijson.JSONError as exc:
        raise TranscriptFormatError(f"the stored transcript is not JSON: {exc}") from exc
    summary.channels = max(summary.channels, walker.channel + 1)


def _speaker(value: dict[str, Any]) -> int | None:
    speaker = value.get("speaker")
    return speaker if isinstance(speaker, int) else None


def _word_text(word: dict[str, Any]) -> str:
    return str(word.get("punctuated_word") or word.get("word") or "")


def _spool() -> IO[bytes]:
    return tempfile.TemporaryFile()  # handed to the caller, who closes it


class _Text:
    """Plain text of one source (words or paragraphs), spooled per channel; ``assemble`` joins the
    channels, each headed ``[Channel N]`` when the answer has more than one."""

    def __init__(self) -> None:
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

    def word(self, channel: int, word: dict[str, Any]) -> None:
        self.enter(channel)
        speaker, text = _speaker(word), _word_text(word)
        if speaker is not None and speaker != self.speaker:
            self.end_line()
            self._write(f"Speaker {speaker}: {text}")
        else:
            self._write(f" {text}" if self.line_open else text)
        self.speaker, self.line_open = speaker, True

    def paragraph(self, channel: int, paragraph: dict[str, Any]) -> None:
        self.enter(channel)
        sentences = paragraph.get("sentences") or []
        body = " ".join(str(s.get("text", "")) for s in sentences if isinstance(s, dict))
        speaker = _speaker(paragraph)
        label = f"Speaker {speaker}: " if speaker is not None else ""
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


class _Cues:
    """Groups one channel's words into cues, as deepgram-captions does, spooled as JSON lines."""

    def __init__(self, words_per_cue: int) -> None:
        self.words_per_cue = words_per_cue
        self.words: list[dict[str, Any]] = []
        self.channel = 0
        self.file = _spool()

    def add(self, channel: int, word: dict[str, Any]) -> None:
        if self.words and (
            len(self.words) >= self.words_per_cue or _speaker(word) != _speaker(self.words[-1])
        ):
            self.flush()
        self.channel = channel
        self.words.append(word)

    def flush(self) -> None:
        if not self.words:
            return
        first, last = self.words[0], self.words[-1]
        cue = [
            float(first.get("start", 0.0)),
            float(last.get("end", 0.0)),
            self.channel,
            _speaker(first),
            " ".join(_word_text(w) for w in self.words),
        ]
        self.file.write(json.dumps(cue, ensure_ascii=False).encode("utf-8") + b"\n")
        self.words = []

    def read(self) -> Iterator[Cue]:
        self.flush()
        self.file.seek(0)
        for line in self.file:
            start, end, channel, speaker, text = json.loads(line)
            yield Cue(start, end, channel, speaker, text)


class _Captions:
    """Cue spools per channel; ``cues()`` merges them by start time."""

    def __init__(self, words_per_cue: int) -> None:
        self.words_per_cue = words_per_cue
        self.channels: dict[int, _Cues] = {}

    def word(self, channel: int, word: dict[str, Any]) -> None:
        spool = self.channels.get(channel)
        if spool is None:
            spool = self.channels[channel] = _Cues(self.words_per_cue)
        spool.add(channel, word)

    def cues(self) -> Iterator[Cue]:
        return heapq.merge(*(spool.read() for spool in self.channels.values()), key=lambda c: c.start)

    def close(self) -> None:
        for spool in self.channels.values():
            spool.file.close()


def _label(cue: Cue, multichannel: bool) -> str | None:
    parts = [f"channel {cue.channel}"] if multichannel else []
    if cue.speaker is not None:
        parts.append(f"speaker {cue.speaker}")
    return " ".join(parts) or None


def write_srt(cues: Iterator[Cue], out: IO[bytes], multichannel: bool) -> None:
    """SRT numbered from 1; a ``[speaker N]`` (``[channel N ...]``) line when the label changes."""
    current: str | None = None
    for number, cue in enumerate(cues, start=1):
        lines = [str(number), f"{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}"]
        label = _label(cue, multichannel)
        if label is not None and label != current:
            lines.append(f"[{label}]")
        current = label
        lines.append(cue.text)
        out.write(("\n" if number > 1 else "").encode() + "\n".join(lines).encode("utf-8") + b"\n")


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _note_safe(value: object) -> str:
    """A value from the answer on one NOTE line: a blank line or ``-->`` would end the block early."""
    return " ".join(str(value).split()).replace("-->", "->")


def write_vtt(cues: Iterator[Cue], out: IO[bytes], multichannel: bool, summary: TranscriptSummary) -> None:
    """WebVTT with deepgram-captions' NOTE header (crediting the answer's maker); a ``<v Speaker N>``
    voice per cue when labelled."""
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
        label = _label(cue, multichannel)
        voice = f"<v {label.title()}>" if label is not None else ""
        times = f"{timestamp(cue.start, '.')} --> {timestamp(cue.end, '.')}"
        out.write(f"{chr(10) if index else ''}{times}\n{voice}{_vtt_escape(cue.text)}\n".encode())


class _Collector:
    """Everything one pass over the items feeds: both texts and the caption spools."""

    def __init__(self, summary: TranscriptSummary, words_per_cue: int) -> None:
        self.summary = summary
        self.words, self.paragraphs = _Text(), _Text()
        self.captions = _Captions(words_per_cue)
        self.channels = 0  # in the results (the layout's), whatever the metadata says of the audio

    def add(self, item: Item) -> None:
        if item.kind == "channel":
            self.channels += 1
            self.words.enter(item.channel)
            self.paragraphs.enter(item.channel)
        elif item.kind == "paragraph":
            self.summary.paragraphs += 1
            self.paragraphs.paragraph(item.channel, item.value)
        else:
            self.summary.words += 1
            self.words.word(item.channel, item.value)
            self.captions.word(item.channel, item.value)

    def text(self) -> IO[bytes]:
        """The paragraphs when Deepgram returned any, else the words."""
        return self.paragraphs.assemble() if self.summary.paragraphs else self.words.assemble()

    def caption(self, name: str) -> IO[bytes]:
        out = _spool()
        multichannel = self.channels > 1
        if name == "srt":
            write_srt(self.captions.cues(), out, multichannel)
        else:
            write_vtt(self.captions.cues(), out, multichannel, self.summary)
        return out

    def close(self) -> None:
        self.words.close()
        self.paragraphs.close()
        self.captions.close()


def render(
    source: IO[bytes], formats: Collection[str], words_per_cue: int = DEFAULT_WORDS_PER_CUE
) -> Rendered:
    """Make the requested derived formats from the stored JSON in ``source`` (seekable)."""
    summary = read_summary(source)
    rendered = Rendered(summary)
    collector = _Collector(summary, words_per_cue)
    try:
        for item in iter_items(source, summary):
            collector.add(item)
        if "txt" in formats:
            _keep(rendered, "txt", collector.text())
        for name in (f for f in CAPTION_FORMATS if f in formats):
            if summary.empty:
                rendered.skipped[name] = EMPTY_TRANSCRIPT
            else:
                _keep(rendered, name, collector.caption(name))
    except BaseException:
        rendered.close()
        raise
    finally:
        collector.close()
    return rendered


def _keep(rendered: Rendered, name: str, file: IO[bytes]) -> None:
    file.seek(0)
    rendered.files[name] = file
