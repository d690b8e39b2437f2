"""The derived formats, from Deepgram-shaped JSON: text, SRT and WebVTT, and bounded memory."""

from __future__ import annotations

import io
import json
import tempfile
import tracemalloc
from typing import IO, Any

import pytest
from deepgram_captions import DeepgramConverter, srt, webvtt

from transcriber.config import Settings
from transcriber.domain import formats
from transcriber.errors import ConfigurationError
from transcriber.services.storage import Storage

WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "and",
    "then",
    "some",
    "more",
    "words",
    "follow",
)


def word(text: str, start: float, speaker: int | None = None, punctuated: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"word": text, "start": start, "end": round(start + 0.25, 3), "confidence": 0.9}
    if punctuated:
        item["punctuated_word"] = text.capitalize()
    if speaker is not None:
        item["speaker"] = speaker
        item["speaker_confidence"] = 0.8
    return item


def document(*channels: list[dict[str, Any]], **alternative: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "request_id": "req-1",
            "created": "2026-11-26T00:00:00.000Z",
            "duration": 9.5,
            "channels": len(channels),
            "models": ["m"],
            "model_info": {"m": {"name": "general-nova-3", "version": "x", "arch": "nova-3"}},
        },
        "results": {
            "channels": [
                {
                    "alternatives": [
                        {
                            "transcript": " ".join(w["word"] for w in words),
                            "confidence": 0.9,
                            "words": words,
                            **alternative,
                        }
                    ]
                }
                for words in channels
            ]
        },
    }


def render(
    doc: dict[str, Any], fmts: tuple[str, ...] = ("txt", "srt", "vtt"), per_cue: int = 8, **style: Any
) -> dict[str, str]:
    caption_style = formats.CaptionStyle(words_per_cue=per_cue, **style)
    rendered = formats.render(io.BytesIO(json.dumps(doc).encode()), fmts, caption_style)
    try:
        return {name: file.read().decode("utf-8") for name, file in rendered.files.items()}
    finally:
        rendered.close()


@pytest.mark.parametrize("per_cue", [1, 3, 8, 100])
def test_with_the_length_limits_off_captions_are_exactly_what_deepgram_captions_makes(per_cue: int) -> None:
    doc = document([word(w, i * 0.3) for i, w in enumerate(WORDS)])

    out = render(doc, per_cue=per_cue, line_length=0, max_cue_s=0)

    assert out["srt"] == srt(DeepgramConverter(doc), per_cue)
    assert out["vtt"] == webvtt(DeepgramConverter(doc), per_cue)


@pytest.mark.parametrize("per_cue", [1, 3, 8, 100])
def test_diarized_cues_are_deepgram_captions_cues_with_the_speaker_as_a_prefix(per_cue: int) -> None:
    words = [word(w, i * 0.3, speaker=0 if i < 6 else 1) for i, w in enumerate(WORDS)]
    doc = document(words)

    out = render(doc, per_cue=per_cue, line_length=0, max_cue_s=0)

    theirs = [block.split("\n") for block in srt(DeepgramConverter(doc), per_cue).strip().split("\n\n")]
    ours = [block.split("\n") for block in out["srt"].strip().split("\n\n")]
    assert [block[:2] for block in ours] == [block[:2] for block in theirs]  # numbers and times
    speaker, expected = "", []
    for block in theirs:  # theirs: a "[speaker N]" line when the speaker changes; ours: a prefix
        speaker = block[2][len("[speaker ") : -1] if block[2].startswith("[speaker ") else speaker
        expected.append([f"Speaker {speaker}: {block[-1]}"])
    assert [block[2:] for block in ours] == expected


def test_srt_is_numbered_from_one_and_timed_to_the_words() -> None:
    words = [word(w, 1.0 + i * 0.5) for i, w in enumerate(WORDS[:5])]

    out = render(document(words), per_cue=2)

    assert out["srt"] == (
        "1\n00:00:01,000 --> 00:00:01,750\nThe Quick\n\n"
        "2\n00:00:02,000 --> 00:00:02,750\nBrown Fox\n\n"
        "3\n00:00:03,000 --> 00:00:03,250\nJumps\n"
    )


def test_text_without_paragraphs_is_the_words_and_speaker_turns_when_diarized() -> None:
    plain = render(document([word(w, i) for i, w in enumerate(WORDS[:4])]), ("txt",))
    assert plain == {"txt": "The Quick Brown Fox\n"}

    turns = [word("hi", 0, 0), word("there", 1, 0), word("hello", 2, 1), word("again", 3, 0)]
    assert (
        render(document(turns), ("txt",))["txt"]
        == "Speaker 0: Hi There\nSpeaker 1: Hello\nSpeaker 0: Again\n"
    )

    unpunctuated = render(document([word(w, i, punctuated=False) for i, w in enumerate(WORDS[:2])]), ("txt",))
    assert unpunctuated["txt"] == "the quick\n"


