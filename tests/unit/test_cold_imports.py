"""The cold path imports nothing the first object does not need: the X-Ray SDK is loaded only when
an invocation runs with tracing on (Powertools' own test), never at import; the Deepgram key is read
without Powertools' parameters utility (which loads a provider for every parameter store); the
batch utility waits for the first SQS event."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


COLD_PATH_FREE_OF = ("aws_xray_sdk", "aws_lambda_powertools.utilities.parameters")


def run_in_a_fresh_process(probe: str, function: str = "transcribe", **env: str) -> str:
    """What ``probe`` prints in a new interpreter with the layer and ``function``'s code on its path,
    as a cold container has them."""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={
            "PYTHONPATH": f"{ROOT / 'layers' / 'shared'}:{ROOT / 'functions' / function}",
            "POWERTOOLS_SERVICE_NAME": "transcriber",
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("function", ["transcribe", "retry"])
def test_importing_a_handler_does_not_import_the_xray_sdk_or_powertools_parameters(function: str) -> None:
    probe = f"import sys, app; print(sorted(m for m in sys.modules if m.startswith({COLD_PATH_FREE_OF!r})))"
    # LAMBDA_TASK_ROOT as in Lambda: tracing would be on.
    assert run_in_a_fresh_process(probe, function, LAMBDA_TASK_ROOT="/var/task") == "[]"


def test_an_upload_handler_cold_start_does_not_import_the_batch_utility() -> None:
    """Powertools' batch utility (and the asyncio it loads) serves SQS events only: the transcribe
    handler imports it on the first SQS event, not at a cold start an S3 upload pays for."""
    probe = "import sys, app; print('aws_lambda_powertools.utilities.batch' in sys.modules)"
    assert run_in_a_fresh_process(probe) == "False"


@pytest.mark.parametrize(("task_root", "built"), [(None, False), ("/var/task", True)])
def test_the_tracer_is_built_on_the_first_traced_invocation_only(
    monkeypatch: pytest.MonkeyPatch, task_root: str | None, built: bool
) -> None:
    from transcriber.observability import LazyTracer

    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    if task_root is None:
        monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)  # outside Lambda: tracing is off
    else:
        monkeypatch.setenv("LAMBDA_TASK_ROOT", task_root)

    def echo(event: dict[str, int], context: object) -> dict[str, object]:
        return {"echo": event}

    lazy = LazyTracer()
    handler = lazy.capture_lambda_handler(echo)
    assert lazy._tracer is None  # nothing built at import

    assert handler({"a": 1}, None) == {"echo": {"a": 1}}
    assert (lazy._tracer is not None) is built


S3_NOTIFICATION = {
    "Records": [
        {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "in"}, "object": {"key": "a+b%C3%A9.wav", "size": 3}},
        }
    ]
}


def test_an_s3_upload_is_read_without_powertools_event_data_classes() -> None:
    """Powertools' data classes package loads every event type it knows (about 12 ms at a cold
    start); an S3 notification is read from its dict, so the upload's cold start never loads it."""
    probe = (
        "import sys, app; from transcriber.domain.events import parse_event; "
        "DATA_CLASSES = 'aws_lambda_powertools.utilities.data_classes'; "
        f"[obj] = parse_event({S3_NOTIFICATION!r}); assert obj.key == 'a bé.wav', obj; "
        "print(sorted(m for m in sys.modules if m.startswith(DATA_CLASSES)))"
    )
    assert run_in_a_fresh_process(probe) == "[]"
