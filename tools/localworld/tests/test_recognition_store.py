"""The emulator's recognitions on disk: one per recording and machine, shared by every world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from localworld.deepgram.asr import Recognition, RecognitionStore, Recognizer, Word
from localworld.deepgram.audio import DecodedAudio

WORDS = [("hello", 0.1, 0.4, 0.9, 120.5), ("world", 0.5, 0.9, 0.8, 0.0)]


class CountingRecognizer(Recognizer):
    """The real cache and store around a stand-in for pocketsphinx that counts its runs."""

    runs = 0

    def _run(self, pcm: bytes) -> list[tuple[str, float, float, float, float]]:
        self.runs += 1
        return WORDS


def audio() -> DecodedAudio:
    samples = np.zeros(1600, dtype=np.int16)
    return DecodedAudio(mono=samples.tobytes(), per_channel=(samples.tobytes(),), duration=0.1, channels=1)


def test_a_second_world_reads_the_recognition_the_first_made(tmp_path: Path) -> None:
    first = CountingRecognizer(store=RecognitionStore(tmp_path))
    second = CountingRecognizer(store=RecognitionStore(tmp_path))

    made = first.recognise("sha:0:", audio, multichannel=False)
    read = second.recognise("sha:0:", lambda: pytest.fail("decoded again"), multichannel=False)

    assert read == made == Recognition(0.1, 1, (tuple(Word(*w) for w in WORDS),))
    assert (first.runs, first.misses, second.runs, second.misses, second.hits) == (1, 1, 0, 0, 1)


def test_another_key_is_recognised(tmp_path: Path) -> None:
    CountingRecognizer(store=RecognitionStore(tmp_path)).recognise("sha:0:", audio, multichannel=False)
    other = CountingRecognizer(store=RecognitionStore(tmp_path))

    other.recognise("sha:1:", audio, multichannel=False)  # multichannel asked: another recognition

    assert other.runs == 1


def test_a_damaged_file_is_recognised_again_and_replaced(tmp_path: Path) -> None:
    CountingRecognizer(store=RecognitionStore(tmp_path)).recognise("sha:0:", audio, multichannel=False)
    (stored,) = tmp_path.glob("*.json")
    stored.write_text('{"duration": 0.1, "chann', encoding="utf-8")
    again = CountingRecognizer(store=RecognitionStore(tmp_path))

    again.recognise("sha:0:", audio, multichannel=False)

    assert again.runs == 1
    assert RecognitionStore(tmp_path).get("sha:0:") is not None


def test_a_store_that_cannot_be_written_only_costs_a_recognition(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file-not-a-folder"
    blocked.write_text("", encoding="utf-8")
    recognizer = CountingRecognizer(store=RecognitionStore(blocked))

    recognizer.recognise("sha:0:", audio, multichannel=False)

    assert recognizer.runs == 1
