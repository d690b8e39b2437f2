"""sam local tests reach the local world: its pytest plugin is loaded here, not globally."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The local world's fixtures for this directory's tests; pytest registers a plugin once.
    config.pluginmanager.import_plugin("localworld.pytest_plugin")
