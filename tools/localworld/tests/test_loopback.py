"""The services' shared HTTP server answers without Nagle's wait: http.server writes an answer's
headers and body apart, and with Nagle's algorithm the body waited for the client's delayed ACK of
the headers (40 ms per request on Linux: the emulator's 401 took 44 ms, 1.5 ms without), a stall
no real service adds."""

from __future__ import annotations

import http.client
import logging
import socket
from http.server import BaseHTTPRequestHandler

from localworld.loopback import LoopbackServer


class _Inspect(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer[list[int]]

    def do_GET(self) -> None:
        # The option on the connection this answer is written to, as the handler sees it.
        self.server.owner.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_every_connection_is_served_without_nagles_algorithm() -> None:
    seen: list[int] = []
    server = LoopbackServer(("127.0.0.1", 0), _Inspect, seen, logger=logging.getLogger("test"))
    server.serve_in_background("loopback-test")
    try:
        for _ in range(2):  # two connections: each accepted socket gets the option
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            connection.request("GET", "/")
            assert connection.getresponse().read() == b"ok"
            connection.close()
    finally:
        server.stop()

    assert len(seen) == 2
    assert all(seen), seen
