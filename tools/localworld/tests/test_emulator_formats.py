"""The emulator reads what Deepgram reads: the sample in every common container, over HTTPS.

Each file is made here, with PyAV, from the committed sample (flite saying "the quick brown
fox jumps over the lazy dog"); nothing but the WAV is committed.
"""

from __future__ import annotations

import io
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
import requests

from localworld.deepgram import DeepgramEmulator
from localworld.deepgram.audio import UnsupportedAudio, decode

pytestmark = pytest.mark.integration

SPOKEN = "the quick brown fox jumps over the lazy dog"
SAMPLE_SECONDS = 2.965
CORRUPT = "Bad Request: failed to process audio: corrupt or unsupported data"


@dataclass(frozen=True)
class Media:
    """How to make one file: container, codec, rate and channels."""

    container: str  # FFmpeg muxer
    codec: str
    rate: int
    channels: int = 1
    bit_rate: int | None = None
    # AAC decoders keep the encoder's priming frame (1024 samples): a few tens of ms longer.
    duration_tolerance: float = 0.01


FORMATS: dict[str, Media] = {
    "mp3": Media("mp3", "libmp3lame", 44100, bit_rate=128_000),
    "m4a": Media("ipod", "aac", 44100, duration_tolerance=0.07),
    "mp4": Media("mp4", "aac", 48000, duration_tolerance=0.07),
    "mov": Media("mov", "aac", 48000, duration_tolerance=0.07),
    "flac": Media("flac", "flac", 16000),
    "ogg-opus": Media("ogg", "libopus", 48000),
    "webm-opus": Media("webm", "libopus", 48000),
    "wav-float32": Media("wav", "pcm_f32le", 22050),
}


def sample_pcm(sample_wav: bytes) -> npt.NDArray[np.int16]:
    with wave.open(io.BytesIO(sample_wav)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def encode(sample_wav: bytes, media: Media) -> bytes:
    """The sample in ``media``'s container; with two channels: speech left, silence right."""
    pcm = sample_pcm(sample_wav)
    layout = "mono" if media.channels == 1 else "stereo"
    interleaved = pcm if media.channels == 1 else np.stack([pcm, np.zeros_like(pcm)], axis=1).reshape(-1)
    source = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16", layout=layout)
    source.sample_rate = 16000
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=media.container) as output:
        stream = output.add_stream(media.codec, rate=media.rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        if media.bit_rate is not None:
            stream.bit_rate = media.bit_rate
        context = stream.codec_context
        resampler = av.AudioResampler(
            format=context.format, layout=layout, rate=media.rate, frame_size=context.frame_size or None
        )
        for frame in [*resampler.resample(source), *resampler.resample(None)]:
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def listen(emu: DeepgramEmulator, body: bytes, query: str = "model=nova-3") -> requests.Response:
    return requests.post(
        f"{emu.url}/v1/listen?{query}",
        data=body,
        headers={
            "Authorization": f"Token {next(iter(emu.api_keys))}",
            # What a generic uploader sends: the emulator, like Deepgram, reads the bytes.
            "Content-Type": "application/octet-stream",
        },
        verify=str(emu.ca_bundle),
        timeout=60,
    )


def transcripts(body: dict[str, Any]) -> list[str]:
    return [str(channel["alternatives"][0]["transcript"]) for channel in body["results"]["channels"]]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_transcribes_the_sample(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, name: str
) -> None:
    media = FORMATS[name]
    body = encode(sample_wav, media)

    response = listen(deepgram_emulator, body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert transcripts(answer) == [SPOKEN]
    assert answer["metadata"]["duration"] == pytest.approx(SAMPLE_SECONDS, abs=media.duration_tolerance)
    assert answer["metadata"]["channels"] == 1


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("m4a", Media("ipod", "aac", 44100, channels=2, duration_tolerance=0.07)),
        ("webm-opus", Media("webm", "libopus", 48000, channels=2)),
    ],
)
def test_stereo_reports_two_channels_and_transcribes_each(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, name: str, media: Media
) -> None:
    body = encode(sample_wav, media)

    mixed = listen(deepgram_emulator, body).json()
    separate = listen(deepgram_emulator, body, query="model=nova-3&multichannel=true").json()

    assert mixed["metadata"]["channels"] == separate["metadata"]["channels"] == 2
    assert mixed["metadata"]["duration"] == pytest.approx(SAMPLE_SECONDS, abs=media.duration_tolerance)
    assert transcripts(mixed) == [SPOKEN]  # both channels mixed: one result
    assert transcripts(separate) == [SPOKEN, ""]  # speech left, silence right


