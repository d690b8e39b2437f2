"""One outcome per object, through the real handler over real HTTP: foreign buckets refused,
one key in two buckets kept apart, the latest version of a key wins whatever order its events
arrive in, the identity of a version resolved once, and stale idempotency records never hide work."""

from __future__ import annotations

import io
import json
import time
import wave
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from localworld.pytest_plugin import DeliveryFactory, FunctionFactory, Uploads
    from localworld.world import LocalWorld

EXISTING_BUCKET = "my-existing-archive"  # the stack's ExistingBucketName in the local world


def padded(audio: bytes, seconds: float = 0.25) -> bytes:
    """The same recording with silence after it: other bytes (another ETag), still speech."""
    with wave.open(io.BytesIO(audio)) as source:
        params = source.getparams()
        frames = source.readframes(source.getnframes())
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setparams(params)
        silence = b"\0" * int(params.framerate * seconds) * params.sampwidth * params.nchannels
        target.writeframes(frames + silence)
    return out.getvalue()


def output_keys(world: LocalWorld) -> list[str]:
    """The JSON outputs (transcripts, failure records); the derived formats sit beside a transcript."""
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json"))


def output_metadata(world: LocalWorld, key: str) -> dict[str, str]:
    return dict(world.aws.s3().head_object(Bucket=world.output_bucket, Key=key)["Metadata"])


def listen_requests(world: LocalWorld) -> int:
    return sum(1 for r in world.emulator.requests if r.path == "/v1/listen")


def only_object(payload: dict[str, Any]) -> dict[str, Any]:
    [obj] = payload["objects"]
    result: dict[str, Any] = obj
    return result


def record_of(event: dict[str, Any]) -> dict[str, Any]:
    s3_object: dict[str, Any] = event["Records"][0]["s3"]["object"]
    return s3_object


# -- buckets -------------------------------------------------------------------------------


