"""The threaded HTTP(S) server the local world's services share (the Deepgram emulator, the AWS
fault proxy): a loopback port, one thread per connection, TLS optional, and a stop that really
ends every connection, kept-alive ones included.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class Service:
    """A service on a ``LoopbackServer``: ``start``/``stop``, and ``with`` for both; ``start`` sets
    ``_server``, ``_stop_server`` ends it, ``port`` is where it listens."""

    _server: LoopbackServer[Any] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return self._server.server_port

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LoopbackServer[Owner](ThreadingHTTPServer):
    """Serves ``handler`` for ``owner`` (what the handler calls through ``self.server.owner``).

    With ``tls`` the handshake is done in the connection's thread, not in accept(): one silent or
    plain-HTTP client then ends only its own thread instead of blocking the serve loop.
    """

    daemon_threads = True
    request_queue_size = 1024  # load tests open hundreds of connections at once
    handshake_timeout = 10.0

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: Owner,
        *,
        logger: logging.Logger,
        tls: ssl.SSLContext | None = None,
        on_handshake_failure: Callable[[], None] | None = None,
    ) -> None:
        self.owner = owner
        self.tls = tls
        self.logger = logger
        self.on_handshake_failure = on_handshake_failure
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow on some hosts.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def serve_in_background(self, name: str) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the port and every open connection."""
        self.shutdown()
        self.server_close()
        self.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def finish_request(self, request: Any, client_address: Any) -> None:
        connection: socket.socket = request
        # http.server writes an answer's headers, then its body: with Nagle's algorithm the body
        # waits for the client's delayed ACK of the headers, 40 ms per request on Linux, a stall no
        # real service adds (measured: the emulator's 401 took 44 ms, 1.5 ms without it).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            request.settimeout(self.handshake_timeout)
            try:
                connection = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                # Plain HTTP, a client that does not trust the CA, a port scanner.
                if self.on_handshake_failure is not None:
                    self.on_handshake_failure()
                self.logger.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            connection.settimeout(None)  # the handler sets its own
        with self._open_lock:
            self._open.add(connection)
        try:
            super().finish_request(connection, client_address)
        except (OSError, ValueError) as exc:
            self.logger.debug("connection from %s ended: %s", client_address, exc)
        finally:
            with self._open_lock:
                self._open.discard(connection)
            if connection is not request:
                connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from inside its except block, so the traceback is there.
        self.logger.error("unexpected error serving %s", client_address, exc_info=True)  # noqa: LOG014
