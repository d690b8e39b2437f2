"""The normaliser on every accepted shape and on malformed variants of each."""

import json
from pathlib import Path
from typing import Any

import pytest

from transcriber.domain.events import (
    S3ObjectRef,
    Source,
    detect_source,
    invalid_name,
    parse_event,
    parse_message_body,
    sequencer_value,
)
from transcriber.errors import PermanentError

EVENTS = Path(__file__).resolve().parents[2] / "events"
INPUT = "transcriber-local-input-123456789012-us-east-1"


def sample(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "source", "keys"),
    [
        ("s3-put.json", Source.S3, ["samples/hello world.wav"]),
        (
            "s3-put-many.json",
            Source.S3,
            ["calls/2026-11-23/agent one.wav", "calls/2026-11-23/réunion équipe #1.wav"],
        ),
        ("s3-test-event.json", Source.S3_TEST, []),
        ("eventbridge-object-created.json", Source.EVENTBRIDGE, ["calls/archive/interview 2019.wav"]),
        ("sns-s3.json", Source.SNS, ["fanout/board meeting.wav"]),
        ("sqs-s3.json", Source.SQS, ["buffered/standup.wav", "buffered/retro notes.wav"]),
        ("sqs-sns-s3.json", Source.SQS, ["fanout/via queue.wav"]),
        ("sqs-eventbridge.json", Source.SQS, ["calls/archive/queued 2020.wav"]),
        ("sqs-sns-subscription-confirmation.json", Source.SQS, []),
        ("direct.json", Source.DIRECT, ["direct/customer call.wav"]),
        ("direct-list.json", Source.DIRECT, ["direct/batch/one.wav", "direct/batch/two é.wav"]),
    ],
)
def test_every_sample_parses_to_its_objects(name: str, source: Source, keys: list[str]) -> None:
    event = sample(name)

    assert detect_source(event) is source
    assert [obj.key for obj in parse_event(event)] == keys


def test_eventbridge_carries_bucket_size_etag_and_sequencer() -> None:
    [obj] = parse_event(sample("eventbridge-object-created.json"))

    assert obj == S3ObjectRef(
        "my-existing-archive",
        "calls/archive/interview 2019.wav",
        None,
        94924,
        "4b078d957ea643e82e25a159bff3a35d",  # the sample recording's size and ETag
        "00617F08299329D189",
    )


def test_s3_notifications_carry_the_sequencer_and_null_versions_are_no_version() -> None:
    event = sample("s3-put.json")
    record = event["Records"][0]["s3"]["object"]
    record.update(versionId="null", sequencer="0055AED6DCD90281E5")

    [obj] = parse_event(event)

    assert (obj.version_id, obj.sequencer) == (None, "0055AED6DCD90281E5")
    assert parse_event({"bucket": "b", "key": "k.wav", "version_id": "null"})[0].version_id is None
    assert sequencer_value("00FF") == sequencer_value("FF") == 255
    assert sequencer_value("0055AED6DCD90281E5") > sequencer_value("0055AED6DCD90281E4")  # type: ignore[operator]
    assert sequencer_value("not hex") is None
    assert sequencer_value(None) is None


def test_direct_payloads_keep_keys_verbatim_and_pin_versions() -> None:
    assert parse_event({"bucket": "b", "key": "a+b%20c.wav", "version_id": "v1"}) == [
        S3ObjectRef("b", "a+b%20c.wav", version_id="v1")
    ]


def _sqs(body: str) -> dict[str, Any]:
    return {"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": body}]}


