"""Turn uploaded bytes into 16 kHz mono int16 PCM for pocketsphinx.

WAV is decoded with the stdlib ``wave`` module and numpy (``audioop`` is gone in Python
3.13). Other containers go through ``sox`` when it is on PATH; without it they are
"unsupported", which is also what Deepgram says about data it cannot read.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

TARGET_RATE = 16000
# Magic numbers of containers sox can read; the value is sox's type name.
_SOX_TYPES: tuple[tuple[bytes, int, str], ...] = (
    (b"fLaC", 0, "flac"),
    (b"OggS", 0, "ogg"),
    (b"ID3", 0, "mp3"),
    (b"FORM", 0, "aiff"),
    (b".snd", 0, "au"),
)


class UnsupportedAudio(Exception):
    """The bytes are not audio the emulator can decode."""


@dataclass(frozen=True)
class DecodedAudio:
    """Audio as the recogniser wants it, plus what the metadata reports."""

    duration: float  # seconds, from the source
    channels: int  # channel count of the source
    mono: bytes  # 16 kHz int16 little-endian, all channels mixed
    per_channel: tuple[bytes, ...]  # 16 kHz int16 little-endian, one per source channel


def decode(
    data: bytes, *, encoding: str | None = None, sample_rate: int | None = None, channels: int = 1
) -> DecodedAudio:
    """Decode ``data``; raise ``UnsupportedAudio`` for anything else.

    The container is detected from the bytes, as Deepgram does; ``encoding``,
    ``sample_rate`` and ``channels`` only describe headerless audio (``linear16`` here).
    """
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            return _decode_wav(data)
        except UnsupportedAudio:
            # e.g. float or A-law WAV, which ``wave`` refuses but sox reads.
            if shutil.which("sox") is None:
                raise
            return _decode_with_sox(data, "wav")
    sox_type = _sniff(data)
    if sox_type is None and encoding == "linear16" and sample_rate:
        return _decode_linear16(data, sample_rate, channels)
    if sox_type is None or shutil.which("sox") is None:
        raise UnsupportedAudio("not a recognised audio container")
    return _decode_with_sox(data, sox_type)


def _sniff(data: bytes) -> str | None:
    for magic, offset, sox_type in _SOX_TYPES:
        if data[offset : offset + len(magic)] == magic:
            return sox_type
    # A bare MPEG audio frame: 11 sync bits set.
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        return "mp3"
    return None


def _decode_wav(data: bytes) -> DecodedAudio:
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    # The stdlib's chunk reader raises RuntimeError on a chunk size that runs past the end.
    except (wave.Error, EOFError, ValueError, RuntimeError) as exc:
        raise UnsupportedAudio(f"unreadable WAV: {exc}") from exc
    if channels < 1 or rate < 1 or width not in (1, 2, 3, 4):
        raise UnsupportedAudio("WAV header is not plausible PCM")
    # A truncated data chunk leaves a partial frame at the end: drop it.
    frame_bytes = channels * width
    raw = raw[: len(raw) - len(raw) % frame_bytes]
    if not raw:
        raise UnsupportedAudio("WAV holds no audio frames")
    samples = _pcm_to_float(raw, width).reshape(-1, channels)
    return _finish(samples, rate)


def _decode_linear16(data: bytes, rate: int, channels: int) -> DecodedAudio:
    raw = data[: len(data) - len(data) % (2 * channels)]
    if not raw:
        raise UnsupportedAudio("no audio frames")
    return _finish(_pcm_to_float(raw, 2).reshape(-1, channels), rate)


def _pcm_to_float(raw: bytes, width: int) -> npt.NDArray[np.float64]:
    """Interleaved PCM to floats in [-1, 1)."""
    if width == 1:
        # 8-bit WAV is unsigned.
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float64) / float(1 << 23)
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)


def _finish(samples: npt.NDArray[np.float64], rate: int) -> DecodedAudio:
    """From (frames, channels) floats at ``rate`` to the 16 kHz int16 forms."""
    frames, channels = samples.shape
    duration = frames / rate
    per_channel = tuple(_to_int16(_resample(samples[:, c], rate)) for c in range(channels))
    mono = per_channel[0] if channels == 1 else _to_int16(_resample(samples.mean(axis=1), rate))
    return DecodedAudio(duration=duration, channels=channels, mono=mono, per_channel=per_channel)


def _resample(signal: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    if rate == TARGET_RATE:
        return signal
    if rate > TARGET_RATE:
        # Low-pass before decimating, or energy above 8 kHz folds back as noise. The edge
        # sits close to 8 kHz: sibilants live up there ("jumps" became "jumped" at 7.2 kHz).
        signal = _lowpass(signal, cutoff=0.48 * TARGET_RATE / rate)
    count = max(1, round(len(signal) * TARGET_RATE / rate))
    positions = np.arange(count) * (rate / TARGET_RATE)
    result: npt.NDArray[np.float64] = np.interp(positions, np.arange(len(signal)), signal)
    return result


def _lowpass(signal: npt.NDArray[np.float64], cutoff: float, taps: int = 127) -> npt.NDArray[np.float64]:
    """Windowed-sinc FIR; ``cutoff`` is a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    kernel /= kernel.sum()
    filtered: npt.NDArray[np.float64] = np.convolve(signal, kernel, mode="same")
    return filtered


def _to_int16(signal: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(signal * 32768.0), -32768, 32767).astype("<i2").tobytes()


def _decode_with_sox(data: bytes, sox_type: str) -> DecodedAudio:
    """Let sox write a 16-bit WAV (to a file: WAV headers need a seekable output)."""
    with tempfile.TemporaryDirectory(prefix="dg-emu-sox-") as tmp:
        src = Path(tmp) / f"in.{sox_type}"
        dst = Path(tmp) / "out.wav"
        src.write_bytes(data)
        try:
            subprocess.run(
                ["sox", "-q", "-t", sox_type, str(src), "-b", "16", "-e", "signed-integer", str(dst)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise UnsupportedAudio(f"sox could not decode {sox_type}") from exc
        return _decode_wav(dst.read_bytes())
