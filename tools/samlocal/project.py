"""This project's ``sam build`` / ``sam local invoke`` / ``sam local start-lambda`` against the local world.

What differs from ``sam local invoke`` on a laptop with Docker, and why (see ``local_template``):

* the functions run on this host's architecture (the stack deploys arm64; on an x86_64 machine
  an arm64 container would need CPU emulation), so the local build uses the host's wheels;
* ``AWS_ENDPOINT_URL`` and ``REQUESTS_CA_BUNDLE`` are declared (empty) on every function, because
  SAM's ``--env-vars`` only sets variables the template declares; the ``--env-vars`` file
  (``env_vars``) then gives them the local world's values, next to the functions' own settings;
* the local world's CA certificate is copied into each built function, so the container sees it
  at ``/var/task/localworld-ca.pem``.

The handler code, the layer and everything else in the template are used unchanged.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samstack import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
SAM = [sys.executable, "-m", "samlocal.sam"]
FUNCTIONS = ("TranscribeFunction", "RetryFunction")
CA_FILE_NAME = "localworld-ca.pem"
CA_IN_CONTAINER = f"/var/task/{CA_FILE_NAME}"
# Declared here so --env-vars can set them; the deployed stack never sets them.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "REQUESTS_CA_BUNDLE")
SAM_BUILD_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dg-transcribe" / "sam-build"
)


class SamError(RuntimeError):
    pass


def local_template(template: Mapping[str, Any], architecture: str, root: Path = ROOT) -> dict[str, Any]:
    """``template.yaml`` as ``sam local`` runs it here (see the module docstring)."""
    local = copy.deepcopy(dict(template))
    function_globals = local.setdefault("Globals", {}).setdefault("Function", {})
    function_globals["Architectures"] = [architecture]
    variables = function_globals.setdefault("Environment", {}).setdefault("Variables", {})
    for name in ENDPOINT_VARIABLES:
        variables.setdefault(name, "")
    for resource in local.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function":
            if "Architectures" in properties:
                properties["Architectures"] = [architecture]
            _absolute(properties, "CodeUri", root)
        elif kind == "AWS::Serverless::LayerVersion":
            metadata = resource.setdefault("Metadata", {})
            if "BuildArchitecture" in metadata:
                metadata["BuildArchitecture"] = architecture
            if "CompatibleArchitectures" in properties:
                properties["CompatibleArchitectures"] = [architecture]
            _absolute(properties, "ContentUri", root)
    return local


def _absolute(properties: dict[str, Any], name: str, root: Path) -> None:
    value = properties.get(name)
    if isinstance(value, str) and not value.startswith("s3://"):
        properties[name] = str((root / value).resolve())


def write_local_template(directory: Path, architecture: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "template.json"
    path.write_text(json.dumps(local_template(load_template(TEMPLATE), architecture), indent=1))
    return path


def sam_env(aws_endpoint_url: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment SAM runs with: this venv's python3.13 first on PATH (sam build needs it),
    no telemetry, and dummy credentials, which SAM hands to the function containers. SAM's own
    AWS calls (``sam local`` asks STS for the account id) go to ``aws_endpoint_url``, the local
    world, instead of waiting for AWS."""
    endpoint = {"AWS_ENDPOINT_URL": aws_endpoint_url} if aws_endpoint_url else {}
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), str(ROOT)]),
        "SAM_CLI_TELEMETRY": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        **endpoint,
        **dict(extra or {}),
    }


def run_sam(
    args: Sequence[str], env: Mapping[str, str], *, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SAM, *args], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-6000:]}"


