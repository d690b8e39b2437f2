"""Deployment faults wait (issue 20, item 10), through the retry function's real handler in the local
world: a blocked error on a dead letter's last attempt uses no attempt, writes no failure record and
is never parked; the event is sent again to the dead-letter queue, remembering what it used."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

LAST_RECEIVE = "8"  # Settings.Failures.RetryMaxAttempts: SQS's redrive to the parking queue is next


def dead_letter(event: dict[str, Any], receives: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": "m-blocked",
                "receiptHandle": "handle",
                "body": json.dumps(event),
                "attributes": {"ApproximateReceiveCount": receives, "SentTimestamp": "1795435200000"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dead-letter",
                "awsRegion": "us-east-1",
            }
        ]
    }


def test_a_missing_secret_on_the_last_attempt_waits_without_a_record_or_parking(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("blocked/a.wav", sample_audio)
    retry = start_function(
        "RetryFunction", timeout_s=None, extra_env={"DEEPGRAM_SECRET_ID": "deepgram/local/deleted"}
    )

    result = retry.invoke(dead_letter(event, LAST_RECEIVE))

    assert result.payload == {"batchItemFailures": []}, result.logs  # the old message goes
    assert world.emulator.requests == []
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0
    sqs = world.aws.sqs()
    parking = sqs.receive_message(QueueUrl=world.stack.resource("ParkingQueue").ref, WaitTimeSeconds=0)
    assert parking.get("Messages", []) == []
    dead_letters = world.stack.resource("TranscribeDeadLetterQueue").ref
    counts = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesDelayed"] == "1"  # sent again, 900 s later
    assert any("Blocked until a person fixes the deployment" in line for line in result.logs)
