"""Readable captions and named speakers end to end: the real handler in a local Lambda container,
moto's S3 and EventBridge, and the Deepgram emulator over HTTPS diarizing the committed two-voice
recording (told apart by pitch; nothing tells it who speaks). An upload names its speakers and sets
its captions in its metadata; the captions parse with pysrt (strict) and webvtt-py (strict), and none
of our options reaches Deepgram."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pysrt  # type: ignore[import-untyped]
import webvtt

from transcriber.domain.speakers import OUTPUT_OPTIONS

if TYPE_CHECKING:
    from localworld.pytest_plugin import CompletionEvents, FunctionFactory, Uploads
    from localworld.world import LocalWorld

TWO_VOICES = Path(__file__).resolve().parents[2] / "tools" / "localworld" / "samples" / "two_voices.wav"
KEY = "calls/help desk.wav"


def get(world: LocalWorld, key: str) -> tuple[dict[str, Any], str]:
    obj = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)
    return dict(obj), obj["Body"].read().decode("utf-8")


def format_key(world: LocalWorld, source_key: str, extension: str) -> str:
    return world.transcript_key(source_key).removesuffix(".json") + f".{extension}"


def check_captions(
    srt: str, vtt: str, *, line_length: int, max_lines: int, max_s: float, first: int
) -> list[Any]:
    """Both files parse strictly, agree, and keep the limits; the SRT's items."""
    subs = pysrt.from_string(srt, error_handling=pysrt.ERROR_RAISE)
    captions = webvtt.from_string(vtt, strict=True).captions
    assert len(subs) == len(captions) > 1
    assert [s.index for s in subs] == list(range(first, first + len(subs)))
    for sub, cue in zip(subs, captions, strict=True):
        assert str(sub.start).replace(",", ".") == cue.start
        lines = sub.text.split("\n")
        assert len(lines) <= max_lines
        assert max(len(line) for line in lines) <= line_length, lines
        assert max(len(html.unescape(line)) for line in cue.text.split("\n")) <= line_length
        assert (sub.end.ordinal - sub.start.ordinal) / 1000 <= max_s
        assert lines[0].startswith(f"{cue.voice}: ")  # the SRT prefix names the VTT voice
    return list(subs)


def test_named_speakers_and_caption_settings_from_metadata(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put(
        KEY,
        TWO_VOICES.read_bytes(),
        Metadata={
            "dg-diarize": "true",
            "dg-speakers": "0=Alice,1=Bob",
            "dg-caption-line-length": "32",
            "dg-caption-max-seconds": "4",
            "dg-caption-start-index": "0",
            "dg-caption-words-per-cue": "20",
        },
    )

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert outcome["status"] == "transcribed", outcome
    [request] = world.emulator.requests
    assert ("diarize", "true") in request.query
    assert not {name for name, _ in request.query} & OUTPUT_OPTIONS  # ours never reach Deepgram
    assert not OUTPUT_OPTIONS & set(outcome["options"])
    json_obj, body = get(world, world.transcript_key(KEY))
    assert unquote(json_obj["Metadata"]["speakers"]) == "0=Alice,1=Bob"
    assert "speakers" not in json_obj["Metadata"]["deepgram-options"]
    document = json.loads(body)
    words = document["results"]["channels"][0]["alternatives"][0]["words"]
    assert [w["speaker"] for w in words][:3] == [0, 0, 0]
    assert {w["speaker"] for w in words} == {0, 1}  # Deepgram's JSON: numbers, unchanged

    _, text = get(world, format_key(world, KEY, "txt"))
    assert [line.split(":")[0] for line in text.splitlines()] == ["Alice", "Bob", "Alice"]
    _, srt = get(world, format_key(world, KEY, "srt"))
    _, vtt = get(world, format_key(world, KEY, "vtt"))
    subs = check_captions(srt, vtt, line_length=32, max_lines=2, max_s=4, first=0)
    assert {s.text.split(":")[0] for s in subs} == {"Alice", "Bob"}
    assert "<v Alice>" in vtt
    assert "<v Bob>" in vtt

    [created] = completion_events.wait(1)
    assert created["detail"]["speakers"] == {"0": "Alice", "1": "Bob"}


def test_the_stacks_defaults_give_42_character_two_line_cues_of_at_most_7_seconds(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory
) -> None:
    event = uploads.put(KEY, TWO_VOICES.read_bytes(), Metadata={"dg-speakers": "0=Alice,1=Bob"})

    result = start_function(DEEPGRAM_OPTIONS="model=nova-3&smart_format=true&diarize_model=latest").invoke(
        event
    )

    assert result.error is None, result.logs
    [request] = world.emulator.requests
    assert ("diarize_model", "latest") in request.query  # the deployment's diarizer reaches Deepgram
    _, srt = get(world, format_key(world, KEY, "srt"))
    _, vtt = get(world, format_key(world, KEY, "vtt"))
    subs = check_captions(srt, vtt, line_length=42, max_lines=2, max_s=7, first=1)
    assert subs[0].text.startswith("Alice: ")


def test_bad_speaker_names_are_a_failure_record_and_reach_no_deepgram(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory
) -> None:
    event = uploads.put(KEY, TWO_VOICES.read_bytes(), Metadata={"dg-speakers": "Carol and Dave"})

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert (outcome["status"], outcome["reason"]) == ("failed", "option-refused")
    assert world.emulator.requests == []
    _, body = get(world, world.failure_key(KEY))
    record = json.loads(body)
    assert record["option"] == "speakers"
    assert "Carol" not in record["message"]  # names are personal data: not echoed
    assert "<speaker number>=<name>" in record["message"]
