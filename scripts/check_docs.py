"""The documentation's links, checked in ``make test``: the site builds in strict mode, and every
relative link of the README reaches a file of the repository (and a heading, for an anchor).

MkDocs checks the site's own pages (links, anchors, every page in the nav: see ``validation`` in
mkdocs.yml); it does not read the README, which GitHub shows and which links into docs/, so this
script reads it with the same Markdown parser the rest of the tooling uses (markdown-it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]


def _inline_tokens(text: str) -> list[Token]:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    return [child for token in tokens if token.type == "inline" for child in token.children or []]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """Every anchor a Markdown file's headings give, with GitHub's -1, -2 for repeated headings."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    seen: dict[str, int] = {}
    anchors = set()
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        words = [child.content for child in inline.children or [] if child.type in {"text", "code_inline"}]
        slug = github_slug("".join(words))
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def link_targets(markdown: str) -> list[str]:
    """The targets of every link and image, in order."""
    targets = []
    for token in _inline_tokens(markdown):
        if token.type == "link_open":
            targets.append(str(token.attrs.get("href", "")))
        elif token.type == "image":
            targets.append(str(token.attrs.get("src", "")))
    return targets


def link_problems(document: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of one Markdown file (web links are not fetched)."""
    problems = []
    text = document.read_text(encoding="utf-8")
    for target in link_targets(text):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue
        path = (document.parent / unquote(parts.path)).resolve() if parts.path else document
        where = f"{document.relative_to(root)}: {target}"
        if not path.is_relative_to(root) or not path.exists():
            problems.append(f"{where}: no such file")
        elif parts.fragment and path.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif parts.fragment and parts.fragment not in heading_anchors(path.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading gives that anchor")
    return problems


def site_problems(config: Path) -> list[str]:
    """A strict MkDocs build of the site into a throw-away folder: its warnings, or nothing."""
    with tempfile.TemporaryDirectory() as site:
        built = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", site],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
    if built.returncode == 0:
        return []
    lines = [line for line in (built.stdout + built.stderr).splitlines() if line.strip()]
    warnings = [line for line in lines if line.startswith(("WARNING", "ERROR"))]
    return warnings or lines or [f"mkdocs build --strict exited {built.returncode}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository")
    root = parser.parse_args(argv).root.resolve()
    problems = link_problems(root / "README.md", root) + site_problems(root / "mkdocs.yml")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
