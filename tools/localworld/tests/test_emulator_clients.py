"""A second client: Deepgram's own Python SDK and deepgram-captions against the emulator, and
every kind of answer the emulator gives checked against Deepgram's OpenAPI description.

The SDK (deepgram-sdk 7.x, httpx) talks HTTPS to 127.0.0.1 and trusts the emulator's CA the
way a deployment would: through ``SSL_CERT_FILE``, which httpx reads, or an ``httpx.Client``
handed to the SDK.

About the OpenAPI description (``../shared/vendor/deepgram-openapi.yml``): for ``POST /v1/listen``
it documents only the 200 (``listen_v1_media_transcribe_Response_200``: a transcript, or
``{"request_id"}`` in callback mode) and a 400 whose schema is, by mistake, the transcript
(``ListenV1Response``: it requires ``metadata`` and ``results``, which no error has). Every other
operation documents its errors as ``ErrorResponse``, a ``oneOf`` of a plain string, a legacy
``{err_code, err_msg, request_id}`` object and a modern ``{category, message, details,
request_id}`` object, with no required properties, so an object matches both object variants and
the ``oneOf`` itself can never pass. Error answers (400, 401, 402, 403, 408, 429, 5xx, none of which
but 400 the description lists for this operation) are therefore checked against the one variant
they claim, closed: exactly its properties, all present, of its types.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import requests
import yaml
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram_captions import DeepgramConverter, srt, webvtt
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from localworld.deepgram import DeepgramEmulator

pytestmark = [
    pytest.mark.integration,
    # The SDK imports websockets' legacy API (for streaming, unused here): not ours to fix.
    pytest.mark.filterwarnings(r"ignore:websockets\..* is deprecated:DeprecationWarning"),
]

REPO_ROOT = Path(__file__).resolve().parents[3]
OPENAPI_SPEC = REPO_ROOT.parent / "shared" / "vendor" / "deepgram-openapi.yml"
SPOKEN = "the quick brown fox jumps over the lazy dog"


# --- a plain-HTTP host for media and callbacks ----------------------------------------


class _Host(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, media: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _HostHandler)
        self.media = media
        self.received: list[bytes] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _HostHandler(BaseHTTPRequestHandler):
    server: _Host

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(self.server.media)))
        self.end_headers()
        self.wfile.write(self.server.media)

    def do_POST(self) -> None:
        self.server.received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host(sample_wav: bytes) -> Iterator[_Host]:
    server = _Host(sample_wav)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- Deepgram's Python SDK ------------------------------------------------------------


def sdk_client(emu: DeepgramEmulator, api_key: str, **options: Any) -> DeepgramClient:
    """The SDK pointed at the emulator (REST base URL; websockets are not used here)."""
    wss = emu.url.replace("https://", "wss://", 1)
    environment = DeepgramClientEnvironment(base=emu.url, production=wss, agent=wss, agent_rest=emu.url)
    return DeepgramClient(api_key=api_key, environment=environment, max_retries=0, **options)


@pytest.fixture
def sdk(
    deepgram_emulator: DeepgramEmulator, deepgram_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> DeepgramClient:
    """The SDK as a deployment would configure it: the CA through ``SSL_CERT_FILE``."""
    monkeypatch.setenv("SSL_CERT_FILE", str(deepgram_emulator.ca_bundle))
    return sdk_client(deepgram_emulator, deepgram_api_key)


def as_json(response: Any) -> dict[str, Any]:
    """The SDK's pydantic answer as Deepgram's JSON."""
    data: dict[str, Any] = json.loads(response.model_dump_json(by_alias=True, exclude_none=True))
    return data


def test_sdk_transcribes_a_remote_url(
    sdk: DeepgramClient, deepgram_emulator: DeepgramEmulator, host: _Host
) -> None:
    url = f"{host.base}/media/sample.wav"

    response = sdk.listen.v1.media.transcribe_url(url=url, model="nova-3", smart_format=True, tag=["sdk"])

    body = as_json(response)
    assert body["results"]["channels"][0]["alternatives"][0]["transcript"] == (
        "The quick brown fox jumps over the lazy dog."
    )
    assert body["metadata"]["tags"] == ["sdk"]
    (entry,) = deepgram_emulator.requests
    assert entry.json == {"url": url}
    assert {k.lower(): v for k, v in entry.headers.items()}["authorization"].startswith("Token ****")
    assert ("smart_format", "true") in entry.query  # the SDK writes lowercase booleans


def test_sdk_transcribes_local_bytes(
    sdk: DeepgramClient, deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    response = sdk.listen.v1.media.transcribe_file(request=sample_wav, model="nova-3", utterances=True)

    body = as_json(response)
    alternative = body["results"]["channels"][0]["alternatives"][0]
    assert alternative["transcript"] == SPOKEN
    assert [w["word"] for w in alternative["words"]] == SPOKEN.split()
    assert body["metadata"]["duration"] == pytest.approx(2.965, abs=0.01)
    assert body["results"]["utterances"][0]["transcript"] == SPOKEN
    (entry,) = deepgram_emulator.requests
    assert entry.body == sample_wav
    headers = {name.lower(): value for name, value in entry.headers.items()}
    assert headers["content-type"] == "application/octet-stream"


def test_sdk_sees_a_401_for_a_wrong_key(deepgram_emulator: DeepgramEmulator, sample_wav: bytes) -> None:
    # The CA handed over as an SDK option this time: its own httpx client.
    verify = ssl.create_default_context(cafile=str(deepgram_emulator.ca_bundle))
    with httpx.Client(verify=verify, timeout=30) as http:
        client = sdk_client(deepgram_emulator, "not-the-key-0123456789", httpx_client=http)
        with pytest.raises(ApiError) as raised:
            client.listen.v1.media.transcribe_file(request=sample_wav, model="nova-3")

    assert raised.value.status_code == 401
    assert raised.value.body["err_code"] == "INVALID_AUTH"
    assert raised.value.body["request_id"] == deepgram_emulator.requests[-1].request_id
    assert len(deepgram_emulator.requests) == 1  # no retry of a 401


def test_sdk_refuses_the_emulator_without_its_ca(
    deepgram_emulator: DeepgramEmulator,
    deepgram_api_key: str,
    sample_wav: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = sdk_client(deepgram_emulator, deepgram_api_key)

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.listen.v1.media.transcribe_file(request=sample_wav, model="nova-3")


# --- captions -------------------------------------------------------------------------

_SRT_CUE = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)")
_VTT_CUE = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)")


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_captions_from_the_emulators_answer(sdk: DeepgramClient, sample_wav: bytes) -> None:
    body = as_json(sdk.listen.v1.media.transcribe_file(request=sample_wav, model="nova-3", punctuate=True))
    converter = DeepgramConverter(body)

    srt_text = srt(converter, line_length=3)
    vtt_text = webvtt(converter, line_length=3)

    srt_cues = _SRT_CUE.findall(srt_text)
    vtt_cues = _VTT_CUE.findall(vtt_text)
    assert vtt_text.startswith("WEBVTT")
    assert [int(n) for n, *_ in srt_cues] == [1, 2, 3]
    assert " ".join(text for *_, text in srt_cues) == "The quick brown fox jumps over the lazy dog."
    assert [text for *_, text in vtt_cues] == [text for *_, text in srt_cues]
    for cues in ([(a, b) for _, a, b, _ in srt_cues], [(a, b) for a, b, _ in vtt_cues]):
        times = [(_seconds(a), _seconds(b)) for a, b in cues]
        assert all(start < end for start, end in times)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(times))
        assert times[-1][1] <= 2.965


# --- every answer against the OpenAPI description -------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not OPENAPI_SPEC.is_file():
        pytest.skip(
            f"Deepgram's OpenAPI description is not at {OPENAPI_SPEC} (a clone outside the workplace)"
        )
    spec: dict[str, Any] = yaml.safe_load(OPENAPI_SPEC.read_text())
    return spec


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource("urn:dg", DRAFT202012.create_resource(spec))
    return jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def closed(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A component schema with all its properties required and no others allowed."""
    schema: dict[str, Any] = copy.deepcopy(spec["components"]["schemas"][name])
    if schema.get("type") == "object":
        schema["required"] = sorted(schema["properties"])
        schema["additionalProperties"] = False
    return schema


