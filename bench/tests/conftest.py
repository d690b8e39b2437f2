"""The benchmarks' tests use the local world: its pytest plugin is loaded here, not globally.

They run untraced by coverage: the simulations call the layer's capacity core millions of times
and the tracer doubled their CPU, for no line or branch that tests/unit and tests/core miss."""

from __future__ import annotations

import pytest

from tests.untraced import no_cover  # noqa: F401  (a fixture: pytest finds it by its name here)


def pytest_configure(config: pytest.Config) -> None:
    # The local world's fixtures for this directory's tests; pytest registers a plugin once.
    config.pluginmanager.import_plugin("localworld.pytest_plugin")
