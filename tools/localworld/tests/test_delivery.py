"""LocalDelivery: S3 -> async invoke with retries, max age and DLQ; SQS event source mappings."""

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from localworld.aws import LocalAws
from localworld.delivery import (
    ERROR_MESSAGE_LIMIT_BYTES,
    InvocationRecord,
    LocalDelivery,
    _failed_message_ids,
    dead_letter_attributes,
    sqs_event_record,
)
from localworld.template import Stack, load_stack

DELIVERY_TEMPLATE = Path(__file__).parent / "fixtures" / "delivery" / "template.yaml"
# 60 s / 120 s retry waits become 0.12 s / 0.24 s.
TIME_SCALE = 0.002

DeliveryFactory = Callable[..., LocalDelivery]


@pytest.fixture
def make_delivery(local_aws: LocalAws) -> Iterator[DeliveryFactory]:
    """Provision the fixture stack (with parameter overrides) and start a delivery on it."""
    deliveries: list[LocalDelivery] = []

    def make(parameters: Mapping[str, str] | None = None, **kwargs: Any) -> LocalDelivery:
        stack = load_stack(DELIVERY_TEMPLATE, parameters)
        local_aws.provision(stack)
        kwargs.setdefault("time_scale", TIME_SCALE)
        delivery = LocalDelivery(stack, local_aws, local_aws.env(), **kwargs)
        deliveries.append(delivery)
        return delivery.start()

    yield make
    for delivery in deliveries:
        delivery.close()


def bucket(stack: Stack, logical_id: str) -> str:
    return str(stack.resource(logical_id).ref)


def queue_url(aws: LocalAws, stack: Stack, logical_id: str) -> str:
    return aws.sqs().get_queue_url(QueueName=stack.resource(logical_id).physical_name)["QueueUrl"]


def read_json(aws: LocalAws, bucket_name: str, key: str) -> Any:
    return json.loads(aws.s3().get_object(Bucket=bucket_name, Key=key)["Body"].read())


def keys(aws: LocalAws, bucket_name: str, prefix: str) -> list[str]:
    response = aws.s3().list_objects_v2(Bucket=bucket_name, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


def receive_all(aws: LocalAws, url: str) -> list[Any]:
    return (
        aws.sqs()
        .receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
        )
        .get("Messages", [])
    )


# --- S3 -> asynchronous invocation -------------------------------------------------------------