def test_lossless_flac_decodes_to_the_wav_samples(sample_wav: bytes) -> None:
    flac = decode(encode(sample_wav, FORMATS["flac"]))
    wav = decode(sample_wav)

    assert flac.mono == wav.mono
    assert flac.channels == 1
    assert flac.duration == pytest.approx(SAMPLE_SECONDS)


def test_resampling_keeps_the_signal(sample_wav: bytes) -> None:
    decoded = decode(encode(sample_wav, FORMATS["wav-float32"]))  # 22.05 kHz float, back to 16 kHz

    original = sample_pcm(sample_wav).astype(np.float64)
    back = np.frombuffer(decoded.mono, dtype="<i2").astype(np.float64)
    n = min(len(original), len(back))
    assert abs(len(back) - len(original)) <= 2
    assert np.corrcoef(original[:n], back[:n])[0, 1] > 0.99


# --- what is not audio, or not whole, is refused --------------------------------------


def _video_only_mp4() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        stream = output.add_stream("mpeg4", rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def _refused(name: str, sample_wav: bytes) -> bytes:
    m4a = encode(sample_wav, FORMATS["m4a"])
    bodies: dict[str, Callable[[], bytes]] = {
        "video-only-mp4": _video_only_mp4,
        # The muxer writes the index (moov) last: half a file has no index.
        "m4a-first-half": lambda: m4a[: len(m4a) // 2],
        "png": lambda: b"\x89PNG\r\n\x1a\n" + bytes(64),
        # A playlist naming other media: FFmpeg would fetch it; Deepgram reads no playlists.
        "hls-playlist": lambda: b"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\nhttp://127.0.0.1:9/a.wav\n",
        "mp3-header-only": lambda: encode(sample_wav, FORMATS["mp3"])[:64],
        "json-as-audio": lambda: b'{"url": "http://127.0.0.1:9/a.wav"}',
    }
    return bodies[name]()


@pytest.mark.parametrize(
    "name",
    ["video-only-mp4", "m4a-first-half", "png", "hls-playlist", "mp3-header-only", "json-as-audio"],
)
def test_what_is_not_audio_is_corrupt_or_unsupported(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, name: str
) -> None:
    response = listen(deepgram_emulator, _refused(name, sample_wav))

    assert response.status_code == 400
    assert response.json()["err_msg"] == CORRUPT


def _with_chunk(sample_wav: bytes, chunk: bytes, riff_extra: int = 0) -> bytes:
    """The sample with ``chunk`` between ``fmt `` and ``data`` (RIFF size adjusted)."""
    fmt_end = 12 + 8 + 16
    body = sample_wav[8:fmt_end] + chunk + sample_wav[fmt_end:]
    return b"RIFF" + struct.pack("<I", len(body) + riff_extra) + body


def test_wav_chunk_checks_stay_strict(sample_wav: bytes) -> None:
    listed = _with_chunk(sample_wav, b"LIST" + struct.pack("<I", 10) + b"INFOabcdef")
    assert decode(listed).mono == decode(sample_wav).mono  # a well-formed extra chunk is fine

    past_riff = _with_chunk(sample_wav, b"LIST" + struct.pack("<I", 10**6) + b"INFOabcdef")
    empty_data = sample_wav[:40] + struct.pack("<I", 0) + sample_wav[44:]
    data_first = b"RIFF" + sample_wav[4:12] + sample_wav[36:] + sample_wav[12:36]
    for broken in (past_riff, empty_data, data_first, sample_wav[:30]):
        with pytest.raises(UnsupportedAudio):
            decode(broken)


def test_a_truncated_wav_decodes_as_far_as_it_goes(sample_wav: bytes) -> None:
    cut = decode(sample_wav[: len(sample_wav) // 2 + 1])  # odd length: half a sample at the end

    assert cut.duration == pytest.approx(SAMPLE_SECONDS / 2, abs=0.01)


def test_headerless_linear16_needs_its_rate(sample_wav: bytes) -> None:
    raw = sample_wav[44:]

    with pytest.raises(UnsupportedAudio):
        decode(raw)
    audio = decode(raw, encoding="linear16", sample_rate=16000)
    assert audio.mono == decode(sample_wav).mono
