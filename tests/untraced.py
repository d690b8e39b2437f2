"""A tier's conftest imports ``no_cover`` from here to run its tests untraced by coverage.

pytest-cov pauses its tracer for a test that uses a fixture of this name (its own fixture,
overridden here, autouse, so a whole folder is untraced and the tests run without pytest-cov too).
Only for tiers whose every reached line and branch of the layer tests/unit and tests/core reach
too (compared in coverage's JSON report): there the tracer costs CPU and gives the gate nothing.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_cover() -> None:
    """This test runs untraced by coverage (pytest-cov)."""
