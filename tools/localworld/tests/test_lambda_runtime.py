"""LocalFunction: environment, sys.path, context, warm reuse, concurrency cap, timeouts, errors, logs."""

import dataclasses
import os
import threading
import time

import pytest

from localworld import lambda_runtime
from localworld.lambda_runtime import InvocationResult, LocalFunction, build_environment
from localworld.template import FunctionSpec, Stack

EXTRA_ENV = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_REGION": "eu-central-1",
    "REQUESTS_CA_BUNDLE": "/ca.pem",
}


@pytest.fixture
def echo(fixture_stack: Stack) -> FunctionSpec:
    return fixture_stack.function("EchoFunction")


def with_handler(spec: FunctionSpec, handler: str, **changes: object) -> FunctionSpec:
    return dataclasses.replace(spec, handler=handler, **changes)  # type: ignore[arg-type]


def test_environment_is_exactly_template_overrides_extra_and_lambda(
    echo: FunctionSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_ONLY_VARIABLE", "must not leak")

    with LocalFunction(echo, {"LOG_LEVEL": "ERROR"}, EXTRA_ENV) as function:
        result = function.invoke({})

    env = result.payload["env"]
    trace_id = env.pop("_X_AMZN_TRACE_ID")
    assert trace_id.startswith("Root=1-")
    stream = env["AWS_LAMBDA_LOG_STREAM_NAME"]
    tmp_dir = env["TMPDIR"]
    assert env == build_environment(
        echo, {"LOG_LEVEL": "ERROR"}, EXTRA_ENV, log_stream_name=stream, tmp_dir=tmp_dir
    )
    assert not os.path.exists(tmp_dir)  # each container's /tmp goes with it
    assert "HOST_ONLY_VARIABLE" not in env
    assert env["LOG_LEVEL"] == "ERROR"
    assert env["OUTPUT_BUCKET"] == "transcriber-local-outputbucket"
    assert env["REQUESTS_CA_BUNDLE"] == "/ca.pem"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-central-1"
    assert env["_HANDLER"] == "echo.handler"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.13"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "transcriber-local-EchoFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/transcriber-local-EchoFunction"
    assert env["LAMBDA_TASK_ROOT"] == str(echo.code_uri)


def test_undeclared_override_is_rejected(echo: FunctionSpec) -> None:
    with pytest.raises(ValueError, match="NOT_DECLARED"):
        LocalFunction(echo, {"NOT_DECLARED": "x"})


def test_code_then_layers_on_sys_path_and_context(echo: FunctionSpec) -> None:
    with LocalFunction(echo) as function:
        result = function.invoke({"k": "v"})

    payload = result.payload
    assert payload["sys_path"][:2] == [str(echo.code_uri), str(echo.layers[0])]
    assert payload["cwd"] == str(echo.code_uri)
    assert payload["layer"] == "hello from the layer"
    assert payload["event"] == {"k": "v"}
    context = payload["context"]
    assert context["aws_request_id"] == result.request_id
    assert context["function_name"] == "transcriber-local-EchoFunction"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == echo.function_arn
    assert context["memory_limit_in_mb"] == "512"  # a string, as the Python runtime passes it
    assert context["log_group_name"] == "/aws/lambda/transcriber-local-EchoFunction"
    assert context["log_stream_name"].endswith(payload["env"]["AWS_LAMBDA_LOG_STREAM_NAME"][-32:])
    assert 1000 < context["remaining_ms"] <= 2000


def test_container_is_reused_warm(echo: FunctionSpec) -> None:
    with LocalFunction(echo) as function:
        first, second = function.invoke({}), function.invoke({})

    assert (first.cold_start, second.cold_start) == (True, False)
    assert first.init_duration_s is not None
    assert second.init_duration_s is None
    assert first.payload["pid"] == second.payload["pid"]
    assert second.payload["invocations"] == 2
    assert first.logs[0].startswith("INIT_START")
    assert second.logs[0] == f"START RequestId: {second.request_id} Version: $LATEST"
    assert second.logs[-2] == f"END RequestId: {second.request_id}"
    assert second.logs[-1].startswith(f"REPORT RequestId: {second.request_id}\tDuration: ")


def test_containers_run_nicer_than_the_local_worlds_services(echo: FunctionSpec) -> None:
    # On AWS no container shares a CPU with S3, DynamoDB or Deepgram: in the benches the services keep
    # priority; tests run containers at their own (the default).
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    with LocalFunction(echo, nice=lambda_runtime.FUNCTION_NICE) as nicer, LocalFunction(echo) as same:
        nicer_pid = nicer.invoke({}).payload["pid"]
        same_pid = same.invoke({}).payload["pid"]

        assert os.getpriority(os.PRIO_PROCESS, nicer_pid) == min(19, ours + lambda_runtime.FUNCTION_NICE)
        assert os.getpriority(os.PRIO_PROCESS, same_pid) == ours
    assert lambda_runtime.FUNCTION_NICE > 0


def _invoke_in_parallel(function: LocalFunction, events: list[dict[str, float]]) -> list[InvocationResult]:
    results: list[InvocationResult] = []
    lock = threading.Lock()

    def run(event: dict[str, float]) -> None:
        result = function.invoke(event)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrency_is_capped_by_reserved_concurrency(echo: FunctionSpec) -> None:
    spec = with_handler(echo, "sleepy.handler", reserved_concurrency=2)
    with LocalFunction(spec) as function:
        started = time.monotonic()
        results = _invoke_in_parallel(function, [{"seconds": 0.3}] * 3)
        elapsed = time.monotonic() - started
        assert function.container_count == 2

    assert all(r.ok for r in results)
    assert len({r.payload["pid"] for r in results}) == 2
    assert sorted(r.cold_start for r in results) == [False, True, True]
    assert elapsed >= 0.6  # the third invocation waited for a free container


def test_without_a_cap_each_concurrent_invocation_gets_a_container(echo: FunctionSpec) -> None:
    spec = with_handler(echo, "sleepy.handler")
    with LocalFunction(spec, max_concurrency=None) as function:
        results = _invoke_in_parallel(function, [{"seconds": 0.2}] * 3)

    assert len({r.payload["pid"] for r in results}) == 3


def test_reserved_concurrency_zero_throttles(echo: FunctionSpec) -> None:
    with LocalFunction(dataclasses.replace(echo, reserved_concurrency=0)) as function:
        result = function.invoke({})

    assert result.error is not None
    assert result.error["errorType"] == "TooManyRequestsException"


def test_timeout_kills_the_container(echo: FunctionSpec) -> None:
    with LocalFunction(with_handler(echo, "sleepy.handler"), timeout_s=0.5) as function:
        timed_out = function.invoke({"seconds": 5})
        next_one = function.invoke({"seconds": 0})

    assert timed_out.error is not None
    assert timed_out.error["errorType"] == "Sandbox.Timedout"
    assert timed_out.error["errorMessage"].endswith("Task timed out after 0.50 seconds")
    assert "going to sleep" in timed_out.logs
    assert "woke up" not in timed_out.logs
    assert 0.5 <= timed_out.duration_s < 1.5
    assert next_one.ok
    assert next_one.cold_start  # the timed-out container is gone


def test_an_init_past_the_limit_is_run_again_within_the_invocation(
    echo: FunctionSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lambda: an on-demand init that passes 10 s is started again at the first invocation, under
    # the function's timeout; the invocation does not fail (a busy host's slow imports did).
    monkeypatch.setattr(lambda_runtime, "INIT_TIMEOUT_S", 0.5)
    with LocalFunction(with_handler(echo, "slowinit.handler"), timeout_s=20) as function:
        result = function.invoke({})

    assert result.ok, result.error
    assert result.cold_start
    assert sum(line.startswith("INIT_START") for line in result.logs) == 2
    assert result.payload["remaining_ms"] < 19_000  # the second init came out of the timeout


def test_a_second_init_leaves_the_invocation_only_what_is_left_of_its_timeout(
    echo: FunctionSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lambda_runtime, "INIT_TIMEOUT_S", 0.5)
    with LocalFunction(with_handler(echo, "slowinit.handler"), timeout_s=2.5) as function:
        result = function.invoke({"seconds": 2})

    assert result.error is not None
    assert result.error["errorType"] == "Sandbox.Timedout"


def test_handler_exception_is_reported_like_lambda(echo: FunctionSpec) -> None:
    with LocalFunction(with_handler(echo, "boom.handler")) as function:
        failed = function.invoke({"reason": "silence"})
        again = function.invoke({})

    assert failed.payload is None
    assert failed.error is not None
    assert failed.error["errorType"] == "TranscriptionFailedError"
    assert failed.error["errorMessage"] == "cannot transcribe: silence"
    frames = failed.error["stackTrace"]
    assert len(frames) == 2
    assert all("boom.py" in frame for frame in frames)  # no runtime frames
    assert "about to fail" in failed.logs
    assert "[ERROR] TranscriptionFailedError: cannot transcribe: silence" in failed.logs
    assert not again.cold_start  # an exception does not cost the container


def test_logs_are_split_by_invocation(echo: FunctionSpec) -> None:
    with LocalFunction(with_handler(echo, "printer.handler")) as function:
        first, second = function.invoke({"n": 1}), function.invoke({"n": 2})

    start = first.logs.index(f"START RequestId: {first.request_id} Version: $LATEST")
    assert first.logs.index("init: module imported") < start
    assert first.payload == 1
    for result, n in ((first, 1), (second, 2)):
        for line in (
            f"stdout line for {n}",
            f"stderr line for {n}",
            f"logging line for {n}",
            "no newline at the end",
        ):
            assert line in result.logs
    assert "init: module imported" not in second.logs
    assert "stdout line for 1" not in second.logs


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        ("badimport.handler", "Runtime.ImportModuleError"),
        ("echo.missing", "Runtime.HandlerNotFound"),
        ("misc.exit_process", "Runtime.ExitError"),
        ("misc.unserializable", "Runtime.MarshalError"),
    ],
)
def test_runtime_errors(echo: FunctionSpec, handler: str, error_type: str) -> None:
    with LocalFunction(with_handler(echo, handler)) as function:
        result = function.invoke({})

    assert result.error is not None
    assert result.error["errorType"] == error_type


