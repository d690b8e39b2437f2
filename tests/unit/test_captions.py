"""Readable captions and named speakers: every caption, for every setting and for real-looking and
hostile answers, parses with two independent parsers (pysrt in strict mode, webvtt-py strict) and
keeps its promises: lines no longer than the line length, no more lines than the maximum, cues no
longer than the maximum duration, numbered from the start index, every word kept, in order."""

from __future__ import annotations

import html
import io
import json
from typing import Any

import pysrt  # type: ignore[import-untyped]
import pytest
import webvtt

from transcriber.config import DeepgramOptions, EnvReader, Settings
from transcriber.domain import formats, speakers
from transcriber.domain.upload_options import UploadOptionPolicy, from_metadata, overlay
from transcriber.errors import ConfigurationError, PermanentError

ENV = {"OUTPUT_BUCKET": "out", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t", "INPUT_BUCKET": "in"}
# A LibriVox-like reading (the product's own sample says these words) and a two-person call.
READING = [
    "she",
    "had",
    "your",
    "dark",
    "suit",
    "in",
    "greasy",
    "wash",
    "water",
    "all",
    "year",
    "and",
    "then",
    "she",
    "went",
    "on",
    "reading",
    "aloud",
    "from",
    "the",
    "long",
    "chapter",
    "about",
    "the",
    "quiet",
    "river",
    "that",
    "ran",
    "beside",
    "the",
    "old",
    "mill",
    "where",
    "nobody",
    "had",
    "worked",
    "for",
    "more",
    "than",
    "forty",
    "years",
]
CALL = [
    (0, "hello thanks for calling the support line how can I help you today"),
    (1, "hi my internet has been dropping every evening since Tuesday"),
    (0, "I am sorry to hear that let me look up your account"),
    (1, "sure"),
    (0, "thanks one moment please"),
]


def words_of(
    texts: list[str], speaker: int | None = None, start: float = 0.0, pace: float = 0.4
) -> list[dict[str, Any]]:
    out = []
    for i, text in enumerate(texts):
        item: dict[str, Any] = {
            "word": text.lower(),
            "start": round(start + i * pace, 3),
            "end": round(start + i * pace + pace * 0.8, 3),
            "confidence": 0.9,
            "punctuated_word": text,
        }
        if speaker is not None:
            item["speaker"] = speaker
        out.append(item)
    return out


def answer(*channels: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"request_id": "req-1", "duration": 60.0, "channels": len(channels), "model_info": {}},
        "results": {"channels": [{"alternatives": [{"transcript": "", "words": w}]} for w in channels]},
    }


def call_words() -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = []
    for speaker, line in CALL:
        words += words_of(line.split(), speaker, start=(words[-1]["end"] + 0.5) if words else 0.0)
    return words


def hostile_words() -> list[dict[str, Any]]:
    odd: list[dict[str, Any]] = [
        {"word": "x" * 300, "start": 0.0, "end": 2.0},  # a word longer than any cue
        {
            "word": "a\n\nb",
            "punctuated_word": "A\n\n2\n00:00:00,000 --> 00:00:01,000",
            "start": 2.0,
            "end": 2.1,
        },
        {"word": "tags", "punctuated_word": "<v Bob>&amp;</v>", "start": 2.2, "end": 2.3},
        {"word": "-->", "start": 2.4, "end": 2.5},
        {"word": "   ", "start": 2.6, "end": 2.7},  # nothing to show
        {"word": "late", "start": "soon", "end": None},  # times that are not numbers
        {"word": "back", "start": 1.0, "end": 0.5},  # ends before it starts
        {"word": "long", "start": 3.0, "end": 40.0},  # said for 37 s
        {"word": "négociation", "start": 41.0, "end": 41.5, "speaker": "1"},  # a speaker that is no number
        {"word": "日本語のテキストはとても長い単語になることがあります", "start": 42.0, "end": 42.5},
        {"word": "far", "start": 1e30, "end": 1e30},
        {"word": "minus", "start": -5.0, "end": -4.0},
    ]
    return odd


