"""``make demo AUDIO=folder/``: every recording of the folder transcribed on the local world, the
outputs kept on disk (not in the local world, which is gone when the demo ends) and the text
printed. Run as a user runs it, in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tools" / "localworld" / "samples" / "sample.wav"


def test_a_folder_demo_keeps_every_output_and_prints_the_text(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in ("first.wav", "second.WAV"):
        (recordings / name).write_bytes(SAMPLE.read_bytes())
    (recordings / "notes.txt").write_text("not a recording: not uploaded")
    out = tmp_path / "kept"

    run = subprocess.run(
        [sys.executable, "-m", "localworld.demo", "--audio", str(recordings), "--output-dir", str(out)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    expected = {
        f"{name}.{ext}" for name in ("first.wav", "second.WAV") for ext in ("json", "txt", "srt", "vtt")
    }
    assert {p.name for p in out.iterdir()} == expected
    assert run.stdout.count("Transcript: The quick brown fox") == 2, run.stdout
    assert "notes.txt" not in run.stdout
    for name in ("first.wav", "second.WAV"):
        assert "fox" in (out / f"{name}.txt").read_text()
        assert (out / f"{name}.srt").read_text().startswith("1\n00:00:")
        assert (out / f"{name}.vtt").read_text().startswith("WEBVTT\n\nNOTE\nTranscription provided by local")
        assert f"kept as          {out / f'{name}.srt'}" in run.stdout
