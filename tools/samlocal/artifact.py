"""What a built layer holds, by distribution, next to what its requirements file pins."""

from __future__ import annotations

import re
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised name (``typing_extensions`` and ``Typing-Extensions`` are one project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirements: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file (``-r`` includes followed), by canonical name."""
    pins: dict[str, str] = {}
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            pins.update(pinned((requirements.parent / line.split(maxsplit=1)[1]).resolve()))
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{requirements}: not an exact pin: {raw!r}")
        pins[canonical(match.group(1))] = match.group(3)
    return pins


def distributions(site_dir: Path) -> dict[str, str]:
    """Installed distributions in ``site_dir``, from their ``*.dist-info`` folder names."""
    found: dict[str, str] = {}
    for info in site_dir.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        found[canonical(name)] = version
    return found