def test_text_uses_paragraphs_when_deepgram_returned_them() -> None:
    paragraphs = {
        "transcript": "ignored",
        "paragraphs": [
            {
                "sentences": [
                    {"text": "Hi there.", "start": 0, "end": 1},
                    {"text": "Yes.", "start": 1, "end": 2},
                ],
                "speaker": 0,
                "start": 0,
                "end": 2,
                "num_words": 3,
            },
            {
                "sentences": [{"text": "Hello.", "start": 5, "end": 6}],
                "speaker": 1,
                "start": 5,
                "end": 6,
                "num_words": 1,
            },
        ],
    }
    words = [word("hi", 0, 0), word("there", 0.5, 0), word("yes", 1, 0), word("hello", 5, 1)]

    out = render(document(words, paragraphs=paragraphs), ("txt",))

    assert out["txt"] == "Speaker 0: Hi there. Yes.\n\nSpeaker 1: Hello.\n"


def test_multichannel_text_has_a_section_per_channel_and_cues_merge_by_time() -> None:
    left = [word("hello", 0.0), word("caller", 2.0)]
    right = [word("hi", 1.0), word("agent", 3.0)]

    out = render(document(left, right), per_cue=1)

    assert out["txt"] == "[Channel 0]\nHello Caller\n\n[Channel 1]\nHi Agent\n"
    assert out["srt"] == (
        "1\n00:00:00,000 --> 00:00:00,250\nChannel 0: Hello\n\n"
        "2\n00:00:01,000 --> 00:00:01,250\nChannel 1: Hi\n\n"
        "3\n00:00:02,000 --> 00:00:02,250\nChannel 0: Caller\n\n"
        "4\n00:00:03,000 --> 00:00:03,250\nChannel 1: Agent\n"
    )
    assert "\n00:00:01.000 --> 00:00:01.250\n<v Channel 1>Hi\n" in out["vtt"]
    assert "Channels: 2" in out["vtt"]


def test_only_the_first_alternative_is_used() -> None:
    doc = document([word("yes", 0)])
    doc["results"]["channels"][0]["alternatives"].append({"transcript": "no", "words": [word("no", 0)]})

    assert render(doc, ("txt",))["txt"] == "Yes\n"


def test_an_empty_transcript_gives_empty_text_and_no_captions() -> None:
    rendered = formats.render(io.BytesIO(json.dumps(document([])).encode()), ("txt", "srt", "vtt"))

    assert rendered.files["txt"].read() == b""
    assert set(rendered.files) == {"txt"}
    assert rendered.skipped == {"srt": "empty-transcript", "vtt": "empty-transcript"}
    assert rendered.summary.empty
    rendered.close()


def test_formats_not_asked_for_are_not_made() -> None:
    assert set(render(document([word("yes", 0)]), ("srt",))) == {"srt"}
    assert render(document([word("yes", 0)]), ()) == {}


def test_the_summary_reads_the_metadata_and_detected_languages() -> None:
    doc = document([word("hola", 0)], [word("hello", 0)])
    doc["results"]["channels"][0]["detected_language"] = "es"
    doc["results"]["channels"][1]["detected_language"] = "en"

    rendered = formats.render(io.BytesIO(json.dumps(doc).encode()), ())

    summary = rendered.summary
    assert (summary.request_id, summary.duration_s, summary.channels) == ("req-1", 9.5, 2)
    assert summary.model_names == ["general-nova-3"]
    assert summary.detected_languages == ["es", "en"]
    assert (summary.words, summary.paragraphs) == (2, 0)


def test_webvtt_cue_text_is_escaped_and_timestamps_pass_a_day() -> None:
    out = render(document([word("<b>&", 90061.5)]), ("vtt",))

    assert "25:01:01.500 --> 25:01:01.750\n&lt;b&gt;&amp;\n" in out["vtt"]
    assert formats.timestamp(0.0005, ",") == "00:00:00,000"
    assert formats.timestamp(3599.9996, ".") == "01:00:00.000"


@pytest.mark.parametrize(
    "body", [b"not json", b'{"metadata": {"request_id": "x"}, "results": {"channels": [{']
)
def test_a_stored_transcript_that_is_not_json_is_refused(body: bytes) -> None:
    with pytest.raises(formats.TranscriptFormatError, match="not JSON"):
        formats.render(io.BytesIO(body), ("txt",))


def test_metadata_that_is_missing_or_odd_is_tolerated() -> None:
    doc = document([word("yes", 0)])
    doc["metadata"] = {"duration": "long", "channels": "two", "model_info": "none"}

    summary = formats.render(io.BytesIO(json.dumps(doc).encode()), ()).summary

    assert (summary.request_id, summary.duration_s, summary.channels, summary.model_names) == (
        None,
        None,
        1,
        [],
    )
    assert formats.render(io.BytesIO(b'{"results": {"channels": []}}'), ()).summary.channels == 0


