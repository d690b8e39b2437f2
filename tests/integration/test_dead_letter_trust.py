"""The retry function, through its real handler in the local world, re-runs only what can land on the
dead-letter queue (issue 20, item 13): a body no asynchronous invocation carries is parked with its
reason, and its per-upload options never reach Deepgram."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


def as_dead_letter(body: str, attributes: dict[str, str]) -> dict[str, Any]:
    """The SQS event the retry function receives for one dead-letter message."""
    return {
        "Records": [
            {
                "messageId": "m-forged",
                "receiptHandle": "not-a-real-handle",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795435200000"},
                "messageAttributes": {
                    name: {"stringValue": value, "dataType": "String"} for name, value in attributes.items()
                },
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dead-letter",
                "awsRegion": "us-east-1",
            }
        ]
    }


def test_a_body_no_asynchronous_invocation_carries_is_parked_before_any_request(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    uploads.put("forged/a.wav", sample_audio)
    direct = {"bucket": world.stack.resource("InputBucket").physical_name, "key": "forged/a.wav"}
    paid = {"model": "nova-3", "keyterm": ["one", "two", "three"]}
    # An SQS envelope (event source mappings invoke synchronously) around a direct payload with options.
    sqs_body = json.dumps(
        {"Records": [{"eventSource": "aws:sqs", "body": json.dumps(direct | {"options": paid})}]}
    )
    # A rule's dead letter (EventBridge's RULE_ARN attribute) that is not an aws.s3 event.
    rule = {"RULE_ARN": "arn:aws:events:us-east-1:123456789012:rule/some-rule"}
    retry = start_function("RetryFunction", timeout_s=None, extra_env=None)

    results = [
        retry.invoke(as_dead_letter(sqs_body, {})),
        retry.invoke(as_dead_letter(json.dumps(direct | {"options": paid}), rule)),
    ]

    assert [r.payload for r in results] == [{"batchItemFailures": []}] * 2, [r.logs for r in results]
    assert world.emulator.requests == [], "nothing was sent to Deepgram"
    parking_url = world.stack.resource("ParkingQueue").ref
    parked = world.aws.sqs().receive_message(
        QueueUrl=parking_url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
    )["Messages"]
    assert (
        sorted(m["MessageAttributes"]["ParkedReason"]["StringValue"] for m in parked)
        == ["dead-letter-unexpected-shape"] * 2
    )
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0
