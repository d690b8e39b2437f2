"""``operate.py report`` (``make report``) against the local world: transcripts written by the real
function, and by hand with the same metadata, counted with their audio and estimated cost; failure
records counted by reason; a period that holds none of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from scripts.operate import AUDIO_SECONDS_METADATA, COST_METADATA, main, usage_report
from transcriber.domain.cost import metadata as cost_metadata

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


def failure(key: str, reason: str, failed_at: str) -> bytes:
    record = {"source": {"bucket": "in", "key": key}, "reason": reason, "failed_at": failed_at}
    return json.dumps(record).encode()


def test_the_report_reads_what_the_function_writes(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert set(cost_metadata(1.0, 0.1)) == {AUDIO_SECONDS_METADATA, COST_METADATA}
    result = start_function().invoke(uploads.put("calls/real.wav", sample_audio))
    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    s3 = world.aws.s3()
    for name, seconds, usd in [("calls/a.wav", 1800.0, 0.129), ("calls/b.wav", 5400.0, 0.387)]:
        s3.put_object(
            Bucket=world.output_bucket,
            Key=world.transcript_key(name),
            Body=b"{}",
            Metadata=cost_metadata(seconds, usd),
        )
    s3.put_object(Bucket=world.output_bucket, Key=world.transcript_key("calls/old.wav"), Body=b"{}")
    s3.put_object(Bucket=world.output_bucket, Key="transcripts/calls/a.wav.txt", Body=b"not counted")
    now = datetime.now(UTC)
    for name, reason, at in [
        ("x.wav", "option-refused", now),
        ("y.wav", "option-refused", now),
        ("z.wav", "deepgram-unsupported-audio", now),
        ("w.wav", "deepgram-unsupported-audio", now - timedelta(days=90)),
    ]:
        s3.put_object(
            Bucket=world.output_bucket,
            Key=world.failure_key(name),
            Body=failure(name, reason, at.isoformat()),
        )

    report = usage_report(s3, world.output_bucket, now - timedelta(hours=1), now + timedelta(hours=1))

    real_seconds = float(
        s3.head_object(Bucket=world.output_bucket, Key=world.transcript_key("calls/real.wav"))["Metadata"][
            AUDIO_SECONDS_METADATA
        ]
    )
    assert real_seconds > 0
    assert report["transcripts"] == 4
    assert report["audio_hours"] == pytest.approx((1800 + 5400 + real_seconds) / 3600, abs=1e-4)
    assert report["estimated_cost_usd"] == pytest.approx(0.129 + 0.387 + outcome["estimated_cost_usd"])
    assert report["transcripts_without_estimate"] == 1
    assert report["failures"] == 3
    assert report["failures_by_reason"] == {"option-refused": 2, "deepgram-unsupported-audio": 1}

    past = usage_report(s3, world.output_bucket, now - timedelta(days=2), now - timedelta(days=1))
    assert (past["transcripts"], past["failures"]) == (0, 0)

    for name, value in world.aws.env().items():
        monkeypatch.setenv(name, value)
    assert main(["report", "--bucket", world.output_bucket, "--text"]) == 0
    printed = capsys.readouterr().out
    assert "transcripts           4" in printed
    assert "option-refused" in printed
    assert main(["report", "--bucket", world.output_bucket, "--since", "2020-01-01"]) == 0
    as_json = json.loads(capsys.readouterr().out)  # JSON is the default: the whole stdout parses
    assert as_json["failures"] == 4
    assert as_json["transcripts"] == 4