def test_return_values_are_json(echo: FunctionSpec) -> None:
    with LocalFunction(with_handler(echo, "misc.decimals")) as function:
        assert function.invoke({}).payload == {"int": 3, "float": 2.5}
    with LocalFunction(with_handler(echo, "misc.returns_none")) as function:
        result = function.invoke({})
        assert result.ok
        assert result.payload is None


def test_close_stops_all_workers(echo: FunctionSpec) -> None:
    function = LocalFunction(echo)
    pid = function.invoke({}).payload["pid"]
    function.close()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        function.invoke({})


def report_line(result: InvocationResult) -> str:
    return next(line for line in result.logs if line.startswith(f"REPORT RequestId: {result.request_id}"))


def test_memory_over_memorysize_kills_the_container_like_lambda(echo: FunctionSpec) -> None:
    spec = with_handler(echo, "hungry.handler", memory_mb=128)
    with LocalFunction(spec) as function:
        killed = function.invoke({"mb": 300})
        next_one = function.invoke({"mb": 10})

    assert killed.error == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {killed.request_id} Error: Runtime exited with error: signal: killed",
        "stackTrace": [],
    }
    assert "allocated" not in killed.logs  # killed while allocating, not after
    report = report_line(killed)
    assert "Memory Size: 128 MB\tMax Memory Used: 128 MB" in report
    assert report.endswith("Status: error\tError Type: Runtime.OutOfMemory")
    assert killed.max_memory_mb == 128
    assert next_one.ok
    assert next_one.cold_start  # the killed container is gone


