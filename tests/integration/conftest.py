"""Tests over real HTTP against the local world: its pytest plugin is loaded here, not globally.

Untraced by coverage (``tests/untraced.py``): the layer lines these tests reach in-process,
tests/unit and tests/core reach too; the handlers they run are subprocesses, never counted."""

from __future__ import annotations

import pytest

from tests.untraced import no_cover  # noqa: F401  (a fixture: pytest finds it by its name here)


def pytest_configure(config: pytest.Config) -> None:
    # The local world's fixtures for this directory's tests; pytest registers a plugin once.
    config.pluginmanager.import_plugin("localworld.pytest_plugin")
