"""Event shapes the tests build by hand, as the AWS services send them."""

from __future__ import annotations

from typing import Any


def sqs_event(*bodies: str) -> dict[str, Any]:
    """An SQS batch of ``bodies`` as Lambda's event source mapping delivers it (ids ``msg-<n>``)."""
    return {
        "Records": [
            {
                "messageId": f"msg-{index}",
                "receiptHandle": f"handle-{index}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:transcriber-uploads",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(bodies)
        ]
    }
