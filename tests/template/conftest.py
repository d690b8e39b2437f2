"""Untraced by coverage (``tests/untraced.py``): the layer lines these tests reach, tests/unit and
tests/core reach too, and the tracer cost this tier 44 % more CPU (51 s of user time without it,
73 s with it, `sam build` aside)."""

from tests.untraced import no_cover  # noqa: F401  (a fixture: pytest finds it by its name here)