def _sns(message: str) -> dict[str, Any]:
    return {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": message}}]}


def _eventbridge(detail: Any) -> dict[str, Any]:
    return {"source": "aws.s3", "detail-type": "Object Created", "detail": detail}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]},
            id="s3-no-object",
        ),
        pytest.param(
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b"}, "object": {"key": 7}},
                    }
                ]
            },
            id="s3-key-not-string",
        ),
        pytest.param(
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b"}, "object": {"key": "a.wav", "size": "big"}},
                    }
                ]
            },
            id="s3-size-not-number",
        ),
        pytest.param(_eventbridge({"bucket": {"name": "b"}}), id="eventbridge-no-object"),
        pytest.param(
            _eventbridge({"bucket": {"name": ""}, "object": {"key": "a.wav"}}), id="eventbridge-empty-bucket"
        ),
        pytest.param(_eventbridge("not an object"), id="eventbridge-detail-string"),
        pytest.param(_sns("{not json"), id="sns-garbage"),
        pytest.param(_sns(json.dumps({"hello": "world"})), id="sns-unknown-message"),
        pytest.param(_sns(json.dumps(_sns("{}"))), id="sns-in-sns"),
        pytest.param(_sqs("{not json"), id="sqs-garbage"),
        pytest.param(_sqs(json.dumps({"unexpected": True})), id="sqs-unknown-body"),
        pytest.param(_sqs(json.dumps(_sqs("{}"))), id="sqs-in-sqs"),
        pytest.param({"bucket": "b"}, id="direct-no-key"),
        pytest.param({"bucket": "b", "key": ""}, id="direct-empty-key"),
        pytest.param({"bucket": 3, "key": "a.wav"}, id="direct-bucket-not-string"),
        pytest.param({"bucket": "b", "key": "a.wav", "version_id": 5}, id="direct-version-not-string"),
        pytest.param([{"bucket": "b", "key": "a.wav"}, "x"], id="direct-list-with-garbage"),
        pytest.param([], id="direct-empty-list"),
        pytest.param({"foo": "bar"}, id="unknown-object"),
        pytest.param("x" * 256 * 1024, id="256KB-garbage-string"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_malformed_variants_are_permanent_errors_naming_the_accepted_shapes(event: Any) -> None:
    with pytest.raises(PermanentError, match="accepted event shapes") as caught:
        parse_event(event)

    assert caught.value.reason == "unrecognised-event"
    assert not caught.value.retryable


def test_an_sqs_body_cannot_smuggle_batch_operations() -> None:
    batch = sample("s3-batch-1.0.json")

    with pytest.raises(PermanentError, match="cannot hold"):
        parse_message_body(json.dumps(batch))


def test_batch_operations_are_detected_but_answered_per_task() -> None:
    event = sample("s3-batch-2.0.json")

    assert detect_source(event) is Source.S3_BATCH
    with pytest.raises(PermanentError, match="per task"):
        parse_event(event)


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_sns_subscription_confirmations_are_skipped_without_logging_their_token(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    envelope = json.loads(sample("sqs-sns-subscription-confirmation.json")["Records"][0]["body"])
    envelope["Type"] = kind

    assert detect_source(envelope) is Source.SNS_CONFIRMATION
    assert parse_event(envelope) == []
    assert parse_message_body(json.dumps(envelope)) == []
    logged = caplog.text + "".join(str(vars(record)) for record in caplog.records)
    assert f"Skipping SNS {kind}" in caplog.text
    assert "sns-confirmation" in logged
    assert envelope["Token"] not in logged


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        ("Not A Bucket!", "a.wav"),
        ("ab", "a.wav"),
        ("-leading-hyphen", "a.wav"),
        ("two..dots", "a.wav"),
        ("192.168.10.20", "a.wav"),
        ("xn--reserved", "a.wav"),
        ("ends-s3alias", "a.wav"),
        ("arn:aws:s3:us-east-1:123456789012:accesspoint/ap", "a.wav"),
        ("b" * 256, "a.wav"),
        ("good-bucket", "a/../b.wav"),
        ("good-bucket", "./x.wav"),
        ("good-bucket", "x/.."),
        ("good-bucket", "k" * 1025),
    ],
)
def test_names_that_cannot_name_an_s3_object_are_reported(bucket: str, key: str) -> None:
    assert invalid_name(S3ObjectRef(bucket, key)) is not None


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        ("good-bucket", "a.wav"),
        ("my.dotted.bucket", "x/.hidden/..not-a-segment.wav"),
        ("Legacy_Bucket_Name", "a//b.wav"),
        ("abc", "k" * 1024),
    ],
)
def test_valid_names_pass(bucket: str, key: str) -> None:
    assert invalid_name(S3ObjectRef(bucket, key)) is None


@pytest.mark.parametrize(
    ("name", "upload"),
    [
        ("ObjectCreated:Put", True),
        ("ObjectCreated:*", True),
        ("s3:ObjectCreated:*", True),
        ("s3:ObjectCreated:CompleteMultipartUpload", True),
        ("s3:ObjectRestore:Completed", True),
        ("s3:ObjectRestore:*", False),  # a restore that has only begun is in it
        ("s3:ObjectRestore:Post", False),
        ("s3:ObjectRemoved:*", False),
        ("s3:s3:ObjectCreated:Put", False),
    ],
)
def test_s3_record_names_with_or_without_the_configuration_prefix(name: str, upload: bool) -> None:
    record = {
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {"bucket": {"name": INPUT}, "object": {"key": "a.wav", "size": 3, "eTag": "e"}},
    }
    assert [o.key for o in parse_event({"Records": [record]})] == (["a.wav"] if upload else [])
