"""Load a SAM/CloudFormation template and resolve it the way a deployment would.

`load_stack(template_path, parameter_overrides)` reads `template.yaml` (short-form tags
included), applies parameter defaults and overrides, evaluates Conditions, merges SAM
`Globals` into each function and resolves intrinsics, so local tooling (provisioning in
moto, the Docker-free Lambda runtime) works from the same names and settings as AWS.

Physical names, as in CloudFormation: an explicit name property (BucketName, TableName,
QueueName, TopicName, FunctionName, ...) wins; otherwise a deterministic
"<stack>-<LogicalId>" stands in for CloudFormation's random suffix (lower-cased for
buckets). `Ref` to an SQS queue is its URL, as in CloudFormation: with `endpoint_url`
given it is moto's own form "<endpoint>/<account>/<name>", otherwise the AWS form
"https://sqs.<region>.amazonaws.com/<account>/<name>". moto takes the queue name from
the URL's last path segment, so either form works against moto.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml  # type: ignore[import-untyped,unused-ignore]  # no types-PyYAML in the lock

DEFAULT_STACK_NAME = "transcriber-local"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_LAYER = "AWS::Serverless::LayerVersion"

# Lambda's defaults when neither the function nor Globals say otherwise.
_DEFAULT_TIMEOUT_S = 3
_DEFAULT_MEMORY_MB = 128


class TemplateError(Exception):
    """The template cannot be resolved (unknown reference, missing parameter, bad value)."""


# --- YAML with CloudFormation short-form tags -------------------------------------------


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """SafeLoader that turns `!Ref X`, `!Sub ...`, `!GetAtt A.B`... into long-form dicts."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(cast(yaml.MappingNode, node), deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # `!GetAtt Res.Attr` is a dotted string; attribute names may contain dots too.
        logical_id, _, attribute = value.partition(".")
        value = [logical_id, attribute]
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML (or JSON) template into plain long-form data."""
    with path.open(encoding="utf-8") as stream:
        data = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return cast(dict[str, Any], data)


# --- Resolved model ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterTarget:
    """A function's `DeadLetterQueue` (async invocation failures)."""

    type: str  # "SQS" or "SNS"
    target_arn: str