ANSWERS = {
    "reading": answer(words_of(READING)),
    "call": answer(call_words()),
    "stereo": answer(words_of(READING[:20]), words_of(READING[20:], start=0.2)),
    "stereo-diarized": answer(words_of(READING[:12], 0), words_of(READING[12:], 1, start=0.3)),
    "hostile": answer(hostile_words()),
    "hostile-diarized": answer([dict(w, speaker=i % 3) for i, w in enumerate(hostile_words())]),
}
STYLES = {
    "default": formats.CaptionStyle(),
    "narrow": formats.CaptionStyle(line_length=20, words_per_cue=50),
    "one-line": formats.CaptionStyle(max_lines=1, line_length=32),
    "three-lines": formats.CaptionStyle(max_lines=3, max_cue_s=3, words_per_cue=50),
    "no-limits": formats.CaptionStyle(line_length=0, max_cue_s=0, words_per_cue=50),
    "word-a-cue": formats.CaptionStyle(words_per_cue=1, start_index=0),
    "from-100": formats.CaptionStyle(start_index=100),
    "named": formats.CaptionStyle(
        speakers=speakers.parse_speakers("0=Alice,1=Bob, 2 = Bartholomew Montgomery-Smythe")
    ),
    "named-narrow": formats.CaptionStyle(line_length=16, speakers=speakers.parse_speakers("0=Zoë O'Brien")),
}


def render(doc: dict[str, Any], style: formats.CaptionStyle) -> dict[str, str]:
    rendered = formats.render(io.BytesIO(json.dumps(doc).encode()), ("txt", "srt", "vtt"), style)
    try:
        return {name: file.read().decode("utf-8") for name, file in rendered.files.items()}
    finally:
        rendered.close()


def shown(doc: dict[str, Any]) -> str:
    """Every word's text as captions must show it, all whitespace removed (pieces of a split word
    and line breaks must neither lose nor add a character)."""
    words = [w for ch in doc["results"]["channels"] for w in ch["alternatives"][0]["words"]]
    return "".join(
        "".join(formats.caption_text(str(w.get("punctuated_word") or w["word"])).split()) for w in words
    )


def srt_label(style: formats.CaptionStyle, voice: str) -> str:
    """The SRT prefix of the speaker a WebVTT voice names (the voice is never cut)."""
    channel, _, who = voice.partition(" ") if voice.startswith("Channel ") else ("", "", voice)
    if channel:
        number, _, who = who.partition(" ")
    names = {name: number for number, name in style.speakers}
    speaker = int(who.removeprefix("Speaker ")) if who.startswith("Speaker ") else names.get(who)
    return style.label(int(number) if channel else 0, speaker, bool(channel))


@pytest.mark.parametrize("style_name", STYLES)
@pytest.mark.parametrize("answer_name", ANSWERS)
def test_every_caption_parses_strictly_and_keeps_its_limits(answer_name: str, style_name: str) -> None:
    doc, style = ANSWERS[answer_name], STYLES[style_name]

    out = render(doc, style)

    subs = pysrt.from_string(out["srt"], error_handling=pysrt.ERROR_RAISE)
    vtt = webvtt.from_string(out["vtt"], strict=True)
    assert len(subs) == len(vtt.captions) > 0
    assert [s.index for s in subs] == list(range(style.start_index, style.start_index + len(subs)))
    for sub, cue in zip(subs, vtt.captions, strict=True):
        assert str(sub.start).replace(",", ".") == cue.start
        assert str(sub.end).replace(",", ".") == cue.end
        assert cue.end_in_seconds >= cue.start_in_seconds
        if style.max_cue_s:
            assert cue.end_in_seconds - cue.start_in_seconds <= style.max_cue_s + 0.001
        srt_lines, vtt_lines = sub.text.split("\n"), [html.unescape(line) for line in cue.text.split("\n")]
        assert len(srt_lines) == len(vtt_lines) <= style.max_lines
        if style.line_length:
            assert max(len(line) for line in srt_lines + vtt_lines) <= style.line_length, srt_lines
        if cue.voice:  # the SRT prefix names the same speaker (and channel), shortened to fit
            assert srt_lines[0] == f"{srt_label(style, html.unescape(cue.voice))}: {vtt_lines[0]}"
        else:
            assert srt_lines == vtt_lines
    vtt_text = "".join("".join(html.unescape(c.text).split()) for c in vtt.captions)
    if len(doc["results"]["channels"]) == 1:
        assert vtt_text == shown(doc)  # every word, in order, nothing added
    else:
        assert sorted(vtt_text) == sorted(shown(doc))


