"""Resolve a translated template for one stack: what CloudFormation would create, with its values.

``resolve_stack(template, overrides)`` runs AWS's SAM transform (``samstack.transform``), then
evaluates the result the way CloudFormation does for one stack name, region, account and set of
parameter values: parameter defaults, overrides and their constraints; Conditions; resources and
outputs whose Condition is false dropped; and the intrinsics the project's templates use (Ref,
Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap, Fn::Equals/Not/And/Or,
Condition) replaced by values. Any other intrinsic is an error, not a guess.

An override named ``Map.TopKey.Key`` (``Settings.Functions.FunctionTimeout=30``) replaces that
Mappings value before anything is read, exactly as editing the template would: the local world's
way to try a setting that is not a parameter (``samstack.transform.with_mapping_values``).

It refuses what CloudFormation refuses before creating anything: a reference (Ref, GetAtt, Sub,
DependsOn, also in Metadata) to a resource whose Condition is false or that does not exist.

Physical names, as in CloudFormation: an explicit name property (BucketName, QueueName,
FunctionName, ...) wins; otherwise a deterministic "<stack>-<LogicalId>" stands in for
CloudFormation's random suffix (lower-cased for buckets). ``Ref`` to an SQS queue is its URL: with
``endpoint_url`` given it is that endpoint's form "<endpoint>/<account>/<name>" (moto's), otherwise
"https://sqs.<region>.amazonaws.com/<account>/<name>".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from samstack.transform import (
    DEFAULT_REGION,
    TemplateError,
    load_template,
    local_path,
    split_overrides,
    translate,
    with_mapping_values,
)

DEFAULT_STACK_NAME: Final = "transcriber-local"
DEFAULT_ACCOUNT_ID: Final = "123456789012"


@dataclass(frozen=True)
class Resource:
    """One resource CloudFormation would create (its Condition holds), values resolved."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    physical_name: str
    ref: Any  # what `!Ref LogicalId` gives
    arn: str | None
    depends_on: frozenset[str] = frozenset()  # DependsOn + every resource it references
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ResolvedStack:
    """A template after the SAM transform, resolved for one stack name, region, account and parameters."""

    name: str
    region: str
    account_id: str
    partition: str
    base_dir: Path  # local CodeUri/ContentUri paths are relative to it
    parameters: dict[str, Any]  # str, or list[str] for CommaDelimitedList parameters
    conditions: dict[str, bool]
    resources: dict[str, Resource]
    outputs: dict[str, Any]  # output name -> resolved Value
    template: dict[str, Any] = field(repr=False)  # the translated template, intrinsics as written

    def resource(self, logical_id: str) -> Resource:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise TemplateError(f"no resource {logical_id!r} (or its Condition is false)") from None

    def of_type(self, resource_type: str) -> list[Resource]:
        return [spec for spec in self.resources.values() if spec.type == resource_type]

    def find_by_physical_name(self, name: str) -> Resource | None:
        return next((spec for spec in self.resources.values() if spec.physical_name == name), None)

    def local_path(self, code: Any) -> Path | None:
        """The local directory of a translated Lambda ``Code`` or layer ``Content``, if it is one."""
        return local_path(code, self.base_dir)


# --- Per-type naming: name property, Ref value and attributes ------------------------------

_NAME_PROPERTY: Final[Mapping[str, str]] = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::Events::Rule": "Name",
    "AWS::Events::Connection": "Name",
    "AWS::Events::ApiDestination": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
}
# Types whose Ref is their ARN rather than their name.
_REF_IS_ARN: Final = frozenset({"AWS::SNS::Topic", "AWS::Lambda::LayerVersion", "AWS::IAM::ManagedPolicy"})


