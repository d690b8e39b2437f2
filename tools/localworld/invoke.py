"""`sam local invoke` without Docker: run one function of template.yaml once, locally.

    python -m localworld.invoke --function TranscribeFunction --event events/s3-put.json \
        [--env-vars env.json] [--parameter-overrides K=V ...] [--template template.yaml] \
        [--world local|moto|none]

This is the one local invoke command line (`make invoke FUNCTION=... EVENT=... ENV_VARS=...`).
The function's logs go to stderr and the result JSON (the return value, or Lambda's error
object) to stdout, so the result can be piped; exit status 0 on success, 1 when the handler
failed, 2 when the template, event or flags are wrong.

The services the function talks to come from a "world": `run_invoke(..., world_factory=...)`
takes any callable that, given the stack, the function and the event, returns a context manager
yielding an `InvokeEnvironment`. `--world local` (the default) is the whole local world: moto provisioned
from the template, the Deepgram emulator, the key in the stack's secret (`DeepgramSecretId`
defaults to the local secret name) and the sample recording at every object the event names.
`--world moto` is moto alone; `--world none` gives the handler only its template environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from localworld.aws import LocalAws, MotoServer
from localworld.lambda_runtime import InvocationResult, LocalFunction
from localworld.template import DEFAULT_STACK_NAME, FunctionSpec, Stack, TemplateError, load_stack
from localworld.world import LOCAL_SECRET_ID, new_api_key, seed_objects, services


@dataclass
class InvokeEnvironment:
    """What a world gives the function: infrastructure env, declared-variable overrides, the event."""

    extra_env: dict[str, str] = field(default_factory=dict)  # endpoint, credentials, CA bundle...
    env_overrides: dict[str, str] = field(default_factory=dict)  # declared variables only
    event: Any = None  # the event to send, if the world rewrote it (e.g. real bucket names)


InvokeEnvironmentFactory = Callable[[Stack, FunctionSpec, Any], AbstractContextManager[InvokeEnvironment]]


@contextmanager
def moto_world(stack: Stack, function: FunctionSpec, event: Any) -> Iterator[InvokeEnvironment]:
    """Default world: a fresh moto server with the template's resources."""
    del function  # every function sees the whole provisioned stack
    with MotoServer() as server:
        aws = LocalAws(server.endpoint_url, stack.region, stack.account_id)
        aws.provision(stack)
        yield InvokeEnvironment(extra_env=aws.env(), event=event)


@contextmanager
def no_world(stack: Stack, function: FunctionSpec, event: Any) -> Iterator[InvokeEnvironment]:
    """No services at all: the handler gets only its template environment."""
    del stack, function
    yield InvokeEnvironment(event=event)


@contextmanager
def whole_world(stack: Stack, function: FunctionSpec, event: Any) -> Iterator[InvokeEnvironment]:
    """The whole local world: moto with the stack's resources, the emulator, the key in the stack's
    secret, and the sample recording at every object the event names."""
    del function
    key = new_api_key()
    with services(key, None, None) as (moto, emulator):
        aws = LocalAws(moto.endpoint_url, stack.region, stack.account_id)
        aws.provision(stack)
        aws.create_secret(stack.parameters["DeepgramSecretId"], key)
        seed_objects(aws, event)
        yield InvokeEnvironment(
            extra_env={**aws.env(), "REQUESTS_CA_BUNDLE": str(emulator.ca_bundle)},
            env_overrides={"DEEPGRAM_API_URL": emulator.url},
        )


