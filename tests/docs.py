"""The project's documentation as tests read it: the README and every page of the docs site.

What the README used to hold now lives in docs/ (MkDocs); a test that checks a promise, a recipe
or a name the documentation gives reads ``documentation()`` and keeps checking it wherever it moved.
"""

from __future__ import annotations

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
