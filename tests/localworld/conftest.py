"""Shared fixtures for the local-world tests: one moto server per session, reset per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from localworld.aws import LocalAws, MotoServer
from localworld.template import Stack, load_stack

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"
REAL_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with MotoServer() as server:
        yield server.endpoint_url


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
