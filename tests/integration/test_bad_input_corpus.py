"""The bad-input corpus (tests/corpus/bad_inputs.yaml) through the real transcribe handler
against the local world: each case marked ``http: true`` (one per outcome class, and those whose
outcome hangs on a real presigned GET or the emulator's decoder) ends as its expected, classified
outcome. Every case runs in-process in tests/core/test_bad_input_corpus.py."""

from __future__ import annotations

import io
import json
import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from transcriber.services.storage import LONG_KEY_FOLDER

if TYPE_CHECKING:
    from localworld.lambda_runtime import InvocationResult
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

CORPUS = [
    case
    for case in yaml.safe_load(
        (Path(__file__).parents[1] / "corpus" / "bad_inputs.yaml").read_text(encoding="utf-8")
    )
    if case.get("http")
]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\x00" * 64


def silence(seconds: float = 2.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * int(16000 * seconds))
    return buffer.getvalue()


def bodies(sample: bytes) -> dict[str, bytes]:
    return {
        "sample": sample,
        "empty": b"",
        "text": b"minutes of the meeting, not audio\n" * 30,
        "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "png": PNG,
        "silence": silence(),
        "truncated-wav": sample[:30],  # cut inside the header
        "corrupt-header-wav": sample[:12] + b"\xde\xad\xbe\xef" * 6 + sample[36:],
    }


def fill(value: Any, world: LocalWorld) -> Any:
    if isinstance(value, str):
        return (
            value.replace("{output_bucket}", world.output_bucket)
            .replace("{input_bucket}", world.input_bucket)
            .replace("{garbage256k}", "\x01garbage" * (256 * 1024 // 9))
        )
    if isinstance(value, dict):
        return {k: fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, world) for v in value]
    return value


def object_key(case: dict[str, Any]) -> str:
    key = str(case["key"])
    if "{long}" in key:
        filler = 1024 - len(key.replace("{long}", "").encode())
        key = key.replace("{long}", "k" * filler)
        assert len(key.encode()) == 1024
    return key


def output_keys(world: LocalWorld) -> list[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json"))


def prepare_event(case: dict[str, Any], world: LocalWorld, uploads: Uploads, sample: bytes) -> dict[str, Any]:
    if "event" in case:
        event: dict[str, Any] = fill(case["event"], world)
        return event
    key = object_key(case)
    extra = {"ContentType": case["content_type"]} if "content_type" in case else {}
    if "storage_class" in case:
        extra["StorageClass"] = case["storage_class"]
    s3 = world.aws.s3()
    if case.get("action") == "stale-version":
        event = uploads.put(key, sample)
        version = s3.head_object(Bucket=world.input_bucket, Key=key)["VersionId"]
        s3.put_object(Bucket=world.input_bucket, Key=key, Body=sample)  # a newer version
        uploads.next_event()
        s3.delete_object(Bucket=world.input_bucket, Key=key, VersionId=version)
        event["Records"][0]["s3"]["object"]["versionId"] = version
        return event
    event = uploads.put(key, bodies(sample)[case["body"]], **extra)
    if case.get("action") == "delete-object":  # gone for good: the version the event names too
        version = event["Records"][0]["s3"]["object"].get("versionId")
        s3.delete_object(Bucket=world.input_bucket, Key=key, **({"VersionId": version} if version else {}))
    if case.get("action") == "delete-marker":  # deleted as S3 does by default: the version stays
        s3.delete_object(Bucket=world.input_bucket, Key=key)
    if case.get("action") == "restore":
        s3.restore_object(Bucket=world.input_bucket, Key=key, RestoreRequest={"Days": 1})
    if case.get("action") == "claim-size":
        event["Records"][0]["s3"]["object"]["size"] = case["size"]
    if case.get("action") == "null-version":
        event["Records"][0]["s3"]["object"]["versionId"] = "null"
    return event


def check(case: dict[str, Any], world: LocalWorld, result: InvocationResult) -> None:
    expect = case["expect"]
    outcome, reason = expect["outcome"], expect.get("reason")
    outputs = output_keys(world)
    if outcome in {"transcript", "skipped", "failure", "sqs-failure"}:
        assert result.error is None, result.logs
    if outcome == "transcript":
        [key] = outputs
        assert key == world.transcript_key(object_key(case)), outputs
        assert (LONG_KEY_FOLDER in key) is bool(expect.get("long_key")), key
        document = json.loads(world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)["Body"].read())
        text = document["results"]["channels"][0]["alternatives"][0]["transcript"]
        assert (text == "") is bool(expect.get("empty_transcript")), text
    elif outcome == "skipped":
        assert [o["reason"] for o in result.payload["objects"]] == ([reason] if reason else [])
        assert outputs == []
        assert len(world.emulator.requests) == expect.get("deepgram_requests", 0)
    elif outcome == "failure":
        assert outputs == [world.failure_key(object_key(case), case.get("bucket"))]
        record = json.loads(
            world.aws.s3().get_object(Bucket=world.output_bucket, Key=outputs[0])["Body"].read()
        )
        assert record["reason"] == reason
        assert record["source"]["key"] == object_key(case)
        if "deepgram_requests" in expect:
            assert len(world.emulator.requests) == expect["deepgram_requests"]
    elif outcome == "sqs-failure":
        assert result.payload == {"batchItemFailures": [{"itemIdentifier": "m-garbage"}]}
        assert any(reason in line for line in result.logs)
    else:
        error_type = {
            "permanent-error": "PermanentError",
            "configuration-error": "ConfigurationError",
            "retried": "RetryableError",
            "blocked": "BlockedError",
        }[outcome]
        assert result.error is not None, result.payload
        assert result.error["errorType"] == error_type
        assert result.error["errorMessage"].startswith(reason)
        assert [k for k in outputs if k.startswith(world.transcript_prefix)] == []


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c["expect"]["outcome"] != "not-routed"], ids=lambda c: c["id"]
)
def test_bad_input(
    case: dict[str, Any],
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    if "secret" in case:
        value = case["secret"]
        world.aws.create_secret(
            world.secret_id, bytes.fromhex(value["binary"]) if isinstance(value, dict) else value
        )
    event = prepare_event(case, world, uploads, sample_audio)
    if "fault" in case:
        world.emulator.faults.next(1, **case["fault"])
    env = fill(case.get("env", {}), world)
    result = start_function(timeout_s=case.get("timeout_s"), **env).invoke(event)

    check(case, world, result)


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c["expect"]["outcome"] == "not-routed"], ids=lambda c: c["id"]
)
def test_objects_outside_the_filter_never_reach_the_function(
    case: dict[str, Any], world: LocalWorld, sample_audio: bytes
) -> None:
    prefix = case["expect"]["prefix"]
    filtered = world.stack_with(**{"Settings.Uploads.InputPrefix": prefix})
    queue_url = world.aws.route_bucket_notifications(filtered, "TranscribeFunction")
    s3, sqs = world.aws.s3(), world.aws.sqs()

    s3.put_object(Bucket=world.input_bucket, Key=object_key(case), Body=sample_audio)
    s3.put_object(Bucket=world.input_bucket, Key=f"{prefix}inside.wav", Body=sample_audio)

    deadline, keys = time.monotonic() + 5, list[str]()
    while time.monotonic() < deadline and not keys:
        for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
            keys += [r["s3"]["object"]["key"] for r in json.loads(message["Body"]).get("Records", [])]
    assert [k.replace("%2F", "/") for k in keys] == [f"{prefix}inside.wav"]
