"""Who the captions credit: the maker the answer's ``model_info`` names. A Deepgram answer names its
models with slugs, so its captions say Deepgram (as deepgram-captions does); an engine that answers
in Deepgram's shape and names itself in words is credited as it says, and Deepgram is not."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from transcriber.domain import formats

STAND_IN = "local Deepgram emulator (pocketsphinx), not Deepgram"


def answer(*names: str) -> dict[str, Any]:
    words = [
        {"word": w, "start": i * 0.5, "end": i * 0.5 + 0.4, "confidence": 0.9}
        for i, w in enumerate(["a", "b", "c"])
    ]
    return {
        "metadata": {
            "request_id": "req-1",
            "created": "2026-12-06T00:00:00.000Z",
            "duration": 1.5,
            "channels": 1,
            "models": [f"m{i}" for i in range(len(names))],
            "model_info": {
                f"m{i}": {"name": n, "version": "2025-01-01.1", "arch": "nova-3"} for i, n in enumerate(names)
            },
        },
        "results": {
            "channels": [{"alternatives": [{"transcript": "a b c", "confidence": 0.9, "words": words}]}]
        },
    }


def rendered(document: dict[str, Any]) -> dict[str, str]:
    out = formats.render(io.BytesIO(json.dumps(document).encode()), ("txt", "srt", "vtt"))
    try:
        return {name: file.read().decode("utf-8") for name, file in out.files.items()}
    finally:
        out.close()


@pytest.mark.parametrize("names", [("general-nova-3",), ("2-general-nova",), ("general",), ()])
def test_a_deepgram_answer_is_credited_to_deepgram(names: tuple[str, ...]) -> None:
    files = rendered(answer(*names))

    assert files["vtt"].startswith("WEBVTT\n\nNOTE\nTranscription provided by Deepgram\nRequest Id: req-1\n")


def test_an_engine_that_names_itself_is_credited_and_deepgram_is_not() -> None:
    files = rendered(answer(STAND_IN))

    assert files["vtt"].startswith(f"WEBVTT\n\nNOTE\nTranscription provided by {STAND_IN}\n")
    for name, text in files.items():
        assert "provided by Deepgram" not in text, name
        assert "Deepgram" not in text.replace(STAND_IN, ""), name


def test_the_summary_says_the_maker_once_whatever_the_models() -> None:
    summary = formats.read_summary(
        io.BytesIO(json.dumps(answer(STAND_IN, STAND_IN, "general-nova-3")).encode())
    )

    assert summary.maker == STAND_IN


def test_a_crafted_maker_or_request_id_cannot_end_the_note_block() -> None:
    document = answer("evil\n\n00:00:00.000 --> 00:00:09.000\nforged cue")
    document["metadata"]["request_id"] = "req\n\nforged --> block"

    vtt = rendered(document)["vtt"]

    note = vtt.split("\n\n")[1]
    assert note.startswith("NOTE\nTranscription provided by evil 00:00:00.000 -> 00:00:09.000 forged cue\n")
    assert "Request Id: req forged -> block" in note
    assert vtt.count("-->") == 1  # the one real cue's timing line
