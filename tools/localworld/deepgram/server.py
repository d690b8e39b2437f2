"""The Deepgram emulator: an HTTPS server speaking the pre-recorded ``/v1/listen`` API.

Request flow for ``POST /v1/listen`` (the order decides which error a client sees):

1. the body is read and the request logged (always, so tests can inspect it);
2. an injected fault, if one is due (see ``faults.py``): ``drop`` and ``status`` faults
   answer here, before auth, so "the next N requests answer X" holds for any request;
3. ``Authorization: Token <key>`` against the current key set -> 401 INVALID_AUTH;
4. query options -> 400 INVALID_QUERY_PARAMETER; model allow-list -> 403;
5. a concurrency slot -> 429 TOO_MANY_REQUESTS when ``max_concurrency`` are in flight;
6. inside the slot: injected stall, configured latency, URL fetch, decoding, recognition.

Tests and tools control a running emulator in-process (``api_keys``, ``faults``, ``requests``...);
there is no admin HTTP API.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http
import json
import logging
import math
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import requests

from localworld.deepgram.asr import Recognition, RecognitionStore, Recognizer
from localworld.deepgram.audio import UnsupportedAudio, decode
from localworld.deepgram.errors import CORRUPT_AUDIO_MSG, BodyStyle, render_error, spec_for
from localworld.deepgram.faults import Fault, Faults
from localworld.deepgram.options import InvalidOption, ListenOptions, parse_options
from localworld.deepgram.response import build_response, long_answer
from localworld.deepgram.tls import prepare_tls
from localworld.loopback import LoopbackServer, Service

logger = logging.getLogger("localworld.deepgram")

LISTEN_PATH = "/v1/listen"
_CHUNK = 1024 * 1024
_HEAD_BYTES = 4096
# Above this a body is hashed as it arrives and not recognised (see ``Unkept``): 64 MiB is about
# 35 minutes of 16 kHz 16-bit mono, far more than any test recognises.
RECOGNITION_LIMIT_BYTES = 64 * 1024 * 1024
# Deepgram's words when the host of a URL refuses it (what a bucket Deepgram can't reach answers).
SNI_ATTRIBUTE = "localworld_server_name"
# Deepgram's EU endpoint has no Whisper (shared/notes/deepgram-api.md): asked for it, it refuses.
NO_WHISPER_HOSTS = frozenset({"api.eu.deepgram.com"})
FORBIDDEN_FETCH = "The remote server hosting the media returned a client error: 403 Forbidden"


@dataclass
class LoggedRequest:
    """One request as the emulator saw it. ``headers["Authorization"]`` is redacted."""

    time: float  # epoch seconds at arrival
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    json: Any  # parsed body when it was JSON, else None
    request_id: str
    status: int | None = None  # None: the connection was dropped
    outcome: str = "pending"  # ok | accepted | error | rate_limited | dropped | fault
    err_code: str | None = None
    fault: str | None = None  # kind of injected fault, if any
    body_size: int = 0
    body_sha256: str = ""  # of the whole body, also when it was too large to keep
    in_flight: int | None = None  # requests holding a slot once this one took its own
    server_name: str | None = None  # the TLS SNI the client sent (None: none, an IP address)
    answered_at: float | None = None  # epoch seconds when its answer was ready (its slot freed)


@dataclass
class CallbackAttempt:
    """One delivery attempt of a callback (URL credentials redacted)."""

    time: float
    request_id: str
    method: str
    url: str
    attempt: int
    status: int | None
    error: str | None = None


@dataclass
class _Outcome:
    status: int
    body: bytes
    content_type: str
    outcome: str
    err_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Unkept:
    """Media larger than ``recognition_limit_bytes``: read in chunks and hashed, never held whole (a
    1 GB upload would otherwise sit in memory, and take hours to recognise). Answered with its
    sha256, a duration from its WAV header, and no words."""

    size: int
    sha256: str
    head: bytes  # the first bytes, for the header

    @classmethod
    def read(cls, source: Any, length: int) -> Unkept:
        """``length`` bytes of a request body; ValueError when the client stops short."""

        def chunks() -> Iterator[bytes]:
            left = length
            while left > 0:
                chunk = source.read(min(_CHUNK, left))
                if not chunk:
                    raise ValueError(f"the body ended {left} bytes short")
                left -= len(chunk)
                yield chunk

        return cls.of(chunks())

    @classmethod
    def of(cls, chunks: Iterable[bytes]) -> Unkept:
        digest, size, head = hashlib.sha256(), 0, b""
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            head = head or chunk[:_HEAD_BYTES]
        return cls(size, digest.hexdigest(), head)

    def recognition(self) -> Recognition:
        channels, byte_rate, data_at = _wav_layout(self.head)
        duration = (self.size - data_at) / byte_rate if byte_rate else 0.0
        return Recognition(duration=max(0.0, duration), channels=channels, results=((),))


def _wav_layout(head: bytes) -> tuple[int, int, int]:
    """(channels, bytes per second, offset of the samples) of a RIFF/WAVE header; (1, 0, 0) else."""
    fmt, data = head.find(b"fmt "), head.find(b"data")
    if not head.startswith(b"RIFF") or fmt < 0 or data < 0 or len(head) < fmt + 20:
        return 1, 0, 0
    channels, _, byte_rate = struct.unpack_from("<HII", head, fmt + 10)
    return max(1, channels), byte_rate, data + 8


class _Exchange:
    """A request being handled: parsed request line, body, and the way to answer."""

    def __init__(self, handler: _Handler, method: str) -> None:
        self.handler = handler
        self.method = method
        split = urlsplit(handler.path)
        self.path = split.path
        self.query = parse_qsl(split.query, keep_blank_values=True)
        self.headers = dict(handler.headers.items())
        self.request_id = str(uuid.uuid4())
        self.arrived = time.time()
        self.body = b""
        self.body_size = 0
        self.body_sha256 = hashlib.sha256(b"").hexdigest()
        self.unkept: Unkept | None = None  # a body too large to keep: hashed as it arrived

    def header(self, name: str) -> str:
        return str(self.handler.headers.get(name, ""))

    def read_body(self) -> None:
        rfile = self.handler.rfile
        if "chunked" in self.header("Transfer-Encoding").lower():
            chunks: list[bytes] = []
            while True:
                size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(rfile.read(size))
                rfile.readline()
            self.body = b"".join(chunks)
        else:
            length = int(self.header("Content-Length") or 0)
            if length > self.handler.server.owner.recognition_limit_bytes:
                self.unkept = Unkept.read(rfile, length)
                self.body_size, self.body_sha256 = self.unkept.size, self.unkept.sha256
                return
            self.body = rfile.read(length) if length > 0 else b""
            if len(self.body) < length:
                # The client went away mid-upload: nothing arrived that Deepgram would process.
                raise ValueError(f"the body ended {length - len(self.body)} bytes short")
        self.body_size, self.body_sha256 = len(self.body), hashlib.sha256(self.body).hexdigest()

    def content_type(self) -> str:
        return self.header("Content-Type").split(";", 1)[0].strip().lower()

    def send(self, outcome: _Outcome) -> None:
        handler = self.handler
        try:
            handler.send_response(outcome.status)
            handler.send_header("Content-Type", outcome.content_type)
            handler.send_header("Content-Length", str(len(outcome.body)))
            handler.send_header("dg-request-id", self.request_id)
            for name, value in outcome.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(outcome.body)
            handler.wfile.flush()
        except (OSError, ValueError):
            # The client went away (timed out during a stall, say): nothing to answer.
            handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer[DeepgramEmulator]
    protocol_version = "HTTP/1.1"  # keep-alive: load tests reuse TLS connections
    server_version = "deepgram-emulator"
    sys_version = ""
    timeout = 120  # idle keep-alive connections give their thread back eventually

    def do_GET(self) -> None:
        self.server.owner._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._dispatch(self, "POST")

    def do_PUT(self) -> None:
        self.server.owner._dispatch(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.owner._dispatch(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry no keys (those are in headers); keep them out of stderr.
        logger.debug("%s %s", self.address_string(), format % args)


class _Slots:
    """Deepgram's concurrency limit, one pool for every key (a project's limit): a non-blocking
    counting semaphore with a settable limit, a high-water mark, and the lower ceilings that
    audio-intelligence requests are held to inside the same pool."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.high_water = 0
        self.by_ceiling: Counter[int] = Counter()  # in flight per intelligence ceiling
        self.high_water_by_ceiling: Counter[int] = Counter()
        self._lock = threading.Lock()

    def try_acquire(self, ceiling: int | None = None) -> int | None:
        """Take a slot; the number in flight with it, or None when the limit (or the request's
        ceiling) is reached."""
        with self._lock:
            if self.in_flight >= self.limit:
                return None
            if ceiling is not None and self.by_ceiling[ceiling] >= ceiling:
                return None  # this feature's own ceiling, inside the shared pool
            self.in_flight += 1
            self.high_water = max(self.high_water, self.in_flight)
            if ceiling is not None:
                self.by_ceiling[ceiling] += 1
                self.high_water_by_ceiling[ceiling] = max(
                    self.high_water_by_ceiling[ceiling], self.by_ceiling[ceiling]
                )
            return self.in_flight

    def release(self, ceiling: int | None = None) -> None:
        with self._lock:
            self.in_flight -= 1
            if ceiling is not None:
                self.by_ceiling[ceiling] -= 1


