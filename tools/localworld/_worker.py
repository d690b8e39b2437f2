"""One local Lambda "container": imports the handler once, then serves invocations.

Run by `localworld.lambda_runtime` as `python -I -u _worker.py <request_fd> <response_fd>`
(standard library only, so the function's own imports resolve as on Lambda). Protocol:
JSON lines. The parent writes `{"type": "invoke", ...}` on request_fd; the worker answers
on response_fd with `ready` / `init_error` once after the import, then `result` or
`error` per invocation. stdout/stderr stay the function's log streams; after the init and
after each invocation the worker writes a marker line to both, so the parent knows every
log line of that phase has arrived.
"""

import contextlib
import decimal
import importlib
import json
import os
import resource
import sys
import time
import traceback
from typing import Any

MARKER_PREFIX = "\x1elocalworld:"


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn: str = request["invoked_function_arn"]
        # The Python runtime passes the environment string through; Powertools accepts both.
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.aws_request_id: str = request["request_id"]
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms: int = request["deadline_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},function_name={self.function_name},"
            f"function_version={self.function_version},invoked_function_arn={self.invoked_function_arn}])"
        )


def _json_default(value: object) -> object:
    # The Lambda runtime writes Decimals (e.g. from DynamoDB) as JSON numbers.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _error(error_type: str, message: str, stack: list[str] | None = None) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


def _exception_error(exc: BaseException, skip_frames: int) -> dict[str, Any]:
    # Drop the runtime's own frames, as Lambda does, so the trace starts in the handler.
    frames = traceback.extract_tb(exc.__traceback__)[skip_frames:]
    return _error(type(exc).__name__, str(exc), traceback.format_list(frames))


def _log_exception(error: dict[str, Any], request_id: str | None) -> None:
    # The Python runtime logs "[ERROR] Type: message" plus the traceback for handler errors.
    sys.stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")
    if error["stackTrace"]:
        sys.stderr.write("Traceback (most recent call last):\n" + "".join(error["stackTrace"]))
    if request_id:
        sys.stderr.write(f"RequestId: {request_id}\n")


def _peak_memory_mb() -> int:
    """The REPORT line's "Max Memory Used": this process's peak resident set, rounded up.

    Read from ``VmHWM``, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve``, so it
    would count the peak of the process that started this worker."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return -(-int(line.split()[1]) // 1024)
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # ru_maxrss is KiB on Linux


def _marker(kind: str) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed or replaced stream
                stream.flush()
    line = f"{MARKER_PREFIX}{kind}\n".encode()
    os.write(1, line)
    os.write(2, line)


def _load_handler(spec: str) -> Any:
    module_part, _, function_name = spec.rpartition(".")
    if not module_part or not function_name:
        raise LookupError(_error("Runtime.MalformedHandlerName", f"Bad handler '{spec}': not enough values"))
    module_name = module_part.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(
            _error("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
        ) from exc
    except SyntaxError as exc:
        raise LookupError(
            _error("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}")
        ) from exc
    except Exception as exc:
        raise LookupError(_exception_error(exc, skip_frames=1)) from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise LookupError(
            _error("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
        )
    return handler


def main() -> None:
    request_fd, response_fd = int(sys.argv[1]), int(sys.argv[2])
    code_dir = sys.argv[3]
    layer_dirs = sys.argv[4:]
    # Function code first, then layers (/opt/python), then what the interpreter provides.
    sys.path[:0] = [code_dir, *layer_dirs]
    requests = os.fdopen(request_fd, "r", encoding="utf-8")
    responses = os.fdopen(response_fd, "w", encoding="utf-8", buffering=1)

    def respond(message: dict[str, Any]) -> None:
        responses.write(json.dumps(message) + "\n")
        responses.flush()

    started = time.monotonic()
    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except LookupError as exc:
        error = exc.args[0]
        _log_exception(error, None)
        _marker("init")
        respond({"type": "init_error", "error": error})
        return
    _marker("init")
    respond({"type": "ready", "init_duration_ms": (time.monotonic() - started) * 1000})

    for line in requests:
        request = json.loads(line)
        request_id = request["request_id"]
        os.environ["_X_AMZN_TRACE_ID"] = request["trace_id"]
        context = LambdaContext(request)
        started = time.monotonic()
        message: dict[str, Any]
        try:
            result = handler(request["event"], context)
            try:
                payload = json.dumps(result, default=_json_default)
            except (TypeError, ValueError) as exc:
                error = _error("Runtime.MarshalError", f"Unable to marshal response: {exc}")
                message = {"type": "error", "error": error}
            else:
                message = {"type": "result", "payload": payload}
        except Exception as exc:
            error = _exception_error(exc, skip_frames=1)
            _log_exception(error, request_id)
            message = {"type": "error", "error": error}
        message["duration_ms"] = (time.monotonic() - started) * 1000
        message["max_memory_mb"] = _peak_memory_mb()
        message["request_id"] = request_id
        _marker(f"end:{request_id}")
        respond(message)


if __name__ == "__main__":
    main()
