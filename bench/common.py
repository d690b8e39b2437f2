"""Shared pieces of the benchmarks: results, statistics, the baseline venv, events and handlers.

Every figure a section reports is taken inside one run of ``python -m bench``; ratios only ever
compare figures measured side by side (interleaved) in that run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote

from localworld.aws_faults import AwsFaultProxy
from localworld.lambda_runtime import InvocationResult, LocalFunction
from localworld.template import FunctionSpec
from localworld.world import SAMPLE_AUDIO, LocalWorld

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BASELINE_DIR = BENCH / "baseline"
FLOOR_DIR = BENCH / "floor"
BASELINE_REQUIREMENTS = BENCH / "baseline-requirements.txt"
RUNTIME_REQUIREMENTS = BENCH / "runtime-requirements.txt"
LAYER_REQUIREMENTS = ROOT / "layers" / "shared" / "requirements.txt"
FUNCTION = "TranscribeFunction"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dg-transcribe"


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the results table. ``ratio`` is ours / reference (None: absolute figure only)."""

    section: str
    metric: str
    ours: str
    reference: str = ""
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else ""
        met = {True: "yes", False: "NO", None: ""}[self.met]
        return [self.section, self.metric, self.ours, self.reference, ratio, self.goal, met]


HEADERS = ["section", "metric", "ours", "reference", "ratio", "goal", "met"]


@dataclass
class SectionResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min..max of a sample, in ms, to show how noisy the machine was."""
    if not values:
        return ""
    return f"{min(values) * 1000:.0f}..{max(values) * 1000:.0f} ms"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load average at start": load,
    }


def render_table(rows: Iterable[Row]) -> list[list[str]]:
    return [HEADERS, *(row.cells() for row in rows)]


def format_text_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for index, row in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_markdown_table(table: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(table[0]), line(["---"] * len(table[0])), *(line(row) for row in table[1:])])


# --------------------------------------------------------------------------- baseline venv


def _python313() -> str:
    return subprocess.run(
        [str(ROOT / "scripts" / "find-python313")], capture_output=True, text=True, check=True
    ).stdout.strip()


def cached_venv(name: str, requirements: Path, extra_inputs: Sequence[Path] = (), probe: str = "") -> Path:
    """A venv of ``requirements`` outside the clone, created once, keyed on the pins and the
    interpreter (``~/.cache/dg-transcribe/bench-<name>-venv-<hash>``); the dev venv is never touched."""
    python = _python313()
    version = subprocess.run([python, "-VV"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode())
    for path in (requirements, *extra_inputs):
        digest.update(path.read_bytes())
    venv = CACHE_ROOT / f"bench-{name}-venv-{digest.hexdigest()[:16]}"
    if (venv / ".ready").is_file():
        return venv
    say(f"creating {venv} from {requirements.name} (about 20 s)")
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    result = subprocess.run(
        [*pip, "install", "-r", str(requirements)], capture_output=True, text=True, check=False, cwd=BENCH
    )
    noise = re.compile(r"^WARNING: Location '")
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip() and not noise.match(line):
            print(line, file=sys.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"installing {requirements.name} failed (see above)")
    if probe:
        subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True)
    (venv / ".ready").touch()
    return venv


def baseline_python() -> str:
    """deepgram-sdk and boto3 (bench/baseline-requirements.txt)."""
    venv = cached_venv("baseline", BASELINE_REQUIREMENTS, probe="import deepgram, boto3, httpx")
    return str(venv / "bin" / "python")


def runtime_python() -> str:
    """What Lambda gives our function: the layer's requirements plus the runtime's boto3."""
    venv = cached_venv(
        "runtime",
        RUNTIME_REQUIREMENTS,
        extra_inputs=[LAYER_REQUIREMENTS],
        probe="import boto3, requests, aws_lambda_powertools, aws_xray_sdk",
    )
    return str(venv / "bin" / "python")


# --------------------------------------------------------------------------- handlers


def product_spec(world: LocalWorld) -> FunctionSpec:
    return world.function(FUNCTION)


def bench_spec(world: LocalWorld, code_dir: Path, name: str) -> FunctionSpec:
    """The product function's spec (environment, timeout, memory) with another handler's code and
    no layer: the baseline and the floor run in the same kind of container as ours."""
    spec = world.function(FUNCTION)
    return dataclasses.replace(
        spec,
        logical_id=name,
        function_name=f"{spec.function_name}-{name}",
        code_uri=code_dir,
        handler="app.lambda_handler",
        layers=[],
    )


def new_function(
    spec: FunctionSpec,
    extra_env: dict[str, str],
    *,
    python: str = sys.executable,
    concurrency: int = 1,
    env_overrides: dict[str, str] | None = None,
) -> LocalFunction:
    """``env_overrides``: the function's own declared variables, as ``sam local --env-vars``."""
    return LocalFunction(spec, env_overrides, extra_env=extra_env, max_concurrency=concurrency, python=python)


