"""Untraced by coverage (``tests/untraced.py``): the layer lines these tests reach, tests/unit and
tests/core reach too."""

from tests.untraced import no_cover  # noqa: F401  (a fixture: pytest finds it by its name here)
