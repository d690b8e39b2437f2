"""Nothing lost: the whole local pipeline (S3 notifications, asynchronous invocation with Lambda's
retries, the dead-letter queue, the retry function, the parking queue) against a faulty Deepgram."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

import pytest

if TYPE_CHECKING:
    from localworld.delivery import LocalDelivery
    from localworld.pytest_plugin import ChaosRun, DeliveryFactory
    from localworld.world import LocalWorld


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def output_keys(world: LocalWorld) -> set[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return {item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json")}


@pytest.fixture
def delivery(start_delivery: DeliveryFactory, fast_retry_env: dict[str, str]) -> Callable[..., LocalDelivery]:
    """The stack's event delivery with one Deepgram attempt per invocation and fast DLQ retries."""

    def start(**retry_env: str) -> LocalDelivery:
        return start_delivery(
            concurrency={"TranscribeFunction": 2, "RetryFunction": 2},
            env_overrides={
                "TranscribeFunction": {"DEEPGRAM_MAX_ATTEMPTS": "1"},
                "RetryFunction": {**fast_retry_env, "DEEPGRAM_MAX_ATTEMPTS": "1", **retry_env},
            },
        )

    return start


def test_an_outage_longer_than_lambdas_retries_is_recovered_from_the_dead_letter_queue(
    world: LocalWorld, delivery: Callable[..., LocalDelivery], sample_audio: bytes
) -> None:
    world.emulator.faults.set({402: 1.0})  # out of credit: nothing can succeed for now
    transcript = world.transcript_key("outage/a.wav")
    with delivery() as running:
        world.upload(sample_audio, "outage/a.wav")
        assert wait_for(lambda: running.stats().functions["TranscribeFunction"].dlq_sends == 1)
        transcribe = running.stats().functions["TranscribeFunction"]
        assert (transcribe.invocations, transcribe.retries) == (3, 2)  # Lambda's 2 async retries
        world.emulator.faults.clear()  # credit added

        assert wait_for(lambda: transcript in output_keys(world))
        # An invocation counts when it returns, after the formats and the event it writes last.
        assert wait_for(lambda: running.stats().functions["RetryFunction"].invocations >= 1)
        stats = running.stats().functions
        assert stats["RetryFunction"].invocations >= 1  # the retry function wrote it...
        assert stats["TranscribeFunction"].invocations == 3  # ...not a fourth direct invocation
    assert output_keys(world) == {transcript}
    assert [r.status for r in world.emulator.requests][-1] == 200


def test_an_event_that_keeps_failing_is_parked_with_a_failure_record(
    world: LocalWorld, delivery: Callable[..., LocalDelivery], sample_audio: bytes
) -> None:
    world.emulator.faults.set({503: 1.0})
    parking_url = world.stack.resource("ParkingQueue").ref
    with delivery(RETRY_MAX_ATTEMPTS="2") as running:
        world.upload(sample_audio, "doomed/a.wav")

        assert wait_for(lambda: running.stats().queues["transcriber-local-ParkingQueue"].visible == 1, 90)
    messages = world.aws.sqs().receive_message(QueueUrl=parking_url, MessageAttributeNames=["All"])[
        "Messages"
    ]
    parked_event = json.loads(messages[0]["Body"])
    assert unquote_plus(parked_event["Records"][0]["s3"]["object"]["key"]) == "doomed/a.wav"
    assert messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"].startswith("deepgram-unavailable")
    failure = world.failure_key("doomed/a.wav")
    record = json.loads(world.aws.s3().get_object(Bucket=world.output_bucket, Key=failure)["Body"].read())
    assert record["class"] == "parked"
    assert record["reason"] == "deepgram-unavailable"
    assert "parking queue" in record["message"]
    assert output_keys(world) == {failure}


def test_under_random_faults_every_upload_ends_as_exactly_one_transcript_or_failure(
    chaos_run: ChaosRun,
) -> None:
    report = chaos_run(
        uploads=40,
        non_audio=3,
        rates={429: 0.1, 500: 0.05, 503: 0.05, 504: 0.05, "drop": 0.05},
        payment_window_s=3.0,
        concurrency=4,
        timeout_s=240,
        long_answer_mb=8,
        reuploads=4,  # each uploaded 3 times, delivered newest first
        duplicates=8,  # the first 8 uploads delivered twice
    )

    assert report.unaccounted == [], report.lines()
    assert report.both == []
    assert report.stale == [], report.lines()  # the latest version's outcome only
    assert report.unexplained_billable == 0, report.lines()  # one billable answer per version
    # ... even though every idempotency record was dropped halfway and every event came again at the
    # end: the transcripts in the bucket say the work is done.
    assert report.records_dropped > 0, report.lines()
    assert report.redelivered >= report.uploads, report.lines()
    assert report.uploads == 44
    assert report.transcripts == 41
    assert report.failures == {"deepgram-unsupported-audio": 3}
    assert report.non_audio_failed == 3
    assert report.deepgram_statuses["402"] > 0
    assert report.deepgram_requests > report.uploads  # faults were really injected and retried
    assert report.extra["long answer"] == "8 MiB, transcript, Deepgram 200s for it: 1"
