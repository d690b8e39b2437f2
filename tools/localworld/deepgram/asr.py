"""Speech recognition with pocketsphinx, off the request threads.

pocketsphinx holds the GIL while it decodes (a 3 s clip blocks every other thread for
about a second), so recognition runs in a small pool of worker processes: auth and 429
checks of other requests stay fast, and both cores get used. Each worker loads its
Decoder once, lazily. Results are cached by the sha256 of the uploaded bytes, and
identical requests that arrive together share one recognition. A ``RecognitionStore`` keeps them
on disk too, so every local world on a machine (each test worker, each ``make invoke``, the demos)
recognises a recording once, not once each.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from localworld.deepgram import audio as _audio
from localworld.deepgram.audio import TARGET_RATE, DecodedAudio

_AUDIO_MODULE = _audio.__file__

# pocketsphinx decodes one utterance at a time; long audio is cut into pieces of at most
# this many seconds, at the quietest moment near the end of each piece.
_MAX_PIECE_S = 20.0
_SEARCH_CUT_S = 5.0
_SILENCE_RMS = 50.0  # int16 units
_NOT_WORDS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+|\+.*\+)$")
_ALT_PRON = re.compile(r"\(\d+\)$")
# Pitch (for diarization): human voices lie between these; a frame is voiced when it is loud
# enough and its autocorrelation at the pitch's lag is this close to its energy.
_LOWEST_PITCH_HZ, _HIGHEST_PITCH_HZ = 60, 400
_VOICED_RMS = 300.0  # int16 units
_VOICED_CORRELATION = 0.4


class Word(NamedTuple):
    word: str
    start: float
    end: float
    confidence: float
    pitch: float = (
        0.0  # the voice's median pitch (Hz) over the word; 0: unvoiced (localworld.deepgram.diarize)
    )
    speaker: int = 0  # set by diarization, when asked for


@dataclass(frozen=True)
class Recognition:
    """What the recogniser made of one upload."""

    duration: float
    channels: int  # channels of the source audio
    results: tuple[tuple[Word, ...], ...]  # one entry per result channel


# --- worker process side --------------------------------------------------------------

_decoder: Any = None


def _recognise(pcm: bytes) -> list[tuple[str, float, float, float, float]]:
    """Runs in a worker process: words with times (s), confidences and pitch of 16 kHz int16 PCM."""
    global _decoder  # noqa: PLW0603 - one Decoder per worker process, loaded on first use
    if _decoder is None:
        from pocketsphinx import Decoder  # noqa: PLC0415 - only worker processes need it

        _decoder = Decoder(samprate=TARGET_RATE)
    words: list[tuple[str, float, float, float, float]] = []
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    for offset, piece in _pieces(pcm):
        if _is_silent(piece):
            continue
        _decoder.start_utt()
        _decoder.process_raw(piece, full_utt=True)
        _decoder.end_utt()
        frate = float(_decoder.config["frate"])
        for seg in _decoder.seg():
            if _NOT_WORDS.match(seg.word):
                continue
            start, end = offset + seg.start_frame / frate, offset + (seg.end_frame + 1) / frate
            words.append(
                (
                    _ALT_PRON.sub("", seg.word),
                    round(start, 3),
                    round(end, 3),
                    round(min(1.0, max(0.0, float(seg.prob))), 4),
                    pitch(samples[int(start * TARGET_RATE) : int(end * TARGET_RATE)]),
                )
            )
    return words


def pitch(samples: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    """The median fundamental frequency (Hz) of the voiced 40 ms frames of ``samples``, by
    autocorrelation (the textbook estimator); 0.0 when no frame is voiced."""
    size, hop = TARGET_RATE * 40 // 1000, TARGET_RATE // 100
    shortest, longest = TARGET_RATE // _HIGHEST_PITCH_HZ, TARGET_RATE // _LOWEST_PITCH_HZ
    found: list[float] = []
    for begin in range(0, len(samples) - size + 1, hop):
        frame = samples[begin : begin + size] - samples[begin : begin + size].mean()
        if np.sqrt((frame**2).mean()) < _VOICED_RMS:
            continue
        spectrum = np.fft.rfft(frame, 2 * size)
        correlation = np.fft.irfft(spectrum * np.conj(spectrum))[:size]
        lag = shortest + int(np.argmax(correlation[shortest:longest]))
        if correlation[lag] > _VOICED_CORRELATION * correlation[0]:
            found.append(TARGET_RATE / lag)
    return round(float(np.median(found)), 1) if found else 0.0


def _is_silent(pcm: bytes) -> bool:
    """No 10 ms frame louder than about -56 dBFS.

    pocketsphinx hears words ("in") in digital silence once it has decoded speech;
    Deepgram answers silence with an empty transcript.
    """
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frame = TARGET_RATE // 100
    if len(samples) < frame:
        return True
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    return float(np.sqrt((frames**2).mean(axis=1)).max()) < _SILENCE_RMS


def _pieces(pcm: bytes) -> list[tuple[float, bytes]]:
    """Cut long audio at quiet moments into pieces the decoder handles well."""
    samples = np.frombuffer(pcm, dtype="<i2")
    limit = int(_MAX_PIECE_S * TARGET_RATE)
    window = int(_SEARCH_CUT_S * TARGET_RATE)
    frame = TARGET_RATE // 100
    pieces: list[tuple[float, bytes]] = []
    start = 0
    while len(samples) - start > limit:
        search = samples[start + limit - window : start + limit].astype(np.float64)
        energy = (search[: len(search) // frame * frame].reshape(-1, frame) ** 2).sum(axis=1)
        cut = start + limit - window + int(np.argmin(energy)) * frame
        pieces.append((start / TARGET_RATE, samples[start:cut].tobytes()))
        start = cut
    pieces.append((start / TARGET_RATE, samples[start:].tobytes()))
    return pieces


# --- emulator process side ------------------------------------------------------------


class RecognitionStore:
    """Recognitions on disk, shared by every process on the machine. A file is named by the
    request's key and a fingerprint of what makes a recognition (this module, the decoder's,
    pocketsphinx's and numpy's versions), so changing any of them recognises again. Written whole
    or not at all (a rename); a file that can't be read or written is a miss, never an error."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        made_by = b"".join(Path(module).read_bytes() for module in (__file__, _AUDIO_MODULE))
        versions = f"{version('pocketsphinx')} {version('numpy')}".encode()
        self._fingerprint = hashlib.sha256(made_by + versions).hexdigest()[:16]

    def get(self, key: str) -> Recognition | None:
        try:
            stored = json.loads(self._path(key).read_text(encoding="utf-8"))
            results = tuple(tuple(Word(*word) for word in channel) for channel in stored["results"])
            return Recognition(duration=stored["duration"], channels=stored["channels"], results=results)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, recognition: Recognition) -> None:
        document = {
            "duration": recognition.duration,
            "channels": recognition.channels,
            "results": [[list(word) for word in channel] for channel in recognition.results],
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".tmp", delete=False) as out:
                json.dump(document, out)
            os.replace(out.name, self._path(key))
        except OSError:
            pass  # the next world recognises it again

    def _path(self, key: str) -> Path:
        name = hashlib.sha256(f"{self._fingerprint}:{key}".encode()).hexdigest()
        return self.directory / f"{name}.json"


