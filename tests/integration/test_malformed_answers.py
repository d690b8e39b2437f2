"""A valid-JSON answer of a shape Deepgram never sends, through the real handler: the emulator
transcribes the sample, then answers what a crafted rewrite makes of its answer (the
``crafted_answer`` fault). The JSON transcript is written as it came; every derived format that is
made parses with independent parsers (pysrt in strict mode, webvtt-py), and the function ends
without an error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pysrt  # type: ignore[import-untyped]
import pytest
import webvtt

if TYPE_CHECKING:
    from localworld.pytest_plugin import CompletionEvents, FunctionFactory, Uploads
    from localworld.world import LocalWorld

Answer = dict[str, Any]


def _alternative(answer: Answer) -> dict[str, Any]:
    alternative: dict[str, Any] = answer["results"]["channels"][0]["alternatives"][0]
    return alternative


def _words(answer: Answer) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = _alternative(answer)["words"]
    return words


def start_null(answer: Answer) -> Answer:
    _words(answer)[0]["start"] = None
    return answer


def sentences_not_a_list(answer: Answer) -> Answer:
    _alternative(answer)["paragraphs"] = {"transcript": "x", "paragraphs": [{"sentences": 7, "speaker": 0}]}
    return answer


def paragraphs_not_a_list(answer: Answer) -> Answer:
    _alternative(answer)["paragraphs"] = {"transcript": "x", "paragraphs": {"sentences": []}}
    return answer


def start_after_end(answer: Answer) -> Answer:
    words = _words(answer)
    words[0]["start"], words[0]["end"] = 9.0, 1.0
    words[-1]["start"], words[-1]["end"] = 0.0, 0.1  # and out of order
    return answer


def breaks_inside_words(answer: Answer) -> Answer:
    words = _words(answer)
    words[0]["punctuated_word"] = "one\n\ntwo"
    words[1]["punctuated_word"] = "a --> b"
    words[2]["punctuated_word"] = "\r\n3\r\n\r\n00:00:00,000 --> 00:00:01,000\r\n"
    return answer


def crafted_request_id(answer: Answer) -> Answer:
    answer["metadata"]["request_id"] = "x\n\n-->\n1\n00:00:00,000 --> 00:00:01,000\nforged"
    return answer


def odd_word_fields(answer: Answer) -> Answer:
    words = _words(answer)
    words[0]["confidence"] = "very"
    del words[1]["start"], words[1]["end"]
    words[2] = {"start": 1.0}  # no text at all
    words[3]["speaker"] = "0"
    words[4]["word"], words[4]["punctuated_word"] = ["a"], {"b": 1}
    words.append("not a word")  # type: ignore[arg-type]
    return answer


def bad_utterances(answer: Answer) -> Answer:
    answer["results"]["utterances"] = [{"start": "0", "end": None, "words": 3, "speaker": []}, 5]
    return answer


def huge_integers(answer: Answer) -> Answer:
    # Valid JSON (RFC 8259 sets no bound); a C parser's 64-bit integers overflow on it.
    _words(answer)[0]["speaker"] = 10**30
    answer["metadata"]["channels_seen"] = -(10**40)
    return answer


REWRITES: list[Callable[[Answer], Answer]] = [
    start_null,
    sentences_not_a_list,
    paragraphs_not_a_list,
    start_after_end,
    breaks_inside_words,
    crafted_request_id,
    odd_word_fields,
    bad_utterances,
    huge_integers,
]


def parse_captions(srt: str | None, vtt: str | None) -> tuple[int, int]:
    """How many cues each independent parser reads; raises on a caption file it refuses."""
    srt_cues = pysrt.from_string(srt, error_handling=pysrt.ERROR_RAISE) if srt is not None else []
    vtt_cues = webvtt.from_string(vtt, strict=True).captions if vtt is not None else []
    for cue in srt_cues:
        assert cue.start <= cue.end, cue
    for caption in vtt_cues:
        assert caption.start_in_seconds <= caption.end_in_seconds, caption
    starts = [caption.start_in_seconds for caption in vtt_cues]
    assert starts == sorted(starts)  # WebVTT: cues in order of their start
    return len(srt_cues), len(vtt_cues)


@pytest.mark.parametrize("rewrite", REWRITES, ids=[r.__name__ for r in REWRITES])
def test_a_malformed_answer_still_gives_its_json_and_every_valid_format(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    completion_events: CompletionEvents,
    rewrite: Callable[[Answer], Answer],
) -> None:
    key = f"malformed/{rewrite.__name__}.wav"
    event = uploads.put(key, sample_audio)
    world.emulator.faults.next(1, kind="crafted_answer", rewrite=rewrite)

    result = start_function(DEEPGRAM_DIARIZE="true", DEEPGRAM_PARAGRAPHS="true").invoke(event)

    assert result.error is None, result.logs
    assert result.payload["transcribed"] == 1, result.payload
    assert sum(1 for request in world.emulator.requests if request.status == 200) == 1
    s3 = world.aws.s3()
    transcript = world.transcript_key(key)
    stored = json.loads(s3.get_object(Bucket=world.output_bucket, Key=transcript)["Body"].read())
    assert stored["metadata"]["request_id"]  # the answer as it came, whatever its shape
    base = transcript.removesuffix(".json")
    made = {
        item["Key"].rsplit(".", 1)[1]: s3.get_object(Bucket=world.output_bucket, Key=item["Key"])["Body"]
        .read()
        .decode("utf-8")
        for item in s3.list_objects_v2(Bucket=world.output_bucket, Prefix=base + ".").get("Contents", [])
    }
    assert "txt" in made
    srt_count, vtt_count = parse_captions(made.get("srt"), made.get("vtt"))
    assert srt_count == vtt_count > 0
    [created] = completion_events.wait(1)
    assert set(created["detail"]["outputs"]["keys"]) == {"json", *made}
