"""Deepgram's regional hostnames, reached locally: a CONNECT proxy for a function's ``HTTPS_PROXY``.

A function of a stack with ``DeepgramRegion=EU`` and no endpoint override calls
``https://api.eu.deepgram.com``. The local world gives its process ``HTTPS_PROXY`` (honoured by
requests and urllib3, as by any HTTP client) pointing here; this proxy tunnels ``CONNECT`` to
Deepgram's hosts on port 443 to the emulator and refuses every other destination (403), as a
machine with no internet would fail them. The TLS inside the tunnel is between the function and the
emulator: the emulator's certificate names Deepgram's hosts and is signed by the local CA the
function already trusts (``REQUESTS_CA_BUNDLE``), so the hostname is verified as against Deepgram.
The product code is unchanged and does not know.

``NO_PROXY`` keeps loopback addresses direct (moto, and the emulator's own URL when a stack
overrides the endpoint with it).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from localworld.deepgram.tls import DEEPGRAM_HOSTS
from localworld.loopback import LoopbackServer, Service

logger = logging.getLogger("localworld.deepgram_proxy")

NO_PROXY = "127.0.0.1,localhost,::1"
_RELAY_CHUNK = 64 * 1024
_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Tunnel:
    """One ``CONNECT`` as the proxy saw it."""

    host: str
    port: int
    status: int  # 200: tunnelled to the emulator; 403: refused


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer[DeepgramProxy]
    protocol_version = "HTTP/1.1"
    # Unbuffered: no byte of the client's TLS hello may sit in a read-ahead buffer after the
    # CONNECT's headers (it would never reach the emulator).
    rbufsize = 0
    timeout = 120

    def do_CONNECT(self) -> None:
        self.server.owner.tunnel(self)

    def _refuse_method(self) -> None:
        self.send_error(405, "only CONNECT to Deepgram's hosts")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _refuse_method

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class DeepgramProxy(Service):
    """``http://127.0.0.1:<port>``: ``CONNECT <deepgram host>:443`` reaches ``upstream``
    (the emulator's ``(host, port)``); anything else is refused."""

    def __init__(self, upstream: tuple[str, int], hosts: tuple[str, ...] = DEEPGRAM_HOSTS) -> None:
        self.upstream = upstream
        self.hosts = frozenset(hosts)
        self._server: LoopbackServer[DeepgramProxy] | None = None
        self._lock = threading.Lock()
        self._tunnels: list[Tunnel] = []

    def start(self) -> Self:
        if self._server is None:
            self._server = LoopbackServer(("127.0.0.1", 0), _Handler, self, logger=logger)
            self._server.serve_in_background("deepgram-proxy")
        return self

    def stop(self) -> None:
        self._stop_server()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a function's process gets: this proxy for https, loopback direct."""
        return {"HTTPS_PROXY": self.url, "NO_PROXY": NO_PROXY}

    @property
    def tunnels(self) -> list[Tunnel]:
        with self._lock:
            return list(self._tunnels)

    def reset(self) -> None:
        with self._lock:
            self._tunnels.clear()

    def tunnel(self, handler: _Handler) -> None:
        host, _, port = handler.path.rpartition(":")

        def record(status: int) -> None:  # what the client was answered, once it is known
            with self._lock:
                self._tunnels.append(Tunnel(host, int(port) if port.isdigit() else 0, status))

        if host.lower() not in self.hosts or port != "443":
            record(403)
            handler.send_error(403, "this local world reaches only Deepgram's hosts")
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            record(502)
            handler.send_error(502, "the Deepgram emulator does not answer")
            return
        record(200)
        with upstream:
            upstream.settimeout(None)
            handler.send_response(200, "Connection Established")
            handler.end_headers()
            handler.wfile.flush()
            _relay(handler.connection, upstream)
        handler.close_connection = True


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    peers = {client: upstream, upstream: client}
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(_RELAY_CHUNK)
                    if data:
                        peers[source].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    with contextlib.suppress(OSError):
                        peers[source].shutdown(socket.SHUT_WR)
                    return
