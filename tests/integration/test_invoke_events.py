"""`make invoke EVENT=events/<file> | jq .`: for every sample event, stdout is one JSON document (the
result, or Lambda's error object) and every log line is on stderr. Run through make itself, in its
own process, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# events/*.json, not events/completion/: those are samples of the completion events the stack emits
# (to EventBridge, for webhooks and rules), outputs that no handler takes as input.
EVENTS = sorted((ROOT / "events").glob("*.json"))
# Which function each sample is for (README: retry-dead-letter.json is what the retry function gets).
FUNCTIONS = {"retry-dead-letter.json": "RetryFunction"}
NOT_AN_EVENT = "env.json"  # the --env-vars file; invoked as an event all the same


def make_invoke(event: Path) -> subprocess.CompletedProcess[str]:
    function = FUNCTIONS.get(event.name, "TranscribeFunction")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "invoke",
            f"FUNCTION={function}",
            f"EVENT={event.relative_to(ROOT)}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_every_sample_event_prints_only_json_on_stdout() -> None:
    assert len(EVENTS) >= 15, EVENTS
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores
        runs = dict(zip(EVENTS, pool.map(make_invoke, EVENTS), strict=True))

    problems = []
    for event, run in runs.items():
        try:
            result = json.loads(run.stdout)
        except ValueError:
            problems.append(f"{event.name}: exit {run.returncode}, stdout is not JSON: {run.stdout[:300]!r}")
            continue
        if event.name == NOT_AN_EVENT:  # the handler refuses it: Lambda's error object, make fails
            assert run.returncode == 2, run.stderr
            assert "errorType" in result, result
        elif run.returncode != 0 or "errorType" in result:
            problems.append(f"{event.name}: exit {run.returncode}: {result} {run.stderr[-300:]}")
    assert problems == [], "\n".join(problems)
    # The logs are there, on stderr: the s3:TestEvent's skip line used to precede the JSON on stdout.
    assert "Skipping s3:TestEvent" in runs[ROOT / "events" / "s3-test-event.json"].stderr