@dataclass(frozen=True)
class ResourceSpec:
    """One resource whose Condition holds, with its properties resolved."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    physical_name: str
    ref: Any  # what `!Ref LogicalId` gives
    arn: str | None
    depends_on: frozenset[str] = frozenset()  # logical ids (DependsOn + references)


@dataclass(frozen=True)
class FunctionSpec:
    """What the local Lambda runtime needs to run one `AWS::Serverless::Function`."""

    logical_id: str
    function_name: str
    function_arn: str
    handler: str
    runtime: str
    code_uri: Path
    layers: list[Path]  # ContentUri of local layers, in declaration order (-> /opt/python)
    external_layers: list[str]  # layer ARNs from outside the template (not available locally)
    environment: dict[str, str]
    timeout: int
    memory_mb: int
    reserved_concurrency: int | None
    events: dict[str, Any]  # resolved `Events` (bucket names etc. already physical)
    event_invoke_config: dict[str, Any] | None
    dead_letter_queue: DeadLetterTarget | None
    region: str
    account_id: str
    properties: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Stack:
    """A template resolved for one stack name, region, account and parameter set."""

    name: str
    region: str
    account_id: str
    partition: str
    template_path: Path
    parameters: dict[str, Any]  # str, or list[str] for list-typed parameters
    conditions: dict[str, bool]
    resources: dict[str, ResourceSpec]
    functions: dict[str, FunctionSpec]
    outputs: dict[str, Any]

    def resource(self, logical_id: str) -> ResourceSpec:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise TemplateError(f"no resource {logical_id!r} (or its Condition is false)") from None

    def function(self, logical_id: str) -> FunctionSpec:
        try:
            return self.functions[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise TemplateError(f"no function {logical_id!r} in the template (known: {known})") from None

    def of_type(self, resource_type: str) -> list[ResourceSpec]:
        return [spec for spec in self.resources.values() if spec.type == resource_type]

    def find_by_physical_name(self, name: str) -> ResourceSpec | None:
        return next((spec for spec in self.resources.values() if spec.physical_name == name), None)


# --- Per-type naming: name property, Ref value and attributes ------------------------------

# Property holding an explicit physical name, per resource type.
_NAME_PROPERTY: dict[str, str] = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Lambda::Function": "FunctionName",
    SERVERLESS_FUNCTION: "FunctionName",
    "AWS::Lambda::LayerVersion": "LayerName",
    SERVERLESS_LAYER: "LayerName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Events::Rule": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::Events::EventBus": "Name",
}

# SAM resources generated from a function that templates may reference (e.g. !GetAtt FnRole.Arn).
_SAM_IMPLICIT_SUFFIXES: dict[str, str] = {"Role": "AWS::IAM::Role"}


class _Names:
    """Computes physical names, Ref values and GetAtt values; needs the resolver for names."""

    def __init__(self, resolver: _Resolver) -> None:
        self._r = resolver
        self._cache: dict[str, str] = {}
        self._in_progress: set[str] = set()

    def physical_name(self, logical_id: str) -> str:
        if logical_id in self._cache:
            return self._cache[logical_id]
        if logical_id in self._in_progress:
            raise TemplateError(f"circular reference while naming {logical_id}")
        self._in_progress.add(logical_id)
        try:
            name = self._compute_name(logical_id)
        finally:
            self._in_progress.discard(logical_id)
        self._cache[logical_id] = name
        return name

    def _compute_name(self, logical_id: str) -> str:
        rtype = self._r.resource_type(logical_id)
        raw = self._r.raw_resource(logical_id)
        prop = _NAME_PROPERTY.get(rtype)
        properties = raw.get("Properties") or {}
        if prop and prop in properties:
            value = self._r.resolve(properties[prop])
            if value is not _NO_VALUE:
                return str(value)
        stack = self._r.stack_name
        if rtype == "AWS::S3::Bucket":
            return f"{stack}-{logical_id}".lower()[:63]
        if rtype == "AWS::SQS::Queue":
            base = f"{stack}-{logical_id}"
            fifo = self._r.resolve(properties.get("FifoQueue", False)) in (True, "true", "True")
            return f"{base[:75]}.fifo" if fifo else base[:80]
        if rtype == "AWS::Logs::LogGroup":
            return f"{stack}-{logical_id}"
        return f"{stack}-{logical_id}"[:64]

    def ref(self, logical_id: str) -> Any:
        rtype = self._r.resource_type(logical_id)
        name = self.physical_name(logical_id)
        region, account = self._r.region, self._r.account_id
        if rtype == "AWS::SQS::Queue":
            if self._r.endpoint_url:
                return f"{self._r.endpoint_url.rstrip('/')}/{account}/{name}"
            return f"https://sqs.{region}.amazonaws.com/{account}/{name}"
        if rtype in {"AWS::SNS::Topic", "AWS::SecretsManager::Secret"} or rtype in {
            SERVERLESS_LAYER,
            "AWS::Lambda::LayerVersion",
        }:
            return self.arn(logical_id)
        return name

    def arn(self, logical_id: str) -> str:
        rtype = self._r.resource_type(logical_id)
        name = self.physical_name(logical_id)
        p, region, account = self._r.partition, self._r.region, self._r.account_id
        formats = {
            "AWS::S3::Bucket": f"arn:{p}:s3:::{name}",
            "AWS::DynamoDB::Table": f"arn:{p}:dynamodb:{region}:{account}:table/{name}",
            "AWS::SQS::Queue": f"arn:{p}:sqs:{region}:{account}:{name}",
            "AWS::SNS::Topic": f"arn:{p}:sns:{region}:{account}:{name}",
            "AWS::Lambda::Function": f"arn:{p}:lambda:{region}:{account}:function:{name}",
            "AWS::Lambda::LayerVersion": f"arn:{p}:lambda:{region}:{account}:layer:{name}:1",
            # Real secret ARNs end in a random 6-character suffix; a fixed one keeps runs stable.
            "AWS::SecretsManager::Secret": f"arn:{p}:secretsmanager:{region}:{account}:secret:{name}-AbCdEf",
            "AWS::Logs::LogGroup": f"arn:{p}:logs:{region}:{account}:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:{p}:iam::{account}:role/{name}",
            "AWS::Events::Rule": f"arn:{p}:events:{region}:{account}:rule/{name}",
        }
        # SAM types are CloudFormation types with the same ARNs once transformed.
        formats[SERVERLESS_FUNCTION] = formats["AWS::Lambda::Function"]
        formats[SERVERLESS_LAYER] = formats["AWS::Lambda::LayerVersion"]
        formats["AWS::Serverless::SimpleTable"] = formats["AWS::DynamoDB::Table"]
        if rtype in formats:
            return formats[rtype]
        service = rtype.split("::")[1].lower() if "::" in rtype else "unknown"
        return f"arn:{p}:{service}:{region}:{account}:{name}"

    def get_att(self, logical_id: str, attribute: str) -> Any:
        rtype = self._r.resource_type(logical_id)
        name = self.physical_name(logical_id)
        region, suffix = self._r.region, self._r.url_suffix
        attributes: dict[str, Callable[[], Any]] = {"Arn": lambda: self.arn(logical_id)}
        match rtype:
            case "AWS::S3::Bucket":
                attributes |= {
                    "DomainName": lambda: f"{name}.s3.{suffix}",
                    "RegionalDomainName": lambda: f"{name}.s3.{region}.{suffix}",
                    "WebsiteURL": lambda: f"http://{name}.s3-website-{region}.{suffix}",
                }
            case "AWS::DynamoDB::Table":
                attributes["StreamArn"] = lambda: f"{self.arn(logical_id)}/stream/1970-01-01T00:00:00.000"
            case "AWS::SQS::Queue":
                attributes |= {"QueueName": lambda: name, "QueueUrl": lambda: self.ref(logical_id)}
            case "AWS::SNS::Topic":
                attributes |= {"TopicArn": lambda: self.arn(logical_id), "TopicName": lambda: name}
            case "AWS::IAM::Role":
                attributes["RoleId"] = lambda: f"AROA{name.upper()[:17]}"
            case "AWS::SecretsManager::Secret":
                attributes["Id"] = lambda: self.arn(logical_id)
        if attribute not in attributes:
            raise TemplateError(f"unsupported attribute {logical_id}.{attribute} ({rtype})")
        return attributes[attribute]()


# --- Intrinsic resolution ------------------------------------------------------------------


class _NoValue:
    """`AWS::NoValue`: the enclosing key or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE = _NoValue()
