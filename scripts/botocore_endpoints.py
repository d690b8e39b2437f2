"""Write the layer's cut of botocore's ``endpoints.json``: every partition, only the layer's services.

botocore parses its whole ``endpoints.json`` (1.2 MB, every AWS service) when a session makes its
first client: 25-50 ms of a cold start, for the five services the layer calls. The layer ships the
same data cut to those services (``transcriber/services/botocore_data``), found first by its loader.
``tests/unit/test_clients.py`` keeps the file equal to this cut of the pinned botocore's own, so
after a botocore upgrade run ``python scripts/botocore_endpoints.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore

from transcriber.services.clients import ENDPOINTS_FILE, LAYER_SERVICES

BOTOCORE_ENDPOINTS = Path(botocore.__file__).parent / "data" / "endpoints.json"


def cut(endpoints: dict[str, Any], services: frozenset[str] = LAYER_SERVICES) -> dict[str, Any]:
    """``endpoints`` with each partition's services narrowed to ``services``; nothing else changes."""
    partitions = [
        {**partition, "services": {k: v for k, v in partition["services"].items() if k in services}}
        for partition in endpoints["partitions"]
    ]
    return {**endpoints, "partitions": partitions}


def render(endpoints: dict[str, Any]) -> str:
    return json.dumps(cut(endpoints), indent=1, sort_keys=True) + "\n"


def main() -> None:
    pinned = json.loads(BOTOCORE_ENDPOINTS.read_text(encoding="utf-8"))
    ENDPOINTS_FILE.write_text(render(pinned), encoding="utf-8")
    print(f"wrote {ENDPOINTS_FILE} ({ENDPOINTS_FILE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