class Recognizer:
    """Cached, de-duplicated recognition backed by a lazily started process pool (and, given a
    ``store``, by the recognitions other processes made)."""

    def __init__(
        self, workers: int = 1, cache_size: int = 512, store: RecognitionStore | None = None
    ) -> None:
        self._workers = workers
        self._cache_size = cache_size
        self._store = store
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._cache: OrderedDict[str, Recognition] = OrderedDict()
        self._inflight: dict[str, Future[Recognition]] = {}
        self.hits = 0
        self.misses = 0

    def recognise(self, key: str, load: Callable[[], DecodedAudio], multichannel: bool) -> Recognition:
        """The recognition cached under ``key``, computing it from ``load()`` if needed.

        ``load`` runs only on a miss (so repeated uploads skip decoding too); its
        ``UnsupportedAudio`` reaches every caller waiting on the same key.
        """
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
            pending = self._inflight.get(key)
            if pending is None:
                mine: Future[Recognition] = Future()
                self._inflight[key] = mine
            else:
                self.hits += 1  # shares a recognition already under way
        if pending is not None:
            return pending.result()
        try:
            recognition = self._stored_or_made(key, load, multichannel)
        except BaseException as exc:
            with self._lock:
                self._inflight.pop(key, None)
            mine.set_exception(exc)
            raise
        with self._lock:
            # Cache and retire the in-flight entry together, so no caller misses both.
            self._cache[key] = recognition
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            self._inflight.pop(key, None)
        mine.set_result(recognition)
        return recognition

    def _stored_or_made(self, key: str, load: Callable[[], DecodedAudio], multichannel: bool) -> Recognition:
        stored = self._store.get(key) if self._store is not None else None
        with self._lock:
            if stored is not None:
                self.hits += 1
            else:
                self.misses += 1
        if stored is not None:
            return stored
        audio = load()
        channels = audio.per_channel if multichannel else (audio.mono,)
        results = tuple(tuple(Word(*w) for w in self._run(pcm)) for pcm in channels)
        recognition = Recognition(duration=audio.duration, channels=audio.channels, results=results)
        if self._store is not None:
            self._store.put(key, recognition)
        return recognition

    def warm_up(self) -> None:
        """Start the workers and load their models now rather than on the first request."""
        pool = self._get_pool()
        silence = bytes(TARGET_RATE // 5)
        for done in [pool.submit(_recognise, silence) for _ in range(self._workers)]:
            done.result()

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, pcm: bytes) -> list[tuple[str, float, float, float, float]]:
        try:
            return self._get_pool().submit(_recognise, pcm).result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start a fresh pool and retry once.
            with self._lock:
                self._pool = None
            return self._get_pool().submit(_recognise, pcm).result()

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: forking a process that runs server threads is unsafe.
                self._pool = ProcessPoolExecutor(
                    max_workers=self._workers, mp_context=multiprocessing.get_context("spawn")
                )
            return self._pool
