"""The project's documentation as tests read it: the README and every page of the docs site.

What the README used to hold now lives in docs/ (MkDocs); a test that checks a promise, a recipe
or a name the documentation gives reads ``documentation()`` and keeps checking it wherever it moved.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """The README first, then every Markdown page of the site, in name order."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def documentation() -> str:
    """The text of the README and every docs page, one after the other."""
    return "\n\n".join(page.read_text(encoding="utf-8") for page in pages())


def make_target_variables() -> dict[str, set[str]]:
    """Each Makefile target and the variables its recipe reads (``$(NAME)`` on its recipe lines)."""
    variables: dict[str, set[str]] = {}
    target = None
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^([a-z][a-z0-9-]*):", line):
            target = match.group(1)
            variables.setdefault(target, set())
        elif line.startswith("\t") and target:
            variables[target] |= set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", line))
    return variables
