"""Write the layer's cut of botocore's data: what its clients load on a cold start, made smaller.

On a cold start botocore parses its whole ``endpoints.json`` (1.2 MB, every AWS service) and each
client's ``service-2`` model (S3's is 1.4 MB, mostly documentation strings, gzipped) before the
first call: tens of milliseconds, for five services and no ``help()``. The layer ships, in
``transcriber/services/botocore_data`` (searched just before botocore's own data):

* ``endpoints.json``: every partition, only the layer's services;
* ``<service>/<version>/service-2.json``: each of the layer's models without its documentation
  (botocore reads that only to build docstrings), uncompressed.

Nothing else differs: ``tests/unit/test_clients.py`` keeps the files equal to this cut of the
pinned botocore's own, so after a botocore upgrade run ``python scripts/botocore_data.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import botocore
from botocore.loaders import Loader

from transcriber.services.clients import BOTOCORE_DATA, LAYER_SERVICES

BOTOCORE_OWN = Path(botocore.__file__).parent / "data"
DOCUMENTATION = frozenset({"documentation", "documentationUrl"})
# Dicts whose keys are names (of operations, shapes, members), never a definition's fields.
NAMED = frozenset({"operations", "shapes", "members"})
KEPT_WHOLE = "clientContextParams"


def endpoints_cut(endpoints: dict[str, Any], services: frozenset[str] = LAYER_SERVICES) -> dict[str, Any]:
    """``endpoints`` with each partition's services narrowed to ``services``; nothing else changes."""
    partitions = [
        {**partition, "services": {k: v for k, v in partition["services"].items() if k in services}}
        for partition in endpoints["partitions"]
    ]
    return {**endpoints, "partitions": partitions}


def without_documentation(node: Any, names: bool = False) -> Any:
    """``node`` less every documentation field (a member or shape *named* so would stay), but for
    the client context parameters': botocore requires theirs (``ServiceModel.client_context_parameters``)."""
    if isinstance(node, dict):
        return {
            key: value if key == KEPT_WHOLE else without_documentation(value, key in NAMED and not names)
            for key, value in node.items()
            if names or key not in DOCUMENTATION
        }
    if isinstance(node, list):
        return [without_documentation(item) for item in node]
    return node


def render(document: Any) -> str:
    """Compact, in botocore's own key order (a structure's members serialise in that order)."""
    return json.dumps(document, separators=(",", ":")) + "\n"


def model_path(service: str, version: str) -> str:
    return f"{service}/{version}/service-2"


def pinned_models() -> dict[str, Any]:
    """Each layer service's latest ``service-2`` model as the pinned botocore ships it."""
    loader = Loader(include_default_search_paths=False, extra_search_paths=[str(BOTOCORE_OWN)])
    models = {}
    for service in sorted(LAYER_SERVICES):
        version = loader.determine_latest_version(service, "service-2")
        models[model_path(service, version)] = loader.load_data(model_path(service, version))
    return models


def expected_files() -> dict[str, str]:
    """Each file of the cut, by path under ``BOTOCORE_DATA``, with its content."""
    endpoints = json.loads((BOTOCORE_OWN / "endpoints.json").read_text(encoding="utf-8"))
    files = {"endpoints.json": render(endpoints_cut(endpoints))}
    for path, model in pinned_models().items():
        files[f"{path}.json"] = render(without_documentation(model))
    return files


def main() -> None:
    shutil.rmtree(BOTOCORE_DATA, ignore_errors=True)
    for relative, content in expected_files().items():
        target = BOTOCORE_DATA / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        print(f"wrote {target} ({target.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