def sam_build(
    template: Path, workspace: Path, env: Mapping[str, str], *, resource: str | None = None
) -> Path:
    """``sam build`` of ``template`` (or of one ``resource`` in it) into ``workspace/build``, with
    sam's dependency cache kept outside the clone like the template tests do and serialised with
    them; returns the built template."""
    build_dir = workspace / "build"
    SAM_BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    checkout_key = hashlib.sha256(f"{template.name}:{resource}:{ROOT}".encode()).hexdigest()[:12]
    saved_graph = SAM_BUILD_CACHE / f"build-samlocal-{checkout_key}.toml"
    graph = workspace / "build.toml"
    if saved_graph.is_file():
        shutil.copyfile(saved_graph, graph)
    args = ["build", *([resource] if resource else []), "--template", str(template)]
    args += [
        "--build-dir",
        str(build_dir),
        "--cached",
        "--cache-dir",
        str(SAM_BUILD_CACHE / "cache"),
        "--parallel",
    ]
    with (SAM_BUILD_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # cwd is the cache root because sam keeps downloaded dependencies in ./.aws-sam/deps.
        result = run_sam(args, env, cwd=SAM_BUILD_CACHE, timeout=600)
    if result.returncode != 0:
        raise SamError(f"sam build failed: {explain(result)}")
    if graph.is_file():
        shutil.copyfile(graph, saved_graph)
    return build_dir / "template.yaml"


def install_ca(built_template: Path, ca_bundle: Path) -> None:
    """Put the local world's CA into every built function (mounted at /var/task)."""
    for function in FUNCTIONS:
        shutil.copyfile(ca_bundle, built_template.parent / function / CA_FILE_NAME)


@dataclass(frozen=True)
class Endpoints:
    aws_endpoint_url: str
    function_environments: Mapping[str, Mapping[str, str]]  # logical id -> its resolved variables


def env_vars(endpoints: Endpoints) -> dict[str, dict[str, str]]:
    """The ``--env-vars`` document: each function's settings for the local world's stack, plus
    the endpoint of AWS and the CA that signed the Deepgram emulator's certificate."""
    return {
        function: {
            **dict(variables),
            "AWS_ENDPOINT_URL": endpoints.aws_endpoint_url,
            "REQUESTS_CA_BUNDLE": CA_IN_CONTAINER,
        }
        for function, variables in endpoints.function_environments.items()
    }


@dataclass(frozen=True)
class Invocation:
    payload: Any
    result: subprocess.CompletedProcess[str]

    @property
    def error_type(self) -> str | None:
        """``sam local invoke`` exits 0 when the handler raises: the payload says so."""
        if isinstance(self.payload, dict) and "errorType" in self.payload:
            return str(self.payload["errorType"])
        return None


def local_invoke(
    built_template: Path,
    function: str,
    event: Path,
    *,
    env_vars_file: Path,
    env: Mapping[str, str],
    parameter_overrides: Mapping[str, str],
) -> Invocation:
    args = [
        "local",
        "invoke",
        function,
        "--template",
        str(built_template),
        "--config-file",
        str(SAMCONFIG),
        "--event",
        str(event),
        "--env-vars",
        str(env_vars_file),
        "--docker-network",
        "host",
        "--parameter-overrides",
        " ".join(f"{name}={value}" for name, value in parameter_overrides.items()),
    ]
    result = run_sam(args, env)
    if result.returncode != 0:
        raise SamError(f"sam local invoke {function} {event.name} failed: {explain(result)}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        raise SamError(f"sam local invoke {function} {event.name} printed no payload: {explain(result)}")
    return Invocation(json.loads(lines[-1]), result)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def start_lambda(
    built_template: Path,
    env_vars_file: Path,
    env: Mapping[str, str],
    parameter_overrides: Mapping[str, str],
    log_path: Path,
    *,
    timeout: float = 120,
) -> Iterator[str]:
    """``sam local start-lambda`` on 127.0.0.1; yields its endpoint URL, stops it by PID."""
    port = free_port()
    args = [
        "local",
        "start-lambda",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--template",
        str(built_template),
        "--config-file",
        str(SAMCONFIG),
        "--env-vars",
        str(env_vars_file),
        "--docker-network",
        "host",
        "--parameter-overrides",
        " ".join(f"{name}={value}" for name, value in parameter_overrides.items()),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SAM, *args],
            cwd=ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SamError(
                    f"sam local start-lambda exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SamError(
                        f"sam local start-lambda did not listen:\n{log_path.read_text()}"
                    ) from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # SAM's own Ctrl-C path removes its containers
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
