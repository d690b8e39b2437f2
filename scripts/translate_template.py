"""Print the plain CloudFormation the SAM transform makes of template.yaml, offline, or the stack
it resolves to for one set of parameter values (``--resolve``).

cfn-lint 1.x validates SAM templates against SAM schemas and no longer runs the SAM transform, so
faults that only show in the generated CloudFormation (permissions, notification configurations,
the execution role) need the translated template too. Both come from ``samstack``, the one reading
of the template the local world and the template tests use as well.

Usage (from the repository root; ``tools`` must be importable, as the Makefile arranges)::

    PYTHONPATH=tools python scripts/translate_template.py [TEMPLATE] [-o OUT.json] [--region us-east-1]
        [--parameter-overrides Key=Value ...] [--resolve]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from samstack import DEFAULT_REGION, TemplateError, TranslationError, resolve_stack, translate

REPO_ROOT: Final = Path(__file__).resolve().parent.parent


def _parse_overrides(values: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected Key=Value, got {item!r}")
        overrides[key] = value
    return overrides


def _resolved(template: Path, region: str, overrides: dict[str, str]) -> dict[str, Any]:
    stack = resolve_stack(template, overrides, region=region)
    return {
        "Parameters": stack.parameters,
        "Conditions": stack.conditions,
        "Resources": {
            logical_id: {"Type": r.type, "PhysicalName": r.physical_name, "Properties": r.properties}
            for logical_id, r in stack.resources.items()
        },
        "Outputs": stack.outputs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: print (or write) the result as JSON; exit 1 when the template is rejected."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "template", nargs="?", type=Path, default=REPO_ROOT / "template.yaml", help="SAM template path"
    )
    parser.add_argument("-o", "--output", type=Path, help="write JSON here instead of stdout")
    parser.add_argument("--region", default=DEFAULT_REGION, help="region used for ARNs and partition")
    parser.add_argument(
        "--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE", help="template parameter values"
    )
    parser.add_argument(
        "--resolve", action="store_true", help="print the resolved stack (values, not intrinsics)"
    )
    args = parser.parse_args(argv)
    try:
        overrides = _parse_overrides(args.parameter_overrides)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        if args.resolve:
            result = _resolved(args.template, args.region, overrides)
        else:
            result = translate(args.template, region=args.region, parameter_overrides=overrides)
    except TranslationError as exc:
        for cause in exc.causes:
            print(f"error: {cause}", file=sys.stderr)
        return 1
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