def redact_authorization(value: str) -> str:
    """``Token abcd...wxyz`` -> ``Token ****wxyz``: enough to tell keys apart, no more."""
    scheme, _, secret = value.strip().partition(" ")
    if not secret:
        return "****" if scheme else ""
    tail = secret.strip()[-4:] if len(secret.strip()) >= 12 else ""
    return f"{scheme} ****{tail}"


def redact_url(url: str) -> str:
    """Drop user:password from a URL before it is logged."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"****@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class DeepgramEmulator(Service):
    """A Deepgram-compatible pre-recorded transcription API on ``https://127.0.0.1:<port>``.

    Settable while running: ``api_keys``, ``latency``, ``max_concurrency``, ``retry_after``,
    ``allowed_models``, ``callback_retry_delay`` and the fault plan in ``faults``.
    """

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        *,
        max_concurrency: int = 100,
        latency: float = 0.0,
        state_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after: float | str | None = None,
        allowed_models: Iterable[str] | None = None,
        asr_workers: int = 1,
        preload_asr: bool = False,
        recognition_store: Path | None = None,
        log_bodies: bool = True,
        fault_seed: int | None = 0,
        url_fetch_timeout: float = 30.0,
        callback_attempts: int = 10,
        callback_retry_delay: float = 30.0,
        recognition_limit_bytes: int = RECOGNITION_LIMIT_BYTES,
        unreachable_buckets: Iterable[str] = (),
    ) -> None:
        self.api_keys = api_keys
        self.recognition_limit_bytes = recognition_limit_bytes
        # Buckets whose URLs Deepgram can't fetch (a VPC-endpoint-only policy, say): 403 at once.
        self.unreachable_buckets = set(unreachable_buckets)
        self.latency = latency
        self.retry_after = retry_after
        self.allowed_models = allowed_models
        self.faults = Faults(seed=fault_seed)
        self.log_bodies = log_bodies
        self.url_fetch_timeout = url_fetch_timeout
        self.callback_attempts = callback_attempts
        self.callback_retry_delay = callback_retry_delay
        self._host = host
        self._port = port
        self._state_dir = state_dir
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._preload_asr = preload_asr
        self._slots = _Slots(max_concurrency)
        store = RecognitionStore(recognition_store) if recognition_store is not None else None
        self._recognizer = Recognizer(workers=asr_workers, store=store)
        self._log_lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._callbacks: list[CallbackAttempt] = []
        self._counters: Counter[str] = Counter()
        self._server: LoopbackServer[DeepgramEmulator] | None = None
        self._stopping = threading.Event()
        self._ca_bundle: Path | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Bind, serve in a background thread and return ``self``."""
        if self._server is not None:
            return self
        directory = self._state_dir
        if directory is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="deepgram-emulator-")
            directory = Path(self._temp_dir.name)
        tls = prepare_tls(directory)
        tls.context.sni_callback = _remember_server_name
        self._ca_bundle = tls.ca_bundle
        self._stopping.clear()
        self._server = LoopbackServer(
            (self._host, self._port),
            _Handler,
            self,
            logger=logger,
            tls=tls.context,
            on_handshake_failure=lambda: self._count("tls_failures"),
        )
        self._server.serve_in_background("deepgram-emulator")
        if self._preload_asr:
            self._recognizer.warm_up()
        logger.info("Deepgram emulator serving on %s (CA %s)", self.url, self._ca_bundle)
        return self

    def stop(self) -> None:
        """Stop serving, end the recogniser workers and remove a temporary CA."""
        self._stopping.set()
        self._stop_server()
        self._recognizer.close()
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None

    # --- settings and inspection -------------------------------------------------------

    @property
    def api_keys(self) -> frozenset[str]:
        return self._api_keys

    @api_keys.setter
    def api_keys(self, keys: Iterable[str]) -> None:
        # Rebinding a frozenset is atomic: request threads see the old or the new set.
        self._api_keys = frozenset(keys)

    @property
    def allowed_models(self) -> frozenset[str] | None:
        """Models this "project" may use (others answer 403); None allows all."""
        return self._allowed_models

    @allowed_models.setter
    def allowed_models(self, models: Iterable[str] | None) -> None:
        self._allowed_models = None if models is None else frozenset(models)

    @property
    def max_concurrency(self) -> int:
        return self._slots.limit

    @max_concurrency.setter
    def max_concurrency(self, limit: int) -> None:
        self._slots.limit = limit

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_bundle(self) -> Path:
        if self._ca_bundle is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._ca_bundle

    @property
    def requests(self) -> list[LoggedRequest]:
        """Snapshot of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    @property
    def callbacks(self) -> list[CallbackAttempt]:
        with self._log_lock:
            return list(self._callbacks)

    @property
    def counters(self) -> dict[str, int]:
        """``requests``, ``status_<code>``, ``dropped``, ``stalled``, ``faults``,
        ``tls_failures``, ``cache_hits``/``cache_misses``, ``in_flight``, ``max_in_flight``, and
        ``max_in_flight_<n>`` for requests held to an audio-intelligence ceiling of ``n``."""
        with self._log_lock:
            data = dict(self._counters)
        data["in_flight"] = self._slots.in_flight
        data["max_in_flight"] = self._slots.high_water
        for ceiling, high_water in self._slots.high_water_by_ceiling.items():
            data[f"max_in_flight_{ceiling}"] = high_water
        data["cache_hits"] = self._recognizer.hits
        data["cache_misses"] = self._recognizer.misses
        return data

    def reset(self) -> None:
        """Clear the request log, callback log and counters (not faults or settings)."""
        with self._log_lock:
            self._log.clear()
            self._callbacks.clear()
            self._counters.clear()
        self._slots.high_water = self._slots.in_flight
        self._slots.high_water_by_ceiling = Counter(self._slots.by_ceiling)

    def clear_cache(self) -> None:
        """Forget cached transcriptions (the next upload of a file is recognised again, or read from
        the recognition store when there is one)."""
        self._recognizer.clear_cache()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._log_lock:
            self._counters[name] += amount

    # --- request handling --------------------------------------------------------------

    def _dispatch(self, handler: _Handler, method: str) -> None:
        exchange = _Exchange(handler, method)
        try:
            exchange.read_body()
        except (OSError, ValueError):
            handler.close_connection = True
            return
        entry = LoggedRequest(
            time=exchange.arrived,
            method=method,
            path=exchange.path,
            query=exchange.query,
            headers={
                k: (redact_authorization(v) if k.lower() == "authorization" else v)
                for k, v in exchange.headers.items()
            },
            body=exchange.body if self.log_bodies else b"",
            json=_json_or_none(exchange),
            request_id=exchange.request_id,
            body_size=exchange.body_size,
            body_sha256=exchange.body_sha256,
            server_name=getattr(handler.connection, SNI_ATTRIBUTE, None),
        )
        with self._log_lock:
            self._log.append(entry)
            self._counters["requests"] += 1
        if exchange.path != LISTEN_PATH:
            self._answer(exchange, entry, self._error(exchange, 404, "error"))
        elif method != "POST":
            self._answer(exchange, entry, self._error(exchange, 405, "error"))
        else:
            self._listen(exchange, entry)

    def _answer(self, exchange: _Exchange, entry: LoggedRequest, outcome: _Outcome) -> None:
        # Record before writing: a client that has its answer must find it in the log.
        entry.answered_at = time.time()
        entry.status = outcome.status
        entry.outcome = outcome.outcome
        entry.err_code = outcome.err_code
        self._count(f"status_{outcome.status}")
        logger.info(
            "%s %s -> %d %s request_id=%s auth=%s",
            exchange.method,
            exchange.path,
            outcome.status,
            outcome.err_code or "",
            exchange.request_id,
            entry.headers.get("Authorization", "-") or "-",
        )
        exchange.send(outcome)

    def _error(
        self,
        exchange: _Exchange,
        status: int,
        outcome: str,
        *,
        err_code: str | None = None,
        err_msg: str | None = None,
        style: BodyStyle = "legacy",
        echo: tuple[str, ...] = (),
    ) -> _Outcome:
        body, content_type = render_error(
            status, exchange.request_id, style=style, err_code=err_code, err_msg=err_msg, echo=echo
        )
        headers: dict[str, str] = {}
        if status == 429 and self.retry_after is not None:
            # A number is sent as whole seconds; a string verbatim (an HTTP-date, or a bad value).
            retry_after = self.retry_after
            headers["Retry-After"] = (
                retry_after if isinstance(retry_after, str) else str(math.ceil(retry_after))
            )
        if 300 <= status < 400:  # a redirect fault: somewhere else, as a moved endpoint answers
            headers["Location"] = "https://moved.example.invalid/v1/listen"
        code = err_code or spec_for(status).err_code
        return _Outcome(status, body, content_type, outcome, code, headers)

    def _answered_by_fault(self, exchange: _Exchange, entry: LoggedRequest, fault: Fault | None) -> bool:
        """Faults that answer before any check: a dropped connection or an injected status."""
        if fault is None:
            return False
        entry.fault = fault.kind
        self._count("faults")
        if fault.kind == "drop":
            self._drop(exchange, entry)
            return True
        if fault.kind == "status" and fault.status is not None:
            self._sleep(self.latency)
            echo = _request_values(exchange) if fault.style == "echo" else ()
            outcome = self._error(exchange, fault.status, "fault", style=fault.style, echo=echo)
            self._answer(exchange, entry, outcome)
            return True
        return False

    def _listen(self, exchange: _Exchange, entry: LoggedRequest) -> None:
        fault = self.faults.pick()
        if self._answered_by_fault(exchange, entry, fault):
            return
        checked = self._check(exchange)
        if isinstance(checked, _Outcome):
            self._answer(exchange, entry, checked)
            return
        ceiling = checked.intelligence_ceiling
        entry.in_flight = self._slots.try_acquire(ceiling)
        if entry.in_flight is None:
            self._answer(exchange, entry, self._error(exchange, 429, "rate_limited"))
            return
        handed_off = False
        released = False

        def release_then_answer(outcome: _Outcome) -> None:
            # The request stops counting once its answer is ready, before the client can read it:
            # a client that sends its next request on reading this answer is never over the limit.
            nonlocal released
            self._slots.release(ceiling)
            released = True
            self._answer(exchange, entry, outcome)

        try:
            stalled = self._stall(exchange, fault)
            if stalled is not None:
                release_then_answer(stalled)
                return
            self._sleep(self.latency)
            audio = self._audio_bytes(exchange)
            if isinstance(audio, _Outcome):
                release_then_answer(audio)
            elif checked.callback is not None:
                handed_off = self._accept_callback(exchange, entry, audio, checked)
            else:
                release_then_answer(self._transcribe(exchange, audio, checked, fault))
        finally:
            if not handed_off and not released:
                self._slots.release(ceiling)

    def _stall(self, exchange: _Exchange, fault: Fault | None) -> _Outcome | None:
        """Hold a stalled request; the answer it ends with when the stall carries a status."""
        if fault is None or fault.kind != "stall":
            return None
        self._count("stalled")
        self._sleep(fault.stall_seconds)
        if fault.status is None:
            return None
        return self._error(exchange, fault.status, "fault", style=fault.style)

    def _check(self, exchange: _Exchange) -> ListenOptions | _Outcome:
        """Auth, options and model access: the checks that need no slot."""
        if not self._authorised(exchange.header("Authorization")):
            return self._error(exchange, 401, "error")
        try:
            options = parse_options(exchange.query)
        except InvalidOption as exc:
            return self._error(exchange, 400, "error", err_code="INVALID_QUERY_PARAMETER", err_msg=str(exc))
        if self.allowed_models is not None and options.model not in self.allowed_models:
            return self._error(exchange, 403, "error")
        if options.model.startswith("whisper") and _server_name(exchange) in NO_WHISPER_HOSTS:
            return self._error(exchange, 403, "error")  # that region does not offer the model
        return options

    def _drop(self, exchange: _Exchange, entry: LoggedRequest) -> None:
        entry.outcome = "dropped"
        self._count("dropped")
        logger.info("%s %s -> dropped request_id=%s", exchange.method, exchange.path, exchange.request_id)
        handler = exchange.handler
        handler.close_connection = True
        with contextlib.suppress(OSError):
            # Reset rather than close politely: the client sees its connection die.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            # Wakes early when the emulator stops, so stop() is not held up by stalls.
            self._stopping.wait(seconds)

    def _authorised(self, header: str) -> bool:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "token" or not token.strip():
            return False  # missing, Bearer (no JWT grants here) or malformed
        token = token.strip()
        return any(hmac.compare_digest(token.encode(), key.encode()) for key in self._api_keys)

    def _audio_bytes(self, exchange: _Exchange) -> bytes | Unkept | _Outcome:
        """The media: the body itself, or what the JSON body's ``url`` points at."""
        if exchange.unkept is not None:
            return exchange.unkept
        if exchange.content_type() != "application/json":
            # Raw upload; anything that is not audio fails in decoding, as at Deepgram.
            return exchange.body
        try:
            payload = json.loads(exchange.body)
        except ValueError:
            payload = None
        url = payload.get("url") if isinstance(payload, dict) else None
        if not isinstance(url, str) or not url:
            return self._error(
                exchange,
                400,
                "error",
                err_msg="Bad Request: the JSON body must be an object with a `url` string.",
            )
        return self._fetch(exchange, url)

    def _fetch(self, exchange: _Exchange, url: str) -> bytes | Unkept | _Outcome:
        def remote_error(message: str) -> _Outcome:
            return self._error(exchange, 400, "error", err_code="REMOTE_CONTENT_ERROR", err_msg=message)

        if urlsplit(url).scheme not in ("http", "https"):
            return remote_error("URL for media download must be publicly routable.")
        if _bucket_candidates(url) & self.unreachable_buckets:
            return remote_error(FORBIDDEN_FETCH)
        try:
            # Loopback and plain-http URLs are allowed: presigned URLs of the local moto.
            response = requests.get(url, timeout=self.url_fetch_timeout, stream=True)
        except requests.RequestException as exc:
            logger.info("fetching %s failed: %s", redact_url(url).split("?", 1)[0], type(exc).__name__)
            return remote_error("The remote server hosting the media failed to return valid data.")
        if response.status_code >= 300:
            try:
                reason = response.reason or http.HTTPStatus(response.status_code).phrase
            except ValueError:
                reason = ""
            kind = "client" if response.status_code < 500 else "server"
            status = f"{response.status_code} {reason}".rstrip()
            return remote_error(f"The remote server hosting the media returned a {kind} error: {status}")
        with response:
            if int(response.headers.get("Content-Length") or 0) > self.recognition_limit_bytes:
                return Unkept.of(response.iter_content(_CHUNK))
            return response.content

    def _recognise(self, audio: bytes, options: ListenOptions) -> tuple[str, Recognition]:
        digest = hashlib.sha256(audio).hexdigest()
        raw_form = f"{options.encoding}/{options.sample_rate}/{options.channels}" if options.encoding else ""
        key = f"{digest}:{int(options.multichannel)}:{raw_form}"

        def load() -> Any:
            return decode(
                audio, encoding=options.encoding, sample_rate=options.sample_rate, channels=options.channels
            )

        return digest, self._recognizer.recognise(key, load, options.multichannel)

    def _transcribe(
        self,
        exchange: _Exchange,
        audio: bytes | Unkept,
        options: ListenOptions,
        fault: Fault | None = None,
    ) -> _Outcome:
        try:
            if isinstance(audio, Unkept):
                digest, recognition = audio.sha256, audio.recognition()
            else:
                digest, recognition = self._recognise(audio, options)
        except UnsupportedAudio:
            return self._error(exchange, 400, "error", err_code="Bad Request", err_msg=CORRUPT_AUDIO_MSG)
        except Exception:
            logger.exception("recognition failed for request_id=%s", exchange.request_id)
            return self._error(exchange, 500, "error")
        if fault is not None and fault.kind == "long_answer":
            self._count("long_answers")
            raw = long_answer(
                request_id=exchange.request_id,
                sha256=digest,
                recognition=recognition,
                options=options,
                least_bytes=fault.answer_bytes,
            )
            return _Outcome(200, raw, "application/json", "ok")
        body: Any = build_response(
            request_id=exchange.request_id, sha256=digest, recognition=recognition, options=options
        )
        if fault is not None and fault.rewrite is not None:  # crafted_answer
            self._count("crafted_answers")
            body = fault.rewrite(body)
        return _Outcome(200, json.dumps(body).encode(), "application/json", "ok")

    # --- callback mode -----------------------------------------------------------------

    def _accept_callback(
        self, exchange: _Exchange, entry: LoggedRequest, audio: bytes | Unkept, options: ListenOptions
    ) -> bool:
        """Answer ``{"request_id"}`` now; recognise and deliver in the background.

        Returns True: the background thread now owns the concurrency slot.
        """
        accepted = json.dumps({"request_id": exchange.request_id}).encode()
        worker = threading.Thread(
            target=self._run_callback,
            args=(exchange, audio, options),
            name=f"deepgram-callback-{exchange.request_id}",
            daemon=True,
        )
        worker.start()
        self._answer(exchange, entry, _Outcome(200, accepted, "application/json", "accepted"))
        return True

    def _run_callback(self, exchange: _Exchange, audio: bytes | Unkept, options: ListenOptions) -> None:
        try:
            outcome = self._transcribe(exchange, audio, options)
        finally:
            self._slots.release(options.intelligence_ceiling)
        assert options.callback is not None  # noqa: S101 - checked by the caller
        for attempt in range(1, self.callback_attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                response = requests.request(
                    options.callback_method,
                    options.callback,
                    data=outcome.body,
                    headers={"Content-Type": outcome.content_type, "dg-request-id": exchange.request_id},
                    timeout=30,
                )
                status = response.status_code
            except requests.RequestException as exc:
                error = type(exc).__name__
            with self._log_lock:
                self._callbacks.append(
                    CallbackAttempt(
                        time=time.time(),
                        request_id=exchange.request_id,
                        method=options.callback_method,
                        url=redact_url(options.callback),
                        attempt=attempt,
                        status=status,
                        error=error,
                    )
                )
            if status is not None and 200 <= status < 300:
                return
            if self._stopping.wait(self.callback_retry_delay):
                return


def _server_name(exchange: _Exchange) -> str | None:
    return getattr(exchange.handler.connection, SNI_ATTRIBUTE, None)


def _remember_server_name(
    connection: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
) -> None:
    """The SNI a client sent, kept on its connection for the request log (which hostname it
    thought it was calling: ``api.eu.deepgram.com`` through the local world's proxy)."""
    setattr(connection, SNI_ATTRIBUTE, server_name)


def _bucket_candidates(url: str) -> set[str]:
    """The bucket a presigned S3 URL names: virtual-hosted (``<bucket>.s3...``) or path style."""
    parts = urlsplit(url)
    host, path = parts.hostname or "", parts.path.lstrip("/")
    candidates = {path.split("/", 1)[0]} if path else set()
    if ".s3" in host:
        candidates.add(host.split(".s3", 1)[0])
    return candidates


def _json_or_none(exchange: _Exchange) -> Any:
    if exchange.content_type() != "application/json" or not exchange.body:
        return None
    try:
        return json.loads(exchange.body)
    except ValueError:
        return None


def _request_values(exchange: _Exchange) -> tuple[str, ...]:
    """What an "echo" fault quotes back: the body's URL and the Authorization value's token."""
    values = []
    try:
        document = json.loads(exchange.body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("url"), str):
        values.append(document["url"])
    values.append(exchange.header("Authorization").partition(" ")[2])
    return tuple(v for v in values if v)
