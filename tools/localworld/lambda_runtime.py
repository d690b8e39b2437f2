"""A Docker-free Lambda runtime: run a template's handler in reusable worker processes.

Each worker process stands in for one Lambda execution environment ("container"): it is
started with the project's interpreter and exactly the environment Lambda would give the
function, imports the handler once (the cold start) and then serves invocations one at a
time. `LocalFunction.invoke` reuses an idle container, starts a new one when all are
busy, and waits when `max_concurrency` containers are busy (synchronous invocation). A
handler that runs past the function's Timeout gets its container killed, as on Lambda, and so
does a container whose memory passes the function's MemorySize (`Runtime.OutOfMemory`): a
watchdog thread polls the worker's peak resident set (`VmHWM` in /proc, which no spike between
two polls can hide) plus the resident memory of any process it started, and the worker's own
peak is checked again when an invocation ends, so a handler that finishes quickly after a spike
is still reported as killed, as Lambda's sandbox-wide cgroup limit would have killed it.

Worker protocol (see `localworld._worker`): JSON lines over two dedicated pipes, one per
direction, so the handler's stdout and stderr remain its log streams; marker lines on
both streams separate one invocation's logs from the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self

from localworld._worker import MARKER_PREFIX
from localworld.template import FunctionSpec

logger = logging.getLogger(__name__)

_WORKER_SCRIPT: Final = Path(__file__).with_name("_worker.py")
# Lambda gives the init phase (module import) its own 10-second limit. An on-demand function's init
# that runs past it does not fail: Lambda starts the init again at the first invocation, under the
# function's timeout (the "Init phase" of the Lambda execution environment lifecycle).
INIT_TIMEOUT_S: Final = 10.0
# How long to wait for the last log lines once a result is in (they were written before it).
_LOG_DRAIN_S: Final = 2.0
# How often the memory watchdog reads /proc (VmHWM is a peak, so a poll misses no spike, it can
# only see it late; a handler that finishes before the next poll is judged by its peak all the
# same, see LocalFunction.invoke). Faster polling costs the whole local world: forty containers
# at 20 ms held the GIL of the process that also serves moto and the emulator a third of the time.
MEMORY_POLL_S: Final = 0.1
_MIB: Final = 1024 * 1024
# The benches' containers run this much nicer than the local world's services (moto, the Deepgram
# emulator, the delivery threads): on AWS those services are remote, with capacity of their own, and
# no Lambda container shares a CPU with them; here all share the machine's cores, and a backfill's 24
# containers on 2 cores made S3 calls 4x slower. Only CPU priority: concurrency, timeouts, pool sizes
# and every call stay as they are. Tests run containers at their own priority (nice=0, the default):
# under make test's load, nice containers took 5 s to start an invocation and outlived a close.
FUNCTION_NICE: Final = 10

FROM_SPEC: Final = "reserved"
"""Default for `max_concurrency`: the function's ReservedConcurrentExecutions (else no cap)."""


