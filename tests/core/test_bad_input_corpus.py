"""The bad-input corpus (tests/corpus/bad_inputs.yaml) in-process: the real Transcriber built by
``compose.transcriber_from`` on moto's in-process mock, Deepgram played by ``responses``.

Every case ends as its expected, classified outcome, in milliseconds instead of a function process
each. ``tests/integration/test_bad_input_corpus.py`` keeps the cases marked ``http: true`` (one per
outcome class, and those whose outcome hangs on a real presigned GET) end to end over HTTP.

The stand-in Deepgram here does what the emulator does with the media, no kinder: it fetches a
``url`` request's object from S3 (an archived or missing object is a ``REMOTE_CONTENT_ERROR``), reads
a raw upload as it comes, refuses what is not a well-formed WAV as corrupt or unsupported, hears
nothing in silence, and answers the corpus' injected faults with the emulator's bodies.
"""

from __future__ import annotations

import functools
import io
import json
import math
import struct
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import botocore.exceptions
import pytest
import requests
import responses
import yaml

from tests.core.conftest import (
    API_KEY,
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    SECRET_ID,
    failure_key,
    transcript_body,
    transcript_key,
)
from transcriber.pipeline.adapters import handle_event
from transcriber.services.storage import LONG_KEY_FOLDER

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory

CORPUS: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parents[1] / "corpus" / "bad_inputs.yaml").read_text(encoding="utf-8")
)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\x00" * 64
CORRUPT_AUDIO_MSG = "Bad Request: failed to process audio: corrupt or unsupported data"
REQUEST_ID = "core-corpus-request"
# A 200 without channels: a broken success body.
HOLLOW = {"metadata": {"request_id": REQUEST_ID, "channels": 0}, "results": {"channels": []}}