def test_a_reading_with_a_43_character_run_is_cut_at_42_and_cues_fill_two_lines() -> None:
    doc = answer(words_of(READING))

    out = render(doc, formats.CaptionStyle(words_per_cue=50))

    subs = pysrt.from_string(out["srt"], error_handling=pysrt.ERROR_RAISE)
    lines = [line for s in subs for line in s.text.split("\n")]
    assert max(map(len, lines)) <= 42
    assert all(len(s.text.split("\n")) == 2 for s in subs[:-1])  # full cues use both lines
    assert subs[0].text == "she had your dark suit in greasy wash\nwater all year and then she went on"
    # With deepgram-captions' layout alone (8 words a cue, one line) the same reading has a
    # 43-character line: the reason for the limit.
    legacy = render(doc, formats.CaptionStyle(line_length=0, max_cue_s=0))
    legacy_lines = [block.split("\n")[2] for block in legacy["srt"].strip().split("\n\n")]
    assert max(map(len, legacy_lines)) > 42


def test_a_cue_ends_before_it_runs_past_the_longest_duration() -> None:
    slow = words_of(READING[:12], pace=1.5)  # a word every 1.5 s

    subs = pysrt.from_string(
        render(answer(slow), formats.CaptionStyle(max_cue_s=4, words_per_cue=50))["srt"],
        error_handling=pysrt.ERROR_RAISE,
    )

    assert [len(s.text.split()) for s in subs] == [2] * 6  # a third word would end at 4.2 s
    assert all((s.end.ordinal - s.start.ordinal) <= 4000 for s in subs)


def test_named_speakers_appear_in_txt_srt_and_vtt() -> None:
    style = formats.CaptionStyle(speakers=speakers.parse_speakers("0=Alice,1=Bob"))

    out = render(answer(call_words()), style)

    assert out["txt"].splitlines()[:2] == [
        "Alice: hello thanks for calling the support line how can I help you today",
        "Bob: hi my internet has been dropping every evening since Tuesday",
    ]
    subs = pysrt.from_string(out["srt"], error_handling=pysrt.ERROR_RAISE)
    assert subs[0].text.startswith("Alice: hello")
    assert [c.voice for c in webvtt.from_string(out["vtt"], strict=True).captions][:3] == [
        "Alice",
        "Alice",
        "Bob",
    ]
    # A speaker the upload did not name keeps Deepgram's number.
    partial = render(answer(call_words()), formats.CaptionStyle(speakers=((1, "Bob"),)))
    assert partial["txt"].startswith("Speaker 0: hello")
    assert "<v Bob>hi my" in partial["vtt"]


def test_a_name_longer_than_a_third_of_a_line_is_cut_in_the_label_only() -> None:
    style = formats.CaptionStyle(line_length=36, speakers=((0, "Bartholomew Montgomery"),))

    out = render(answer(words_of(READING[:6], 0)), style)

    assert pysrt.from_string(out["srt"], error_handling=pysrt.ERROR_RAISE)[0].text.startswith(
        "Bartholomew: she"
    )
    assert out["txt"].startswith("Bartholomew Montgomery: she")


# -- the speakers' names, as an upload gives them ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0=Alice,1=Bob", ((0, "Alice"), (1, "Bob"))),
        (" 1 = Bob , 0 = Alice ", ((0, "Alice"), (1, "Bob"))),
        ("0=Zoë O'Brien,3=José-María,2=李雷", ((0, "Zoë O'Brien"), (2, "李雷"), (3, "José-María"))),
        ("0=Dr. Who", ((0, "Dr. Who"),)),
    ],
)
def test_speaker_names_are_read(value: str, expected: tuple[tuple[int, str], ...]) -> None:
    assert speakers.parse_speakers(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "no speaker named"),
        ("Alice,Bob", "<speaker number>=<name>"),
        ("0=Alice,0=Bob", "named twice"),
        ("100=Alice", "from 0 to 99"),
        ("0=<script>", "letters"),
        ("0=Al-->ice", "letters"),
        ("0=" + "a" * 33, "1 to 32"),
        ("0=", "letters"),
        (",".join(f"{i}=P{i}" for i in range(21)), "at most 20"),
        ("0=Alice\n\n1=Bob", "<speaker number>=<name>"),
        ("0=snake_case", "letters"),
        ("0=Alice.", "letters"),
    ],
)
def test_bad_speaker_names_are_refused_by_option_without_echoing_them(value: str, why: str) -> None:
    with pytest.raises(PermanentError) as caught:
        UploadOptionPolicy().validate([("speakers", value)])

    assert caught.value.reason == "option-refused"
    assert "'speakers'" in str(caught.value)
    assert why in str(caught.value)
    assert "script" not in str(caught.value)


