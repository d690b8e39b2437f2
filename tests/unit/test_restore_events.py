"""A restore of an archived object completing is a way in: the restored copy can now be transcribed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transcriber.domain.events import S3ObjectRef, parse_event

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_an_s3_restore_completed_record_names_the_restored_object() -> None:
    event = json.loads((EVENTS / "s3-restore-completed.json").read_text())

    assert parse_event(event) == [
        S3ObjectRef(
            bucket="transcriber-local-input-123456789012-us-east-1",
            key="archive/old call.wav",
            size=94924,
            etag="4b078d957ea643e82e25a159bff3a35d",
            sequencer="0055AED6DCD90281E5",
        )
    ]


def test_an_eventbridge_restore_completed_event_names_the_restored_object() -> None:
    event: dict[str, Any] = {
        "version": "0",
        "id": "e-1",
        "detail-type": "Object Restore Completed",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-26T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:s3:::my-input-bucket"],
        "detail": {
            "version": "0",
            "bucket": {"name": "my-input-bucket"},
            "object": {"key": "archive/a.wav", "size": 10, "etag": "e2", "version-id": "v-2"},
            "request-id": "r",
            "requester": "s3.amazonaws.com",
            "restore-expiry-time": "2026-12-03T00:00:00Z",
            "source-storage-class": "GLACIER",
        },
    }

    assert parse_event(event) == [
        S3ObjectRef(bucket="my-input-bucket", key="archive/a.wav", version_id="v-2", size=10, etag="e2")
    ]


def test_a_restore_that_only_started_is_not_a_way_in() -> None:
    event = json.loads((EVENTS / "s3-restore-completed.json").read_text())
    event["Records"][0]["eventName"] = "ObjectRestore:Post"

    assert parse_event(event) == []
