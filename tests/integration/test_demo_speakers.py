"""``make demo`` (no arguments): the committed two-voice recording, its speakers named in the upload's
metadata, told apart by the emulator's pitch diarization; the text and the captions name them, and
the captions are 42-character, two-line, at most 7 s cues that pysrt and webvtt-py parse strictly.
Run as a user runs it, in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pysrt  # type: ignore[import-untyped]
import webvtt

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_demo_names_the_two_speakers_in_readable_captions(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "localworld.demo", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "x-amz-meta-dg-speakers: 0=Alice,1=Bob" in run.stdout
    turns = (tmp_path / "two_voices.wav.txt").read_text().splitlines()
    assert [turn.split(": ")[0] for turn in turns] == ["Alice", "Bob", "Alice"]
    assert "      | Alice: Good morning" in run.stdout  # the text and the captions, printed
    subs = pysrt.from_string((tmp_path / "two_voices.wav.srt").read_text(), error_handling=pysrt.ERROR_RAISE)
    lines = [line for sub in subs for line in sub.text.split("\n")]
    assert max(len(line) for line in lines) <= 42
    assert all(len(sub.text.split("\n")) <= 2 for sub in subs)
    assert all(sub.end.ordinal - sub.start.ordinal <= 7000 for sub in subs)
    assert {sub.text.split(": ")[0] for sub in subs} == {"Alice", "Bob"}
    voices = [c.voice for c in webvtt.read(str(tmp_path / "two_voices.wav.vtt")).captions]
    assert voices[0] == "Alice"
    assert set(voices) == {"Alice", "Bob"}
