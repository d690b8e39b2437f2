"""Translate the SAM template into plain CloudFormation JSON, offline.

cfn-lint 1.x validates SAM templates against SAM schemas and no longer runs the SAM
transform, so faults that only show in the generated CloudFormation (permissions,
notification configurations, the execution role) need the translated template too.
This follows what cfn-lint 0.x (``cfnlint/template/transforms/_sam.py``) and
``sam validate`` do: replace local ``CodeUri``/``ContentUri``/``DefinitionUri``
values with a placeholder ``s3://`` URI, then run ``samtranslator`` with a fixed
region and no AWS credentials.

Usage::

    python scripts/translate_template.py [TEMPLATE] [-o OUT.json] [--region us-east-1]
        [--parameter-overrides Key=Value ...]

Importable as ``scripts.translate_template`` (pytest puts the repository root on
``sys.path``)::

    from scripts.translate_template import translate_template
    cfn = translate_template(Path("template.yaml"))
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

__all__ = [
    "DEFAULT_REGION",
    "PLACEHOLDER_S3_URI",
    "TranslationError",
    "load_template",
    "main",
    "translate_template",
]

DEFAULT_REGION: Final = "us-east-1"
PLACEHOLDER_S3_URI: Final = "s3://placeholder-bucket/placeholder-key"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent

# Resource type -> properties that may hold a local path (sam build/package upload them).
_LOCAL_URI_PROPERTIES: Final[Mapping[str, tuple[str, ...]]] = {
    "AWS::Serverless::Function": ("CodeUri",),
    "AWS::Serverless::LayerVersion": ("ContentUri",),
    "AWS::Serverless::Api": ("DefinitionUri",),
    "AWS::Serverless::HttpApi": ("DefinitionUri",),
    "AWS::Serverless::StateMachine": ("DefinitionUri",),
}


class TranslationError(Exception):
    """The SAM translator rejected the template; ``causes`` holds one message per fault."""

    def __init__(self, causes: Sequence[str]) -> None:
        self.causes = list(causes)
        super().__init__("SAM translation failed: " + "; ".join(self.causes))


def _is_local_uri(value: object) -> bool:
    """True for a local path string; S3 URIs, S3 location objects and intrinsics stay as they are."""
    return isinstance(value, str) and not value.startswith("s3://")


def replace_local_uris(template: dict[str, Any], s3_uri: str = PLACEHOLDER_S3_URI) -> dict[str, Any]:
    """Return a copy of ``template`` whose local code/content/definition paths are ``s3_uri``."""
    result = copy.deepcopy(template)
    function_globals = result.get("Globals", {}).get("Function")
    if isinstance(function_globals, dict) and _is_local_uri(function_globals.get("CodeUri")):
        function_globals["CodeUri"] = s3_uri
    resources = result.get("Resources", {})
    if not isinstance(resources, dict):
        return result
    for resource in resources.values():
        if not isinstance(resource, dict):
            continue
        properties = resource.get("Properties")
        if not isinstance(properties, dict):
            continue
        resource_type = resource.get("Type")
        if resource_type == "AWS::Serverless::Function" and properties.get("PackageType") == "Image":
            continue
        for key in _LOCAL_URI_PROPERTIES.get(str(resource_type), ()):
            if _is_local_uri(properties.get(key)):
                properties[key] = s3_uri
    return result


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM template (YAML or JSON, short-form intrinsics allowed) into plain dicts."""
    loaded = yaml_parse(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TranslationError([f"{path}: the template is not a mapping"])
    return loaded


def translate_template(
    template: Path | Mapping[str, Any],
    *,
    region: str = DEFAULT_REGION,
    parameter_overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Translate a SAM template (file path or parsed mapping) to a CloudFormation template dict.

    ``parameter_overrides`` only matter where SAM resolves parameters at translation time
    (for example ``AutoPublishAlias``); everything else keeps its ``Ref``. Raises
    ``TranslationError`` listing the translator's causes when the template is invalid.
    """
    sam_template = load_template(template) if isinstance(template, Path) else copy.deepcopy(dict(template))
    sam_template = replace_local_uris(sam_template)
    # samtranslator logs every plugin step at INFO; keep callers' output readable.
    logging.getLogger("samtranslator").setLevel(logging.WARNING)
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        # A session without credentials only supplies the region (and so the partition).
        boto_session=boto3.session.Session(region_name=region),
    )
    try:
        translated = translator.translate(
            sam_template=sam_template,
            parameter_values=dict(parameter_overrides or {}),
            passthrough_metadata=True,
            # Only consulted for a managed policy name missing from samtranslator's bundled map
            # (sam validate asks IAM then); offline, fail with a clear message instead.
            get_managed_policy_map=_no_managed_policy_names,
        )
    except InvalidDocumentException as exc:
        raise TranslationError([str(cause.message) for cause in exc.causes]) from exc
    # Round-trip through JSON so the result holds plain dicts/lists/str only.
    result: dict[str, Any] = json.loads(json.dumps(translated))
    return result


def _no_managed_policy_names() -> dict[str, str]:
    raise TranslationError(
        ["a managed policy name unknown to samtranslator needs IAM to resolve; use the policy ARN"]
    )


def _parse_overrides(values: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected Key=Value, got {item!r}")
        overrides[key] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: print (or write) the translated template as JSON; exit 1 on translation errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "template", nargs="?", type=Path, default=REPO_ROOT / "template.yaml", help="SAM template path"
    )
    parser.add_argument("-o", "--output", type=Path, help="write JSON here instead of stdout")
    parser.add_argument("--region", default=DEFAULT_REGION, help="region used for ARNs and partition")
    parser.add_argument(
        "--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE", help="template parameter values"
    )
    args = parser.parse_args(argv)
    try:
        overrides = _parse_overrides(args.parameter_overrides)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        translated = translate_template(args.template, region=args.region, parameter_overrides=overrides)
    except TranslationError as exc:
        for cause in exc.causes:
            print(f"error: {cause}", file=sys.stderr)
        return 1
    text = json.dumps(translated, indent=2, sort_keys=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
