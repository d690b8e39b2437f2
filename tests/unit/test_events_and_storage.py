from typing import Any

import pytest

from transcriber.domain.events import S3ObjectRef, parse_event
from transcriber.errors import PermanentError
from transcriber.observability import redact_url
from transcriber.services.storage import (
    MAX_KEY_BYTES,
    METADATA_BUDGET,
    _source_metadata,
    metadata_value,
    output_key,
)


def s3_record(
    key: str, *, name: str = "ObjectCreated:Put", size: int = 10, version: str | None = None
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": "abc", "sequencer": "1"}
    if version:
        obj["versionId"] = version
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-23T00:00:00.000Z",
        "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "in", "arn": "arn:aws:s3:::in"}, "object": obj},
    }


def test_keys_are_url_decoded() -> None:
    objects = parse_event({"Records": [s3_record("calls/a+b%C3%A9+%2B1%25.wav", version="v1")]})

    assert objects == [
        S3ObjectRef("in", "calls/a bé +1%.wav", version_id="v1", size=10, etag="abc", sequencer="1")
    ]


def test_test_events_and_deletions_yield_nothing() -> None:
    assert parse_event({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "in"}) == []
    assert parse_event({"Records": [s3_record("a.wav", name="ObjectRemoved:Delete")]}) == []


@pytest.mark.parametrize(
    "event",
    [[], "text", {"Records": []}, {"Records": [{"eventSource": "aws:sqs"}]}, {"detail": {}}],
)
def test_unknown_shapes_are_permanent_errors_naming_the_accepted_ones(event: object) -> None:
    with pytest.raises(PermanentError, match="accepted event shapes") as caught:
        parse_event(event)

    assert caught.value.reason == "unrecognised-event"


def test_malformed_s3_record_is_permanent() -> None:
    record = s3_record("a.wav")
    del record["s3"]["object"]["key"]

    with pytest.raises(PermanentError, match="malformed s3 event"):
        parse_event({"Records": [record]})


def test_output_keys_mirror_input_keys_and_stay_within_s3_limits() -> None:
    assert output_key("transcripts/", "calls/a bé.wav") == "transcripts/calls/a bé.wav.json"

    long_key = "é" * 510  # 1,020 bytes: with the prefix and suffix it no longer fits
    hashed = output_key("transcripts/", long_key)
    assert hashed.startswith("transcripts/_long-keys/")
    assert len(hashed.encode()) <= MAX_KEY_BYTES


def test_presigned_url_secrets_are_redacted() -> None:
    url = (
        "https://b.s3.amazonaws.com/k.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261123%2Fus-east-1&X-Amz-Date=20261123T000000Z"
        "&X-Amz-Expires=3600&X-Amz-Security-Token=FwoGZX&X-Amz-Signature=deadbeef"
    )

    redacted = redact_url(url)

    for secret in ("AKIA", "FwoGZX", "deadbeef"):
        assert secret not in redacted
    assert "X-Amz-Expires=3600" in redacted
    assert redacted.startswith("https://b.s3.amazonaws.com/k.wav?")


@pytest.mark.parametrize("key", ["a/../b.wav", "./x.wav", "x/.."])
def test_keys_with_dot_segments_get_hashed_output_keys(key: str) -> None:
    hashed = output_key("failures/", key)

    assert hashed.startswith("failures/_unsafe-keys/")
    assert "/../" not in hashed
    assert "/./" not in hashed
    assert hashed != output_key("failures/", "a/../c.wav")


def test_other_buckets_get_their_own_output_folder_and_the_input_bucket_keeps_plain_keys() -> None:
    home = "stack-input"
    assert output_key("transcripts/", "a.wav", bucket=home, home_bucket=home) == "transcripts/a.wav.json"
    assert output_key("transcripts/", "a.wav") == "transcripts/a.wav.json"
    assert (
        output_key("transcripts/", "a.wav", bucket="archive", home_bucket=home)
        == "transcripts/_buckets/archive/a.wav.json"
    )
    assert (
        output_key("failures/", "a.wav", bucket="archive", home_bucket=home)
        == "failures/_buckets/archive/a.wav.json"
    )
    long_key = "x" * 1020
    assert output_key("transcripts/", long_key, bucket="archive", home_bucket=home).startswith(
        "transcripts/_buckets/archive/_long-keys/"
    )


@pytest.mark.parametrize("key", ["_buckets/archive/a.wav", "_long-keys/abc", "_unsafe-keys/abc"])
def test_an_input_key_shaped_like_a_mapped_key_is_hashed_so_nothing_collides(key: str) -> None:
    mapped = output_key("transcripts/", key)

    assert mapped.startswith("transcripts/_unsafe-keys/")
    assert mapped != output_key("transcripts/", "a.wav", bucket="archive", home_bucket="in")


def test_a_bucket_name_that_is_not_one_never_shapes_the_key() -> None:
    mapped = output_key("failures/", "a.wav", bucket="../../x", home_bucket="in")

    assert mapped.startswith("failures/_buckets/_invalid-")
    assert "/../" not in mapped


@pytest.mark.parametrize(
    "value",
    ["café-ü", "x" * 5000, "\x00\n\r", "é" * 700, "3b5d5c3712955042212316173ccf37be-12"],
)
def test_metadata_values_are_ascii_and_bounded(value: str) -> None:
    encoded = metadata_value(value, 128)

    assert encoded.isascii()
    assert len(encoded) <= 128
    assert "%" not in encoded[-2:]  # never cut inside an escape
    assert metadata_value("3b5d5c3712955042212316173ccf37be-12", 128) == "3b5d5c3712955042212316173ccf37be-12"


def test_source_metadata_fits_s3s_2kb_whatever_the_event_carries() -> None:
    obj = S3ObjectRef("b" * 63, "é" * 1000, version_id="ü" * 900, etag="\u2603" * 900, sequencer="f" * 900)

    metadata = _source_metadata(obj)
    size = sum(len(k) + len(v) for k, v in metadata.items())

    assert all(v.isascii() for v in metadata.values())
    assert size <= METADATA_BUDGET - 200
    assert "source-key-sha256" in metadata
