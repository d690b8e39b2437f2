"""The test commands: `make check` is the fast loop, the local world loads only where it is used, and
the complexity gate counts as radon does, with 10 the most it lets through."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
WORLD_DIRS = ("tests/integration", "tests/samlocal", "tools/localworld/tests", "bench/tests")


def recipe(target: str) -> str:
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", MAKEFILE, flags=re.MULTILINE)
    assert match, target
    return match.group(0)


def test_the_local_world_plugin_is_loaded_only_by_the_directories_that_use_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert "localworld" not in pyproject["tool"]["pytest"]["ini_options"]["addopts"]
    for directory in WORLD_DIRS:
        conftest = (ROOT / directory / "conftest.py").read_text(encoding="utf-8")
        assert 'import_plugin("localworld.pytest_plugin")' in conftest, directory


def test_make_check_is_lint_types_and_the_fast_tiers_under_the_coverage_gate() -> None:
    check = recipe("check")

    assert check.startswith("check: lint typecheck ")
    assert "-n auto" in check
    assert "tests/unit tests/core" in check
    assert "$(COVERAGE)" in check
    assert "--cov " in MAKEFILE
    assert "$(MAKE) --no-print-directory complexity" in recipe("lint")


def function_with_branches(count: int) -> str:
    """A function whose cyclomatic complexity, as radon counts it, is ``count``."""
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(count - 1))
    return f"def f(x):\n{body}    return -1\n"


@pytest.mark.parametrize(("complexity", "passes"), [(10, True), (11, False)])
def test_the_complexity_gate_lets_ten_through_and_stops_eleven(
    tmp_path: Path, complexity: int, passes: bool
) -> None:
    (tmp_path / "module.py").write_text(function_with_branches(complexity), encoding="utf-8")
    gate = re.search(r"xenon (.*) \$\(GATED_SOURCES\)", recipe("complexity"))
    assert gate

    run = subprocess.run(
        [sys.executable, "-m", "xenon", *gate.group(1).split(), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (run.returncode == 0) is passes, run.stderr