@dataclass(frozen=True)
class InvocationResult:
    """One invocation, shaped like a synchronous Lambda invoke plus its CloudWatch log lines."""

    request_id: str
    payload: Any  # JSON-decoded return value; None on error (or when the handler returned None)
    error: dict[str, Any] | None  # errorType, errorMessage, stackTrace as Lambda reports them
    logs: list[str]
    duration_s: float
    cold_start: bool
    init_duration_s: float | None = None
    max_memory_mb: int | None = None
    container_id: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Container:
    """One worker process with its pipes and the readers that collect its output."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, memory_mb: int | None = None, nice: int = 0
    ) -> None:
        self.container_id = uuid.uuid4().hex
        # Its own temporary directory, as each Lambda sandbox has its own /tmp (gone with it).
        self.tmp_dir = env.get("TMPDIR")
        self.memory_mb = memory_mb
        # Set (to the memory seen, MiB) when the watchdog killed the worker for passing memory_mb.
        self.out_of_memory_mb: int | None = None
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [*argv[:4], str(request_read), str(response_write), *argv[4:]],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(request_read, response_write),
            )
        finally:
            # The child holds its own copies; closing ours lets EOF travel both ways.
            os.close(request_read)
            os.close(response_write)
        if nice:
            _lower_priority(self.process.pid, nice)
        self._requests: IO[str] = os.fdopen(request_write, "w", encoding="utf-8")
        self.responses: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._output = threading.Condition()
        self._lines: list[str] = []
        self._markers: dict[str, int] = {}
        self._closed_streams = 0
        if self.process.stdout is None or self.process.stderr is None:
            raise RuntimeError("worker started without output pipes")
        self._threads = [
            threading.Thread(target=self._read_log, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._read_log, args=(self.process.stderr,), daemon=True),
            threading.Thread(target=self._read_responses, args=(response_read,), daemon=True),
        ]
        if memory_mb is not None:
            self._threads.append(threading.Thread(target=self._watch_memory, args=(memory_mb,), daemon=True))
        for thread in self._threads:
            thread.start()

    def _watch_memory(self, limit_mb: int) -> None:
        """Kill the worker, as Lambda's cgroup would, once its memory passes ``limit_mb``."""
        pid = self.process.pid
        while self.process.poll() is None:
            used = sandbox_memory_bytes(pid)
            if used is not None and used > limit_mb * _MIB:
                self.out_of_memory_mb = -(-used // _MIB)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                return
            time.sleep(MEMORY_POLL_S)

    def _read_log(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            text, _, marker = line.partition(MARKER_PREFIX)
            with self._output:
                if text or not marker:
                    self._lines.append(text)
                if marker:
                    self._markers[marker] = self._markers.get(marker, 0) + 1
                    self._output.notify_all()
        stream.close()
        with self._output:
            self._closed_streams += 1
            self._output.notify_all()

    def _read_responses(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8") as stream:
            for line in stream:
                self.responses.put(json.loads(line))
        self.responses.put(None)  # the worker exited

    def wait_for_marker(self, marker: str, timeout: float) -> None:
        """Wait until `marker` came through stdout and stderr (or both streams closed)."""
        with self._output:
            self._output.wait_for(
                lambda: self._markers.get(marker, 0) >= 2 or self._closed_streams == 2, timeout
            )

    def wait_for_exit(self, timeout: float) -> int | None:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        with self._output:
            self._output.wait_for(lambda: self._closed_streams == 2, timeout)
        return code

    def take_lines(self) -> list[str]:
        with self._output:
            lines, self._lines = self._lines, []
        return lines

    def send(self, message: dict[str, Any]) -> bool:
        try:
            self._requests.write(json.dumps(message) + "\n")
            self._requests.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()
        self.close_requests()
        self._remove_tmp()

    def stop(self, grace_s: float = 1.0) -> None:
        """Close the request pipe (the worker's loop ends), then kill if it lingers."""
        self.close_requests()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp_dir and not self.alive:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def close_requests(self) -> None:
        with contextlib.suppress(OSError):  # the worker is already gone
            self._requests.close()


def _lower_priority(pid: int, nice: int) -> None:
    """Run ``pid`` ``nice`` steps nicer than this process (set just after exec, before the worker's
    imports: preexec_fn is unsafe in a threaded parent)."""
    with contextlib.suppress(ProcessLookupError):  # a worker that already exited needs none
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))


def _status_kib(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children", encoding="ascii") as children:
                kids = [int(child) for child in children.read().split()]
        except (OSError, ValueError):
            kids = []
        found += kids
        pending += kids
    return found


def sandbox_memory_bytes(pid: int) -> int | None:
    """What a Lambda sandbox's memory limit sees, at least: the worker's peak resident set
    (``VmHWM``) plus the current resident set of every process it started. None once it is gone."""
    peak = _status_kib(pid, "VmHWM:")
    if peak is None:
        return None
    children = sum(_status_kib(child, "VmRSS:") or 0 for child in _descendants(pid))
    return (peak + children) * 1024


def build_environment(
    spec: FunctionSpec,
    env_overrides: Mapping[str, str],
    extra_env: Mapping[str, str],
    *,
    log_stream_name: str,
    python: str = sys.executable,
    tmp_dir: str | None = None,
) -> dict[str, str]:
    """The complete environment of one container, nothing inherited from this process.
    ``tmp_dir`` stands in for the sandbox's own /tmp (``TMPDIR``, which Python's tempfile uses)."""
    undeclared = sorted(set(env_overrides) - set(spec.environment))
    if undeclared:
        # Same rule as `sam local invoke --env-vars`: only declared variables can be overridden.
        raise ValueError(f"{spec.logical_id} does not declare {', '.join(undeclared)} in Environment")
    region = extra_env.get("AWS_REGION", spec.region)
    runtime_defaults = {
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        # What `sam local` sets; Powertools Tracer and others use it to stay off the network.
        "AWS_SAM_LOCAL": "true",
    }
    reserved = {
        "_HANDLER": spec.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime or 'python3.13'}",
        "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": extra_env.get("AWS_DEFAULT_REGION", region),
        "LAMBDA_TASK_ROOT": str(spec.code_uri),
        "LAMBDA_RUNTIME_DIR": str(_WORKER_SCRIPT.parent),
    }
    if tmp_dir is not None:
        reserved["TMPDIR"] = tmp_dir
    return {**runtime_defaults, **spec.environment, **env_overrides, **extra_env, **reserved}


@dataclass(frozen=True)
class _Init:
    """What a cold start's init phase left: its log lines, the worker's answer (None: it exited
    or timed out), and the time a second init took out of the invocation's timeout."""

    logs: list[str] = field(default_factory=list)
    ready: dict[str, Any] | None = None
    reinit_s: float = 0.0


class LocalFunction:
    """Runs one FunctionSpec's handler with Lambda's container, timeout and concurrency model."""

    def __init__(
        self,
        spec: FunctionSpec,
        env_overrides: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        max_concurrency: int | Literal["reserved"] | None = FROM_SPEC,
        *,
        python: str = sys.executable,
        timeout_s: float | None = None,
        enforce_memory: bool = True,
        nice: int = 0,
    ) -> None:
        self.spec = spec
        self.nice = nice
        self._env_overrides = dict(env_overrides or {})
        self._extra_env = dict(extra_env or {})
        self._python = python
        self.timeout_s = float(spec.timeout if timeout_s is None else timeout_s)
        # MemorySize is enforced like Lambda's (the container is killed: Runtime.OutOfMemory);
        # enforce_memory=False only for measurements that must see how far a handler would go.
        self.memory_mb: int | None = spec.memory_mb if enforce_memory else None
        self.max_concurrency = spec.reserved_concurrency if max_concurrency == FROM_SPEC else max_concurrency
        # Fail now, not in the first worker, if the overrides name undeclared variables.
        build_environment(spec, self._env_overrides, self._extra_env, log_stream_name="", python=python)
        if not spec.code_uri.is_dir():
            raise FileNotFoundError(f"{spec.logical_id}: CodeUri {spec.code_uri} is not a directory")
        expected = f"python{sys.version_info.major}.{sys.version_info.minor}"
        if python == sys.executable and spec.runtime and spec.runtime != expected:
            logger.warning("%s declares %s but runs on %s", spec.logical_id, spec.runtime, expected)
        self._pool = threading.Condition()
        self._idle: list[_Container] = []
        self._busy: set[_Container] = set()
        self._starting = 0
        self._closed = False

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of this function's live containers (for memory measurements)."""
        with self._pool:
            containers = [*self._idle, *self._busy]
        return [c.process.pid for c in containers if c.alive]

    # --- pool ----------------------------------------------------------------------------

    def _acquire(self) -> _Container | None:
        """An idle warm container, or None when the caller should start a new one."""
        with self._pool:
            while True:
                if self._closed:
                    raise RuntimeError(f"{self.spec.logical_id}: LocalFunction is closed")
                while self._idle:
                    container = self._idle.pop()  # most recently used first, as Lambda tends to
                    if container.alive:
                        self._busy.add(container)
                        return container
                    container.kill()
                running = len(self._busy) + self._starting
                if self.max_concurrency is None or running < self.max_concurrency:
                    self._starting += 1
                    return None
                self._pool.wait()

    def _start_container(self) -> _Container:
        try:
            stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
            env = build_environment(
                self.spec,
                self._env_overrides,
                self._extra_env,
                log_stream_name=stream,
                python=self._python,
                tmp_dir=tempfile.mkdtemp(prefix="localworld-sandbox-tmp-"),
            )
            argv = [self._python, "-I", "-u", str(_WORKER_SCRIPT)]
            layer_args = [str(layer) for layer in self.spec.layers]
            container = _Container(
                [*argv, str(self.spec.code_uri), *layer_args],
                env,
                self.spec.code_uri,
                memory_mb=self.memory_mb,
                nice=self.nice,
            )
        except BaseException:
            with self._pool:
                self._starting -= 1
                self._pool.notify_all()
            raise
        with self._pool:
            self._starting -= 1
            self._busy.add(container)
        return container

    def _release(self, container: _Container) -> None:
        with self._pool:
            self._busy.discard(container)
            if container.alive and not self._closed:
                self._idle.append(container)
            else:
                container.kill()
            self._pool.notify_all()

    @property
    def container_count(self) -> int:
        with self._pool:
            return len(self._idle) + len(self._busy)

    # --- invoke ---------------------------------------------------------------------------

    def invoke(self, event: Any, *, request_id: str | None = None) -> InvocationResult:
        """Invoke synchronously (RequestResponse); thread-safe.

        `request_id` defaults to a new one; asynchronous retries pass the same id each
        time, as Lambda keeps one request id across the attempts of an async event.
        """
        request_id = request_id or str(uuid.uuid4())
        event_json = json.loads(json.dumps(event))  # Lambda only carries JSON
        if self.max_concurrency == 0:
            # Reserved concurrency 0 throttles every invocation.
            error = {
                "errorType": "TooManyRequestsException",
                "errorMessage": "Rate Exceeded.",
                "stackTrace": [],
            }
            return InvocationResult(request_id, None, error, [], 0.0, cold_start=False)
        container = self._acquire()
        cold = container is None
        if container is None:
            container = self._start_container()
        try:
            init = _Init()
            if cold:
                container, init = self._init(container)
            return self._run(container, request_id, event_json, cold, init)
        finally:
            self._release(container)

    def _init(self, container: _Container) -> tuple[_Container, _Init]:
        """The init phase; past ``INIT_TIMEOUT_S`` the init starts again in a new container, and
        that second init's time comes out of the invocation's timeout, as on Lambda."""
        logs = [f"INIT_START Runtime Version: {self.spec.runtime or 'python3.13'} (localworld)"]
        ready = self._wait(container, INIT_TIMEOUT_S)
        if ready is None and container.alive:
            logs += container.take_lines()
            container = self._replace(container)
            started = time.monotonic()
            logs.append(f"INIT_START Runtime Version: {self.spec.runtime or 'python3.13'} (localworld)")
            ready = self._wait(container, self.timeout_s)
            container.wait_for_marker("init", _LOG_DRAIN_S)
            logs += container.take_lines()
            return container, _Init(logs, ready, reinit_s=time.monotonic() - started)
        container.wait_for_marker("init", _LOG_DRAIN_S)
        logs += container.take_lines()
        return container, _Init(logs, ready)

    def _replace(self, container: _Container) -> _Container:
        """A new container in place of ``container`` (killed), counted as busy in its place."""
        container.kill()
        with self._pool:
            self._busy.discard(container)
            self._starting += 1
        return self._start_container()

    def _run(
        self, container: _Container, request_id: str, event: Any, cold: bool, init: _Init
    ) -> InvocationResult:
        logs = list(init.logs)
        init_duration_s: float | None = None
        budget_s = self.timeout_s - init.reinit_s
        if cold:
            ready = init.ready
            if ready is None or ready["type"] != "ready":
                error = ready["error"] if ready else self._exit_error(container, request_id)
                container.kill()
                logs += [f"START RequestId: {request_id} Version: $LATEST", *container.take_lines()]
                logs += self._end_lines(request_id, 0.0, None, *self._error_report(container, error))
                return InvocationResult(
                    request_id, None, error, logs, 0.0, cold, None, None, container.container_id
                )
            init_duration_s = float(ready["init_duration_ms"]) / 1000

        logs.append(f"START RequestId: {request_id} Version: $LATEST")
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + budget_s * 1000)
        request = {
            "type": "invoke",
            "request_id": request_id,
            "event": event,
            "deadline_ms": deadline_ms,
            "invoked_function_arn": self.spec.function_arn,
            "trace_id": _trace_id(),
        }
        response = self._wait(container, max(0.0, budget_s)) if container.send(request) else None
        elapsed = time.monotonic() - started
        if response is None and elapsed < budget_s:
            # The response pipe closed before the deadline: the worker is exiting; let it finish
            # so that its exit is not mistaken for a timeout.
            container.wait_for_exit(_LOG_DRAIN_S)

        if response is None and container.alive:
            # Still running at the deadline: Lambda stops the environment.
            container.kill()
            container.wait_for_exit(_LOG_DRAIN_S)
            logs += container.take_lines()
            message = f"Task timed out after {self.timeout_s:.2f} seconds"
            logs.append(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ} {request_id} {message}")
            logs += self._end_lines(request_id, elapsed, init_duration_s, None, status="timeout")
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: {message}",
                "stackTrace": [],
            }
            return InvocationResult(
                request_id, None, error, logs, elapsed, cold, init_duration_s, None, container.container_id
            )
        if response is None:
            error = self._exit_error(container, request_id)
            logs += container.take_lines()
            memory, status = self._error_report(container, error)
            logs += self._end_lines(request_id, elapsed, init_duration_s, memory, status)
            return InvocationResult(
                request_id, None, error, logs, elapsed, cold, init_duration_s, memory, container.container_id
            )

        container.wait_for_marker(f"end:{request_id}", _LOG_DRAIN_S)
        logs += container.take_lines()
        duration_s = float(response["duration_ms"]) / 1000
        memory = int(response["max_memory_mb"])
        if self.memory_mb is not None and memory > self.memory_mb:
            # The peak passed the limit between two polls and the handler finished first: on
            # Lambda the sandbox would have been killed at that peak.
            container.out_of_memory_mb = memory
            container.kill()
            error = self._exit_error(container, request_id)
            memory, status = self._error_report(container, error)
            logs += self._end_lines(request_id, duration_s, init_duration_s, memory, status)
            return InvocationResult(
                request_id,
                None,
                error,
                logs,
                duration_s,
                cold,
                init_duration_s,
                memory,
                container.container_id,
            )
        logs += self._end_lines(request_id, duration_s, init_duration_s, memory, status=None)
        payload = json.loads(response["payload"]) if response["type"] == "result" else None
        error = response.get("error") if response["type"] == "error" else None
        return InvocationResult(
            request_id,
            payload,
            error,
            logs,
            duration_s,
            cold,
            init_duration_s,
            memory,
            container.container_id,
        )

    @staticmethod
    def _wait(container: _Container, timeout_s: float) -> dict[str, Any] | None:
        try:
            return container.responses.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _error_report(self, container: _Container, error: dict[str, Any]) -> tuple[int | None, str]:
        """The REPORT line's Max Memory Used and Status for an invocation that ended in ``error``."""
        if container.out_of_memory_mb is None:
            return None, "error"
        # Lambda reports the limit it enforced as the memory used, and the error type.
        return self.memory_mb, f"error\tError Type: {error['errorType']}"

    @staticmethod
    def _exit_error(container: _Container, request_id: str) -> dict[str, Any]:
        code = container.wait_for_exit(_LOG_DRAIN_S)
        status = f"signal: {-code}" if code is not None and code < 0 else f"exit status {code}"
        if container.out_of_memory_mb is not None:
            # What Lambda answers when the sandbox passes its memory: the runtime was SIGKILLed.
            return {
                "errorType": "Runtime.OutOfMemory",
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
                "stackTrace": [],
            }
        return {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {status}",
            "stackTrace": [],
        }

    def _end_lines(
        self,
        request_id: str,
        duration_s: float,
        init_duration_s: float | None,
        max_memory_mb: int | None,
        status: str | None,
    ) -> list[str]:
        duration_ms = duration_s * 1000
        report = [
            f"REPORT RequestId: {request_id}",
            f"Duration: {duration_ms:.2f} ms",
            f"Billed Duration: {max(1, int(duration_ms + 0.999))} ms",
            f"Memory Size: {self.spec.memory_mb} MB",
        ]
        if max_memory_mb is not None:
            report.append(f"Max Memory Used: {max_memory_mb} MB")
        if init_duration_s is not None:
            report.append(f"Init Duration: {init_duration_s * 1000:.2f} ms")
        if status:
            report.append(f"Status: {status}")
        return [f"END RequestId: {request_id}", "\t".join(report)]

    # --- lifecycle ------------------------------------------------------------------------

    def close(self, grace_s: float = 1.0) -> None:
        """Stop every container; running invocations end with Runtime.ExitError.

        All containers are asked to stop at once and get `grace_s` in total to exit
        before they are killed.
        """
        with self._pool:
            self._closed = True
            containers = [*self._idle, *self._busy]
            self._idle.clear()
            self._pool.notify_all()
        for container in containers:
            container.close_requests()
        deadline = time.monotonic() + grace_s
        for container in containers:
            container.stop(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _trace_id() -> str:
    # X-Ray trace header format; Sampled=0 keeps the X-Ray SDK from trying to send segments.
    root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
    return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled=0"
