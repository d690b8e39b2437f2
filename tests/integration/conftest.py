"""Fixtures for the local world's Deepgram emulator.

One emulator serves the whole session (its recogniser process and transcript cache are
the expensive parts); ``deepgram_emulator`` hands it to each test with default settings,
no faults and an empty request log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localworld.deepgram import DeepgramEmulator

DEEPGRAM_TEST_KEY = "dg-test-key-0123456789abcdef"
SAMPLE_WAV = Path(__file__).resolve().parents[2] / "localworld" / "samples" / "sample.wav"


@pytest.fixture(scope="session")
def deepgram_emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepgramEmulator]:
    """The running emulator, shared by the session; prefer ``deepgram_emulator``."""
    emulator = DeepgramEmulator(
        api_keys={DEEPGRAM_TEST_KEY},
        state_dir=tmp_path_factory.mktemp("deepgram-emulator"),
        callback_retry_delay=0.2,
    )
    with emulator:
        yield emulator


@pytest.fixture
def deepgram_emulator(deepgram_emulator_session: DeepgramEmulator) -> Iterator[DeepgramEmulator]:
    """The shared emulator with default settings, no faults and an empty log."""
    emulator = deepgram_emulator_session
    _restore_defaults(emulator)
    yield emulator
    _restore_defaults(emulator)


@pytest.fixture(scope="session")
def deepgram_api_key() -> str:
    """The key the emulator accepts by default."""
    return DEEPGRAM_TEST_KEY


@pytest.fixture(scope="session")
def sample_wav() -> bytes:
    """Committed sample: flite saying "the quick brown fox jumps over the lazy dog"."""
    return SAMPLE_WAV.read_bytes()


def _restore_defaults(emulator: DeepgramEmulator) -> None:
    emulator.api_keys = {DEEPGRAM_TEST_KEY}
    emulator.latency = 0.0
    emulator.max_concurrency = 100
    emulator.retry_after = None
    emulator.allowed_models = None
    emulator.faults.clear()
    emulator.reset()