_SUB_PATTERN = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    def __init__(
        self,
        template: dict[str, Any],
        parameters: dict[str, Any],
        pseudo: dict[str, str],
        endpoint_url: str | None,
    ) -> None:
        self.template = template
        self.parameters = parameters
        self.pseudo = pseudo
        self.endpoint_url = endpoint_url
        self.stack_name = pseudo["AWS::StackName"]
        self.region = pseudo["AWS::Region"]
        self.account_id = pseudo["AWS::AccountId"]
        self.partition = pseudo["AWS::Partition"]
        self.url_suffix = pseudo["AWS::URLSuffix"]
        self.names = _Names(self)
        self.conditions: dict[str, bool] = {}
        self._evaluating: set[str] = set()
        self.implicit: dict[str, str] = self._implicit_resources()

    # Resources known to the resolver: declared ones plus SAM's generated ones.
    def _implicit_resources(self) -> dict[str, str]:
        implicit: dict[str, str] = {}
        for logical_id, raw in self.template.get("Resources", {}).items():
            if raw.get("Type") == SERVERLESS_FUNCTION and "Role" not in (raw.get("Properties") or {}):
                for suffix, rtype in _SAM_IMPLICIT_SUFFIXES.items():
                    implicit[f"{logical_id}{suffix}"] = rtype
        return implicit

    def raw_resource(self, logical_id: str) -> dict[str, Any]:
        resources: dict[str, Any] = self.template.get("Resources", {})
        if logical_id in resources:
            return cast(dict[str, Any], resources[logical_id])
        if logical_id in self.implicit:
            return {"Type": self.implicit[logical_id], "Properties": {}}
        raise TemplateError(f"reference to unknown resource or parameter {logical_id!r}")

    def resource_type(self, logical_id: str) -> str:
        return str(self.raw_resource(logical_id).get("Type", ""))

    def condition(self, name: str) -> bool:
        if name in self.conditions:
            return self.conditions[name]
        definitions = self.template.get("Conditions") or {}
        if name not in definitions:
            raise TemplateError(f"unknown condition {name!r}")
        if name in self._evaluating:
            raise TemplateError(f"circular condition {name!r}")
        self._evaluating.add(name)
        try:
            value = self.resolve(definitions[name])
        finally:
            self._evaluating.discard(name)
        if not isinstance(value, bool):
            raise TemplateError(f"condition {name!r} did not evaluate to a boolean: {value!r}")
        self.conditions[name] = value
        return value

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    def _ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise TemplateError(f"Ref needs a name, got {name!r}")
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.names.ref(name)

    def _function(self, key: str, arg: Any) -> Any:
        handlers: dict[str, Callable[[Any], Any]] = {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::And": lambda a: all(self._bool(x) for x in a),
            "Fn::Or": lambda a: any(self._bool(x) for x in a),
            "Fn::Not": lambda a: not self._bool(a[0] if isinstance(a, list) else a),
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": lambda a: base64.b64encode(str(self.resolve(a)).encode()).decode(),
            "Fn::GetAZs": lambda _a: [f"{self.region}{zone}" for zone in "abc"],
            "Fn::ToJsonString": self._to_json_string,
        }
        if key not in handlers:
            raise TemplateError(f"intrinsic {key} is not supported locally")
        return handlers[key](arg)

    def _bool(self, node: Any) -> bool:
        value = self.resolve(node)
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return bool(value == "true")
        raise TemplateError(f"expected a condition, got {value!r}")

    def _get_att(self, arg: Any) -> Any:
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        logical_id, attribute = (self.resolve(part) for part in arg)
        return self.names.get_att(str(logical_id), str(attribute))

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):  # ${!Literal} stays literal, without the "!"
                return "${" + expression[1:] + "}"
            expression = expression.strip()
            if expression in variables:
                value = variables[expression]
            elif "." in expression and expression not in self.pseudo:
                logical_id, attribute = expression.split(".", 1)
                value = self.names.get_att(logical_id, attribute)
            else:
                value = self._ref(expression)
            if isinstance(value, list):
                raise TemplateError(f"Fn::Sub cannot insert list value of {expression}")
            return _to_text(value)

        return _SUB_PATTERN.sub(replace, str(text))

    def _join(self, arg: Any) -> str:
        delimiter, items = arg
        values = self.resolve(items)
        return str(delimiter).join(_to_text(v) for v in values)

    def _select(self, arg: Any) -> Any:
        index, items = (self.resolve(part) for part in arg)
        try:
            return items[int(index)]
        except (IndexError, ValueError, TypeError) as exc:
            raise TemplateError(f"Fn::Select index {index!r} out of range for {items!r}") from exc

    def _split(self, arg: Any) -> list[str]:
        delimiter, text = arg
        return str(self.resolve(text)).split(str(delimiter))

    def _if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _equals(self, arg: Any) -> bool:
        left, right = (self.resolve(part) for part in arg)
        return _to_text(left) == _to_text(right)

    def _find_in_map(self, arg: Any) -> Any:
        map_name, top, second = (self.resolve(part) for part in arg)
        try:
            return self.template["Mappings"][map_name][top][second]
        except KeyError as exc:
            raise TemplateError(f"Fn::FindInMap: no {map_name}/{top}/{second}") from exc

    def _to_json_string(self, arg: Any) -> str:
        return json.dumps(self.resolve(arg), separators=(",", ":"))


