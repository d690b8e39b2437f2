"""A backfill task whose lane is full hands its object back within seconds (issue 20 item 7): it
waits in the dead-letter queue, not inside the function holding the reserved concurrency live
uploads need, and the retry function transcribes it later."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import responses

from tests.core import test_capacity
from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    UPLOAD_ETAG,
    failure_key,
    mid_request,
    transcript_body,
    transcript_key,
)
from tests.core.test_capacity import (
    POOL,
    Clock,
    Waits,
    batch_task_event,
    context,
    governed_transcriber,
    governor,
    receive,
)
from transcriber.domain.events import S3ObjectRef
from transcriber.pipeline.adapters import handle_event
from transcriber.pipeline.dead_letter import DeadLetterRetrier
from transcriber.services.capacity import CAPACITY_REASON, CapacityGovernor, CapacityRequeue

if TYPE_CHECKING:
    from tests.core.conftest import Aws
    from transcriber.domain.retry import DeadLetterRetryPolicy
    from transcriber.pipeline.workflow import Transcriber

# The capacity tests' fixtures: a capacity table, and a Lambda clock that moves with each poll.
table, sleeps, clock = test_capacity.table, test_capacity.sleeps, test_capacity.clock

FULL_LANE = replace(POOL, size=4, lane_shares={"backfill": 0.5}, lane_patience_s={"backfill": 5.0})


def deferring_transcriber(aws: Aws, sleeps: Waits, clock: Clock, queue_url: str) -> Transcriber:
    transcriber = governed_transcriber(aws, sleeps, clock, FULL_LANE)
    transcriber.capacity_requeue = CapacityRequeue(
        lambda: aws.sqs, delay_min_s=0, delay_max_s=0, deferral_queue_url=queue_url
    )
    return transcriber


def task_with_its_lane_full(
    aws: Aws, sleeps: Waits, clock: Clock, transcriber: Transcriber, key: str
) -> tuple[dict[str, Any], list[Any]]:
    """The backfill's share (2 of 4 slots) taken by its other tasks, then ``key``'s Batch task run
    with a quarter of an hour left: its result and the other tasks' leases."""
    others = [governor(aws, sleeps, clock, FULL_LANE, lane="backfill").acquire(context()) for _ in range(2)]
    aws.upload(key)
    sleeps.context.remaining_ms = 900_000
    [result] = handle_event(batch_task_event(key), sleeps.context, transcriber)["results"]
    return result, others


def test_a_backfill_task_with_a_full_lane_waits_in_the_dead_letter_queue_and_ends_transcribed(
    aws: Aws,
    table: str,
    deepgram: responses.RequestsMock,
    sleeps: Waits,
    clock: Clock,
    dead_letter_policy: DeadLetterRetryPolicy,
) -> None:
    transcriber = deferring_transcriber(aws, sleeps, clock, aws.dead_letter_queue_url)

    result, others = task_with_its_lane_full(aws, sleeps, clock, transcriber, "archive/late.wav")

    assert sum(sleeps.delays) <= 5.0  # handed back within seconds, not the invocation's 15 minutes
    # Succeeded, but the job report says no transcript exists yet and where the object waits.
    assert result["resultCode"] == "Succeeded"
    assert result["resultString"] == (f"deferred ({CAPACITY_REASON}): no transcript yet; waiting in core-dlq")
    assert aws.output_keys() == []  # no transcript claimed, no failure record
    record = receive(aws)
    assert json.loads(record.body) == {"bucket": INPUT_BUCKET, "key": "archive/late.wav"}
    assert record["messageAttributes"]["CapacityDeferrals"]["stringValue"] == "1"

    for lease in others:  # the backfill's other tasks finish
        CapacityGovernor(FULL_LANE, aws.dynamodb).release(lease)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    retrier = DeadLetterRetrier(transcriber, dead_letter_policy, aws.sqs)
    sleeps.context.remaining_ms = 60_000

    assert retrier.process_record(record, sleeps.context)["transcribed"] == 1
    assert aws.output_keys() == [transcript_key("archive/late.wav")]
    assert len(deepgram.calls) == 1  # one billable request for the deferred object


