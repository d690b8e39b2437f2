"""The emulator's diarization: two voices told apart by pitch alone, over real HTTPS, on the committed
two-voice recording (flite's slt and rms voices, ``samples/make_two_voices.py``); one voice stays
one speaker; nothing but the audio is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from localworld.deepgram import DeepgramEmulator
from localworld.deepgram.asr import Word, pitch
from localworld.deepgram.audio import TARGET_RATE
from localworld.deepgram.diarize import diarize

TWO_VOICES = Path(__file__).resolve().parents[1] / "samples" / "two_voices.wav"


def listen(emu: DeepgramEmulator, body: bytes, query: str) -> dict[str, object]:
    response = requests.post(
        f"{emu.url}/v1/listen?{query}",
        data=body,
        headers={"Content-Type": "audio/wav", "Authorization": f"Token {next(iter(emu.api_keys))}"},
        verify=str(emu.ca_bundle),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


@pytest.mark.integration
@pytest.mark.parametrize("query", ["diarize=true&paragraphs=true&utterances=true", "diarize_model=latest"])
def test_the_two_voice_recording_has_two_speakers_in_turns(
    deepgram_emulator: DeepgramEmulator, query: str
) -> None:
    answer = listen(deepgram_emulator, TWO_VOICES.read_bytes(), f"model=nova-3&smart_format=true&{query}")

    results = answer["results"]
    assert isinstance(results, dict)
    words = results["channels"][0]["alternatives"][0]["words"]
    turns: list[tuple[int, int]] = []  # (speaker, words)
    for word in words:
        if turns and turns[-1][0] == word["speaker"]:
            turns[-1] = (word["speaker"], turns[-1][1] + 1)
        else:
            turns.append((word["speaker"], 1))
    # Alice (slt), Bob (rms), Alice: three turns, numbered in order of appearance.
    assert [speaker for speaker, _ in turns] == [0, 1, 0]
    assert all(count >= 5 for _, count in turns)
    if "paragraphs" in query:
        paragraphs = results["channels"][0]["alternatives"][0]["paragraphs"]["paragraphs"]
        assert [p["speaker"] for p in paragraphs] == [0, 1, 0]
        assert [u["speaker"] for u in results["utterances"]] == [0, 1, 0]


@pytest.mark.integration
def test_one_voice_is_one_speaker(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    answer = listen(deepgram_emulator, sample_wav, "model=nova-3&diarize=true")

    results = answer["results"]
    assert isinstance(results, dict)
    assert {w["speaker"] for w in results["channels"][0]["alternatives"][0]["words"]} == {0}


def tone(hz: float, seconds: float = 0.3) -> np.ndarray[Any, np.dtype[np.float64]]:
    t = np.arange(int(TARGET_RATE * seconds)) / TARGET_RATE
    # A buzz with harmonics, as a voice is; its fundamental is what pitch() must find.
    buzz = np.zeros_like(t)
    for k in range(1, 5):
        buzz += np.sin(2 * np.pi * hz * k * t) / k
    return 3000 * buzz


@pytest.mark.parametrize("hz", [90.0, 120.0, 180.0, 250.0])
def test_pitch_finds_the_fundamental_and_silence_has_none(hz: float) -> None:
    assert pitch(tone(hz)) == pytest.approx(hz, rel=0.05)
    assert pitch(np.zeros(TARGET_RATE // 2)) == 0.0


def words(*turns: tuple[float, ...], gap: float = 0.8) -> tuple[Word, ...]:
    out: list[Word] = []
    clock = 0.0
    for turn in turns:
        for hz in turn:
            out.append(Word("w", round(clock, 3), round(clock + 0.2, 3), 0.9, hz))
            clock += 0.25
        clock += gap
    return tuple(out)


def test_turns_are_clustered_by_pitch_and_numbered_in_order_of_appearance() -> None:
    heard = words((105, 98, 110), (180, 175), (0, 0), (100, 0, 96), (170, 190))

    assert [w.speaker for w in diarize(heard)] == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1]  # unvoiced: as before


@pytest.mark.parametrize(
    "turns",
    [
        ((170, 160), (185, 150), (175,)),  # one voice's intonation
        ((0, 0), (0,)),  # nothing voiced
        ((120, 110),),  # one turn
    ],
)
def test_one_voice_or_none_is_one_speaker(turns: tuple[tuple[float, ...], ...]) -> None:
    assert {w.speaker for w in diarize(words(*turns))} == {0}


def test_without_a_pause_a_turn_is_one_speaker() -> None:
    assert {w.speaker for w in diarize(words((100, 100, 180, 180), gap=0.1))} == {0}