def _to_text(value: Any) -> str:
    """Scalar to the string CloudFormation would pass (YAML booleans become "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- Parameters ------------------------------------------------------------------------------


def _resolve_parameters(template: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    declared: dict[str, Any] = template.get("Parameters") or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"parameter overrides for undeclared parameters: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, definition in declared.items():
        if name in overrides:
            text = overrides[name]
        elif "Default" in definition:
            text = _to_text(definition["Default"])
        else:
            raise TemplateError(f"parameter {name} has no Default and no override was given")
        ptype = str(definition.get("Type", "String"))
        allowed = [_to_text(v) for v in definition.get("AllowedValues", [])]
        if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
            items = [item.strip() for item in text.split(",")] if text else []
            bad = [item for item in items if allowed and item not in allowed]
            if bad:
                raise TemplateError(f"parameter {name}: {bad} not in AllowedValues {allowed}")
            values[name] = items
            continue
        if allowed and text not in allowed:
            raise TemplateError(f"parameter {name}={text!r} not in AllowedValues {allowed}")
        _check_constraints(name, definition, ptype, text)
        pattern = definition.get("AllowedPattern")
        if pattern and not re.fullmatch(str(pattern), text):
            raise TemplateError(f"parameter {name}={text!r} does not match AllowedPattern {pattern}")
        values[name] = text
    return values


def _check_constraints(name: str, definition: dict[str, Any], ptype: str, text: str) -> None:
    """MinLength/MaxLength for strings, MinValue/MaxValue for numbers, as CloudFormation checks."""
    if ptype == "Number":
        try:
            number = float(text)
        except ValueError:
            raise TemplateError(f"parameter {name}={text!r} is not a Number") from None
        low, high = definition.get("MinValue"), definition.get("MaxValue")
        if (low is not None and number < float(low)) or (high is not None and number > float(high)):
            raise TemplateError(f"parameter {name}={text} outside [{low}, {high}]")
        return
    low, high = definition.get("MinLength"), definition.get("MaxLength")
    if (low is not None and len(text) < int(low)) or (high is not None and len(text) > int(high)):
        raise TemplateError(f"parameter {name}={text!r}: length outside [{low}, {high}]")


# --- SAM Globals and functions ---------------------------------------------------------------


def _merge_globals(global_props: Any, own: Any) -> Any:
    """SAM's Globals rule: maps merge (function wins), lists concatenate, scalars: function wins."""
    if isinstance(global_props, dict) and isinstance(own, dict):
        merged = dict(global_props)
        for key, value in own.items():
            merged[key] = _merge_globals(global_props[key], value) if key in global_props else value
        return merged
    if isinstance(global_props, list) and isinstance(own, list):
        return global_props + own
    return own