def test_the_retry_function_keeps_a_deferred_object_in_the_backfill_lane(
    aws: Aws,
    table: str,
    deepgram: responses.RequestsMock,
    sleeps: Waits,
    clock: Clock,
    dead_letter_policy: DeadLetterRetryPolicy,
) -> None:
    transcriber = deferring_transcriber(aws, sleeps, clock, aws.dead_letter_queue_url)
    # The backfill's share is taken; the live uploads' slots are free.
    task_with_its_lane_full(aws, sleeps, clock, transcriber, "archive/patient.wav")
    record = receive(aws)
    assert record["messageAttributes"]["CapacityLane"]["stringValue"] == "backfill"
    retrier = DeadLetterRetrier(transcriber, dead_letter_policy, aws.sqs)
    sleeps.context.remaining_ms = 60_000

    outcome = retrier.process_record(record, sleeps.context)

    # Requeued to wait for its lane again, not transcribed in a live upload's slot.
    assert outcome == {"deferred": CAPACITY_REASON}
    assert len(deepgram.calls) == 0
    assert aws.output_keys() == []


def test_a_deferral_that_cannot_be_sent_falls_back_to_temporary_failure(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    missing = aws.dead_letter_queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    transcriber = deferring_transcriber(aws, sleeps, clock, missing)

    result, _ = task_with_its_lane_full(aws, sleeps, clock, transcriber, "archive/kept.wav")

    assert result["resultCode"] == "TemporaryFailure"  # Batch keeps the task: nothing lost
    assert result["resultString"].startswith(CAPACITY_REASON)
    assert aws.output_keys() == [failure_key("archive/kept.wav")]


def test_a_backfill_task_for_an_object_in_progress_elsewhere_waits_in_the_dead_letter_queue(
    aws: Aws,
    table: str,
    deepgram: responses.RequestsMock,
    sleeps: Waits,
    clock: Clock,
    dead_letter_policy: DeadLetterRetryPolicy,
) -> None:
    """The joint of backfill, idempotency and a killed sandbox: a dead invocation's record stays in
    progress to its deadline, and Batch Operations' quick retries of the task all meet it (the
    simulator gave up 31 of 2,000 tasks so). Here another invocation is mid-request: the task hands
    the object to the dead-letter queue instead of answering TemporaryFailure with a failure record,
    and the retry function later finds the work done without paying again."""
    key = "archive/busy.wav"
    aws.upload(key)
    live = governed_transcriber(aws, sleeps, clock, FULL_LANE)
    busy = S3ObjectRef(bucket=INPUT_BUCKET, key=key, etag=UPLOAD_ETAG, size=16)
    backfill = deferring_transcriber(aws, sleeps, clock, aws.dead_letter_queue_url)
    sleeps.context.remaining_ms = 900_000

    with mid_request(deepgram, live, busy):
        [result] = handle_event(batch_task_event(key), sleeps.context, backfill)["results"]

    assert result["resultCode"] == "Succeeded"
    assert result["resultString"] == (
        "deferred (in-progress-elsewhere): no transcript yet; waiting in core-dlq"
    )
    assert aws.output_keys() == [transcript_key(key)]  # the other invocation's, and no failure record
    record = receive(aws)
    assert json.loads(record.body) == {"bucket": INPUT_BUCKET, "key": key}
    assert record["messageAttributes"]["CapacityLane"]["stringValue"] == "backfill"
    assert "CapacityDeferrals" not in record["messageAttributes"]  # not a capacity wait

    sleeps.context.remaining_ms = 60_000
    outcome = DeadLetterRetrier(backfill, dead_letter_policy, aws.sqs).process_record(record, sleeps.context)

    assert outcome["transcribed"] == 1
    assert len(deepgram.calls) == 1  # the work was done: not paid again
    assert aws.output_keys() == [transcript_key(key)]
