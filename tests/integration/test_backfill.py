"""`make backfill`'s command, end to end on the local world: `scripts/operate.py backfill` in its own
process with plain boto3, S3 Batch Operations' job (the local stand-in) invoking the real transcribe
handler once per object, and the completion report summed up by reason."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localworld.pytest_plugin import Backfill
    from localworld.world import LocalWorld

PREFIX = "archive/2019/"


def deepgram_answers(world: LocalWorld) -> int:
    return sum(1 for request in world.emulator.requests if request.status == 200)


def test_a_backfill_transcribes_the_archive_once_and_reports_by_reason(
    world: LocalWorld, backfill: Backfill, sample_audio: bytes
) -> None:
    good = backfill.upload(PREFIX, 4)
    s3 = world.aws.s3()
    s3.put_object(Bucket=world.input_bucket, Key=f"{PREFIX}notes.wav", Body=b"meeting notes, not audio")
    s3.put_object(Bucket=world.input_bucket, Key=f"{PREFIX}readme.txt", Body=b"hi", ContentType="text/plain")
    s3.put_object(Bucket=world.input_bucket, Key="elsewhere/skip-me.wav", Body=sample_audio)

    first = backfill.run(PREFIX)

    assert first.returncode == 1, first.stderr  # one object failed
    result = json.loads(first.stdout)  # the result on stdout, progress on stderr
    assert result["job_id"]
    assert {k: result[k] for k in ("bucket", "prefix", "status", "tasks", "succeeded", "transcribed")} == {
        "bucket": world.input_bucket,
        "prefix": PREFIX,
        "status": "Complete",
        "tasks": 6,
        "succeeded": 5,
        "transcribed": 4,
    }
    assert (result["skipped"], result["failed"]) == ({"not-media": 1}, {"deepgram-unsupported-audio": 1})
    lines = first.stderr.splitlines()
    assert lines[0].startswith("started job ")
    assert any(line.startswith("Complete: 6/6 tasks done") for line in lines)
    for key in good:
        s3.head_object(Bucket=world.output_bucket, Key=world.transcript_key(key))
    s3.head_object(Bucket=world.output_bucket, Key=world.failure_key(f"{PREFIX}notes.wav"))
    assert deepgram_answers(world) == 4  # 1.00 per transcribed object; nothing outside the prefix

    again = backfill.run(PREFIX)

    assert (json.loads(again.stdout)["tasks"], json.loads(again.stdout)["transcribed"]) == (6, 4), (
        again.stdout
    )
    assert deepgram_answers(world) == 4  # already transcribed: answered by idempotency, for free


def test_a_task_that_ends_on_temporary_failure_leaves_a_failure_record(
    world: LocalWorld, backfill: Backfill
) -> None:
    """S3 retries a TemporaryFailure a number of times the invocation never tells: the task's last
    answer must leave a visible outcome beside the job report."""
    [key] = backfill.upload(PREFIX, 1)
    world.emulator.faults.next(100, status=503)  # Deepgram down for every attempt of the job

    run = backfill.run(PREFIX, extra_env={"DEEPGRAM_MAX_ATTEMPTS": "1"})

    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["succeeded"] == 0
    record = json.loads(
        world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.failure_key(key))["Body"].read()
    )
    assert (record["reason"], record["class"]) == ("deepgram-unavailable", "retryable")
    assert record["backfill"]["task_id"]
    assert not any(request.status == 200 for request in world.emulator.requests)
