"""Any JSON-shaped answer, however malformed: the formats step never raises, every caption it makes
parses with two independent parsers (pysrt strict, webvtt-py strict) with cues in time order, and
what it does not make it says why (``Rendered.not_made``). Hypothesis writes the answers: each field
of Deepgram's shape is either a plausible value or any JSON value at all."""

from __future__ import annotations

import io
import json
from typing import Any

import pysrt  # type: ignore[import-untyped]
import pytest
import webvtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transcriber.domain import formats

ODD_TEXT = st.text(
    alphabet=st.sampled_from([*"ab 1-->\n\r\t<&;", "\x00", "\x1b", "\x85", "\u2028", "\ufeff", "é"])
    | st.characters(codec="utf-8"),
    max_size=24,
)
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: past 64 bits too, which is valid JSON
    | st.floats(allow_nan=False, allow_infinity=False)
    | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
TIMES = st.floats(min_value=-5, max_value=400_000, allow_nan=False) | st.integers(-5, 10**6)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The plausible value most of the time, any JSON value otherwise."""
    return st.one_of(strategy, strategy, strategy, JSON)


def record(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object whose fields may each be missing or of any type."""
    return st.fixed_dictionaries({}, optional={name: maybe(value) for name, value in fields.items()})


WORD = record(
    word=ODD_TEXT,
    punctuated_word=ODD_TEXT,
    start=TIMES,
    end=TIMES,
    confidence=st.floats(0, 1),
    speaker=st.integers(0, 3),
)
SENTENCE = record(text=ODD_TEXT, start=TIMES, end=TIMES)
PARAGRAPH = record(sentences=st.lists(maybe(SENTENCE), max_size=3), speaker=st.integers(0, 3), start=TIMES)
ALTERNATIVE = record(
    transcript=ODD_TEXT,
    confidence=st.floats(0, 1),
    words=st.lists(maybe(WORD), max_size=14),
    paragraphs=record(transcript=ODD_TEXT, paragraphs=st.lists(maybe(PARAGRAPH), max_size=3)),
)
CHANNEL = record(alternatives=st.lists(maybe(ALTERNATIVE), max_size=2), detected_language=ODD_TEXT)
METADATA = record(
    request_id=ODD_TEXT,
    created=ODD_TEXT,
    duration=st.floats(0, 10_000),
    channels=st.integers(0, 3),
    model_info=st.dictionaries(st.text(max_size=4), maybe(record(name=ODD_TEXT)), max_size=2),
)
UTTERANCE = record(start=TIMES, end=TIMES, words=st.lists(maybe(WORD), max_size=3), speaker=st.integers(0, 3))
ANSWER = maybe(
    record(
        metadata=METADATA,
        results=record(channels=st.lists(maybe(CHANNEL), max_size=3), utterances=st.lists(maybe(UTTERANCE))),
    )
)
STYLE = st.builds(
    formats.CaptionStyle,
    words_per_cue=st.integers(1, 50),
    line_length=st.integers(0, 200),
    max_lines=st.integers(1, 5),
    max_cue_s=st.integers(0, 60),
    start_index=st.integers(0, 1_000_000),
    speakers=st.sampled_from([(), ((0, "Alice"), (1, "Bob")), ((0, "Ann Marie Long-Name"), (1, "Ann"))]),
)


def made(answer: Any, style: formats.CaptionStyle | None = None) -> formats.Rendered:
    return formats.render(io.BytesIO(json.dumps(answer).encode()), formats.DERIVED_FORMATS, style)


def check(rendered: formats.Rendered, style: formats.CaptionStyle) -> None:
    """What every rendering promises, whatever the answer."""
    body = {name: file.read().decode("utf-8") for name, file in rendered.files.items()}
    assert "txt" in body
    reasons = {(n.format, n.reason) for n in rendered.not_made}
    assert reasons <= {("srt", formats.EMPTY_TRANSCRIPT), ("vtt", formats.EMPTY_TRANSCRIPT)}, reasons
    assert set(rendered.skipped) == {n.format for n in rendered.not_made}
    if rendered.summary.words == 0:
        assert set(body) == {"txt"}
        return
    subs = pysrt.from_string(body["srt"], error_handling=pysrt.ERROR_RAISE)
    vtt = webvtt.from_string(body["vtt"], strict=True).captions
    assert len(subs) == len(vtt) > 0
    assert [s.index for s in subs] == list(range(style.start_index, style.start_index + len(subs)))
    assert all(cue.start <= cue.end for cue in subs)
    assert all(c.start_in_seconds <= c.end_in_seconds for c in vtt)
    starts = [c.start_in_seconds for c in vtt]
    assert starts == sorted(starts)  # WebVTT wants its cues in order of their start
    assert "-->" not in "".join(s.text for s in subs)
    assert "-->" not in "".join(c.text for c in vtt)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=ANSWER, style=STYLE)