def test_a_bucket_the_stack_is_not_configured_for_is_refused_before_any_call(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    s3 = world.aws.s3()
    s3.create_bucket(Bucket="someone-elses-bucket")
    s3.put_object(Bucket="someone-elses-bucket", Key="calls/a.wav", Body=sample_audio)

    result = start_function().invoke({"bucket": "someone-elses-bucket", "key": "calls/a.wav"})

    assert result.error is None, result.logs
    outcome = only_object(result.payload)
    assert (outcome["status"], outcome["reason"]) == ("failed", "foreign-bucket")
    assert listen_requests(world) == 0
    failure = world.failure_key("calls/a.wav", "someone-elses-bucket")
    assert failure == "failures/_buckets/someone-elses-bucket/calls/a.wav.json"
    assert output_keys(world) == [failure]


def test_one_key_in_the_input_bucket_and_the_existing_bucket_gets_two_outcomes(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    s3 = world.aws.s3()
    s3.create_bucket(Bucket=EXISTING_BUCKET)
    s3.put_object(Bucket=EXISTING_BUCKET, Key="same/key.wav", Body=padded(sample_audio))
    world.upload(sample_audio, "same/key.wav")
    function = start_function()

    first = function.invoke({"bucket": world.input_bucket, "key": "same/key.wav"})
    second = function.invoke({"bucket": EXISTING_BUCKET, "key": "same/key.wav"})

    assert first.error is None, first.logs
    assert second.error is None, second.logs
    ours, theirs = world.transcript_key("same/key.wav"), world.transcript_key("same/key.wav", EXISTING_BUCKET)
    assert ours == "transcripts/same/key.wav.json"  # today's key for the stack's own bucket
    assert theirs == f"transcripts/_buckets/{EXISTING_BUCKET}/same/key.wav.json"
    assert output_keys(world) == sorted([ours, theirs])
    assert output_metadata(world, ours)["source-bucket"] == world.input_bucket
    assert output_metadata(world, theirs)["source-bucket"] == EXISTING_BUCKET


# -- the latest version wins -----------------------------------------------------------------


def test_an_older_version_that_finishes_late_never_replaces_the_newer_transcript(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    older = uploads.put("race/a.wav", sample_audio)
    newer = uploads.put("race/a.wav", padded(sample_audio))
    assert record_of(older)["versionId"] != record_of(newer)["versionId"]  # as real S3 sends them
    assert int(record_of(older)["sequencer"], 16) < int(record_of(newer)["sequencer"], 16)
    function = start_function()

    latest = function.invoke(newer)
    late = function.invoke(older)  # delivered out of order

    assert only_object(latest.payload)["status"] == "transcribed", latest.logs
    assert (only_object(late.payload)["status"], only_object(late.payload)["reason"]) == (
        "skipped",
        "superseded",
    ), late.logs
    key = world.transcript_key("race/a.wav")
    assert output_keys(world) == [key]
    metadata = output_metadata(world, key)
    assert metadata["source-version-id"] == record_of(newer)["versionId"]
    assert metadata["source-sequencer"] == record_of(newer)["sequencer"]


def test_an_older_version_that_fails_late_leaves_no_failure_record_beside_the_newer_transcript(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    older = uploads.put("race/b.wav", sample_audio)
    newer = uploads.put("race/b.wav", padded(sample_audio))
    function = start_function()
    assert only_object(function.invoke(newer).payload)["status"] == "transcribed"

    world.emulator.faults.next(1, status=400)  # the old version's audio is refused: permanent
    late = function.invoke(older)

    assert late.error is None, late.logs
    assert (only_object(late.payload)["status"], only_object(late.payload)["reason"]) == (
        "skipped",
        "superseded",
    )
    assert output_keys(world) == [world.transcript_key("race/b.wav")]


def test_reversed_and_duplicated_s3_delivery_ends_with_the_latest_versions_transcript(
    world: LocalWorld, start_delivery: DeliveryFactory, sample_audio: bytes
) -> None:
    delivery = start_delivery(
        functions=["TranscribeFunction"],
        concurrency={"TranscribeFunction": 1},  # one container: the events run in release order
        hold_s3_events=True,
        duplicate_s3_events=True,
    )
    bodies = [sample_audio, padded(sample_audio, 0.25), padded(sample_audio, 0.5)]
    versions = [world.upload(body, "race/c.wav")["VersionId"] for body in bodies]
    deadline = time.monotonic() + 10
    while delivery.held() < len(bodies):
        assert time.monotonic() < deadline, "S3 did not notify every upload"
        time.sleep(0.1)

    assert delivery.release_held() == len(bodies)  # newest first, each twice
    assert delivery.wait_until_idle(120)

    key = world.transcript_key("race/c.wav")
    assert output_keys(world) == [key], "\n".join(delivery.logs[-60:])
    assert output_metadata(world, key)["source-version-id"] == versions[-1]
    outcomes = [only_object(r.result.payload) for r in delivery.records if r.result.error is None]
    assert len(outcomes) == 2 * len(bodies), delivery.logs
    by_version = {v: [o for o in outcomes if o["version"] == v] for v in versions}
    assert {o["status"] for o in by_version[versions[-1]]} == {"transcribed"}, by_version
    for older in versions[:-1]:
        assert {(o["status"], o["reason"]) for o in by_version[older]} == {("skipped", "superseded")}


# -- identity ---------------------------------------------------------------------------------


def test_an_event_without_the_version_id_and_one_with_it_are_one_identity(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    with_version = uploads.put("identity/a.wav", sample_audio)
    without_version: dict[str, Any] = {
        "Records": [
            {**with_version["Records"][0], "s3": {**with_version["Records"][0]["s3"]}},
        ]
    }
    s3_object = dict(record_of(with_version))
    del s3_object["versionId"]
    without_version["Records"][0]["s3"]["object"] = s3_object
    function = start_function()

    first = function.invoke(without_version)
    second = function.invoke(with_version)

    assert only_object(first.payload)["status"] == "transcribed", first.logs
    assert only_object(second.payload)["replayed"] is True, second.logs
    assert listen_requests(world) == 1


def test_a_null_version_id_is_no_version_so_new_content_is_transcribed(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.aws.s3().put_bucket_versioning(
        Bucket=world.input_bucket, VersioningConfiguration={"Status": "Suspended"}
    )
    function = start_function()
    first = uploads.put("suspended/a.wav", sample_audio)
    one = function.invoke(first)
    second = uploads.put("suspended/a.wav", padded(sample_audio))  # new bytes, the same "null" version
    assert record_of(first)["versionId"] == record_of(second)["versionId"] == "null"

    two = function.invoke(second)

    assert only_object(one.payload)["status"] == "transcribed", one.logs
    assert only_object(two.payload)["status"] == "transcribed", two.logs
    assert listen_requests(world) == 2
    metadata = output_metadata(world, world.transcript_key("suspended/a.wav"))
    assert metadata["source-etag"] == record_of(second)["eTag"]
    assert "source-version-id" not in metadata


@pytest.mark.parametrize("overwritten", [False, True], ids=["deleted", "overwritten"])
def test_a_replay_whose_transcript_is_gone_or_foreign_transcribes_again(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    overwritten: bool,
) -> None:
    event = uploads.put("replay/a.wav", sample_audio)
    function = start_function()
    assert only_object(function.invoke(event).payload)["status"] == "transcribed"
    key = world.transcript_key("replay/a.wav")
    s3 = world.aws.s3()
    if overwritten:
        s3.put_object(
            Bucket=world.output_bucket, Key=key, Body=b"{}", Metadata={"source-version-id": "another-version"}
        )
    else:
        s3.delete_object(Bucket=world.output_bucket, Key=key)

    again = function.invoke(event)

    assert only_object(again.payload)["status"] == "transcribed", again.logs
    assert listen_requests(world) == 2
    assert output_metadata(world, key)["source-version-id"] == record_of(event)["versionId"]


# -- parking -------------------------------------------------------------------------------------


def test_parking_an_event_records_only_its_objects_that_still_fail(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    fast_retry_env: dict[str, str],
) -> None:
    done = uploads.put("parked/done.wav", sample_audio)
    stuck = uploads.put("parked/stuck.wav", sample_audio)
    assert only_object(start_function().invoke(done).payload)["status"] == "transcribed"
    event = {"Records": done["Records"] + stuck["Records"]}  # one event naming both
    dead_lettered = {
        "Records": [
            {
                "messageId": "m-parked",
                "receiptHandle": "not-a-real-handle",
                "body": json.dumps(event),
                "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1795435200000"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dead-letter",
                "awsRegion": "us-east-1",
            }
        ]
    }
    world.emulator.faults.next(1, status=503)  # the stuck object's last try fails again
    settings = {**fast_retry_env, "RETRY_MAX_ATTEMPTS": "2", "DEEPGRAM_MAX_ATTEMPTS": "1"}
    retry = start_function("RetryFunction", timeout_s=None, extra_env=None, **settings)

    result = retry.invoke(dead_lettered)

    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "m-parked"}]}, result.logs
    assert output_keys(world) == sorted(
        [world.transcript_key("parked/done.wav"), world.failure_key("parked/stuck.wav")]
    )
    record = json.loads(
        world.aws.s3()
        .get_object(Bucket=world.output_bucket, Key=world.failure_key("parked/stuck.wav"))["Body"]
        .read()
    )
    assert record["class"] == "parked"