def test_metadata_names_speakers_and_caption_settings_and_none_of_it_reaches_deepgram() -> None:
    pairs = from_metadata(
        {
            "dg-speakers": "=?utf-8?q?0=3DZo=C3=AB,1=3DBob?=",  # what an S3 client sends for non-ASCII
            "dg-caption-line-length": "32",
            "dg-caption-max-lines": "1",
            "dg-caption-max-seconds": "5",
            "dg-caption-start-index": "0",
            "dg-caption-words-per-cue": "12",
            "dg-diarize-model": "latest",
        }
    )
    accepted = UploadOptionPolicy().validate(pairs)

    query = overlay(DeepgramOptions(), accepted).query()
    assert ("diarize_model", "latest") in query
    assert not {name for name, _ in query} & speakers.OUTPUT_OPTIONS
    style = speakers.style_for(Settings.from_env(ENV).caption_style, accepted)
    assert style == formats.CaptionStyle(
        words_per_cue=12,
        line_length=32,
        max_lines=1,
        max_cue_s=5,
        start_index=0,
        speakers=((0, "Zoë"), (1, "Bob")),
    )
    assert speakers.speakers_metadata(accepted) == {"speakers": "0=Zo%C3%AB,1=Bob"}
    assert speakers.speakers_detail(accepted) == {"0": "Zoë", "1": "Bob"}
    assert speakers.speakers_metadata([("language", "es")]) == {}
    assert speakers.speakers_detail([("language", "es")]) is None


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("caption_line_length", "-1"),
        ("caption_line_length", "201"),
        ("caption_line_length", "4 2"),
        ("caption_max_lines", "0"),
        ("caption_max_seconds", "6.5"),
        ("caption_words_per_cue", "0"),
        ("caption_start_index", "\u0661"),  # an Arabic-Indic digit: a digit, not ASCII
    ],
)
def test_bad_caption_settings_are_refused_by_name(option: str, value: str) -> None:
    with pytest.raises(PermanentError, match=repr(option)):
        UploadOptionPolicy().validate([(option, value)])


def test_deployment_settings_give_the_caption_style_and_our_allow_list() -> None:
    default = Settings.from_env(ENV)
    assert default.caption_style == formats.CaptionStyle()
    assert default.caption_style == formats.CaptionStyle(
        words_per_cue=8, line_length=42, max_lines=2, max_cue_s=7, start_index=1
    )
    env = ENV | {
        "CAPTION_WORDS_PER_CUE": "20",
        "CAPTION_LINE_LENGTH": "37",
        "CAPTION_MAX_LINES": "3",
        "CAPTION_MAX_CUE_SECONDS": "0",
        "CAPTION_START_INDEX": "0",
        "UPLOAD_OUTPUT_OPTIONS": "speakers",
    }
    settings = Settings.from_env(env)
    assert settings.caption_style == formats.CaptionStyle(
        words_per_cue=20, line_length=37, max_lines=3, max_cue_s=0, start_index=0
    )
    assert "speakers" in settings.upload_options.allowed
    assert "caption_line_length" not in settings.upload_options.allowed
    with pytest.raises(PermanentError, match="allow-list"):
        settings.upload_options.validate([("caption_line_length", "30")])
    with pytest.raises(ConfigurationError, match="CAPTION_MAX_LINES must be at least 1"):
        Settings.from_env(ENV | {"CAPTION_MAX_LINES": "0"})
    with pytest.raises(ConfigurationError, match="UPLOAD_OUTPUT_OPTIONS lists language"):
        UploadOptionPolicy.from_env(EnvReader({"UPLOAD_OUTPUT_OPTIONS": "speakers,language"}))
    off = UploadOptionPolicy.from_env(EnvReader({"UPLOAD_OPTIONS": "none"}))
    assert not off.enabled  # none turns per-upload options off, ours included


def test_diarize_model_in_the_deployments_options_reaches_the_query() -> None:
    settings = Settings.from_env(ENV | {"DEEPGRAM_OPTIONS": "model=nova-3&diarize=true&diarize_model=latest"})

    query = settings.deepgram.query()

    assert ("diarize_model", "latest") in query
    assert ("diarize", "true") in query
