"""Every file in events/ through the real handler against the local world: each sample names
objects that the world seeds with the sample recording, and each must end as a transcript."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory
    from localworld.world import LocalWorld

EVENTS = Path(__file__).resolve().parents[2] / "events"
EVENT_FILES = sorted(p for p in EVENTS.glob("*.json") if p.name != "env.json")


def transcript_keys(world: LocalWorld) -> set[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket, Prefix=world.transcript_prefix)
    return {item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json")}


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.name)
def test_every_sample_event_becomes_transcripts(
    world: LocalWorld, start_function: FunctionFactory, path: Path
) -> None:
    event: Any = json.loads(path.read_text(encoding="utf-8"))
    expected = {world.transcript_key(obj.key, obj.bucket) for obj in world.seed_objects(event)}

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    if path.name.startswith("sqs-"):
        assert result.payload == {"batchItemFailures": []}
    elif path.name.startswith("s3-batch-"):
        [task] = result.payload["results"]
        assert task["resultCode"] == "Succeeded", task
        assert result.payload["invocationSchemaVersion"] == event["invocationSchemaVersion"]
    assert transcript_keys(world) == expected
    assert len(world.emulator.requests) == len(expected)


def test_the_samples_cover_every_accepted_shape() -> None:
    names = {p.name for p in EVENT_FILES}
    for required in (
        "s3-put.json",
        "s3-put-many.json",
        "s3-test-event.json",
        "eventbridge-object-created.json",
        "sns-s3.json",
        "sqs-s3.json",
        "sqs-sns-s3.json",
        "sqs-eventbridge.json",
        "direct.json",
        "direct-list.json",
        "s3-batch-1.0.json",
        "s3-batch-2.0.json",
    ):
        assert required in names
