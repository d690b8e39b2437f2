"""Read a SAM template and run AWS's own SAM transform on it, offline.

cfn-lint 1.x no longer runs the SAM transform, and the local world needs what CloudFormation
would deploy (SAM's Globals merge, generated roles, permissions, event source mappings), so
both take it from ``samtranslator``, the library the AWS::Serverless transform runs on. It
translates offline once local ``CodeUri``/``ContentUri`` paths are ``s3://`` URIs (as cfn-lint
0.x and ``sam validate`` do). Here a local path becomes ``s3://samstack-local-code/rel/<path>``,
so the translated ``Code``/``Content`` still says where the code is: ``local_path`` reads it back.

Mappings edits: template.yaml keeps its settings in ``Mappings: Settings:`` (read with
``!FindInMap``) and asks only a dozen questions through Parameters. CloudFormation cannot override
a mapping at deploy time: a person edits the file. ``with_mapping_values`` makes the same edit on a
copy, so the local world, ``make invoke --parameter-overrides`` and the template tests can try a
setting without a second template. Only existing entries can be replaced: a typo is an error.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import boto3
from samtranslator.metrics.metrics import Metrics
from samtranslator.parser.parser import Parser
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

DEFAULT_REGION: Final = "us-east-1"
# Stands in for the bucket `sam package` would upload to; the key is the local path as written.
LOCAL_CODE_BUCKET: Final = "samstack-local-code"

SAM_TRANSFORM: Final = "AWS::Serverless-2016-10-31"
SERVERLESS_FUNCTION: Final = "AWS::Serverless::Function"
SERVERLESS_LAYER: Final = "AWS::Serverless::LayerVersion"
# Resource type -> property that may hold a local path (sam build/package upload it).
_LOCAL_URI_PROPERTIES: Final[Mapping[str, str]] = {
    SERVERLESS_FUNCTION: "CodeUri",
    SERVERLESS_LAYER: "ContentUri",
}


class TemplateError(Exception):
    """The template cannot be read, translated or resolved."""


class TranslationError(TemplateError):
    """The SAM translator rejected the template; ``causes`` holds one message per fault."""

    def __init__(self, causes: Sequence[str]) -> None:
        self.causes = list(causes)
        super().__init__("SAM translation failed: " + "; ".join(self.causes))


def split_overrides(overrides: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(parameter values, mapping edits): parameter names have no dots, mapping paths have two."""
    parameters = {name: value for name, value in overrides.items() if "." not in name}
    edits = {name: value for name, value in overrides.items() if "." in name}
    return parameters, edits


def with_mapping_values(template: Mapping[str, Any], edits: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``template`` whose ``Map.TopKey.Key`` entries hold the given values."""
    result = copy.deepcopy(dict(template))
    mappings = result.get("Mappings") or {}
    for path, value in edits.items():
        parts = path.split(".")
        if len(parts) != 3:
            raise TemplateError(f"{path!r}: a mapping entry is named Map.TopKey.Key")
        map_name, top_key, key = parts
        entries = mappings.get(map_name, {}).get(top_key)
        if not isinstance(entries, dict) or key not in entries:
            raise TemplateError(f"{path!r}: no such entry in the template's Mappings")
        entries[key] = value
    return result


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template (YAML or JSON, short-form tags allowed) into plain data."""
    loaded = yaml_parse(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    # Round-trip through JSON: plain dicts, lists and scalars only.
    result: dict[str, Any] = json.loads(json.dumps(loaded))
    return result


def _local_uri(value: object) -> str | None:
    """``s3://<LOCAL_CODE_BUCKET>/rel/<path>`` (or ``/abs/<path>``): S3 keys lose a leading "/"."""
    if isinstance(value, str) and not value.startswith("s3://"):
        root = "abs" if value.startswith("/") else "rel"
        return f"s3://{LOCAL_CODE_BUCKET}/{root}/{value.lstrip('/')}"
    return None


def replace_local_uris(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``template`` whose local CodeUri/ContentUri paths are ``s3://`` URIs that keep the path."""
    result = copy.deepcopy(dict(template))
    function_globals = (result.get("Globals") or {}).get("Function")
    if isinstance(function_globals, dict) and (uri := _local_uri(function_globals.get("CodeUri"))):
        function_globals["CodeUri"] = uri
    for resource in (result.get("Resources") or {}).values():
        key = _LOCAL_URI_PROPERTIES.get(str(resource.get("Type")))
        properties = resource.get("Properties")
        if key and isinstance(properties, dict) and (uri := _local_uri(properties.get(key))):
            properties[key] = uri
    return result


def local_path(code: Any, base_dir: Path) -> Path | None:
    """The local directory a translated ``Code``/``Content`` (S3Bucket, S3Key) stands for, if any."""
    if not isinstance(code, Mapping) or code.get("S3Bucket") != LOCAL_CODE_BUCKET:
        return None
    root, _, path = str(code["S3Key"]).partition("/")
    return (Path("/") / path if root == "abs" else base_dir / path).resolve()


def translate(
    template: Path | Mapping[str, Any],
    *,
    region: str = DEFAULT_REGION,
    parameter_overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The plain CloudFormation template the SAM transform makes of ``template``.

    ``parameter_overrides`` only matter where SAM resolves parameters at translation time (here:
    EventInvokeConfig); everything else keeps its ``Ref``. ``Map.TopKey.Key`` entries among them edit
    the Mappings first (``with_mapping_values``). Raises ``TranslationError`` listing the
    translator's causes when the template is invalid.
    """
    source = load_template(template) if isinstance(template, Path) else dict(template)
    parameter_overrides, edits = split_overrides(parameter_overrides or {})
    source = with_mapping_values(source, edits)
    if SAM_TRANSFORM not in _transforms(source):
        return copy.deepcopy(source)  # plain CloudFormation already
    sam_template = replace_local_uris(source)
    # samtranslator logs every plugin step at INFO; keep callers' output readable.
    logging.getLogger("samtranslator").setLevel(logging.WARNING)
    metrics = Metrics()  # published to samtranslator's no-op publisher, so it does not warn on exit
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        # A session without credentials only supplies the region (and so the partition).
        boto_session=boto3.session.Session(region_name=region),
        metrics=metrics,
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
    finally:
        metrics.publish()
    result: dict[str, Any] = json.loads(json.dumps(translated))
    return result


def _transforms(template: Mapping[str, Any]) -> list[Any]:
    value = template.get("Transform") or []
    return list(value) if isinstance(value, list) else [value]


def _no_managed_policy_names() -> dict[str, str]:
    raise TranslationError(
        ["a managed policy name unknown to samtranslator needs IAM to resolve; use the policy ARN"]
    )
