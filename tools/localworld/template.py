"""The local world's reading of a template: ``samstack.resolve_stack`` plus, per Lambda function,
what the Docker-free runtime needs to run it.

``load_stack(template_path, parameter_overrides)`` resolves the template once (AWS's SAM
transform, then samstack's resolver) and describes every ``AWS::Lambda::Function`` the transform
produced as a ``FunctionSpec``: handler, local code directory, local layer directories, the
environment, memory, timeout, reserved concurrency, dead-letter target, async invocation config,
and its event sources (S3 notifications of the stack's buckets, SQS event source mappings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from samstack import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    DEFAULT_STACK_NAME,
    ResolvedStack,
    Resource,
    TemplateError,
    resolve_stack,
)

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "DEFAULT_STACK_NAME",
    "DeadLetterTarget",
    "FunctionSpec",
    "Stack",
    "TemplateError",
    "load_stack",
]

# Lambda's defaults when the function does not say otherwise.
_DEFAULT_TIMEOUT_S = 3
_DEFAULT_MEMORY_MB = 128
# The keys of an AWS::Lambda::EventInvokeConfig that shape asynchronous invocation.
_INVOKE_CONFIG_KEYS = ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")


@dataclass(frozen=True)
class DeadLetterTarget:
    """A function's dead-letter target (async invocation failures)."""

    type: str  # "SQS" or "SNS"
    target_arn: str


@dataclass(frozen=True)
class FunctionSpec:
    """What the local Lambda runtime needs to run one function of the stack."""

    logical_id: str
    function_name: str
    function_arn: str
    handler: str
    runtime: str
    code_uri: Path
    layers: list[Path]  # local layer directories, in declaration order (-> /opt/python)
    external_layers: list[str]  # layer ARNs from outside the template (not available locally)
    environment: dict[str, str]
    timeout: int
    memory_mb: int
    reserved_concurrency: int | None
    # Event sources in SAM's event shape: {"Type": "S3", "Properties": {Bucket, Events, Filter}}
    # per bucket notification, {"Type": "SQS", "Properties": {Queue, BatchSize, ...}} per mapping.
    events: dict[str, Any]
    event_invoke_config: dict[str, Any] | None
    dead_letter_queue: DeadLetterTarget | None
    region: str
    account_id: str
    properties: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Stack(ResolvedStack):
    """A resolved stack and its functions."""

    functions: dict[str, FunctionSpec] = field(default_factory=dict)

    def function(self, logical_id: str) -> FunctionSpec:
        try:
            return self.functions[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise TemplateError(f"no function {logical_id!r} in the template (known: {known})") from None


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
    resolved = resolve_stack(
        Path(template_path),
        parameter_overrides,
        stack_name=stack_name,
        region=region,
        account_id=account_id,
        endpoint_url=endpoint_url,
    )
    functions = {
        spec.logical_id: _function_spec(resolved, spec) for spec in resolved.of_type("AWS::Lambda::Function")
    }
    return Stack(**{f.name: getattr(resolved, f.name) for f in fields(resolved)}, functions=functions)


def _as_int(value: Any, what: str) -> int:
    try:
        return int(float(str(value)))
    except ValueError:
        raise TemplateError(f"{what} must be a number, got {value!r}") from None


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _function_spec(stack: ResolvedStack, function: Resource) -> FunctionSpec:
    logical_id, props = function.logical_id, function.properties
    code_uri = stack.local_path(props.get("Code"))
    if code_uri is None:
        raise TemplateError(f"{logical_id}: CodeUri must be a local directory for local runs")
    local_layers = {
        layer.ref: path
        for layer in stack.of_type("AWS::Lambda::LayerVersion")
        if (path := stack.local_path(layer.properties.get("Content"))) is not None
    }
    layers = [local_layers[arn] for arn in props.get("Layers", []) if arn in local_layers]
    external = [str(arn) for arn in props.get("Layers", []) if arn not in local_layers]
    variables = (props.get("Environment") or {}).get("Variables") or {}
    dlq_arn = (props.get("DeadLetterConfig") or {}).get("TargetArn")
    reserved = props.get("ReservedConcurrentExecutions")
    return FunctionSpec(
        logical_id=logical_id,
        function_name=function.physical_name,
        function_arn=str(function.arn),
        handler=str(props.get("Handler", "")),
        runtime=str(props.get("Runtime", "")),
        code_uri=code_uri,
        layers=layers,
        external_layers=external,
        environment={str(k): _env_text(v) for k, v in variables.items()},
        timeout=_as_int(props.get("Timeout", _DEFAULT_TIMEOUT_S), f"{logical_id}.Timeout"),
        memory_mb=_as_int(props.get("MemorySize", _DEFAULT_MEMORY_MB), f"{logical_id}.MemorySize"),
        reserved_concurrency=None if reserved is None else _as_int(reserved, "ReservedConcurrentExecutions"),
        events=_event_sources(stack, function),
        event_invoke_config=_invoke_config(stack, function),
        dead_letter_queue=(
            DeadLetterTarget("SQS" if ":sqs:" in str(dlq_arn) else "SNS", str(dlq_arn)) if dlq_arn else None
        ),
        region=stack.region,
        account_id=stack.account_id,
        properties=props,
    )


def _names_function(value: Any, function: Resource) -> bool:
    return value in (function.physical_name, function.arn)


def _invoke_config(stack: ResolvedStack, function: Resource) -> dict[str, Any] | None:
    for config in stack.of_type("AWS::Lambda::EventInvokeConfig"):
        if _names_function(config.properties.get("FunctionName"), function):
            props = config.properties
            return {key: props[key] for key in _INVOKE_CONFIG_KEYS if props.get(key, {}) != {}}
    return None


def _event_sources(stack: ResolvedStack, function: Resource) -> dict[str, Any]:
    events: dict[str, Any] = {}
    for bucket in stack.of_type("AWS::S3::Bucket"):
        notification = bucket.properties.get("NotificationConfiguration") or {}
        for index, config in enumerate(notification.get("LambdaConfigurations") or []):
            if not _names_function(config.get("Function"), function):
                continue
            props: dict[str, Any] = {"Bucket": bucket.physical_name, "Events": config.get("Event")}
            if config.get("Filter"):
                props["Filter"] = config["Filter"]
            events[f"{bucket.logical_id}Notification{index}"] = {"Type": "S3", "Properties": props}
    for mapping in stack.of_type("AWS::Lambda::EventSourceMapping"):
        props = dict(mapping.properties)
        if not _names_function(props.pop("FunctionName", None), function):
            continue
        source = str(props.pop("EventSourceArn", ""))
        if source.split(":")[2:3] == ["sqs"]:
            events[mapping.logical_id] = {"Type": "SQS", "Properties": {"Queue": source, **props}}
    return events
