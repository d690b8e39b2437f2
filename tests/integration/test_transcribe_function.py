"""The transcribe function end to end: real S3 events from moto, the real handler in a local
Lambda container with template.yaml's environment, the Deepgram emulator over HTTPS."""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from transcriber.config import Settings

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

SPOKEN = "the quick brown fox jumps over the lazy dog"


def transcript_text(document: dict[str, Any]) -> str:
    return str(document["results"]["channels"][0]["alternatives"][0]["transcript"])


def read_output(world: LocalWorld, key: str) -> tuple[Any, Any]:
    obj = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)
    return obj, json.loads(obj["Body"].read())


def output_keys(world: LocalWorld) -> list[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json"))


def test_an_upload_becomes_a_transcript_with_the_request_deepgram_expects(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("calls/hello.wav", sample_audio)

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload["transcribed"] == 1
    [request] = world.emulator.requests
    assert (request.method, request.path) == ("POST", "/v1/listen")
    # Exactly the options the stack configures (each option's encoding is tested in tests/unit).
    configured = Settings.from_env(world.function("TranscribeFunction").environment)
    assert request.query == configured.deepgram.query()
    assert request.query[:2] == [("model", "nova-3"), ("language", "en")]
    assert ("tag", "local") in request.query
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Token ****{world.api_key[-4:]}"
    assert request.status == 200
    assert list(request.json) == ["url"]
    media_url = urlsplit(request.json["url"])
    assert unquote(media_url.path) == f"/{world.input_bucket}/calls/hello.wav"
    signed = parse_qs(media_url.query)
    assert signed["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert signed["X-Amz-Expires"] == ["900"]  # covers a fetch within one invocation
    assert "X-Amz-Signature" in signed

    obj, document = read_output(world, world.transcript_key("calls/hello.wav"))
    assert obj["ContentType"] == "application/json"
    assert obj["Metadata"]["source-bucket"] == world.input_bucket
    assert obj["Metadata"]["source-key"] == "calls/hello.wav"
    assert obj["Metadata"]["source-etag"] == event["Records"][0]["s3"]["object"]["eTag"]
    assert obj["Metadata"]["deepgram-request-id"] == request.request_id == document["metadata"]["request_id"]
    assert document["metadata"]["tags"] == ["local"]
    assert transcript_text(document).lower().rstrip(".") == SPOKEN


@pytest.mark.parametrize(
    ("key", "encoded_output"),
    [
        ("uploads/a bé.wav", "uploads/a%20b%C3%A9.wav"),
        ("uploads/plus+sign 100%.wav", "uploads/plus%2Bsign%20100%25.wav"),
        ("日本語/録音 #1?.wav", "%E6%97%A5%E6%9C%AC%E8%AA%9E/%E9%8C%B2%E9%9F%B3%20%231%3F.wav"),
    ],
)
def test_keys_with_spaces_unicode_and_plus_map_to_their_transcripts(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    key: str,
    encoded_output: str,
    sample_audio: bytes,
) -> None:
    event = uploads.put(key, sample_audio)
    assert event["Records"][0]["s3"]["object"]["key"] != key  # S3 sends it URL-encoded

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    obj, document = read_output(world, world.transcript_key(key))
    assert obj["Metadata"]["source-key"] == encoded_output
    assert SPOKEN in transcript_text(document).lower()


def test_skip_rules_make_no_deepgram_call(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory
) -> None:
    events = [
        uploads.put("folder/", b""),
        uploads.put("empty.wav", b""),
        uploads.put("notes.txt", b"meeting notes"),
        uploads.put("no-extension", b"plain text", ContentType="text/plain"),
    ]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": world.input_bucket}
    function = start_function()

    reasons = []
    for event in [*events, test_event]:
        result = function.invoke(event)
        assert result.error is None, result.logs
        reasons += [o["reason"] for o in result.payload["objects"]]
        assert result.payload["transcribed"] == 0

    assert reasons == ["folder-placeholder", "empty-object", "not-media", "not-media"]
    assert world.emulator.requests == []
    assert output_keys(world) == []
    assert any('"skip_reason":"s3-test-event"' in line for line in result.logs)


def test_a_key_without_extension_is_judged_by_its_content_type(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("recordings/call-0001", sample_audio, ContentType="audio/wav")

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert output_keys(world) == [world.transcript_key("recordings/call-0001")]


def test_a_duplicated_event_makes_exactly_one_deepgram_request(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("dup/one.wav", sample_audio)
    warm = start_function()

    first = warm.invoke(event)
    again_warm = warm.invoke(event)
    again_cold = start_function().invoke(event)  # another container: only DynamoDB remembers

    assert [r.error for r in (first, again_warm, again_cold)] == [None, None, None]
    assert len(world.emulator.requests) == 1
    assert [r.payload["objects"][0]["replayed"] for r in (first, again_warm, again_cold)] == [
        False,
        True,
        True,
    ]
    assert output_keys(world) == [world.transcript_key("dup/one.wav")]


@pytest.mark.parametrize("form", ["plain", "json", "json-alternate-key"])
def test_plain_and_json_secrets_both_work(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, form: str, sample_audio: bytes
) -> None:
    value = {
        "plain": world.api_key,
        "json": json.dumps({"api_key": world.api_key, "owner": "team-a"}),
        "json-alternate-key": json.dumps({"deepgram_api_key": world.api_key}),
    }[form]
    world.aws.create_secret(world.secret_id, value)

    result = start_function().invoke(uploads.put("secret/form.wav", sample_audio))

    assert result.error is None, result.logs
    assert output_keys(world) == [world.transcript_key("secret/form.wav")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("  \n", "secret-empty"),  # AWS refuses a zero-length SecretString
        ('{"api_key": ', "secret-malformed"),
        ('{"token": "abc"}', "secret-malformed"),
        (b"\xff\xfe\xfd", "secret-malformed"),
    ],
)
def test_a_bad_secret_is_a_configuration_error_naming_the_secret(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    value: str | bytes,
    reason: str,
    sample_audio: bytes,
) -> None:
    world.aws.create_secret(world.secret_id, value)

    result = start_function().invoke(uploads.put("secret/bad.wav", sample_audio))

    assert result.error is not None
    assert result.error["errorType"] == "ConfigurationError"
    assert result.error["errorMessage"].startswith(reason)
    assert world.secret_id in result.error["errorMessage"]
    assert world.emulator.requests == []


def test_a_missing_secret_is_a_configuration_error(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("secret/missing.wav", sample_audio)

    result = start_function(DEEPGRAM_SECRET_ID="deepgram/nowhere").invoke(event)

    assert result.error is not None
    assert result.error["errorType"] == "ConfigurationError"
    assert "deepgram/nowhere" in result.error["errorMessage"]
    assert "ResourceNotFoundException" in result.error["errorMessage"]
    assert world.emulator.requests == []


def test_a_rotated_key_is_reread_once_after_a_401(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    function = start_function()
    assert function.invoke(uploads.put("rotate/before.wav", sample_audio)).error is None  # caches the key
    rotated = "f" * 40
    world.aws.create_secret(world.secret_id, rotated)
    world.emulator.api_keys = {rotated}  # the old key is revoked

    result = function.invoke(uploads.put("rotate/after.wav", sample_audio))

    assert result.error is None, result.logs
    statuses = [(r.status, r.headers["Authorization"][-4:]) for r in world.emulator.requests]
    assert statuses == [(200, world.api_key[-4:]), (401, world.api_key[-4:]), (200, rotated[-4:])]
    assert world.transcript_key("rotate/after.wav") in output_keys(world)


def test_a_revoked_key_fails_loudly_after_one_reread(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    # A key nobody holds. Not "0" * 40: the secret-hygiene plugin keeps looking for every key a
    # test set, and a later test's transcript with a huge integer (10**40) holds forty zeros.
    world.emulator.api_keys = {secrets.token_hex(20)}

    result = start_function().invoke(uploads.put("revoked/a.wav", sample_audio))

    assert result.error is not None
    assert result.error["errorType"] == "BlockedError"
    assert result.error["errorMessage"].startswith("deepgram-invalid-credentials")
    assert [r.status for r in world.emulator.requests] == [401, 401]
    assert output_keys(world) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://api.deepgram.com"])
def test_a_non_https_api_url_is_refused_before_any_request(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, url: str, sample_audio: bytes
) -> None:
    result = start_function(DEEPGRAM_API_URL=url).invoke(uploads.put("insecure/a.wav", sample_audio))

    assert result.error is not None
    assert result.error["errorType"] == "ConfigurationError"
    assert "DEEPGRAM_API_URL must be an https:// URL" in result.error["errorMessage"]
    assert world.emulator.requests == []


def test_bad_audio_leaves_a_failure_record_that_a_later_success_removes(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    function = start_function()

    failed = function.invoke(uploads.put("mixed/take.wav", b"this is not audio at all" * 10))

    assert failed.error is None  # permanent: answered, not retried
    assert failed.payload["failed"] == 1
    _, record = read_output(world, world.failure_key("mixed/take.wav"))
    assert record["reason"] == "deepgram-unsupported-audio"
    assert record["http_status"] == 400
    assert record["source"]["key"] == "mixed/take.wav"
    assert record["deepgram_request_id"] == world.emulator.requests[0].request_id

    fixed = function.invoke(uploads.put("mixed/take.wav", sample_audio))

    assert fixed.error is None
    assert output_keys(world) == [world.transcript_key("mixed/take.wav")]


def test_options_come_from_configuration(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    function = start_function(
        DEEPGRAM_MODEL="nova-2",
        DEEPGRAM_DIARIZE="true",
        DEEPGRAM_UTTERANCES="true",
        DEEPGRAM_TAG="team-a,batch",
        DEEPGRAM_EXTRA_OPTIONS="extra=source:s3&numerals=true",
    )

    result = function.invoke(uploads.put("opts/a.wav", sample_audio))

    assert result.error is None, result.logs
    query = world.emulator.requests[0].query
    assert ("model", "nova-2") in query
    assert ("diarize", "true") in query
    assert [v for k, v in query if k == "tag"] == ["team-a", "batch"]
    assert query[-2:] == [("extra", "source:s3"), ("numerals", "true")]
    _, document = read_output(world, world.transcript_key("opts/a.wav"))
    assert document["metadata"]["extra"] == {"source": "s3"}
    assert "utterances" in document["results"]