def check(result: InvocationResult, what: str) -> InvocationResult:
    """A failed invocation makes the figure meaningless: stop with the handler's own words."""
    if not result.ok:
        tail = "\n".join(result.logs[-15:])
        raise RuntimeError(f"{what} failed: {result.error}\n{tail}")
    payload = result.payload
    if isinstance(payload, dict) and payload.get("transcribed", 1) != 1:
        raise RuntimeError(f"{what} did not transcribe: {json.dumps(payload)[:500]}")
    return result


# --------------------------------------------------------------------------- world


class Uploader:
    """Puts the sample recording at fresh keys and builds the S3 event Lambda would receive."""

    def __init__(self, world: LocalWorld, prefix: str) -> None:
        self.world = world
        self.prefix = prefix
        self.audio = SAMPLE_AUDIO.read_bytes()
        self._count = 0
        self._lock = threading.Lock()
        self._s3 = world.aws.s3()

    def next_key(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self.prefix}/{self._count:05d}.wav"

    def upload(self, key: str | None = None) -> dict[str, Any]:
        """Upload one object; returns its S3 ObjectCreated event."""
        key = key or self.next_key()
        response = self._s3.put_object(
            Bucket=self.world.input_bucket, Key=key, Body=self.audio, ContentType="audio/wav"
        )
        return s3_event(
            self.world.input_bucket,
            key,
            size=len(self.audio),
            etag=response["ETag"].strip('"'),
            version_id=response.get("VersionId"),
            region=self.world.stack.region,
        )


def s3_event(
    bucket: str, key: str, *, size: int, etag: str, version_id: str | None, region: str
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}
    if version_id:
        obj["versionId"] = version_id
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:BENCH"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "BENCH", "x-amz-id-2": "BENCH"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "bench",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "BENCH"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }
    return {"Records": [record]}


def prime_emulator(world: LocalWorld, uploader: Uploader) -> None:
    """Have the emulator recognise the sample once, so every later request answers from its cache
    (the benchmarks time our code, not pocketsphinx)."""
    import requests

    event = uploader.upload()
    obj = event["Records"][0]["s3"]
    url = world.aws.s3().generate_presigned_url(
        "get_object", Params={"Bucket": obj["bucket"]["name"], "Key": unquote(obj["object"]["key"])}
    )
    response = requests.post(
        f"{world.emulator.url}/v1/listen?model=nova-3",
        json={"url": url},
        headers={"Authorization": f"Token {world.api_key}"},
        verify=str(world.emulator.ca_bundle),
        timeout=300,
    )
    response.raise_for_status()


# --------------------------------------------------------------------------- call counting

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/,\s]+)/aws4_request")
_QUERY_SCOPE = re.compile(
    r"X-Amz-Credential=[^&]*?(?:%2F|/)\d{8}(?:%2F|/)[^&%/]+(?:%2F|/)([a-z0-9-]+)(?:%2F|/)"
)


@dataclass(frozen=True)
class AwsCall:
    service: str  # s3, secretsmanager, dynamodb, ... ("s3-presigned" for Deepgram's download)
    operation: str  # X-Amz-Target's operation, or the HTTP method for S3
    path: str


class CountingProxy(AwsFaultProxy):
    """The local world's fault proxy, also telling which service and operation each request was
    for (the proxy's own log has method and path only; Secrets Manager and DynamoDB both POST /)."""

    def __init__(self, upstream_url: str) -> None:
        super().__init__(upstream_url)
        self._calls: list[AwsCall] = []
        self._calls_lock = threading.Lock()

    def _forward(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = list(headers)
        named = {name.lower(): value for name, value in headers}
        path, _, query = target.partition("?")
        service = "unknown"
        if match := _SCOPE.search(named.get("authorization", "")):
            service = match.group(1)
        elif match := _QUERY_SCOPE.search(query):
            service = f"{match.group(1)}-presigned"
        amz_target = named.get("x-amz-target", "")
        operation = amz_target.rsplit(".", 1)[-1] if amz_target else method
        with self._calls_lock:
            self._calls.append(AwsCall(service, operation, path))
        return super()._forward(method, target, headers, body)

    @property
    def calls(self) -> list[AwsCall]:
        with self._calls_lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    def tally(self) -> Counter[str]:
        return Counter(call.service for call in self.calls)

    def operations(self, service: str) -> Counter[str]:
        return Counter(call.operation for call in self.calls if call.service == service)


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
