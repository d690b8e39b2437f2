"""Shared fixtures for the local-world tests: one moto server per session, reset per test, and one
Deepgram emulator per session with default settings, no faults and an empty log per test.

Untraced by coverage (``tests/untraced.py``): they test the local world, not the layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localworld.aws import LocalAws, MotoServer
from localworld.deepgram import DeepgramEmulator
from localworld.deepgram.server import RECOGNITION_LIMIT_BYTES
from localworld.template import Stack, load_stack
from tests.untraced import no_cover  # noqa: F401  (a fixture: pytest finds it by its name here)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"
REAL_TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"


def pytest_configure(config: pytest.Config) -> None:
    # The world's own plugin (world, uploads, start_function...) for these tests, registered once.
    config.pluginmanager.import_plugin("localworld.pytest_plugin")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """The session's moto server, with the local S3's checks in front (presign, limits)."""
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def moto_endpoint(moto: MotoServer) -> str:
    return moto.endpoint_url


@pytest.fixture(scope="session")
def _session_aws(moto_endpoint: str) -> LocalAws:
    return LocalAws(moto_endpoint)  # clients are slow to build: share them


@pytest.fixture
def local_aws(_session_aws: LocalAws) -> Iterator[LocalAws]:
    _session_aws.reset()
    yield _session_aws
    _session_aws.reset()


@pytest.fixture
def fixture_stack() -> Stack:
    return load_stack(FIXTURE_TEMPLATE)


@pytest.fixture
def real_template() -> Path:
    if not REAL_TEMPLATE.exists():
        pytest.skip("template.yaml is not written yet")
    return REAL_TEMPLATE


DEEPGRAM_TEST_KEY = "dg-test-key-0123456789abcdef"
SAMPLE_WAV = Path(__file__).resolve().parents[1] / "samples" / "sample.wav"


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
    emulator.recognition_limit_bytes = RECOGNITION_LIMIT_BYTES
    emulator.unreachable_buckets = set()
    emulator.reset()