def test_upload_invokes_the_function_with_the_s3_event(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    seen: list[InvocationRecord] = []
    delivery = make_delivery(functions=["UploadFunction"], on_result=seen.append)
    stack = delivery.stack
    input_bucket, output_bucket = bucket(stack, "InputBucket"), bucket(stack, "OutputBucket")

    local_aws.s3().put_object(Bucket=input_bucket, Key="in/hello world.wav", Body=b"RIFF")
    local_aws.s3().put_object(Bucket=input_bucket, Key="elsewhere/ignored.wav", Body=b"RIFF")
    assert delivery.wait_until_idle(10)

    done = read_json(local_aws, output_bucket, "done/in/hello world.wav")
    record = done["event"]["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == input_bucket
    # URL-encoded as S3 sends it (moto also encodes "/", which S3 nowadays leaves as is).
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == "in/hello world.wav"
    assert "+" in record["s3"]["object"]["key"]
    assert keys(local_aws, output_bucket, "done/") == ["done/in/hello world.wav"]  # prefix filter held

    stats = delivery.stats()
    upload = stats.functions["UploadFunction"]
    assert (upload.invocations, upload.errors, upload.retries, upload.dlq_sends) == (1, 0, 0, 0)
    assert upload.async_queued == upload.in_flight == 0
    routing = next(q for q in stats.queues.values() if q.role == "s3-events")
    assert (routing.visible, routing.not_visible) == (0, 0)  # the S3 message was deleted
    assert [(r.function, r.source, r.attempt) for r in seen] == [("UploadFunction", "async", 1)]
    assert seen[0].result.payload == {"key": "in/hello world.wav", "attempts": 1}
    logs = delivery.logs
    assert "processed in/hello world.wav" in logs
    assert any(line.startswith("REPORT RequestId: ") for line in logs)


def test_s3_events_can_be_delivered_twice_and_held_then_released_newest_first(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    seen: list[InvocationRecord] = []
    delivery = make_delivery(
        functions=["UploadFunction"],
        on_result=seen.append,
        concurrency={"UploadFunction": 1},
        hold_s3_events=True,
        duplicate_s3_events=True,
    )
    input_bucket = bucket(delivery.stack, "InputBucket")
    for name in ("in/first.wav", "in/second.wav"):
        local_aws.s3().put_object(Bucket=input_bucket, Key=name, Body=b"RIFF")
    deadline = time.monotonic() + 10
    while delivery.held() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert delivery.wait_until_idle(1)  # held events are not in flight
    assert seen == []

    assert delivery.release_held() == 2
    assert delivery.wait_until_idle(15)

    order = [urllib.parse.unquote_plus(r.event["Records"][0]["s3"]["object"]["key"]) for r in seen]
    assert order == ["in/second.wav", "in/second.wav", "in/first.wav", "in/first.wav"]
    sequencers = [r.event["Records"][0]["s3"]["object"]["sequencer"] for r in seen]
    assert int(sequencers[0], 16) > int(sequencers[2], 16)  # S3's order: the first upload's is lower
    assert delivery.held() == 0


def test_failing_event_is_retried_then_sent_to_the_dlq(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    attempts_at: list[tuple[str, float, InvocationRecord]] = []

    def on_result(record: InvocationRecord) -> None:
        key = urllib.parse.unquote_plus(record.event["Records"][0]["s3"]["object"]["key"])
        attempts_at.append((key, time.monotonic() - record.result.duration_s, record))

    delivery = make_delivery(functions=["UploadFunction"], on_result=on_result)
    stack = delivery.stack
    local_aws.s3().put_object(Bucket=bucket(stack, "InputBucket"), Key="in/fail-1.wav", Body=b"x")
    local_aws.s3().put_object(Bucket=bucket(stack, "InputBucket"), Key="in/flaky1.wav", Body=b"x")
    assert delivery.wait_until_idle(15)

    failing = [(at, record) for key, at, record in attempts_at if key == "in/fail-1.wav"]
    assert [record.attempt for _, record in failing] == [1, 2, 3]  # MaximumRetryAttempts 2
    assert len({record.result.request_id for _, record in failing}) == 1  # one request id per event
    starts = [at for at, _ in failing]
    # Lambda waits ~1 min, then ~2 min; scaled by time_scale (timing slack for process start-up).
    assert starts[1] - starts[0] >= 60 * TIME_SCALE * 0.9
    assert starts[2] - starts[1] >= 120 * TIME_SCALE * 0.9
    flaky = [record for key, _, record in attempts_at if key == "in/flaky1.wav"]
    assert [(r.attempt, r.result.ok) for r in flaky] == [(1, False), (2, True)]

    upload = delivery.stats().functions["UploadFunction"]
    assert (upload.invocations, upload.errors, upload.retries, upload.dlq_sends) == (5, 4, 3, 1)
    assert upload.dropped == 0

    messages = receive_all(local_aws, queue_url(local_aws, stack, "UploadDeadLetterQueue"))
    assert len(messages) == 1
    message = messages[0]
    last = failing[-1][1]
    assert json.loads(message["Body"]) == last.event  # the original event, unchanged
    attributes = message["MessageAttributes"]
    assert attributes["RequestID"] == {"StringValue": last.result.request_id, "DataType": "String"}
    assert attributes["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert attributes["ErrorMessage"] == {"StringValue": "cannot process in/fail-1.wav", "DataType": "String"}


def test_an_event_killed_out_of_memory_is_retried_then_sent_to_the_dlq(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    seen: list[InvocationRecord] = []
    delivery = make_delivery(functions=["UploadFunction"], on_result=seen.append)
    stack = delivery.stack
    local_aws.s3().put_object(Bucket=bucket(stack, "InputBucket"), Key="in/hungry.wav", Body=b"x")
    dead_letters = queue_url(local_aws, stack, "UploadDeadLetterQueue")
    deadline = time.monotonic() + 60
    messages: list[Any] = []
    while not messages and time.monotonic() < deadline:
        messages = receive_all(local_aws, dead_letters)

    assert [r.attempt for r in seen] == [1, 2, 3]  # as any function error: Lambda's 2 retries
    assert all((r.result.error or {}).get("errorType") == "Runtime.OutOfMemory" for r in seen)
    assert all(r.result.cold_start for r in seen)  # each kill cost the container
    assert len(messages) == 1
    message = messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert message.endswith("Error: Runtime exited with error: signal: killed")


def test_expired_and_dropped_events(
    make_delivery: DeliveryFactory, local_aws: LocalAws, caplog: pytest.LogCaptureFixture
) -> None:
    # Max age 60 s (0.12 s scaled) passes before UploadFunction's first retry is due.
    delivery = make_delivery({"MaxEventAge": "60"}, functions=[])  # direct invokes only
    with caplog.at_level(logging.ERROR, logger="localworld.delivery"):
        dropped_id = delivery.invoke_async("DropFunction", {"key": "timeout"})
        old_id = delivery.invoke_async("UploadFunction", {"key": "fail-old"})
        assert delivery.wait_until_idle(15)

    stats = delivery.stats()
    upload = stats.functions["UploadFunction"]
    assert (upload.invocations, upload.retries, upload.expired, upload.dlq_sends) == (1, 1, 1, 1)
    [old] = receive_all(local_aws, queue_url(local_aws, delivery.stack, "UploadDeadLetterQueue"))
    assert json.loads(old["Body"]) == {"key": "fail-old"}
    assert old["MessageAttributes"]["RequestID"]["StringValue"] == old_id
    assert old["MessageAttributes"]["ErrorMessage"]["StringValue"] == "cannot process fail-old"

    drop = stats.functions["DropFunction"]
    assert (drop.invocations, drop.errors, drop.retries, drop.dropped) == (1, 1, 0, 1)
    [timed_out] = [r for r in delivery.records if r.function == "DropFunction"]
    assert timed_out.result.error is not None
    assert timed_out.result.error["errorType"] == "Sandbox.Timedout"
    assert any("DROPPED" in r.message and dropped_id in r.message for r in caplog.records)
    assert stats.dropped == 1

    result = delivery.invoke("DropFunction", {"key": "sync-ok"})  # synchronous
    assert result.ok
    assert result.payload == {"key": "sync-ok", "attempts": 1}


def test_throttled_event_is_kept_until_it_ages_out(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    # Concurrency 0 throttles every attempt; throttles are not retries and end at the max age.
    delivery = make_delivery({"MaxEventAge": "60"}, functions=[], concurrency={"UploadFunction": 0})
    request_id = delivery.invoke_async("UploadFunction", {"key": "never-runs"})
    assert delivery.wait_until_idle(10)

    upload = delivery.stats().functions["UploadFunction"]
    assert upload.throttles >= 2
    assert (upload.invocations, upload.retries, upload.expired, upload.dlq_sends) == (0, 0, 1, 1)
    [message] = receive_all(local_aws, queue_url(local_aws, delivery.stack, "UploadDeadLetterQueue"))
    assert message["MessageAttributes"]["RequestID"]["StringValue"] == request_id
    assert message["MessageAttributes"]["ErrorCode"] == {"StringValue": "429", "DataType": "Number"}


def test_async_concurrency_is_capped_at_the_overridden_concurrency(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    expected = 3  # the template reserves 2 (see the close test); overridden as for benchmarks
    delivery = make_delivery(
        functions=["UploadFunction"],
        env_overrides={"UploadFunction": {"SLEEP_S": "0.3"}},
        concurrency={"UploadFunction": expected},
    )
    stack = delivery.stack
    for index in range(expected + 2):
        local_aws.s3().put_object(Bucket=bucket(stack, "InputBucket"), Key=f"in/{index}.wav", Body=b"x")
    assert delivery.wait_until_idle(20)

    output = bucket(stack, "OutputBucket")
    spans = [read_json(local_aws, output, key) for key in keys(local_aws, output, "done/")]
    assert len(spans) == expected + 2
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running, peak = 0, 0
    for _, step in edges:  # ends sort before starts at the same instant
        running += step
        peak = max(peak, running)
    assert peak == expected
    assert delivery.stats().functions["UploadFunction"].peak_in_flight == expected
    assert delivery.function("UploadFunction").container_count == expected


# --- SQS event source mapping --------------------------------------------------------------------


def test_sqs_mapping_deletes_successes_and_keeps_batch_item_failures(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    delivery = make_delivery(functions=["BatchFunction"])
    stack = delivery.stack
    work_url = queue_url(local_aws, stack, "WorkQueue")

    def send(*bodies: dict[str, Any]) -> None:
        entries = [{"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate(bodies)]
        local_aws.sqs().send_message_batch(QueueUrl=work_url, Entries=entries)  # type: ignore[arg-type]

    # The handler fails "backoff" once and sets its visibility timeout to 2 s.
    send({"id": "ok-1"}, {"id": "ok-2"}, {"id": "backoff", "fail_times": 1, "backoff": 2})
    assert delivery.wait_until_idle(10)
    first = delivery.stats()
    work = first.queues[stack.resource("WorkQueue").physical_name]
    assert work.role == "event-source"
    assert (work.visible, work.held, work.waiting) == (0, 0, 1)  # backing off: waiting, not in flight
    assert first.waiting == 1
    assert not delivery.is_idle(include_waiting=True)

    # Fails every time (the handler makes it visible again at once): redriven after maxReceiveCount 2.
    send({"id": "poison", "fail": True, "backoff": 0})
    assert delivery.wait_until_idle(15, include_waiting=True)
    final = delivery.stats()

    output = bucket(stack, "OutputBucket")
    assert keys(local_aws, output, "sqs/ok-") == ["sqs/ok-1/1", "sqs/ok-2/1"]  # deleted after success
    assert keys(local_aws, output, "sqs/poison/") == ["sqs/poison/1", "sqs/poison/2"]
    assert keys(local_aws, output, "sqs/backoff/") == ["sqs/backoff/1", "sqs/backoff/2"]
    first_seen = read_json(local_aws, output, "sqs/backoff/1")["seen_at"]
    second_seen = read_json(local_aws, output, "sqs/backoff/2")["seen_at"]
    assert second_seen - first_seen >= 1.5  # the handler's ChangeMessageVisibility was not undone

    parked = receive_all(local_aws, queue_url(local_aws, stack, "ParkingQueue"))
    assert [json.loads(m["Body"])["id"] for m in parked] == ["poison"]  # moto applied RedrivePolicy
    assert final.queues[stack.resource("ParkingQueue").physical_name].role == "redrive-target"
    assert final.functions["BatchFunction"].errors == 0  # partial failures are successful invokes


def test_sqs_error_keeps_the_whole_batch_and_event_has_lambdas_shape(local_aws: LocalAws) -> None:
    stack = load_stack(DELIVERY_TEMPLATE)
    local_aws.provision(stack)
    plain_url = queue_url(local_aws, stack, "PlainQueue")
    local_aws.sqs().send_message_batch(
        QueueUrl=plain_url,
        Entries=[
            {
                "Id": "a",
                "MessageBody": json.dumps({"id": "fine"}),
                "MessageAttributes": {
                    "Kind": {"DataType": "String", "StringValue": "test"},
                    "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
                },
            },
            {"Id": "b", "MessageBody": json.dumps({"id": "once", "fail_times": 1})},
        ],
    )
    delivery = LocalDelivery(stack, local_aws, local_aws.env(), functions=["PlainBatchFunction"])
    # Warm a container first, so the batch is handled well within the 2 s visibility timeout.
    assert delivery.function("PlainBatchFunction").invoke({"Records": []}).ok
    with delivery:
        assert delivery.wait_until_idle(15, include_waiting=True)
        results = [r.result.ok for r in delivery.records]
        # Seen once under make test's load: [False] alone. What each side saw, should it come back.
        seen = [(r.result.error, [m["body"] for m in r.event["Records"]]) for r in delivery.records]
        queues = delivery.stats().queues

    output = bucket(stack, "OutputBucket")
    # one batch failed as a whole, then both succeeded
    assert results == [False, True], (seen, queues, keys(local_aws, output, "sqs/"))
    assert keys(local_aws, output, "sqs/fine/") == ["sqs/fine/1", "sqs/fine/2"]  # kept after the error
    record = read_json(local_aws, output, "sqs/fine/1")
    assert set(record["attributes"]) >= {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert record["messageAttributes"] == {
        "Kind": {"stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "Blob": {"binaryValue": "AAE=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.resource("PlainQueue").arn
    assert record["awsRegion"] == "us-east-1"
    assert len(record["md5OfBody"]) == 32
    assert not local_aws.sqs().receive_message(QueueUrl=plain_url).get("Messages")


# --- lifecycle -------------------------------------------------------------------------------------


def test_reserved_concurrency_caps_and_close_is_prompt(
    make_delivery: DeliveryFactory, local_aws: LocalAws
) -> None:
    delivery = make_delivery(
        functions=["UploadFunction"], env_overrides={"UploadFunction": {"SLEEP_S": "30"}}
    )
    for index in range(3):
        local_aws.s3().put_object(
            Bucket=bucket(delivery.stack, "InputBucket"), Key=f"in/{index}.wav", Body=b"x"
        )
    deadline = time.monotonic() + 10
    while delivery.stats().functions["UploadFunction"].in_flight < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    upload = delivery.stats().functions["UploadFunction"]
    # ReservedConcurrentExecutions 2: the third event waits in the async queue.
    assert (upload.in_flight, upload.peak_in_flight, upload.async_queued) == (2, 2, 3)
    assert not delivery.is_idle()

    started = time.monotonic()
    delivery.close()
    # Prompt: it does not wait out the invocations' 30 s sleeps (a loaded machine took 5.6 s).
    assert time.monotonic() - started < 15.0
    assert not [t for t in threading.enumerate() if t.name.startswith("delivery-")]
    assert delivery.stats().functions["UploadFunction"].dlq_sends == 0  # abandoned work is not failed


# --- pure helpers ----------------------------------------------------------------------------------


def test_dead_letter_attributes_truncate_to_1_kb_on_a_character_boundary() -> None:
    attributes = dead_letter_attributes("req-1", "200", "é" * 1000)
    message = attributes["ErrorMessage"]["StringValue"]
    assert len(message.encode()) <= ERROR_MESSAGE_LIMIT_BYTES
    assert message == "é" * 512
    assert attributes["ErrorCode"] == {"DataType": "Number", "StringValue": "200"}


def test_batch_item_failures_follow_lambdas_rules() -> None:
    ids = ["m1", "m2"]
    assert _failed_message_ids(None, ids) == set()
    assert _failed_message_ids({}, ids) == set()
    assert _failed_message_ids({"batchItemFailures": None}, ids) == set()
    assert _failed_message_ids({"batchItemFailures": [{"itemIdentifier": "m2"}]}, ids) == {"m2"}
    assert _failed_message_ids({"batchItemFailures": [{"itemIdentifier": "nope"}]}, ids) == {"m1", "m2"}
    assert _failed_message_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == {"m1", "m2"}
    assert _failed_message_ids("not an object", ids) == {"m1", "m2"}


def test_sqs_event_record_without_attributes() -> None:
    message: Any = {"MessageId": "id", "ReceiptHandle": "rh", "Body": "b", "MD5OfBody": "md5"}
    assert sqs_event_record(message, "arn:aws:sqs:eu-west-1:1:q", "eu-west-1") == {
        "messageId": "id",
        "receiptHandle": "rh",
        "body": "b",
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "md5",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:1:q",
        "awsRegion": "eu-west-1",
    }
