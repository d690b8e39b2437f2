"""Turn uploaded bytes into 16 kHz mono int16 PCM for pocketsphinx.

The container is detected from the bytes, as Deepgram does, and decoded with PyAV (FFmpeg
inside its wheel, so no apt package): WAV (PCM, float, A-law, mu-law...), MP3, MP4, M4A and
MOV (AAC, ALAC, MP3...), FLAC, Ogg (Opus, Vorbis, FLAC), WebM/Matroska, ADTS AAC, AIFF, AU,
AMR and CAF. Only those demuxers may run (FFmpeg would otherwise also open images, playlists
that name other files, and so on), and a container without an audio stream, or whose audio
does not decode, is "unsupported", which is also what Deepgram says about data it cannot read.

WAV is held to what the emulator always refused: a chunk other than ``data`` that runs past
the end of the RIFF chunk or the file, a missing ``fmt `` or ``data`` chunk, or ``data``
before ``fmt ``. FFmpeg's own WAV reader is kinder than that, and the emulator must never
be kinder than Deepgram. A ``data`` chunk cut short (a truncated upload) decodes as far as
it goes, as before.

Resampling to 16 kHz is PyAV's resampler (libswresample); it keeps the channels, so each
channel can be recognised on its own (``multichannel=true``) and the mono mix is their mean.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

TARGET_RATE = 16000
# FFmpeg demuxers that may open an upload: the audio containers Deepgram reads.
_DEMUXERS = "wav,w64,mp3,mov,mp4,m4a,3gp,flac,ogg,matroska,webm,aac,aiff,au,amr,caf"
_OPEN_OPTIONS = {
    "format_whitelist": _DEMUXERS,
    # No demuxer may open a second input (a reference to another file or a URL).
    "protocol_whitelist": "none",
}
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE

Planar = npt.NDArray[np.float32]  # (channels, samples)


class UnsupportedAudio(Exception):
    """The bytes are not audio the emulator can decode."""


@dataclass(frozen=True)
class DecodedAudio:
    """Audio as the recogniser wants it, plus what the metadata reports."""

    duration: float  # seconds of audio the stream holds
    channels: int  # channel count of the source stream
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
        check_wav_structure(data)
        return _decode_container(data)
    try:
        return _decode_container(data)
    except UnsupportedAudio:
        if encoding == "linear16" and sample_rate:
            return _decode_linear16(data, sample_rate, channels)
        raise


def check_wav_structure(data: bytes) -> None:
    """Refuse a RIFF/WAVE file whose chunks the emulator has always refused."""
    (riff_size,) = struct.unpack_from("<I", data, 4)
    limit = min(8 + riff_size, len(data))
    position = 12
    fmt: tuple[int, int, int, int] | None = None
    while position + 8 <= limit:
        name = data[position : position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        body = position + 8
        if name == b"data":
            if fmt is None:
                raise UnsupportedAudio("WAV data chunk before its fmt chunk")
            _check_wav_format(*fmt)
            if size == 0:
                raise UnsupportedAudio("WAV data chunk is empty")
            # The data chunk may run past the end: a truncated upload decodes as far as it goes.
            return
        end = body + size + (size & 1)  # chunks are padded to an even length
        if end > limit:
            raise UnsupportedAudio(f"WAV chunk {name!r} runs past the end of the file")
        if name == b"fmt ":
            if size < 16:
                raise UnsupportedAudio("WAV fmt chunk is too short")
            tag, count, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                # The sub-format GUID starts with the real format tag.
                (tag,) = struct.unpack_from("<H", data, body + 24)
            fmt = (tag, count, rate, bits)
        position = end
    raise UnsupportedAudio("WAV has no fmt and data chunks")


def _check_wav_format(tag: int, channels: int, rate: int, bits: int) -> None:
    if channels < 1 or rate < 1:
        raise UnsupportedAudio("WAV header is not plausible audio")
    if tag == _WAVE_FORMAT_PCM and bits not in (8, 16, 24, 32):
        raise UnsupportedAudio(f"WAV PCM with {bits} bits per sample")


def _decode_container(data: bytes) -> DecodedAudio:
    try:
        with av.open(io.BytesIO(data), mode="r", options=_OPEN_OPTIONS) as container:
            if not container.streams.audio:
                raise UnsupportedAudio(f"{container.format.name}: no audio stream")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise UnsupportedAudio(f"{container.format.name}: audio in a codec FFmpeg lacks")
            channels = stream.codec_context.layout.nb_channels
            if channels < 1:
                raise UnsupportedAudio("audio stream without channels")
            planar, duration = _to_16k(container.decode(stream), stream.codec_context.layout)
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        # Not a container FFmpeg may open, or audio that does not decode.
        raise UnsupportedAudio(f"undecodable media: {exc}") from exc
    return _finish(planar, duration, channels)


def _to_16k(frames: Iterable[av.AudioFrame], layout: av.AudioLayout) -> tuple[Planar, float]:
    """Every decoded frame through PyAV's resampler: 16 kHz planar float, same channels.

    Also returns the duration of the decoded audio at its own rate. A stream whose format,
    layout or rate changes midway gets a fresh resampler from there on.
    """
    chunks: list[Planar] = []
    duration = 0.0
    resampler: av.AudioResampler | None = None
    shape: tuple[str, str, int] | None = None

    def drain(resampled: Iterable[av.AudioFrame]) -> None:
        chunks.extend(np.asarray(out.to_ndarray(), dtype=np.float32) for out in resampled)

    for frame in frames:
        if frame.samples == 0:
            continue
        duration += frame.samples / frame.sample_rate
        incoming = (frame.format.name, frame.layout.name, frame.sample_rate)
        if resampler is None or incoming != shape:
            if resampler is not None:
                drain(resampler.resample(None))
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=TARGET_RATE)
            shape = incoming
        frame.pts = None  # the resampler only needs the samples
        drain(resampler.resample(frame))
    if resampler is not None:
        drain(resampler.resample(None))
    if not chunks or duration <= 0:
        raise UnsupportedAudio("no audio samples decoded")
    return np.concatenate(chunks, axis=1), duration


def _decode_linear16(data: bytes, rate: int, channels: int) -> DecodedAudio:
    """Headerless little-endian int16 (``encoding=linear16&sample_rate=N&channels=C``)."""
    raw = data[: len(data) - len(data) % (2 * channels)]
    if not raw:
        raise UnsupportedAudio("no audio frames")
    interleaved = np.frombuffer(raw, dtype="<i2").reshape(1, -1)
    try:
        # FFmpeg's default layout for that many channels ("N channels" names any count).
        layout = av.AudioLayout(f"{channels}c" if channels <= 8 else f"{channels} channels")
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
        frame.sample_rate = rate
        planar, duration = _to_16k([frame], layout)
    except (av.FFmpegError, ValueError) as exc:
        raise UnsupportedAudio(f"linear16 audio does not resample: {exc}") from exc
    return _finish(planar, duration, channels)


def _finish(planar: Planar, duration: float, channels: int) -> DecodedAudio:
    per_channel = tuple(_to_int16(planar[c]) for c in range(planar.shape[0]))
    mono = per_channel[0] if planar.shape[0] == 1 else _to_int16(planar.mean(axis=0))
    return DecodedAudio(duration=duration, channels=channels, mono=mono, per_channel=per_channel)


def _to_int16(signal: npt.NDArray[np.float32]) -> bytes:
    scaled = np.round(signal.astype(np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()