def _big_answer(words_per_channel: int, channels: int) -> IO[bytes]:
    """A Deepgram-shaped answer of many megabytes, written without holding it in memory."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    out.write(
        b'{"metadata": {"request_id": "big", "duration": 1.0, "channels": %d}, "results": {"channels": ['
        % channels
    )
    for channel in range(channels):
        out.write(b'%s{"alternatives": [{"transcript": "", "words": [' % (b"," if channel else b""))
        for i in range(words_per_channel):
            item = word(WORDS[i % len(WORDS)], i * 0.4, speaker=(i // 50) % 3)
            out.write((b"," if i else b"") + json.dumps(item).encode())
        out.write(b"]}]}")
    out.write(b"]}}")
    out.seek(0)
    return out


def _render_peak(words_per_channel: int) -> tuple[int, int]:
    """The answer's size and the most memory rendering it held at once (tracemalloc)."""
    with _big_answer(words_per_channel=words_per_channel, channels=2) as source:
        size = source.seek(0, io.SEEK_END)
        tracemalloc.start()
        try:
            rendered = formats.render(source, ("txt", "srt", "vtt"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        try:
            assert rendered.summary.words == 2 * words_per_channel
            assert rendered.files["srt"].seek(0, io.SEEK_END) > words_per_channel * 10
        finally:
            rendered.close()
    return size, peak


def test_memory_stays_bounded_for_a_huge_answer() -> None:
    # What rendering holds at once does not grow with the answer (60 MB answers are the ones that
    # matter): a word or paragraph, a cue, the I/O buffers. Ten times the answer, the same peak
    # (tracemalloc makes each size slow, so two small ones prove the slope).
    small_size, small_peak = _render_peak(250)
    large_size, large_peak = _render_peak(2_500)
    assert large_size - small_size > 600 * 1024
    assert large_peak - small_peak < 64 * 1024, (small_peak, large_peak)
    assert large_peak < 2 * 1024 * 1024, large_peak


# -- settings ------------------------------------------------------------------------------
BASE_ENV = {"OUTPUT_BUCKET": "out", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t", "INPUT_BUCKET": "in"}


def test_output_settings_default_to_every_format_and_events_on_the_default_bus() -> None:
    settings = Settings.from_env(BASE_ENV)

    assert settings.output_formats == ("json", "txt", "srt", "vtt") == formats.FORMATS
    assert (settings.caption_words_per_cue, settings.completion_events, settings.event_bus_name) == (
        8,
        True,
        "default",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("json", ("json",)),
        ("TXT", ("json", "txt")),
        ("vtt, srt", ("json", "srt", "vtt")),
        (" ", formats.FORMATS),
    ],
)
def test_output_formats_always_include_the_json(value: str, expected: tuple[str, ...]) -> None:
    assert Settings.from_env({**BASE_ENV, "OUTPUT_FORMATS": value}).output_formats == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OUTPUT_FORMATS", "json,docx", "OUTPUT_FORMATS lists docx; allowed: json, txt, srt, vtt"),
        ("CAPTION_WORDS_PER_CUE", "0", "CAPTION_WORDS_PER_CUE must be at least 1"),
        ("COMPLETION_EVENTS", "maybe", "COMPLETION_EVENTS must be true or false"),
    ],
)
def test_bad_output_settings_name_their_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({**BASE_ENV, variable: value})


def test_every_format_of_a_long_key_lands_under_the_same_long_key_name() -> None:
    storage = Storage(None, "out", "transcripts/", "failures/")  # type: ignore[arg-type]  # no S3 call
    long_key = "calls/" + "a" * 1100 + ".wav"

    keys = {ext: storage.format_key(long_key, ext) for ext in formats.FORMATS}

    digest = keys["json"].removeprefix("transcripts/_long-keys/").removesuffix(".json")
    assert keys["json"] == storage.transcript_key(long_key)
    assert keys == {ext: f"transcripts/_long-keys/{digest}.{ext}" for ext in formats.FORMATS}
    assert storage.format_key("calls/a b.wav", "srt") == "transcripts/calls/a b.wav.srt"


def test_the_layout_follows_the_channels_in_the_results_not_the_audios() -> None:
    # Stereo audio sent without multichannel: one channel of results, so no sections or labels.
    doc = document([word("hello", 0.0, speaker=0)])
    doc["metadata"]["channels"] = 2

    out = render(doc)
    rendered = formats.render(io.BytesIO(json.dumps(doc).encode()), ())

    assert out["txt"] == "Speaker 0: Hello\n"
    assert "Channel" not in out["srt"]
    assert "\nSpeaker 0: Hello\n" in out["srt"]
    assert "<v Speaker 0>Hello" in out["vtt"]
    assert rendered.summary.channels == 2  # the event reports the audio's channels


def test_a_silent_channel_still_has_its_section() -> None:
    out = render(document([word("hello", 0.0)], []))

    assert out["txt"] == "[Channel 0]\nHello\n\n[Channel 1]\n"
    assert out["srt"] == "1\n00:00:00,000 --> 00:00:00,250\nChannel 0: Hello\n"