def test_a_spike_freed_before_returning_is_still_out_of_memory(echo: FunctionSpec) -> None:
    spec = with_handler(echo, "hungry.handler", memory_mb=128)
    with LocalFunction(spec) as function:
        spiked = function.invoke({"mb": 200, "free": True})

    assert spiked.error is not None
    assert spiked.error["errorType"] == "Runtime.OutOfMemory"


def test_a_child_process_counts_against_the_sandbox(echo: FunctionSpec) -> None:
    spec = with_handler(echo, "hungry.handler", memory_mb=128)
    with LocalFunction(spec) as function:
        result = function.invoke({"mb": 0, "child_mb": 200})

    assert result.error is not None
    assert result.error["errorType"] == "Runtime.OutOfMemory"


def test_memory_under_memorysize_is_reported_not_killed(echo: FunctionSpec) -> None:
    spec = with_handler(echo, "hungry.handler", memory_mb=256)
    with LocalFunction(spec) as function:
        result = function.invoke({"mb": 64})
        unenforced = LocalFunction(with_handler(echo, "hungry.handler", memory_mb=128), enforce_memory=False)
        with unenforced:
            over = unenforced.invoke({"mb": 200})

    assert result.ok, result.error
    assert result.max_memory_mb is not None
    assert 64 < result.max_memory_mb <= 256
    assert f"Max Memory Used: {result.max_memory_mb} MB" in report_line(result)
    assert over.ok  # measurements may switch enforcement off
    assert over.max_memory_mb is not None
    assert over.max_memory_mb > 200


def test_each_container_has_its_own_tmp(echo: FunctionSpec) -> None:
    # Each Lambda sandbox has its own /tmp: what one container keeps there, another never sees.
    with LocalFunction(with_handler(echo, "misc.tmp_dir"), max_concurrency=None) as function:
        results = _invoke_in_parallel(function, [{"sleep": 0.5}] * 2)
        dirs = {r.payload for r in results}
        assert all(os.path.isfile(os.path.join(d, "kept")) for d in dirs)

    assert len(dirs) == 2
    assert not any(os.path.exists(d) for d in dirs)  # gone with the containers
