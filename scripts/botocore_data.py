"""Write the layer's cut of botocore's data: what its clients load on a cold start, made smaller.

On a cold start botocore parses its whole ``endpoints.json`` (1.2 MB, every AWS service), each
client's ``service-2`` model (S3's is 1.4 MB, mostly documentation strings and some hundred
operations the layer never calls, gzipped) and its endpoint rules (S3's 0.9 MB, indented, gzipped)
before the first call: tens of milliseconds, for five services and no ``help()``. The layer ships,
in ``transcriber/services/botocore_data`` (searched just before botocore's own data):

* ``endpoints.json``: every partition, only the layer's services;
* ``<service>/<version>/service-2.json``: each of the layer's models with only the operations it
  calls (``LAYER_OPERATIONS``), the shapes they reach and every error shape, without the
  documentation (botocore reads that only to build docstrings), uncompressed;
* ``<service>/<version>/endpoint-rule-set-1.json``: each endpoint rule set as it is, compact and
  uncompressed.

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

from transcriber.services.clients import BOTOCORE_DATA, LAYER_OPERATIONS, LAYER_SERVICES

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


def shape_names(node: Any) -> set[str]:
    """The shapes ``node`` names directly (``{"shape": name}`` anywhere in it)."""
    if isinstance(node, dict):
        named = {node["shape"]} if isinstance(node.get("shape"), str) else set()
        return named.union(*(shape_names(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(shape_names(item) for item in node))
    return set()


def operations_cut(model: dict[str, Any], operations: frozenset[str]) -> dict[str, Any]:
    """``model`` with only ``operations`` and the shapes they reach, every error shape kept (a
    client's ``exceptions`` stay botocore's own); order and everything else unchanged."""
    kept = {name: op for name, op in model["operations"].items() if name in operations}
    if set(kept) != operations:
        raise ValueError(f"not in the model: {sorted(operations - set(kept))}")
    shapes = model["shapes"]
    reached: set[str] = set()
    to_visit = shape_names(kept) | {name for name, shape in shapes.items() if shape.get("exception")}
    while to_visit:
        name = to_visit.pop()
        reached.add(name)
        to_visit |= shape_names(shapes[name]) - reached
    return {
        **model,
        "operations": kept,
        "shapes": {name: shape for name, shape in shapes.items() if name in reached},
    }


def render(document: Any) -> str:
    """Compact, in botocore's own key order (a structure's members serialise in that order)."""
    return json.dumps(document, separators=(",", ":")) + "\n"


MODEL = "service-2"
RULES = "endpoint-rule-set-1"


def pinned(kind: str) -> dict[str, tuple[str, Any]]:
    """Each layer service's latest ``kind`` document as the pinned botocore ships it, by its path
    (``<service>/<version>/<kind>``), with the service's name."""
    loader = Loader(include_default_search_paths=False, extra_search_paths=[str(BOTOCORE_OWN)])
    documents = {}
    for service in sorted(LAYER_SERVICES):
        path = f"{service}/{loader.determine_latest_version(service, MODEL)}/{kind}"
        documents[path] = (service, loader.load_data(path))
    return documents


def expected_files() -> dict[str, str]:
    """Each file of the cut, by path under ``BOTOCORE_DATA``, with its content."""
    endpoints = json.loads((BOTOCORE_OWN / "endpoints.json").read_text(encoding="utf-8"))
    files = {"endpoints.json": render(endpoints_cut(endpoints))}
    for path, (service, model) in pinned(MODEL).items():
        cut = operations_cut(without_documentation(model), LAYER_OPERATIONS[service])
        files[f"{path}.json"] = render(cut)
    for path, (_, rules) in pinned(RULES).items():
        files[f"{path}.json"] = render(rules)
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
