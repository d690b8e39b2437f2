"""sam local tests reach the local world: its pytest plugin is loaded here, not globally."""

from __future__ import annotations

import pytest

from localworld.pytest_plugin import load_into


def pytest_configure(config: pytest.Config) -> None:
    load_into(config)  # the local world's fixtures, for the tests of this directory
