"""A backfill task whose lane is full hands its object back within seconds (issue 20 item 7), end
to end on the local world: the operator's backfill command, S3 Batch Operations' stand-in invoking
the real transcribe handler, the object waiting in the dead-letter queue, and the real retry
function transcribing it later with one billable request."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from transcriber.domain.capacity_core import PoolSettings
from transcriber.services.capacity import CapacityGovernor

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from localworld.pytest_plugin import Backfill, FunctionFactory
    from localworld.world import LocalWorld

PREFIX = "deferred/"
# A pool of 2 whose backfill lane is 1 slot, and a task that waits 1 s for it.
LANE_OF_ONE = {
    "CAPACITY_POOL_SIZE": "2",
    "CAPACITY_BACKFILL_PERCENT": "50",
    "CAPACITY_BACKFILL_WAIT_SECONDS": "1",
}


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 600_000


def _dead_letters(world: LocalWorld, wait_s: float) -> list[MessageTypeDef]:
    """The dead-letter queue's messages once delivered (a deferral is delayed by a short jitter)."""
    sqs = world.aws.sqs()
    url = world.stack.resource("TranscribeDeadLetterQueue").ref
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        got = sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"], WaitTimeSeconds=5
        ).get("Messages", [])
        if got:
            return got
    return []


def test_a_deferred_backfill_task_ends_as_a_transcript_through_the_retry_function(
    world: LocalWorld,
    backfill: Backfill,
    start_function: FunctionFactory,
    sqs_record: Callable[[Any, str], dict[str, Any]],
) -> None:
    [key] = backfill.upload(PREFIX, 1)
    env = world.function("TranscribeFunction").environment
    pool = PoolSettings(
        table=env["CAPACITY_TABLE"], name=env["CAPACITY_POOL"], size=2, lane_shares={"backfill": 0.5}
    )
    held = CapacityGovernor(pool, world.aws.dynamodb(), lane="backfill").acquire(_Context())  # another task's
    started = time.monotonic()

    run = backfill.run(PREFIX, extra_env=LANE_OF_ONE)

    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    # Succeeded, but no transcript claimed: the summary counts it as deferred.
    assert (result["succeeded"], result["transcribed"], result["deferred"]) == (1, 0, 1)
    assert time.monotonic() - started < 60  # handed back within seconds, not the invocation's minutes
    s3 = world.aws.s3()
    assert s3.list_objects_v2(Bucket=world.output_bucket, Prefix=world.failure_prefix).get("KeyCount", 0) == 0
    [message] = _dead_letters(world, wait_s=45)
    version = s3.head_object(Bucket=world.input_bucket, Key=key)["VersionId"]
    assert json.loads(message["Body"]) == {"bucket": world.input_bucket, "key": key, "version_id": version}
    CapacityGovernor(pool, world.aws.dynamodb()).release(held)  # the lane frees

    retry = start_function("RetryFunction", timeout_s=None, extra_env=LANE_OF_ONE)
    queue_arn = world.stack.resource("TranscribeDeadLetterQueue").arn
    answer = retry.invoke({"Records": [sqs_record(message, str(queue_arn))]})

    assert answer.payload == {"batchItemFailures": []}, answer.logs
    s3.head_object(Bucket=world.output_bucket, Key=world.transcript_key(key))
    assert sum(1 for request in world.emulator.requests if request.status == 200) == 1