def wav(seconds: float = 2.0, tone_hz: float | None = 440.0) -> bytes:
    """A 16 kHz mono WAV: a tone (something to hear), or silence."""
    frames = int(16000 * seconds)
    amplitude = 8000 if tone_hz else 0
    samples = (int(amplitude * math.sin(2 * math.pi * (tone_hz or 0) * i / 16000)) for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


SAMPLE = wav()


@functools.cache  # built once: the silent WAV alone is 32,000 samples packed one by one
def bodies() -> dict[str, bytes]:
    return {
        "sample": SAMPLE,
        "empty": b"",
        "text": b"minutes of the meeting, not audio\n" * 30,
        "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "png": PNG,
        "silence": wav(tone_hz=None),
        "truncated-wav": SAMPLE[:30],  # cut inside the header
        "corrupt-header-wav": SAMPLE[:12] + b"\xde\xad\xbe\xef" * 6 + SAMPLE[36:],
    }


def pcm_of(data: bytes) -> bytes | None:
    """The PCM of a well-formed WAV (``fmt `` before ``data``, no chunk past the RIFF chunk; a
    ``data`` chunk cut short decodes as far as it goes, as at the emulator), else None."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    riff_end, offset, seen_fmt = min(len(data), 8 + struct.unpack("<I", data[4:8])[0]), 12, False
    while offset + 8 <= riff_end:
        chunk, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if chunk == b"data":
            return data[offset + 8 : offset + 8 + size] if seen_fmt else None
        if offset + 8 + size > riff_end:
            return None
        seen_fmt = seen_fmt or chunk == b"fmt "
        offset += 8 + size + (size & 1)
    return None


@dataclass
class StandInDeepgram:
    """Deepgram's listen endpoint as the emulator plays it, on ``responses``."""

    aws: Aws
    context: FakeLambdaContext
    fault: dict[str, Any] | None = None
    requests: list[Any] = field(default_factory=list)

    def __call__(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.requests.append(request)
        if request.headers.get("Authorization") != f"Token {API_KEY}":
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        fault, self.fault = self.fault, None
        if fault is not None:
            return self._fault(fault, request)
        media = self._media(request)
        if isinstance(media, tuple):
            return media
        pcm = pcm_of(media)
        if pcm is None:
            return self._error(400, "Bad Request", CORRUPT_AUDIO_MSG)
        text = "hello world" if pcm.strip(b"\x00") else ""
        body = transcript_body(text, REQUEST_ID) if text else self._silent()
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    @staticmethod
    def _silent() -> dict[str, Any]:
        body = transcript_body("", REQUEST_ID)
        body["results"]["channels"][0]["alternatives"][0]["transcript"] = ""
        return body

    @staticmethod
    def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        body = {"err_code": code, "err_msg": message, "request_id": REQUEST_ID}
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _media(self, request: Any) -> bytes | tuple[int, dict[str, str], bytes]:
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            body = request.body
            return body if isinstance(body, bytes) else b"".join(body or [])
        url = json.loads(request.body)["url"]
        return self._fetch(url)

    def _fetch(self, url: str) -> bytes | tuple[int, dict[str, str], bytes]:
        """The presigned GET, answered by the same moto the function wrote to."""
        parts = urlsplit(url)
        host_bucket = parts.hostname.split(".s3", 1)[0] if parts.hostname else ""
        path = unquote(parts.path.lstrip("/"))
        bucket, key = (host_bucket, path) if host_bucket else tuple(path.split("/", 1))
        version = parse_qs(parts.query).get("versionId", [None])[0]
        versioned: dict[str, Any] = {"VersionId": version} if version else {}
        try:
            answer = self.aws.s3.get_object(Bucket=bucket, Key=key, **versioned)
        except botocore.exceptions.ClientError as exc:
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            kind = "client" if status < 500 else "server"
            phrase = {403: "Forbidden", 404: "Not Found"}.get(status, "")
            message = f"The remote server hosting the media returned a {kind} error: {status} {phrase}"
            return self._error(400, "REMOTE_CONTENT_ERROR", message.rstrip())
        return bytes(answer["Body"].read())

    def _fault(self, fault: dict[str, Any], request: Any) -> tuple[int, dict[str, str], bytes]:
        if fault.get("kind") == "stall":
            # Held past the client's timeout: the function's clock runs on while it waits.
            timeout = request.req_kwargs.get("timeout")
            waited = getattr(timeout, "total", None) or fault["stall_seconds"]
            self.context.remaining_ms -= int(waited * 1000)
            raise requests.exceptions.ReadTimeout("stalled")
        status, style = fault["status"], fault["style"]
        html = f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>\n"
        styles: dict[str, tuple[str, bytes]] = {
            "html": ("text/html", html.encode()),
            "text": ("text/plain; charset=utf-8", b"Method Not Allowed."),
            "empty": ("application/json", b""),
            "no-channels": ("application/json", json.dumps(HOLLOW).encode()),
            "deep-json": ("application/json", b"[" * 100_000 + b"]" * 100_000),
        }
        content_type, body = styles[style]
        return status, {"Content-Type": content_type}, body


@pytest.fixture
def stand_in_deepgram(aws: Aws, lambda_context: FakeLambdaContext) -> Iterator[StandInDeepgram]:
    stand_in = StandInDeepgram(aws, lambda_context)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, LISTEN_URL, callback=stand_in)
        yield stand_in


def fill(value: Any) -> Any:
    if isinstance(value, str):
        return (
            value.replace("{output_bucket}", OUTPUT_BUCKET)
            .replace("{input_bucket}", INPUT_BUCKET)
            .replace("{garbage256k}", "\x01garbage" * (256 * 1024 // 9))
        )
    if isinstance(value, dict):
        return {k: fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v) for v in value]
    return value


def object_key(case: dict[str, Any]) -> str:
    key = str(case["key"])
    if "{long}" in key:
        filler = 1024 - len(key.replace("{long}", "").encode())
        key = key.replace("{long}", "k" * filler)
        assert len(key.encode()) == 1024
    return key


def notification(key: str, put: dict[str, Any], size: int) -> dict[str, Any]:
    """The S3 notification S3 sends for the upload ``put`` answered (keys URL-encoded)."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key), "size": size, "eTag": put["ETag"].strip('"')}
    if put.get("VersionId"):
        obj["versionId"] = put["VersionId"]
    obj["sequencer"] = "0055AED6DCD90281E5"
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-06T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": INPUT_BUCKET}, "object": obj},
    }
    return {"Records": [record]}


def prepare_event(case: dict[str, Any], aws: Aws) -> dict[str, Any]:
    if "event" in case:
        event: dict[str, Any] = fill(case["event"])
        return event
    key, s3 = object_key(case), aws.s3
    extra: dict[str, Any] = {"ContentType": case["content_type"]} if "content_type" in case else {}
    if "storage_class" in case:
        extra["StorageClass"] = case["storage_class"]
    if case.get("action") == "stale-version":
        event = notification(key, aws.upload(key, SAMPLE), len(SAMPLE))
        version = event["Records"][0]["s3"]["object"]["versionId"]
        aws.upload(key, SAMPLE)  # a newer version
        s3.delete_object(Bucket=INPUT_BUCKET, Key=key, VersionId=version)
        return event
    body = bodies()[case["body"]]
    event = notification(key, aws.upload(key, body, **extra), len(body))
    obj = event["Records"][0]["s3"]["object"]
    actions: dict[str, Callable[[], Any]] = {
        # gone for good: the version the event names too
        "delete-object": lambda: s3.delete_object(Bucket=INPUT_BUCKET, Key=key, VersionId=obj["versionId"]),
        # deleted as S3 does by default: the version stays
        "delete-marker": lambda: s3.delete_object(Bucket=INPUT_BUCKET, Key=key),
        "restore": lambda: aws.admin.s3.restore_object(
            Bucket=INPUT_BUCKET, Key=key, RestoreRequest={"Days": 1}
        ),
        "claim-size": lambda: obj.update(size=case["size"]),
        "null-version": lambda: obj.update(versionId="null"),
    }
    if "action" in case:
        actions[case["action"]]()
    return event


@dataclass
class Result:
    payload: Any = None
    error: Exception | None = None


def output_keys(aws: Aws) -> list[str]:
    return [key for key in aws.output_keys() if key.endswith(".json")]


def check(case: dict[str, Any], aws: Aws, deepgram: StandInDeepgram, result: Result, logs: str) -> None:
    expect = case["expect"]
    outcome, reason = expect["outcome"], expect.get("reason")
    outputs = output_keys(aws)
    if outcome in {"transcript", "skipped", "failure", "sqs-failure"}:
        assert result.error is None, repr(result.error)
    if outcome == "transcript":
        [key] = outputs
        assert key == transcript_key(object_key(case)), outputs
        assert (LONG_KEY_FOLDER in key) is bool(expect.get("long_key")), key
        document = aws.output(key)
        assert document is not None
        text = document["results"]["channels"][0]["alternatives"][0]["transcript"]
        assert (text == "") is bool(expect.get("empty_transcript")), text
    elif outcome == "skipped":
        assert [o["reason"] for o in result.payload["objects"]] == ([reason] if reason else [])
        assert outputs == []
        assert len(deepgram.requests) == expect.get("deepgram_requests", 0)
    elif outcome == "failure":
        assert outputs == [failure_key(object_key(case), case.get("bucket"))]
        record = aws.output(outputs[0])
        assert record is not None
        assert record["reason"] == reason
        assert record["source"]["key"] == object_key(case)
        if "deepgram_requests" in expect:
            assert len(deepgram.requests) == expect["deepgram_requests"]
    elif outcome == "sqs-failure":
        assert result.payload == {"batchItemFailures": [{"itemIdentifier": "m-garbage"}]}
        assert reason in logs
    else:
        error_type = {
            "permanent-error": "PermanentError",
            "configuration-error": "ConfigurationError",
            "retried": "RetryableError",
            "blocked": "BlockedError",
        }[outcome]
        assert result.error is not None, result.payload
        assert type(result.error).__name__ == error_type, repr(result.error)
        assert str(result.error).startswith(reason), str(result.error)
        assert [k for k in outputs if k.startswith("transcripts/")] == []


def set_secret(aws: Aws, value: str | dict[str, str]) -> None:
    if isinstance(value, dict):
        aws.admin.secretsmanager.put_secret_value(
            SecretId=SECRET_ID, SecretBinary=bytes.fromhex(value["binary"])
        )
    else:
        aws.admin.secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString=value)


OUTCOMES = {
    "transcript",
    "skipped",
    "failure",
    "permanent-error",
    "configuration-error",
    "retried",
    "blocked",
    "sqs-failure",
    "not-routed",
}


def test_the_corpus_is_large_enough_and_well_formed() -> None:
    assert len(CORPUS) >= 30
    assert len({case["id"] for case in CORPUS}) == len(CORPUS)
    for case in CORPUS:
        # an upload (key), or a raw event (with the key it names when the outcome is a failure record)
        assert "event" in case or "key" in case, case["id"]
        assert "event" not in case or "body" not in case, case["id"]
        assert case["expect"]["outcome"] in OUTCOMES
    # Every outcome class keeps at least one case end to end over HTTP (tests/integration).
    assert {case["expect"]["outcome"] for case in CORPUS if case.get("http")} == OUTCOMES


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c["expect"]["outcome"] != "not-routed"], ids=lambda c: c["id"]
)
def test_bad_input_in_process(
    case: dict[str, Any],
    aws: Aws,
    make_transcriber: TranscriberFactory,
    stand_in_deepgram: StandInDeepgram,
    lambda_context: FakeLambdaContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    aws.admin.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    if "secret" in case:
        set_secret(aws, case["secret"])
    event = prepare_event(case, aws)
    stand_in_deepgram.fault = case.get("fault")
    if "timeout_s" in case:
        lambda_context.remaining_ms = int(case["timeout_s"] * 1000)

    result = Result()
    try:
        transcriber = make_transcriber(**fill(case.get("env", {})))
        result.payload = handle_event(event, lambda_context, transcriber)
    except Exception as exc:  # what Lambda reports as the invocation's error
        result.error = exc

    # What the logs say, structured fields (Powertools' ``extra``) included.
    logs = " ".join(str(vars(record)) for record in caplog.records)
    check(case, aws, stand_in_deepgram, result, logs)