class _NoValue:
    """`AWS::NoValue`: the enclosing key or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE: Final = _NoValue()
_SUB_PATTERN: Final = re.compile(r"\$\{([^}]*)\}")


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
        self.all_resources: dict[str, Any] = template["Resources"]
        self.conditions: dict[str, bool] = {}
        self._evaluating: set[str] = set()
        self.touched: set[str] = set()  # resources referenced since the caller last cleared it
        self._names: dict[str, str] = {}
        self._naming: set[str] = set()
        self.active: set[str] = set()
        self.active = {
            logical_id
            for logical_id, raw in self.all_resources.items()
            if "Condition" not in raw or self.condition(str(raw["Condition"]))
        }

    # --- conditions ----------------------------------------------------------------------

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
            value = self._bool(definitions[name])
        finally:
            self._evaluating.discard(name)
        self.conditions[name] = value
        return value

    def _bool(self, node: Any) -> bool:
        value = self.resolve(node)
        if isinstance(value, bool):
            return value
        raise TemplateError(f"expected a condition, got {value!r}")

    # --- resources -----------------------------------------------------------------------

    def resource_type(self, logical_id: str) -> str:
        if logical_id not in self.all_resources:
            raise TemplateError(f"reference to unknown resource or parameter {logical_id!r}")
        if logical_id not in self.active:
            raise TemplateError(f"reference to {logical_id!r}, whose Condition is false")
        self.touched.add(logical_id)
        return str(self.all_resources[logical_id]["Type"])

    def physical_name(self, logical_id: str) -> str:
        rtype = self.resource_type(logical_id)
        if logical_id in self._names:
            return self._names[logical_id]
        if logical_id in self._naming:
            raise TemplateError(f"circular reference while naming {logical_id}")
        self._naming.add(logical_id)
        try:
            properties = self.all_resources[logical_id].get("Properties") or {}
            prop = _NAME_PROPERTY.get(rtype)
            if prop and prop in properties:
                name = str(self.resolve(properties[prop]))
            elif rtype == "AWS::S3::Bucket":
                name = f"{self.stack_name}-{logical_id}".lower()[:63]
            elif rtype == "AWS::SQS::Queue":
                name = f"{self.stack_name}-{logical_id}"[:80]
            else:
                name = f"{self.stack_name}-{logical_id}"[:64]
        finally:
            self._naming.discard(logical_id)
        self._names[logical_id] = name
        return name

    def ref_of(self, logical_id: str) -> Any:
        rtype = self.resource_type(logical_id)
        if rtype == "AWS::SQS::Queue":
            base = (
                self.endpoint_url.rstrip("/")
                if self.endpoint_url
                else f"https://sqs.{self.region}.amazonaws.com"
            )
            return f"{base}/{self.account_id}/{self.physical_name(logical_id)}"
        if rtype in _REF_IS_ARN:
            return self.arn(logical_id)
        return self.physical_name(logical_id)

    def arn(self, logical_id: str) -> str | None:
        rtype = self.resource_type(logical_id)
        name = self.physical_name(logical_id)
        p, region, account = self.partition, self.region, self.account_id
        formats = {
            "AWS::S3::Bucket": f"arn:{p}:s3:::{name}",
            "AWS::DynamoDB::Table": f"arn:{p}:dynamodb:{region}:{account}:table/{name}",
            "AWS::SQS::Queue": f"arn:{p}:sqs:{region}:{account}:{name}",
            "AWS::SNS::Topic": f"arn:{p}:sns:{region}:{account}:{name}",
            "AWS::Lambda::Function": f"arn:{p}:lambda:{region}:{account}:function:{name}",
            "AWS::Lambda::LayerVersion": f"arn:{p}:lambda:{region}:{account}:layer:{name}:1",
            "AWS::Logs::LogGroup": f"arn:{p}:logs:{region}:{account}:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:{p}:iam::{account}:role/{name}",
            "AWS::IAM::ManagedPolicy": f"arn:{p}:iam::{account}:policy/{name}",
            "AWS::Events::Rule": f"arn:{p}:events:{region}:{account}:rule/{name}",
            # AWS appends a generated id; "local" stands for it (EventBridge looks them up by name).
            "AWS::Events::Connection": f"arn:{p}:events:{region}:{account}:connection/{name}/local",
            "AWS::Events::ApiDestination": f"arn:{p}:events:{region}:{account}:api-destination/{name}/local",
        }
        return formats.get(rtype)

    def get_att(self, logical_id: str, attribute: str) -> Any:
        rtype = self.resource_type(logical_id)
        if attribute == "Arn" and (arn := self.arn(logical_id)) is not None:
            return arn
        if (rtype, attribute) == ("AWS::SQS::Queue", "QueueName"):
            return self.physical_name(logical_id)
        raise TemplateError(f"unsupported attribute {logical_id}.{attribute} ({rtype})")

    # --- intrinsics ----------------------------------------------------------------------

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
        return self.ref_of(name)

    def _function(self, key: str, arg: Any) -> Any:
        handlers: dict[str, Callable[[Any], Any]] = {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Equals": self._equals,
            "Fn::And": lambda a: all(self._bool(x) for x in a),
            "Fn::Or": lambda a: any(self._bool(x) for x in a),
            "Fn::Not": lambda a: not self._bool(a[0]),
        }
        if key not in handlers:
            raise TemplateError(f"intrinsic {key} is not supported (the templates do not use it)")
        return handlers[key](arg)

    def _get_att(self, arg: Any) -> Any:
        logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
        return self.get_att(str(logical_id), str(attribute))

    def _find_in_map(self, arg: Any) -> Any:
        # Without the AWS::LanguageExtensions transform CloudFormation takes three arguments, each
        # a literal, a Ref or another FindInMap, and mapping values that are strings or lists.
        if not isinstance(arg, list) or len(arg) != 3:
            raise TemplateError(f"Fn::FindInMap takes [map, top key, key], got {arg!r}")
        for part in arg:
            if isinstance(part, dict) and set(part) - {"Ref", "Fn::FindInMap"}:
                raise TemplateError(f"Fn::FindInMap: {sorted(part)[0]} is not allowed inside it")
        map_name, top_key, key = (_to_text(self.resolve(part)) for part in arg)
        mappings = self.template.get("Mappings") or {}
        try:
            value = mappings[map_name][top_key][key]
        except (KeyError, TypeError):
            raise TemplateError(f"Fn::FindInMap: no {map_name}.{top_key}.{key} in Mappings") from None
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, dict | list) for item in items):
            where = f"{map_name}.{top_key}.{key}"
            raise TemplateError(f"Fn::FindInMap: {where} is not a string or a list of strings")
        # CloudFormation's mapping values are strings or lists of strings, whatever the YAML said.
        return [_to_text(item) for item in value] if isinstance(value, list) else _to_text(value)

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], {name: self.resolve(value) for name, value in arg[1].items()}
        else:
            text, variables = arg, {}
        if not isinstance(text, str):
            raise TemplateError(f"Fn::Sub takes a string or [string, variables], got {arg!r}")

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):  # ${!Literal} stays literal, without the "!"
                return "${" + expression[1:] + "}"
            expression = expression.strip()
            if expression in variables:
                return _to_text(variables[expression])
            if "." in expression and expression not in self.pseudo:
                logical_id, attribute = expression.split(".", 1)
                return _to_text(self.get_att(logical_id, attribute))
            value = self._ref(expression)
            if isinstance(value, list):
                raise TemplateError(f"Fn::Sub cannot insert list value of {expression}")
            return _to_text(value)

        return _SUB_PATTERN.sub(replace, text)

    def _join(self, arg: Any) -> str:
        delimiter, items = arg
        return str(delimiter).join(_to_text(v) for v in self.resolve(items))

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
        if ptype == "CommaDelimitedList":
            values[name] = [item.strip() for item in text.split(",")] if text else []
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


# --- Entry point -----------------------------------------------------------------------------


def resolve_stack(
    template: Path | str | Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    region: str = DEFAULT_REGION,
    account_id: str = DEFAULT_ACCOUNT_ID,
    endpoint_url: str | None = None,
    base_dir: Path | None = None,
) -> ResolvedStack:
    """Transform ``template`` (a path, or parsed data with ``base_dir``) and resolve it for one stack.

    ``overrides`` are parameter values, and ``Map.TopKey.Key`` entries that edit the Mappings."""
    if isinstance(template, Mapping):
        source = dict(template)
        directory = (base_dir or Path.cwd()).resolve()
    else:
        path = Path(template).resolve()
        source = load_template(path)
        directory = path.parent
    overrides, edits = split_overrides(overrides or {})
    source = with_mapping_values(source, edits)
    parameters = _resolve_parameters(source, overrides)  # before translating: clear errors first
    cfn = translate(source, region=region, parameter_overrides=overrides)
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    pseudo = {
        "AWS::StackName": stack_name,
        "AWS::AccountId": account_id,
        "AWS::Region": region,
        "AWS::Partition": partition,
        "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
        "AWS::StackId": f"arn:{partition}:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
    }
    resolver = _Resolver(cfn, parameters, pseudo, endpoint_url)
    conditions = {name: resolver.condition(name) for name in cfn.get("Conditions") or {}}

    resources: dict[str, Resource] = {}
    for logical_id, raw in cfn["Resources"].items():
        if logical_id not in resolver.active:
            continue
        depends = raw.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else list(depends)
        resolver.touched = set()
        for name in depends:
            resolver.resource_type(str(name))  # must exist and be created
        properties = cast(dict[str, Any], resolver.resolve(raw.get("Properties") or {}))
        metadata = cast(dict[str, Any], resolver.resolve(raw.get("Metadata") or {}))
        physical_name = resolver.physical_name(logical_id)
        ref, arn = resolver.ref_of(logical_id), resolver.arn(logical_id)
        resources[logical_id] = Resource(
            logical_id=logical_id,
            type=str(raw["Type"]),
            properties=properties,
            physical_name=physical_name,
            ref=ref,
            arn=arn,
            depends_on=frozenset(resolver.touched - {logical_id}),
            metadata=metadata,
        )
    outputs = {
        name: resolver.resolve(output.get("Value"))
        for name, output in (cfn.get("Outputs") or {}).items()
        if "Condition" not in output or resolver.condition(str(output["Condition"]))
    }
    return ResolvedStack(
        name=stack_name,
        region=region,
        account_id=account_id,
        partition=partition,
        base_dir=directory,
        parameters=parameters,
        conditions=conditions,
        resources=resources,
        outputs=outputs,
        template=cfn,
    )
