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
    check, fast = recipe("check"), recipe("fast-tests")

    assert re.search(r"\$\(MAKE\) .*-j3 .* lint typecheck fast-tests$", check, flags=re.MULTILINE)
    assert "-n auto" in fast
    assert "tests/unit tests/core" in fast
    assert "$(COVERAGE)" in fast
    assert "$(LINE_COVERAGE)" in fast
    assert "--cov " in MAKEFILE
    assert "$(COMPLEXITY_GATE)" in recipe("lint")
    assert "$(COMPLEXITY_GATE)" in recipe("complexity")


def test_make_check_counts_lines_with_sys_monitoring_and_make_test_counts_branches_too() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    line_coverage = re.search(r"^LINE_COVERAGE = (.*)$", MAKEFILE, flags=re.MULTILINE)
    assert line_coverage

    assert pyproject["tool"]["coverage"]["run"]["branch"] == "${COVERAGE_BRANCH-true}"
    assert line_coverage.group(1).split() == ["COVERAGE_CORE=sysmon", "COVERAGE_BRANCH=false"]
    assert "$(LINE_COVERAGE)" not in recipe("test")


@pytest.mark.parametrize(("environment", "branch"), [({}, True), ({"COVERAGE_BRANCH": "false"}, False)])
def test_coverage_reads_branch_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], branch: bool
) -> None:
    import coverage

    monkeypatch.delenv("COVERAGE_BRANCH", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    measured = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))

    assert measured.get_option("run:branch") is branch


def function_with_branches(count: int) -> str:
    """A function whose cyclomatic complexity, as radon counts it, is ``count``."""
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(count - 1))
    return f"def f(x):\n{body}    return -1\n"


@pytest.mark.parametrize(("complexity", "passes"), [(10, True), (11, False)])
def test_the_complexity_gate_lets_ten_through_and_stops_eleven(
    tmp_path: Path, complexity: int, passes: bool
) -> None:
    (tmp_path / "module.py").write_text(function_with_branches(complexity), encoding="utf-8")
    gate = re.search(r"^COMPLEXITY_GATE = .*xenon (.*) \$\(GATED_SOURCES\)$", MAKEFILE, flags=re.MULTILINE)
    assert gate

    run = subprocess.run(
        [sys.executable, "-m", "xenon", *gate.group(1).split(), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (run.returncode == 0) is passes, run.stderr
