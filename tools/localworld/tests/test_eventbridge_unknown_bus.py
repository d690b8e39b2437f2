"""The local EventBridge is not kinder than AWS: ``PutEvents`` to a bus that does not exist is
accepted and the event dropped (AWS, aws/aws-sdk#186, aws/aws-cli#9186), while the bus's absence
still shows where AWS shows it (``DescribeEventBus``)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from localworld.aws import LocalAws


def _entry(bus: str) -> dict[str, str]:
    return {"Source": "test", "DetailType": "Probe", "Detail": json.dumps({"n": 1}), "EventBusName": bus}


def test_put_events_to_a_missing_bus_is_accepted_and_dropped(local_aws: LocalAws) -> None:
    events = local_aws.events()
    sqs = local_aws.sqs()
    queue = sqs.create_queue(QueueName="probe")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.create_event_bus(Name="real-bus")
    events.put_rule(Name="all", EventBusName="real-bus", EventPattern=json.dumps({"source": ["test"]}))
    events.put_targets(Rule="all", EventBusName="real-bus", Targets=[{"Id": "q", "Arn": arn}])

    response = events.put_events(Entries=[_entry("no-such-bus"), _entry("real-bus")])  # type: ignore[list-item]

    assert response["FailedEntryCount"] == 0
    assert all(entry.get("EventId") for entry in response["Entries"])
    assert len(response["Entries"]) == 2
    delivered = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    assert len(delivered) == 1  # the real bus's event only: the other one went nowhere
    with pytest.raises(ClientError) as missing:
        events.describe_event_bus(Name="no-such-bus")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_an_entry_with_no_source_still_fails_on_a_missing_bus_as_on_any(local_aws: LocalAws) -> None:
    entry = _entry("no-such-bus") | {"Source": ""}

    response = local_aws.events().put_events(Entries=[entry])  # type: ignore[list-item]

    assert response["FailedEntryCount"] == 1
    assert response["Entries"][0]["ErrorCode"] == "InvalidArgument"