def _as_int(value: Any, what: str) -> int:
    try:
        return int(float(_to_text(value)))
    except ValueError:
        raise TemplateError(f"{what} must be a number, got {value!r}") from None


def _function_spec(
    logical_id: str,
    properties: dict[str, Any],
    resolver: _Resolver,
    base_dir: Path,
    local_layers: dict[str, Path],
) -> FunctionSpec:
    code_uri = properties.get("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local directory for local runs")
    layers: list[Path] = []
    external: list[str] = []
    for layer in properties.get("Layers", []):
        if layer in local_layers:
            layers.append(local_layers[layer])
        else:
            external.append(str(layer))
    variables = (properties.get("Environment") or {}).get("Variables") or {}
    dlq = properties.get("DeadLetterQueue")
    reserved = properties.get("ReservedConcurrentExecutions")
    return FunctionSpec(
        logical_id=logical_id,
        function_name=resolver.names.physical_name(logical_id),
        function_arn=resolver.names.arn(logical_id),
        handler=str(properties.get("Handler", "")),
        runtime=str(properties.get("Runtime", "")),
        code_uri=(base_dir / code_uri).resolve(),
        layers=layers,
        external_layers=external,
        environment={str(k): _to_text(v) for k, v in variables.items()},
        timeout=_as_int(properties.get("Timeout", _DEFAULT_TIMEOUT_S), f"{logical_id}.Timeout"),
        memory_mb=_as_int(properties.get("MemorySize", _DEFAULT_MEMORY_MB), f"{logical_id}.MemorySize"),
        reserved_concurrency=None if reserved is None else _as_int(reserved, "ReservedConcurrentExecutions"),
        events=dict(properties.get("Events") or {}),
        event_invoke_config=properties.get("EventInvokeConfig"),
        dead_letter_queue=DeadLetterTarget(str(dlq["Type"]), str(dlq["TargetArn"])) if dlq else None,
        region=resolver.region,
        account_id=resolver.account_id,
        properties=properties,
    )


