"""Per-upload options end to end: the real handler in a local Lambda container, moto, and the
Deepgram emulator over HTTPS. Options from the object's metadata, a direct payload and a Batch
Operations job change the request the emulator receives; a refused option is a failure record."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


def read_output(world: LocalWorld, key: str) -> tuple[dict[str, str], dict[str, Any]]:
    obj = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)
    return obj["Metadata"], json.loads(obj["Body"].read())


def test_metadata_options_change_the_request_deepgram_receives(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put(
        "calls/stereo call.wav",
        sample_audio,
        Metadata={
            "dg-keyterm": "quick brown fox,lazy dog",
            "dg-diarize-model": "latest",
            "dg-model": "nova-3-medical",  # the deployment's family (nova-3) allows it
        },
    )

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert outcome["status"] == "transcribed"
    [request] = world.emulator.requests
    assert request.status == 200
    assert [v for k, v in request.query if k == "keyterm"] == ["quick brown fox", "lazy dog"]
    assert ("diarize_model", "latest") in request.query
    assert [v for k, v in request.query if k == "model"] == [
        "nova-3-medical"
    ]  # the upload's, not the stack's
    assert ("tag", "local") in request.query  # the stack's usage tag still applies
    assert outcome["options"]["diarize_model"] == "latest"
    assert outcome["estimated_cost_usd"] > 0
    metadata, document = read_output(world, world.transcript_key("calls/stereo call.wav"))
    assert "diarize_model=latest" in metadata["deepgram-options"]
    assert float(metadata["audio-seconds"]) == document["metadata"]["duration"]
    assert float(metadata["estimated-cost-usd"]) == outcome["estimated_cost_usd"]
    # diarization turned on by diarize_model: the emulator's words carry speakers
    words = document["results"]["channels"][0]["alternatives"][0]["words"]
    assert words
    assert all("speaker" in word for word in words)


def test_a_refused_option_is_a_failure_record_and_reaches_no_deepgram(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put(
        "calls/sneaky.wav", sample_audio, Metadata={"dg-callback": "https://example.com/steal"}
    )

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert (outcome["status"], outcome["reason"]) == ("failed", "option-refused")
    assert world.emulator.requests == []
    _, record = read_output(world, world.failure_key("calls/sneaky.wav"))
    assert (record["reason"], record["option"]) == ("option-refused", "callback")
    assert record["source"]["key"] == "calls/sneaky.wav"


def test_a_direct_invoke_sets_options_in_its_payload(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.aws.s3().put_object(Bucket=world.input_bucket, Key="direct/es.wav", Body=sample_audio)
    payload = {
        "bucket": world.input_bucket,
        "key": "direct/es.wav",
        "options": {"language": "es", "detect_language": False, "redact": ["pci", "ssn"]},
    }

    result = start_function().invoke(payload)

    assert result.error is None, result.logs
    assert result.payload["transcribed"] == 1
    [request] = world.emulator.requests
    assert [v for k, v in request.query if k == "language"] == ["es"]
    assert [v for k, v in request.query if k == "redact"] == ["pci", "ssn"]
    assert ("detect_language", "false") in request.query


def test_a_batch_operations_job_sets_options_in_its_user_arguments(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.aws.s3().put_object(Bucket=world.input_bucket, Key="backfill/old.wav", Body=sample_audio)

    def task_event(options: str) -> dict[str, Any]:
        return {
            "invocationSchemaVersion": "2.0",
            "invocationId": "inv-1",
            "job": {"id": "job-1", "userArguments": {"options": options}},
            "tasks": [
                {
                    "taskId": "t1",
                    "s3Bucket": world.input_bucket,
                    "s3Key": "backfill/old.wav",
                    "s3VersionId": None,
                }
            ],
        }

    function = start_function()
    result = function.invoke(task_event("multichannel=true&keyterm=fox"))

    assert result.error is None, result.logs
    assert [r["resultCode"] for r in result.payload["results"]] == ["Succeeded"]
    [request] = world.emulator.requests
    assert ("multichannel", "true") in request.query
    assert ("keyterm", "fox") in request.query
    refused = function.invoke(task_event("extra=who:me"))
    assert refused.error is None, refused.logs
    [answer] = refused.payload["results"]
    assert answer["resultCode"] == "PermanentFailure"
    assert answer["resultString"].startswith("option-refused")
    assert len(world.emulator.requests) == 1


def test_the_metadata_head_finds_a_deleted_object_before_any_deepgram_request(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("gone/a.wav", sample_audio)
    version = event["Records"][0]["s3"]["object"]["versionId"]  # the version itself, not a marker
    world.aws.s3().delete_object(Bucket=world.input_bucket, Key="gone/a.wav", VersionId=version)

    result = start_function(DELIVERY_MODE="url").invoke(event)

    assert result.error is None, result.logs
    _, record = read_output(world, world.failure_key("gone/a.wav"))
    assert record["reason"] == "s3-object-missing"
    assert world.emulator.requests == []
