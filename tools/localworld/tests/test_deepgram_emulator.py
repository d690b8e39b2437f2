"""The Deepgram emulator over real HTTPS, as a Deepgram client would meet it."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from localworld.deepgram import DeepgramEmulator, Fault
from localworld.deepgram.audio import UnsupportedAudio, decode

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
OPENAPI_SPEC = REPO_ROOT.parent / "shared" / "vendor" / "deepgram-openapi.yml"
SPOKEN = "the quick brown fox jumps over the lazy dog"
CORRUPT = "Bad Request: failed to process audio: corrupt or unsupported data"


def listen(
    emu: DeepgramEmulator,
    body: bytes,
    *,
    query: str = "model=nova-3",
    content_type: str | None = "audio/wav",
    key: str | None = None,
    auth: str | None = None,
    timeout: float = 60,
) -> requests.Response:
    """POST /v1/listen the way a client does; ``key`` defaults to the accepted one."""
    headers: dict[str, str] = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if auth is not None:
        headers["Authorization"] = auth
    else:
        headers["Authorization"] = f"Token {key or next(iter(emu.api_keys))}"
    return requests.post(
        f"{emu.url}/v1/listen?{query}", data=body, headers=headers, verify=str(emu.ca_bundle), timeout=timeout
    )


def make_wav(samples: np.ndarray[Any, Any], rate: int, width: int) -> bytes:
    """WAV bytes from (frames, channels) floats in [-1, 1]."""
    _, channels = samples.shape
    if width == 1:
        raw = np.clip(samples * 127 + 128, 0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        ints = np.clip(samples * (2**23 - 1), -(2**23), 2**23 - 1).astype("<i4")
        raw = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        dtype = {2: "<i2", 4: "<i4"}[width]
        raw = np.clip(samples * (2 ** (8 * width - 1) - 1), -(2 ** (8 * width - 1)), 2 ** (8 * width - 1) - 1)
        raw = raw.astype(dtype).tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(raw)
    return buffer.getvalue()


def sample_floats(sample_wav: bytes) -> np.ndarray[Any, Any]:
    with wave.open(io.BytesIO(sample_wav)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64) / 32768


def wait_until_idle(emu: DeepgramEmulator, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while emu.counters["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)


# --- a plain-HTTP media host and callback receiver ------------------------------------


class _MediaHandler(BaseHTTPRequestHandler):
    server: _MediaServer

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.server.received.append((self.command, self.path, self.rfile.read(length)))
        self.send_response(self.server.callback_status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _MediaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _MediaHandler)
        self.files: dict[str, bytes] = {}
        self.received: list[tuple[str, str, bytes]] = []
        self.callback_status = 200

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


@pytest.fixture(scope="module")
def media_server(sample_wav: bytes) -> Iterator[_MediaServer]:
    server = _MediaServer()
    server.files["/media/sample.wav"] = sample_wav
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- transcription --------------------------------------------------------------------


def test_sample_is_transcribed_with_word_timings(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    response = listen(deepgram_emulator, sample_wav)

    assert response.status_code == 200, response.text
    body = response.json()
    alternative = body["results"]["channels"][0]["alternatives"][0]
    assert alternative["transcript"] == SPOKEN
    words = alternative["words"]
    assert [w["word"] for w in words] == SPOKEN.split()
    assert all(0 <= w["start"] < w["end"] <= 3.0 for w in words)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))
    assert all(0 <= w["confidence"] <= 1 for w in words)
    assert "punctuated_word" not in words[0]
    metadata = body["metadata"]
    assert metadata["transaction_key"] == "deprecated"
    assert metadata["duration"] == pytest.approx(2.965, abs=0.01)
    assert metadata["channels"] == 1
    assert response.headers["dg-request-id"] == metadata["request_id"]


def test_features_shape_the_answer(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    query = (
        "model=nova-3&smart_format=true&utterances=true&paragraphs=true&diarize=true&tag=a&tag=b&extra=src:s3"
    )
    body = listen(deepgram_emulator, sample_wav, query=query).json()

    metadata = body["metadata"]
    assert metadata["tags"] == ["a", "b"]
    assert metadata["extra"] == {"src": "s3"}
    assert metadata["model_info"][metadata["models"][0]]["arch"] == "nova-3"
    alternative = body["results"]["channels"][0]["alternatives"][0]
    assert alternative["transcript"] == "The quick brown fox jumps over the lazy dog."
    assert alternative["words"][0]["punctuated_word"] == "The"
    assert {w["speaker"] for w in alternative["words"]} == {0}
    assert (
        alternative["paragraphs"]["transcript"] == "\nSpeaker 0: The quick brown fox jumps over the lazy dog."
    )
    (utterance,) = body["results"]["utterances"]
    assert utterance["transcript"] == alternative["transcript"]
    assert utterance["channel"] == 0


def test_model_defaults_to_base(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    metadata = listen(deepgram_emulator, sample_wav, query="").json()["metadata"]

    assert metadata["model_info"][metadata["models"][0]] | {"version": "x"} == {
        "name": "local Deepgram emulator (pocketsphinx), not Deepgram",
        "arch": "base",
        "version": "x",
    }
    assert deepgram_emulator.requests[-1].query == []


def test_answers_validate_against_deepgram_openapi(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, media_server: _MediaServer
) -> None:
    if not OPENAPI_SPEC.is_file():
        pytest.skip(f"Deepgram's OpenAPI spec is not at {OPENAPI_SPEC} (a clone outside the workplace)")
    import jsonschema
    import yaml
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    spec = yaml.safe_load(OPENAPI_SPEC.read_text())
    registry = Registry().with_resource("urn:deepgram-openapi", DRAFT202012.create_resource(spec))
    schema = {"$ref": "urn:deepgram-openapi#/components/schemas/listen_v1_media_transcribe_Response_200"}
    validator = jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    queries = [
        "model=nova-3",
        "model=nova-3&smart_format=true&utterances=true&paragraphs=true&diarize=true&tag=t&extra=k:v"
        "&detect_language=true",
    ]
    for query in queries:
        validator.validate(listen(deepgram_emulator, sample_wav, query=query).json())
    silence = make_wav(np.zeros((16000, 1)), 16000, 2)
    validator.validate(listen(deepgram_emulator, silence, query="paragraphs=true&utterances=true").json())
    callback = f"{media_server.base}/hook"
    accepted = listen(deepgram_emulator, sample_wav, query=f"callback={callback}").json()
    validator.validate(accepted)
    assert set(accepted) == {"request_id"}


def test_silence_gives_an_empty_transcript(deepgram_emulator: DeepgramEmulator) -> None:
    silence = make_wav(np.zeros((2 * 16000, 1)), 16000, 2)

    response = listen(deepgram_emulator, silence)

    assert response.status_code == 200
    alternative = response.json()["results"]["channels"][0]["alternatives"][0]
    assert alternative == {"transcript": "", "confidence": 0.0, "words": []}
    assert response.json()["metadata"]["duration"] == pytest.approx(2.0)


def test_multichannel_24_bit_48k_wav(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    mono = sample_floats(sample_wav)
    upsampled = np.interp(np.arange(len(mono) * 3) / 3, np.arange(len(mono)), mono)
    stereo = np.stack([upsampled, np.zeros_like(upsampled)], axis=1)

    body = listen(deepgram_emulator, make_wav(stereo, 48000, 3), query="multichannel=true").json()

    assert body["metadata"]["channels"] == 2
    transcripts = [c["alternatives"][0]["transcript"] for c in body["results"]["channels"]]
    assert transcripts == [SPOKEN, ""]


@pytest.mark.parametrize(("width", "rate", "channels"), [(1, 8000, 1), (2, 22050, 2), (4, 44100, 1)])
def test_wav_variants_decode_to_16k_mono(sample_wav: bytes, width: int, rate: int, channels: int) -> None:
    mono = sample_floats(sample_wav)
    resampled = np.interp(np.arange(int(len(mono) * rate / 16000)) * 16000 / rate, np.arange(len(mono)), mono)
    wav = make_wav(np.repeat(resampled[:, None], channels, axis=1), rate, width)

    audio = decode(wav)

    assert audio.channels == channels
    assert audio.duration == pytest.approx(len(mono) / 16000, abs=0.01)
    back = np.frombuffer(audio.mono, dtype="<i2").astype(np.float64) / 32768
    n = min(len(back), len(mono))
    assert np.corrcoef(back[:n], mono[:n])[0, 1] > 0.9


def test_url_form_fetches_the_media(
    deepgram_emulator: DeepgramEmulator, media_server: _MediaServer, sample_wav: bytes
) -> None:
    url = f"{media_server.base}/media/sample.wav"

    response = listen(deepgram_emulator, json.dumps({"url": url}).encode(), content_type="application/json")

    assert response.status_code == 200, response.text
    assert response.json()["results"]["channels"][0]["alternatives"][0]["transcript"] == SPOKEN
    assert deepgram_emulator.requests[-1].json == {"url": url}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/media/missing.wav", "The remote server hosting the media returned a client error: 404 Not Found"),
        (None, "The remote server hosting the media failed to return valid data."),
    ],
)
def test_url_form_reports_remote_errors(
    deepgram_emulator: DeepgramEmulator, media_server: _MediaServer, path: str | None, message: str
) -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    url = f"{media_server.base}{path}" if path else "http://127.0.0.1:9/x.wav"

    response = listen(deepgram_emulator, json.dumps({"url": url}).encode(), content_type="application/json")

    assert response.status_code == 400
    assert response.json()["err_code"] == "REMOTE_CONTENT_ERROR"
    assert response.json()["err_msg"] == message


def test_url_form_refuses_the_buckets_it_cannot_reach(
    deepgram_emulator: DeepgramEmulator, media_server: _MediaServer
) -> None:
    """Like Deepgram for a bucket whose policy admits only a VPC endpoint: 403 from S3, told as
    REMOTE_CONTENT_ERROR; other buckets are fetched as before."""
    media_server.files["/private-bucket/a.wav"] = media_server.files["/media/sample.wav"]
    deepgram_emulator.unreachable_buckets = {"private-bucket"}
    urls = [
        f"{media_server.base}/private-bucket/a.wav?X-Amz-Signature=abc",
        "https://private-bucket.s3.eu-west-1.amazonaws.com/a.wav",
    ]

    for url in urls:
        response = listen(
            deepgram_emulator, json.dumps({"url": url}).encode(), content_type="application/json"
        )
        assert response.status_code == 400
        assert response.json()["err_code"] == "REMOTE_CONTENT_ERROR"
        assert response.json()["err_msg"].endswith("client error: 403 Forbidden")
    ok = listen(
        deepgram_emulator,
        json.dumps({"url": f"{media_server.base}/media/sample.wav"}).encode(),
        content_type="application/json",
    )
    assert ok.status_code == 200


@pytest.mark.parametrize("form", ["bytes", "url"])
def test_media_over_the_recognition_limit_is_hashed_not_kept(
    deepgram_emulator: DeepgramEmulator, media_server: _MediaServer, form: str
) -> None:
    """A huge body is read and hashed in chunks, never held or recognised: its sha256 and the
    duration its WAV header gives, no words."""
    wav = make_wav(np.zeros((16000 * 3, 2)), 16000, 2)  # 3 s of stereo silence, 192 KB of samples
    deepgram_emulator.recognition_limit_bytes = 64 * 1024
    media_server.files["/media/big.wav"] = wav
    misses = deepgram_emulator.counters["cache_misses"]

    if form == "bytes":
        response = listen(deepgram_emulator, wav)
    else:
        url = json.dumps({"url": f"{media_server.base}/media/big.wav"}).encode()
        response = listen(deepgram_emulator, url, content_type="application/json")

    assert response.status_code == 200, response.text
    metadata = response.json()["metadata"]
    assert metadata["sha256"] == hashlib.sha256(wav).hexdigest()
    assert (metadata["duration"], metadata["channels"]) == (pytest.approx(3.0), 2)
    assert response.json()["results"]["channels"][0]["alternatives"][0]["transcript"] == ""
    logged = deepgram_emulator.requests[-1]
    if form == "bytes":
        assert (logged.body, logged.body_size, logged.body_sha256) == (b"", len(wav), metadata["sha256"])
    assert deepgram_emulator.counters["cache_misses"] == misses  # nothing went to the recogniser


# --- refusals -------------------------------------------------------------------------


def test_json_without_its_content_type_is_corrupt_audio(
    deepgram_emulator: DeepgramEmulator, media_server: _MediaServer
) -> None:
    body = json.dumps({"url": f"{media_server.base}/media/sample.wav"}).encode()

    response = listen(deepgram_emulator, body, content_type="audio/wav")

    assert response.status_code == 400
    assert response.json()["err_msg"] == CORRUPT


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is not audio at all", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", id="truncated-header"),
    ],
)
def test_undecodable_bytes_are_refused(deepgram_emulator: DeepgramEmulator, body: bytes) -> None:
    response = listen(deepgram_emulator, body, content_type="application/octet-stream")

    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"err_code", "err_msg", "request_id"}
    assert error["err_code"] == "Bad Request"
    assert error["err_msg"] == CORRUPT


def test_truncated_sample_header_is_refused(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    assert listen(deepgram_emulator, sample_wav[:30]).status_code == 400


@pytest.mark.parametrize(
    "query",
    ["model=nova-3&smart_format=True", "model=nova-3&frobnicate=true", "model=a&model=b", "extra=novalue"],
)
def test_bad_options_are_refused(deepgram_emulator: DeepgramEmulator, sample_wav: bytes, query: str) -> None:
    response = listen(deepgram_emulator, sample_wav, query=query)

    assert response.status_code == 400
    assert response.json()["err_code"] == "INVALID_QUERY_PARAMETER"


def test_model_allow_list_answers_403(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    deepgram_emulator.allowed_models = {"nova-3"}

    response = listen(deepgram_emulator, sample_wav, query="model=nova-3-medical")

    assert response.status_code == 403
    assert response.json()["err_code"] == "INSUFFICIENT_PERMISSIONS"


# --- auth and TLS ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    ["", "Token wrong-key-0123456789", "Bearer dg-test-key-0123456789abcdef", "dg-test-key-0123456789abcdef"],
)
def test_bad_credentials_answer_401(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, auth: str
) -> None:
    response = listen(deepgram_emulator, sample_wav, auth=auth)

    assert response.status_code == 401
    error = response.json()
    assert error["err_code"] == "INVALID_AUTH"
    assert error["err_msg"] == "Invalid credentials."
    assert error["request_id"] == deepgram_emulator.requests[-1].request_id


def test_missing_authorization_header_answers_401(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    response = requests.post(
        f"{deepgram_emulator.url}/v1/listen",
        data=sample_wav,
        verify=str(deepgram_emulator.ca_bundle),
        timeout=30,
    )

    assert response.status_code == 401


def test_key_rotation(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    old = next(iter(deepgram_emulator.api_keys))
    deepgram_emulator.api_keys = {old, "new-key-0123456789abcdef"}
    assert listen(deepgram_emulator, sample_wav, key="new-key-0123456789abcdef").status_code == 200

    deepgram_emulator.api_keys = {"new-key-0123456789abcdef"}  # old key revoked

    assert listen(deepgram_emulator, sample_wav, key=old).status_code == 401
    assert listen(deepgram_emulator, sample_wav, key="new-key-0123456789abcdef").status_code == 200


def test_plain_http_fails_and_the_server_survives(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    plain = deepgram_emulator.url.replace("https://", "http://")

    with pytest.raises(requests.ConnectionError):
        requests.post(f"{plain}/v1/listen", data=sample_wav, timeout=5)

    assert listen(deepgram_emulator, sample_wav).status_code == 200


def test_ca_bundle_via_requests_env_var(
    deepgram_emulator: DeepgramEmulator,
    sample_wav: bytes,
    monkeypatch: pytest.MonkeyPatch,
    deepgram_api_key: str,
) -> None:
    url = f"{deepgram_emulator.url}/v1/listen?model=nova-3"
    headers = {"Authorization": f"Token {deepgram_api_key}", "Content-Type": "audio/wav"}
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url, data=sample_wav, headers=headers, timeout=30)  # system CAs only

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deepgram_emulator.ca_bundle))

    assert requests.post(url, data=sample_wav, headers=headers, timeout=30).status_code == 200


def test_keys_never_reach_logs_or_the_request_log(
    deepgram_emulator: DeepgramEmulator,
    sample_wav: bytes,
    caplog: pytest.LogCaptureFixture,
    deepgram_api_key: str,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="localworld.deepgram"):
        listen(deepgram_emulator, sample_wav)
        listen(deepgram_emulator, sample_wav, key="some-other-secret-key-123")

    assert deepgram_api_key not in caplog.text
    assert "some-other-secret-key-123" not in caplog.text
    assert deepgram_api_key not in repr(deepgram_emulator.requests)
    assert deepgram_emulator.requests[0].headers["Authorization"] == f"Token ****{deepgram_api_key[-4:]}"


# --- concurrency and recognition off the request threads ------------------------------


def test_over_the_concurrency_limit_answers_429(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    listen(deepgram_emulator, sample_wav)  # transcript cached: the held requests cost no ASR
    deepgram_emulator.max_concurrency = 2
    deepgram_emulator.latency = 1.0
    deepgram_emulator.retry_after = 3

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: listen(deepgram_emulator, sample_wav), range(5)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429, 429]
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["err_code"] == "TOO_MANY_REQUESTS"
    assert limited.headers["Retry-After"] == "3"
    assert deepgram_emulator.counters["status_429"] == 3
    assert deepgram_emulator.counters["max_in_flight"] == 2


def test_the_limit_is_one_pool_for_every_key_and_the_log_says_how_many_were_in_flight(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, deepgram_api_key: str
) -> None:
    listen(deepgram_emulator, sample_wav)  # cached: held requests cost no recognition
    other_key = "dg-second-key-of-the-same-project"
    deepgram_emulator.api_keys = {deepgram_api_key, other_key}
    deepgram_emulator.max_concurrency = 2
    deepgram_emulator.latency = 1.0
    deepgram_emulator.reset()

    keys = [deepgram_api_key, other_key] * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda key: listen(deepgram_emulator, sample_wav, key=key), keys))

    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    answered = [r for r in deepgram_emulator.requests if r.status == 200]
    assert sorted(r.in_flight or 0 for r in answered) == [1, 2]
    assert all(r.in_flight is None for r in deepgram_emulator.requests if r.status == 429)


@pytest.mark.parametrize(
    ("option", "ceiling"), [("summarize=v2", 10), ("sentiment=true", 10), ("detect_entities=true", 5)]
)
def test_audio_intelligence_requests_are_held_to_their_lower_ceiling_inside_the_pool(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, option: str, ceiling: int
) -> None:
    listen(deepgram_emulator, sample_wav)
    deepgram_emulator.max_concurrency = 50
    deepgram_emulator.latency = 1.5
    deepgram_emulator.reset()
    queries = [f"model=nova-3&{option}"] * (ceiling + 2) + ["model=nova-3"] * 3

    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        responses = list(pool.map(lambda q: listen(deepgram_emulator, sample_wav, query=q), queries))

    intelligent, plain = responses[: ceiling + 2], responses[ceiling + 2 :]
    assert sorted(r.status_code for r in intelligent) == [200] * ceiling + [429, 429]
    assert [r.status_code for r in plain] == [200, 200, 200]  # plain transcription is not held back
    assert deepgram_emulator.counters[f"max_in_flight_{ceiling}"] == ceiling


def test_recognition_does_not_block_other_requests(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    # Different bytes (a louder copy): a cache miss, so about a second of recognition.
    louder = make_wav((sample_floats(sample_wav) * 1.5)[:, None], 16000, 2)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(listen, deepgram_emulator, louder)
        time.sleep(0.3)
        refused = listen(deepgram_emulator, b"x", key="wrong-key-0123456789")
        # Answered while the recognition still runs (no wall-clock bound: a loaded machine slows both).
        recognising = not slow.done()
        assert slow.result().status_code == 200
    assert refused.status_code == 401
    assert recognising


# --- fault injection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "err_code"),
    [
        (402, "ASR_PAYMENT_REQUIRED"),
        (403, "INSUFFICIENT_PERMISSIONS"),
        (408, "SLOW_UPLOAD"),
        (429, "TOO_MANY_REQUESTS"),
        (500, "INTERNAL_SERVER_ERROR"),
        (502, "BAD_GATEWAY"),
        (503, "SERVICE_UNAVAILABLE"),
        (504, "GATEWAY_TIMEOUT"),
    ],
)
def test_injected_status_faults(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, status: int, err_code: str
) -> None:
    deepgram_emulator.faults.next(1, status=status)

    response = listen(deepgram_emulator, sample_wav)

    assert response.status_code == status
    assert response.json()["err_code"] == err_code
    assert listen(deepgram_emulator, sample_wav).status_code == 200  # only the next one


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("modern", lambda r: set(r.json()) == {"category", "message", "details", "request_id"}),
        ("string", lambda r: r.json() == "Please try again later"),
        (
            "text",
            lambda r: (
                r.text == "Please try again later" and r.headers["Content-Type"].startswith("text/plain")
            ),
        ),
        ("html", lambda r: r.text.startswith("<html>") and "503" in r.text),
    ],
)
def test_injected_fault_body_styles(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, style: Any, check: Any
) -> None:
    deepgram_emulator.faults.next(1, status=503, style=style)

    response = listen(deepgram_emulator, sample_wav)

    assert response.status_code == 503
    assert check(response)


def test_deterministic_fault_queue(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    deepgram_emulator.faults.next(2, status=503)
    deepgram_emulator.faults.next(1, status=429)

    statuses = [listen(deepgram_emulator, sample_wav).status_code for _ in range(4)]

    assert statuses == [503, 503, 429, 200]
    assert [r.fault for r in deepgram_emulator.requests] == ["status", "status", "status", None]


def test_dropped_connection(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    deepgram_emulator.faults.next(1, kind="drop")

    with pytest.raises(requests.ConnectionError):
        listen(deepgram_emulator, sample_wav)

    entry = deepgram_emulator.requests[-1]
    assert (entry.status, entry.outcome) == (None, "dropped")
    assert listen(deepgram_emulator, sample_wav).status_code == 200


def test_stall_trips_the_client_timeout(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    deepgram_emulator.faults.next(1, kind="stall", stall_seconds=1.5)

    with pytest.raises(requests.exceptions.ReadTimeout):
        listen(deepgram_emulator, sample_wav, timeout=0.5)
    wait_until_idle(deepgram_emulator)

    deepgram_emulator.faults.next(1, kind="stall", stall_seconds=0.3, status=504)
    started = time.monotonic()
    response = listen(deepgram_emulator, sample_wav)
    assert response.status_code == 504
    assert time.monotonic() - started >= 0.3
    assert deepgram_emulator.counters["stalled"] == 2


def test_seeded_fault_rates_replay(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    def run() -> list[int]:
        deepgram_emulator.faults.set({500: 0.3, 429: 0.2}, seed=7)
        return [listen(deepgram_emulator, b"x").status_code for _ in range(12)]

    first, second = run(), run()

    assert first == second
    assert {500, 429} <= set(first)
    assert 400 in first  # not faulted: refused as corrupt audio


def test_in_process_control(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    deepgram_emulator.faults.push(Fault(status=502, style="modern"), Fault(kind="drop"))
    deepgram_emulator.max_concurrency = 50

    assert listen(deepgram_emulator, sample_wav).json()["category"] == "BAD_GATEWAY"
    with pytest.raises(requests.ConnectionError):
        listen(deepgram_emulator, sample_wav)
    deepgram_emulator.faults.next(5, status=500)
    deepgram_emulator.faults.clear()
    assert listen(deepgram_emulator, sample_wav).status_code == 200

    counters = deepgram_emulator.counters
    assert counters["dropped"] == 1
    assert counters["status_502"] == 1
    assert counters["requests"] == 3


# --- request log and callback mode ----------------------------------------------------


def test_request_log(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    response = listen(deepgram_emulator, sample_wav, query="model=nova-3&tag=a&tag=b")

    (entry,) = deepgram_emulator.requests
    assert (entry.method, entry.path, entry.status) == ("POST", "/v1/listen", 200)
    assert entry.query == [("model", "nova-3"), ("tag", "a"), ("tag", "b")]
    assert entry.body == sample_wav
    assert entry.headers["Content-Type"] == "audio/wav"
    assert entry.request_id == response.json()["metadata"]["request_id"]

    assert entry.body_size == len(sample_wav)
    assert entry.outcome == "ok"

    deepgram_emulator.reset()

    assert deepgram_emulator.requests == []
    assert deepgram_emulator.counters.get("requests", 0) == 0


def test_callback_mode_delivers_the_transcript(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, media_server: _MediaServer
) -> None:
    media_server.received.clear()
    media_server.callback_status = 500  # first delivery fails: Deepgram retries

    response = listen(
        deepgram_emulator, sample_wav, query=f"callback={media_server.base}/hook&callback_method=put"
    )

    assert response.status_code == 200
    request_id = response.json()["request_id"]
    deadline = time.monotonic() + 10
    while not media_server.received and time.monotonic() < deadline:
        time.sleep(0.05)
    media_server.callback_status = 200
    while len(media_server.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    method, path, body = media_server.received[-1]
    assert (method, path) == ("PUT", "/hook")
    delivered = json.loads(body)
    assert delivered["metadata"]["request_id"] == request_id
    assert delivered["results"]["channels"][0]["alternatives"][0]["transcript"] == SPOKEN
    assert [a.status for a in deepgram_emulator.callbacks if a.request_id == request_id] == [500, 200]


# --- command line ---------------------------------------------------------------------


def test_cli_serves_and_prints_url_and_ca(tmp_path: Path) -> None:
    key = "cli-key-0123456789abcdef"
    command = [sys.executable, "-m", "localworld.deepgram", "--port", "0", "--api-key", key]
    process = subprocess.Popen(
        [*command, "--ca-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "tools")},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url_line = process.stdout.readline()
        ca_line = process.stdout.readline()
        url = url_line.split()[2]
        ca = ca_line.split(": ", 1)[1].strip()
        # The key it was given is accepted: the body is refused as audio, not the caller.
        served = requests.post(
            f"{url}/v1/listen",
            data=b"not audio",
            headers={"Authorization": f"Token {key}"},
            verify=ca,
            timeout=10,
        )
        assert served.status_code == 400
        assert served.json()["err_msg"] == CORRUPT
        assert key not in url_line + ca_line
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_stopped_emulator_refuses_connections(tmp_path: Path, sample_wav: bytes) -> None:
    emulator = DeepgramEmulator(api_keys={"k"}, state_dir=tmp_path).start()
    url, ca = emulator.url, str(emulator.ca_bundle)
    with requests.Session() as session:
        assert session.post(f"{url}/v1/listen", verify=ca, timeout=10).status_code == 401  # kept alive
        emulator.stop()
        with pytest.raises(requests.ConnectionError):
            session.post(f"{url}/v1/listen", verify=ca, timeout=10)


def test_audio_decoder_refuses_unknown_containers() -> None:
    with pytest.raises(UnsupportedAudio):
        decode(b"\x1aE\xdf\xa3 webm-ish bytes")


def test_a_long_answer_on_demand(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    deepgram_emulator.faults.next(1, kind="long_answer", answer_bytes=60 * 1024 * 1024)

    response = listen(deepgram_emulator, sample_wav, query="model=nova-3")

    assert response.status_code == 200
    assert len(response.content) >= 60 * 1024 * 1024
    document = response.json()
    metadata, results = document["metadata"], document["results"]
    assert metadata["request_id"] == deepgram_emulator.requests[-1].request_id
    alternative = results["channels"][0]["alternatives"][0]
    words = alternative["words"]
    assert len(words) > 100_000
    assert {"word", "start", "end", "confidence", "punctuated_word", "speaker"} <= set(words[0])
    assert sum(len(u["words"]) for u in results["utterances"]) == len(words)
    assert sum(p["num_words"] for p in alternative["paragraphs"]["paragraphs"]) == len(words)
    assert metadata["duration"] == pytest.approx(words[-1]["end"])
    assert metadata["duration"] > 10 * 3600  # hours of speech, as such an answer needs
    assert len(listen(deepgram_emulator, sample_wav).content) < 1024 * 1024  # only the next one


def test_a_long_answer_validates_against_deepgram_openapi(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    if not OPENAPI_SPEC.is_file():
        pytest.skip(f"Deepgram's OpenAPI spec is not at {OPENAPI_SPEC} (a clone outside the workplace)")
    import jsonschema
    import yaml
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    spec = yaml.safe_load(OPENAPI_SPEC.read_text())
    registry = Registry().with_resource("urn:deepgram-openapi", DRAFT202012.create_resource(spec))
    schema = {"$ref": "urn:deepgram-openapi#/components/schemas/listen_v1_media_transcribe_Response_200"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    deepgram_emulator.faults.next(1, kind="long_answer", answer_bytes=2 * 1024 * 1024)

    response = listen(deepgram_emulator, sample_wav, query="model=nova-3")

    assert len(response.content) >= 2 * 1024 * 1024
    validator.validate(response.json())
