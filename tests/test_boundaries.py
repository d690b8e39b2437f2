"""Who may import what, read from the source with ``ast``.

* The product (``functions/``, ``layers/``) imports nothing of the development tools: not the local
  world (``localworld``), not ``tools``, ``bench``, ``scripts`` or ``tests``, not even for types.
* Product tests (``tests/``) reach the local world only through its pytest plugin's fixtures: no
  runtime import of ``localworld`` (nor ``tools``, nor ``bench``, which imports the world); type
  names under ``if TYPE_CHECKING:`` only.
* Tests do import ``scripts`` (the operator commands and the template translator are under test),
  so ``scripts/`` must not import the world either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = frozenset({"localworld", "tools", "bench"})
PRODUCT_MUST_NOT = TOOLS | {"scripts", "tests"}
IMPORT_CALLS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class Import:
    module: str
    line: int
    type_only: bool  # inside an ``if TYPE_CHECKING:`` block


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _strings(node: ast.expr) -> Iterator[str]:
    for item in ast.walk(node):
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            yield item.value


def _imported_by(node: ast.AST) -> list[str]:
    """The modules one node imports by itself (not counting its children)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    if isinstance(node, ast.Call) and node.args:
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        if name in IMPORT_CALLS and isinstance(node.args[0], ast.Constant):
            return [str(node.args[0].value)]
    if isinstance(node, ast.Assign) and any(
        isinstance(target, ast.Name) and target.id == "pytest_plugins" for target in node.targets
    ):
        return list(_strings(node.value))
    return []


def imports(source: str, filename: str = "<source>") -> list[Import]:
    """Every module the source imports: statements, ``importlib.import_module("...")``,
    ``__import__("...")`` and ``pytest_plugins``, each marked when only type checkers see it."""
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        found.extend(Import(name, getattr(node, "lineno", 0), type_only) for name in _imported_by(node))
        for nested in ast.iter_child_nodes(node):
            visit(nested, type_only)

    visit(ast.parse(source, filename), False)
    return found


def violations(source: str, area: str, filename: str = "<source>") -> list[str]:
    """What ``source`` in ``area`` ("product", "tests" or "scripts") imports that it must not."""
    found = []
    for imported in imports(source, filename):
        top = imported.module.split(".")[0]
        if area == "product":
            bad = top in PRODUCT_MUST_NOT
        elif area == "tests":
            bad = top in TOOLS and not (imported.type_only and top == "localworld")
        else:
            bad = top in TOOLS
        if bad:
            kind = "type-only import" if imported.type_only else "import"
            found.append(f"{filename}:{imported.line}: {kind} of {imported.module}")
    return found


def sources(*folders: str) -> list[Path]:
    paths = [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]
    return [path for path in paths if ".aws-sam" not in path.parts]


@pytest.mark.parametrize(
    ("area", "folders"),
    [("product", ("functions", "layers")), ("tests", ("tests",)), ("scripts", ("scripts",))],
)
def test_nothing_imports_across_the_boundary(area: str, folders: tuple[str, ...]) -> None:
    files = sources(*folders)
    assert files, f"no Python files under {folders}"
    found = [
        problem
        for path in files
        for problem in violations(path.read_text(encoding="utf-8"), area, str(path.relative_to(ROOT)))
    ]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("source", "area"),
    [
        ("import localworld", "tests"),
        ("from localworld.world import LocalWorld", "tests"),
        ("import localworld.deepgram as dg", "tests"),
        ("def f():\n    from localworld import chaos", "tests"),
        ("from bench.common import Row", "tests"),
        ("from tools.localworld import world", "tests"),
        ("import importlib\nimportlib.import_module('localworld.world')", "tests"),
        ("pytest_plugins = ['localworld.pytest_plugin']", "tests"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n    import localworld",
            "tests",
        ),
        ("if TYPE_CHECKING:\n    from bench.common import Row", "tests"),
        ("if TYPE_CHECKING:\n    from localworld.world import LocalWorld", "product"),
        ("from scripts.operate import main", "product"),
        ("import tests.hygiene", "product"),
        ("from localworld.world import LocalWorld", "scripts"),
    ],
)
def test_a_planted_import_is_caught(source: str, area: str) -> None:
    assert violations(source, area) != []


@pytest.mark.parametrize(
    ("source", "area"),
    [
        (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from localworld.world import LocalWorld",
            "tests",
        ),
        ("import typing\nif typing.TYPE_CHECKING:\n    import localworld.delivery", "tests"),
        ("from transcriber.services.storage import output_key", "tests"),
        ("from scripts.operate import main", "tests"),
        ("from tests import hygiene\nfrom .helpers import x", "tests"),
        ("import boto3\nfrom transcriber import events", "product"),
    ],
)
def test_allowed_imports_pass(source: str, area: str) -> None:
    assert violations(source, area) == []
