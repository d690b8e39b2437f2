"""Make ``two_voices.wav``: a short call between two synthetic voices, for the named-speakers demo.

flite (``apt-get install flite``) speaks each turn: Alice with its ``slt`` voice (a woman's, about
170 Hz), Bob with its ``rms`` voice (a man's, about 100 Hz); the turns are joined with 0.6 s of
silence as 16 kHz mono 16-bit PCM. The result is committed, so tests and the demo never need flite.
Nothing tells the emulator who speaks when: its diarization finds the two voices by their pitch.

    python tools/localworld/samples/make_two_voices.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

RATE = 16000
GAP_S = 0.6
OUT = Path(__file__).with_name("two_voices.wav")
# (flite voice, words): who says what, in order. Speaker numbers follow the order of appearance.
TURNS = (
    ("slt", "Good morning, thanks for calling the help desk. How can I help you today?"),
    ("rms", "Hi. My internet keeps dropping every evening since Tuesday."),
    ("slt", "I am sorry to hear that. Let me look at your account."),
)


def speak(voice: str, text: str, folder: Path) -> bytes:
    out = folder / f"{len(list(folder.iterdir()))}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True)
    with wave.open(str(out)) as source:
        if (source.getframerate(), source.getnchannels(), source.getsampwidth()) != (RATE, 1, 2):
            raise SystemExit(f"flite's {voice} voice did not give 16 kHz mono 16-bit audio")
        frames: bytes = source.readframes(source.getnframes())
        return frames


def main() -> None:
    if shutil.which("flite") is None:
        raise SystemExit("make_two_voices: flite not found (apt-get install flite)")
    gap = b"\0\0" * int(RATE * GAP_S)
    with tempfile.TemporaryDirectory() as folder:
        frames = gap.join(speak(voice, text, Path(folder)) for voice, text in TURNS)
    with wave.open(str(OUT), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(2)
        sink.setframerate(RATE)
        sink.writeframes(gap + frames + gap)
    print(f"wrote {OUT} ({(len(frames) + 2 * len(gap)) / 2 / RATE:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