def _references(node: Any, known: Mapping[str, Any]) -> set[str]:
    """Logical ids referenced by Ref / GetAtt / Sub anywhere in `node` (for ordering)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _references(item, known)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value.split(".", 1)[0] if isinstance(value, str) else value[0]
                if isinstance(target, str):
                    found.add(target)
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                for expression in _SUB_PATTERN.findall(str(text)):
                    found.add(expression.split(".", 1)[0].strip())
            found |= _references(value, known)
    return {name for name in found if name in known}


def load_stack(
    template_path: Path | str,
    parameter_overrides: Mapping[str, str] | None = None,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    account_id: str = DEFAULT_ACCOUNT_ID,
    region: str = DEFAULT_REGION,
    endpoint_url: str | None = None,
) -> Stack:
    """Resolve `template_path` for one stack; `endpoint_url` only shapes SQS queue URLs."""
    path = Path(template_path).resolve()
    template = load_template(path)
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    pseudo = {
        "AWS::StackName": stack_name,
        "AWS::AccountId": account_id,
        "AWS::Region": region,
        "AWS::Partition": partition,
        "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
        "AWS::StackId": f"arn:{partition}:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
        "AWS::NotificationARNs": "",
    }
    parameters = _resolve_parameters(template, parameter_overrides or {})
    resolver = _Resolver(template, parameters, pseudo, endpoint_url)
    conditions = {name: resolver.condition(name) for name in template.get("Conditions") or {}}

    function_globals = (template.get("Globals") or {}).get("Function") or {}
    raw_resources: dict[str, Any] = template["Resources"]
    active = {
        logical_id: raw
        for logical_id, raw in raw_resources.items()
        if "Condition" not in raw or resolver.condition(str(raw["Condition"]))
    }

    resources: dict[str, ResourceSpec] = {}
    for logical_id, raw in active.items():
        rtype = str(raw.get("Type", ""))
        raw_props = raw.get("Properties") or {}
        if rtype == SERVERLESS_FUNCTION:
            raw_props = _merge_globals(function_globals, raw_props)
        depends = raw.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else list(depends)
        refs = _references(raw_props, active) | set(depends)
        refs.discard(logical_id)
        arn: str | None
        try:
            arn = resolver.names.arn(logical_id)
        except TemplateError:
            arn = None
        resources[logical_id] = ResourceSpec(
            logical_id=logical_id,
            type=rtype,
            properties=resolver.resolve(raw_props),
            physical_name=resolver.names.physical_name(logical_id),
            ref=resolver.names.ref(logical_id),
            arn=arn,
            depends_on=frozenset(refs),
        )

    base_dir = path.parent
    local_layers = {
        str(spec.ref): (base_dir / str(spec.properties["ContentUri"])).resolve()
        for spec in resources.values()
        if spec.type == SERVERLESS_LAYER and isinstance(spec.properties.get("ContentUri"), str)
    }
    functions = {
        logical_id: _function_spec(logical_id, spec.properties, resolver, base_dir, local_layers)
        for logical_id, spec in resources.items()
        if spec.type == SERVERLESS_FUNCTION
    }
    outputs = {
        name: resolver.resolve(output.get("Value"))
        for name, output in (template.get("Outputs") or {}).items()
        if "Condition" not in output or resolver.condition(str(output["Condition"]))
    }
    return Stack(
        name=stack_name,
        region=region,
        account_id=account_id,
        partition=partition,
        template_path=path,
        parameters=parameters,
        conditions=conditions,
        resources=resources,
        functions=functions,
        outputs=outputs,
    )
