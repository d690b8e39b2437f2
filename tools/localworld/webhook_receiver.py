"""A local HTTPS endpoint for webhooks: it records every request and answers what it is told.

Its certificate is signed by the local world's CA (the one the Deepgram emulator's certificate comes
from, ``localworld.deepgram.tls``), which the local world's EventBridge trusts; anything else does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Self

from localworld.deepgram.tls import prepare_tls
from localworld.loopback import LoopbackServer, Service

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered
    at: float  # time.monotonic() when it arrived


class WebhookReceiver(Service):
    """HTTPS on 127.0.0.1. ``statuses`` are answered in turn, the last one from then on (default 200)."""

    def __init__(self, tls_dir: Path, statuses: Iterable[int] = (200,)) -> None:
        self._tls_dir = tls_dir
        self._statuses = list(statuses) or [200]
        self._lock = threading.Lock()
        self._received: list[ReceivedRequest] = []
        self.delay_s = 0.0  # how long it takes to answer (a slow endpoint)
        self._server: LoopbackServer[WebhookReceiver] | None = None

    def start(self) -> Self:
        tls = prepare_tls(self._tls_dir)
        self._server = LoopbackServer(("127.0.0.1", 0), _Handler, self, logger=logger, tls=tls.context)
        self._server.serve_in_background("webhook-receiver")
        return self

    def stop(self) -> None:
        self._stop_server()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def answer(self, *statuses: int) -> None:
        """Answer these statuses from now on, in turn, the last one repeated."""
        with self._lock:
            self._statuses = list(statuses) or [200]

    @property
    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
            self._received.append(ReceivedRequest(method, path, headers, body, status, time.monotonic()))
        return status


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer[WebhookReceiver]
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.owner._record(self.command, self.path, headers, body)
        time.sleep(self.server.owner.delay_s)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_PATCH = _handle

    def log_message(self, format: str, *args: object) -> None:
        logger.debug(format, *args)