def documented(spec: dict[str, Any], status: int) -> dict[str, Any] | None:
    """The schema ``POST /v1/listen`` documents for ``status``, if any."""
    responses = spec["paths"]["/v1/listen"]["post"]["responses"]
    entry = responses.get(str(status))
    if entry is None:
        return None
    schema: dict[str, Any] = entry["content"]["application/json"]["schema"]
    return schema


def test_success_answers_validate(
    openapi: dict[str, Any], deepgram_emulator: DeepgramEmulator, sample_wav: bytes, host: _Host
) -> None:
    """Transcripts (as the SDK received them, multichannel, language detection) and the callback forms."""
    schema = documented(openapi, 200)
    assert schema == {"$ref": "#/components/schemas/listen_v1_media_transcribe_Response_200"}
    check = validator(openapi, {"$ref": "urn:dg#/components/schemas/listen_v1_media_transcribe_Response_200"})
    transcript = validator(openapi, {"$ref": "urn:dg#/components/schemas/ListenV1Response"})
    accepted = validator(openapi, closed(openapi, "ListenV1AcceptedResponse"))
    headers = {
        "Authorization": f"Token {next(iter(deepgram_emulator.api_keys))}",
        "Content-Type": "audio/wav",
    }

    def post(query: str) -> dict[str, Any]:
        response = requests.post(
            f"{deepgram_emulator.url}/v1/listen?{query}",
            data=sample_wav,
            headers=headers,
            verify=str(deepgram_emulator.ca_bundle),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    for query in (
        "model=nova-3&multichannel=true&detect_language=true&punctuate=true",
        "model=nova-2&keywords=fox:2&diarize_model=latest&utterances=true&paragraphs=true&extra=a:b&tag=x",
    ):
        body = post(query)
        check.validate(body)
        transcript.validate(body)

    host.received.clear()
    reply = post(f"model=nova-3&callback={host.base}/hook")
    check.validate(reply)
    accepted.validate(reply)
    deadline = time.monotonic() + 30
    while not host.received and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered = json.loads(host.received[0])
    transcript.validate(delivered)
    assert delivered["metadata"]["request_id"] == reply["request_id"]


ERROR_CASES = [
    # (status, how the emulator is brought to it, body style)
    (400, "corrupt", "legacy"),
    (400, "bad-option", "legacy"),
    (400, "keywords-nova-3", "legacy"),
    (400, "remote-content", "legacy"),
    (401, "wrong-key", "legacy"),
    (402, "fault", "legacy"),
    (403, "model-not-allowed", "legacy"),
    (408, "fault", "legacy"),
    (429, "over-concurrency", "legacy"),
    (500, "fault", "legacy"),
    (502, "fault", "modern"),
    (503, "fault", "string"),
    (504, "fault", "legacy"),
]


def _provoke(
    emu: DeepgramEmulator, how: str, status: int, style: str, sample_wav: bytes
) -> requests.Response:
    key = next(iter(emu.api_keys))
    query, body, content_type = "model=nova-3", sample_wav, "audio/wav"
    if how == "corrupt":
        body = b"this is not audio"
    elif how == "bad-option":
        query = "model=nova-3&smart_format=True"
    elif how == "keywords-nova-3":
        query = "model=nova-3&keywords=fox"
    elif how == "remote-content":
        body, content_type = json.dumps({"url": "http://127.0.0.1:9/gone.wav"}).encode(), "application/json"
    elif how == "wrong-key":
        key = "wrong-key-0123456789abcdef"
    elif how == "model-not-allowed":
        emu.allowed_models = {"nova-2"}
    elif how == "over-concurrency":
        emu.max_concurrency = 0
    else:
        emu.faults.next(1, status=status, style=style)  # type: ignore[arg-type]
    return requests.post(
        f"{emu.url}/v1/listen?{query}",
        data=body,
        headers={"Authorization": f"Token {key}", "Content-Type": content_type},
        verify=str(emu.ca_bundle),
        timeout=60,
    )


@pytest.mark.parametrize(("status", "how", "style"), ERROR_CASES, ids=[f"{s}-{h}" for s, h, _ in ERROR_CASES])
def test_error_answers_validate(
    openapi: dict[str, Any],
    deepgram_emulator: DeepgramEmulator,
    sample_wav: bytes,
    status: int,
    how: str,
    style: str,
) -> None:
    variant = {"legacy": "ErrorResponseLegacyError", "modern": "ErrorResponseModernError"}.get(
        style, "ErrorResponseTextError"
    )
    assert {"$ref": f"#/components/schemas/{variant}"} in openapi["components"]["schemas"]["ErrorResponse"][
        "oneOf"
    ]

    response = _provoke(deepgram_emulator, how, status, style, sample_wav)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    validator(openapi, closed(openapi, variant)).validate(body)
    if isinstance(body, dict):
        assert deepgram_emulator.requests[-1].request_id in body.values()
    if status == 400:
        # Documented, but with the success schema: an error body can't match it.
        documented_400 = documented(openapi, 400)
        assert documented_400 == {"$ref": "#/components/schemas/ListenV1Response"}
        assert not validator(openapi, {"$ref": "urn:dg#/components/schemas/ListenV1Response"}).is_valid(body)
    else:
        assert documented(openapi, status) is None
