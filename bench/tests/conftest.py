"""The benchmarks' tests use the local world: its pytest plugin is loaded here, not globally."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The local world's fixtures for this directory's tests; pytest registers a plugin once.
    config.pluginmanager.import_plugin("localworld.pytest_plugin")


@pytest.fixture(autouse=True)
def no_cover() -> None:
    """pytest-cov leaves untraced a test that uses a fixture of this name (its own, overridden here
    so the tests run without pytest-cov too). The simulations call the layer's capacity core
    millions of times and the tracer doubled their CPU; every line and branch they reach,
    tests/unit and tests/core reach too (measured), so the coverage gate loses nothing."""