WORLDS: dict[str, InvokeEnvironmentFactory] = {"local": whole_world, "moto": moto_world, "none": no_world}
# Parameter defaults per world, for parameters the template leaves without one.
WORLD_PARAMETERS: dict[str, dict[str, str]] = {"local": {"DeepgramSecretId": LOCAL_SECRET_ID}}


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def env_overrides_from_file(
    data: Mapping[str, Any], function: FunctionSpec
) -> tuple[dict[str, str], list[str]]:
    """The `--env-vars` overrides for one function, and the names ignored as undeclared.

    Format as in `sam local invoke --env-vars`: {"Parameters": {...}} applies to every
    function, {"<LogicalId>": {...}} (or the function name) to one; as in SAM, only
    variables the function declares in its Environment are taken.
    """
    merged: dict[str, Any] = {}
    for section in ("Parameters", function.logical_id, function.function_name):
        values = data.get(section) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"env vars section {section!r} must be an object")
        merged.update(values)
    taken = {name: _env_text(value) for name, value in merged.items() if name in function.environment}
    ignored = sorted(name for name in merged if name not in function.environment)
    return taken, ignored


def parse_parameter_overrides(items: Sequence[str]) -> dict[str, str]:
    """`K=V` or SAM's `ParameterKey=K,ParameterValue=V`, one per item."""
    overrides: dict[str, str] = {}
    for item in items:
        if item.startswith("ParameterKey="):
            key_part, _, value_part = item.partition(",ParameterValue=")
            overrides[key_part.removeprefix("ParameterKey=")] = value_part
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter override {item!r} is not KEY=VALUE")
        overrides[key] = value
    return overrides


def run_invoke(
    function_logical_id: str,
    event: Any,
    *,
    template: Path | str = "template.yaml",
    env_vars: Mapping[str, Any] | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
    world_factory: InvokeEnvironmentFactory = moto_world,
    warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> InvocationResult:
    """Load the stack, enter the world, invoke the function once, leave the world."""
    stack = load_stack(template, parameter_overrides, stack_name=stack_name)
    function = stack.function(function_logical_id)
    file_overrides, ignored = env_overrides_from_file(env_vars or {}, function)
    if ignored:
        warn(f"env vars not declared by {function_logical_id}, ignored (as sam does): {', '.join(ignored)}")
    with world_factory(stack, function, event) as world:
        overrides = {**world.env_overrides, **file_overrides}  # the user's file wins
        sent = event if world.event is None else world.event
        with LocalFunction(function, overrides, world.extra_env, max_concurrency=1) as runner:
            return runner.invoke(sent)


def _read_json(path: str) -> Any:
    if path == "-":
        return json.load(sys.stdin)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def stdout_for_the_result() -> TextIO:
    """The process's stdout, kept for the result alone; from now on whatever else writes to stdout
    (the product's logger in this process, which parses the event to seed its objects; a library's
    print) lands on stderr, so `make invoke ... | jq .` always reads one JSON document."""
    sys.stdout.flush()
    result = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return result


def main(
    argv: Sequence[str] | None = None,
    worlds: Mapping[str, InvokeEnvironmentFactory] = WORLDS,
    result_out: TextIO | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog="python -m localworld.invoke", description=__doc__.split("\n")[0])
    parser.add_argument("--function", "-f", required=True, help="logical id, e.g. TranscribeFunction")
    parser.add_argument("--event", "-e", default=None, help="event JSON file ('-' for stdin; default {})")
    parser.add_argument("--env-vars", "-n", default=None, help="sam-style env vars JSON file")
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--template", "-t", default="template.yaml")
    parser.add_argument("--stack-name", default=DEFAULT_STACK_NAME)
    parser.add_argument("--world", choices=list(worlds), default=next(iter(worlds)))
    args = parser.parse_args(argv)

    try:
        event = _read_json(args.event) if args.event else {}
        env_vars = _read_json(args.env_vars) if args.env_vars else {}
        result = run_invoke(
            args.function,
            event,
            template=args.template,
            env_vars=env_vars,
            parameter_overrides={
                **WORLD_PARAMETERS.get(args.world, {}),
                **parse_parameter_overrides(args.parameter_overrides),
            },
            stack_name=args.stack_name,
            world_factory=worlds[args.world],
        )
    except (TemplateError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in result.logs:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    out = result_out or sys.stdout
    print(json.dumps(result.error if result.error else result.payload, indent=2), file=out, flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(result_out=stdout_for_the_result()))