def test_any_json_answer_gives_formats_that_parse_and_never_raises(
    answer: Any, style: formats.CaptionStyle
) -> None:
    rendered = made(answer, style)
    try:
        check(rendered, style)
    finally:
        rendered.close()


def _answer(words: Any, paragraphs: Any = None, metadata: Any = None) -> dict[str, Any]:
    alternative: dict[str, Any] = {"transcript": "", "words": words}
    if paragraphs is not None:
        alternative["paragraphs"] = {"paragraphs": paragraphs}
    return {
        "metadata": metadata if metadata is not None else {"request_id": "r", "channels": 1},
        "results": {"channels": [{"alternatives": [alternative]}]},
    }


def _word(text: Any, start: Any = 0.0, end: Any = 0.5, **more: Any) -> dict[str, Any]:
    return {"word": text, "start": start, "end": end, **more}


def test_sentences_that_are_not_a_list_give_the_text_from_the_words() -> None:
    rendered = made(_answer([_word("hello"), _word("there", 0.5, 1.0)], [{"sentences": 7, "speaker": 0}]))

    assert rendered.files["txt"].read() == b"hello there\n"
    assert rendered.repairs == formats.Repairs(paragraphs_skipped=1)
    assert rendered.not_made == []


def test_words_that_run_back_in_time_are_mended_into_ordered_cues() -> None:
    style = formats.CaptionStyle(words_per_cue=1)
    words = [_word("one", 9.0, 1.0), _word("two", None, None), _word("three", 0.0, 0.1)]

    rendered = made(_answer(words), style)

    vtt = webvtt.from_string(rendered.files["vtt"].read().decode(), strict=True).captions
    assert [(c.start_in_seconds, c.end_in_seconds, c.text) for c in vtt] == [
        (9.0, 9.0, "one"),  # an end before the start is the start
        (9.0, 9.0, "two"),  # no start: the previous word's end
        (9.0, 9.0, "three"),  # starts before the previous word: starts with it
    ]
    assert rendered.repairs == formats.Repairs(words_retimed=3)


def test_words_without_usable_text_are_skipped_and_counted() -> None:
    words = [_word(["a"]), {"start": 1.0}, "word", _word(" \n\x00 "), _word("kept", punctuated_word={"x": 1})]

    rendered = made(_answer(words))

    assert rendered.files["txt"].read() == b"kept\n"
    assert rendered.summary.words == 1
    assert rendered.repairs.words_skipped == 3  # "word", not an object, is not even read as one


@pytest.mark.parametrize("text", ["a-->b", "a--->b", "x\n\n1\n00:00:00,000 --> 00:00:01,000\ny"])
def test_a_word_cannot_start_a_cue_of_its_own(text: str) -> None:
    rendered = made(_answer([_word(text)]))

    subs = pysrt.from_string(rendered.files["srt"].read().decode(), error_handling=pysrt.ERROR_RAISE)
    assert len(subs) == 1
    assert "-->" not in subs[0].text


def test_a_crafted_request_id_or_metadata_of_other_types_stays_out_of_the_note() -> None:
    metadata = {"request_id": {"a": 1}, "created": 5, "duration": True, "channels": "2", "model_info": [1]}

    rendered = made(_answer([_word("hi")], metadata=metadata))

    assert rendered.summary.request_id is None
    assert (rendered.summary.created, rendered.summary.duration_s, rendered.summary.channels) == (
        None,
        None,
        1,
    )
    vtt = rendered.files["vtt"].read().decode()
    assert "Request Id" not in vtt
    assert len(webvtt.from_string(vtt, strict=True).captions) == 1


def test_integers_past_64_bits_are_read_not_refused() -> None:
    answer = _answer([_word("big", speaker=10**30)], metadata={"request_id": "r", "channels": 10**20})

    rendered = made(answer)

    assert rendered.files["txt"].read() == b"Speaker 1000000000000000000000000000000: big\n"
    assert rendered.summary.channels == 1  # the results' own count: the metadata's is no channel count
    assert (
        len(pysrt.from_string(rendered.files["srt"].read().decode(), error_handling=pysrt.ERROR_RAISE)) == 1
    )


def test_json_that_is_not_json_is_still_refused() -> None:
    with pytest.raises(formats.TranscriptFormatError):
        formats.render(io.BytesIO(b'{"metadata": {'), formats.DERIVED_FORMATS)
