"""An AWS fault-injecting HTTP proxy for the local world: the errors moto cannot produce.

``AwsFaultProxy(moto.endpoint_url)`` listens on 127.0.0.1 (a free port) and forwards every request
unchanged (method, path and query as sent, headers including ``Host``, body) to moto, relaying the
answer (status, headers, body). Point a function's ``AWS_ENDPOINT_URL`` at ``proxy.url`` and every
AWS call it makes, and every presigned URL it hands out, goes through the proxy; then

    proxy.fail("HEAD", "uploads/a", 403, "AccessDenied")           # until cleared
    proxy.fail("PUT", "transcripts/", 503, "SlowDown", times=2)    # the next two matching requests

answers matching requests the way S3 does (an ``<Error>`` XML document and ``x-amz-request-id``;
no body for HEAD) without reaching moto, and

    stall = proxy.stall("PUT", "/transcripts/", 30)                # hold matching requests
    stall.release.set()                                             # ...until released

holds matching requests before forwarding them (a write that hangs). ``proxy.requests`` logs every
request with its status.

Details that matter:

* ``Host`` is forwarded as the client sent it (``127.0.0.1:<proxy port>``): SigV4 signs it, and
  moto builds URLs in its answers from it. moto verifies no signatures, picks the service from the
  credential scope (``Authorization`` header, or ``X-Amz-Credential`` in a presigned query), and
  treats an IP ``Host`` as path-style S3 (``/<bucket>/<key>``), which is what boto3 uses for an
  IP endpoint anyway.
* Bodies are read completely before forwarding (``Content-Length`` or chunked), and sent on with a
  ``Content-Length``. ``Expect: 100-continue`` is answered by the proxy itself, not forwarded.
* HEAD answers keep moto's ``Content-Length`` (HeadObject's ``ContentLength`` comes from it) and
  carry no body.
* Rules match the method (``None`` = any) and a substring of the path (query excluded), raw or
  percent-decoded, so ``"my key.wav"`` matches ``/bucket/my%20key.wav``. The first matching rule
  with attempts left answers. botocore retries 5xx/SlowDown itself (legacy mode: 5 attempts), so
  ``times=None`` is what lets the final ``ClientError`` reach the code.
"""

from __future__ import annotations

import http.client
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from localworld.loopback import LoopbackServer, Service

logger = logging.getLogger("localworld.aws_faults")

# Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the framing
# headers the proxy sets itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_DEFAULT_MESSAGES = {
    "AccessDenied": "Access Denied",
    "SlowDown": "Please reduce your request rate.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "InternalError": "We encountered an internal error. Please try again.",
    "NoSuchKey": "The specified key does not exist.",
}
UPSTREAM_TIMEOUT_S = 60.0


@dataclass
class FaultRule:
    """Answer ``status``/``code`` to requests matching ``method`` and ``path_contains``."""

    method: str | None
    path_contains: str
    status: int
    code: str
    message: str
    times: int | None = None  # None: every matching request until cleared
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains in path or self.path_contains in unquote(path)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass
class Stall:
    """Holds requests matching ``method`` and ``path_contains`` (as ``FaultRule``) before they are
    forwarded, until ``release`` is set or ``seconds`` have passed; ``held`` counts them.

    With ``drip`` the request is forwarded at once and the *answer* is held instead: its headers
    arrive one line a second, the way a congested link delivers them. A client's read timeout
    (which bounds each wait for bytes, not the whole answer) never fires, so only the caller's own
    deadline ends the wait; a stall without ``drip`` is cut short by any read timeout."""

    method: str | None
    path_contains: str
    seconds: float
    drip: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0

    def matches(self, method: str, path: str) -> bool:
        return FaultRule(self.method, self.path_contains, 0, "", "").matches(method, path)


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy answered: ``fault`` is the injected error code, or None if forwarded."""

    time: float
    method: str
    path: str  # as sent (percent-encoded), without the query
    query: str
    status: int
    fault: str | None = None

    @property
    def decoded_path(self) -> str:
        return unquote(self.path)


class AwsFaultProxy(Service):
    """Threaded forwarding proxy in front of moto with runtime-settable S3-style faults."""

    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self._upstream = (parts.hostname, parts.port or 80)
        self._address = (host, port)
        self._server: LoopbackServer[AwsFaultProxy] | None = None
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._stalls: list[Stall] = []
        self._log: list[ProxiedRequest] = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = LoopbackServer(self._address, _Handler, self, logger=logger)
        self._server.serve_in_background("aws-fault-proxy")
        return self

    def stop(self) -> None:
        self._release_stalls()
        self._stop_server()

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    # --- faults ----------------------------------------------------------------------------

    def fail(
        self,
        method: str | None,
        path_contains: str,
        status: int,
        code: str,
        times: int | None = None,
        *,
        message: str | None = None,
    ) -> FaultRule:
        """Answer matching requests with an S3-style error; returns the rule (see ``hits``)."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        rule = FaultRule(
            method=method.upper() if method else None,
            path_contains=path_contains,
            status=status,
            code=code,
            message=message if message is not None else _DEFAULT_MESSAGES.get(code, code),
            times=times,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def stall(self, method: str | None, path_contains: str, seconds: float, *, drip: bool = False) -> Stall:
        """Hold matching requests (at most ``seconds`` each) before forwarding them, or with ``drip``
        forward them and dribble their answers (see ``Stall``)."""
        stall = Stall(method.upper() if method else None, path_contains, seconds, drip)
        with self._lock:
            self._stalls.append(stall)
        return stall

    def clear(self) -> None:
        """Remove every fault rule and stall; requests are forwarded again."""
        with self._lock:
            self._rules.clear()
        self._release_stalls()

    def reset(self) -> None:
        """Remove every fault rule and stall, and empty the request log."""
        self.clear()
        with self._lock:
            self._log.clear()

    def _release_stalls(self) -> None:
        with self._lock:
            stalls, self._stalls = self._stalls, []
        for stall in stalls:
            stall.release.set()

    def _hold(self, method: str, path: str) -> Stall | None:
        """Wait out the matching stalls that hold requests; the first one that drips answers."""
        with self._lock:
            stalls = [s for s in self._stalls if s.matches(method, path)]
            for stall in stalls:
                stall.held += 1
        for stall in stalls:
            if not stall.drip:
                stall.release.wait(stall.seconds)
        return next((stall for stall in stalls if stall.drip), None)

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, method: str | None = None, path_contains: str = "") -> list[ProxiedRequest]:
        """Logged requests with this method (None = any) whose path, raw or decoded, contains the text."""
        probe = FaultRule(method, path_contains, 0, "", "")
        return [r for r in self.requests if probe.matches(r.method, r.path)]

    def _take_fault(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if not rule.exhausted and rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, entry: ProxiedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # --- forwarding ------------------------------------------------------------------------

    def _forward(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=UPSTREAM_TIMEOUT_S)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            payload = response.read()  # nothing for HEAD, 204 and 304: http.client knows
            return response.status, response.reason, response.getheaders(), payload
        finally:
            connection.close()


def s3_error_body(code: str, message: str, request_id: str, resource: str = "") -> bytes:
    resource_xml = f"<Resource>{escape(resource)}</Resource>" if resource else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>{resource_xml}"
        f"<RequestId>{request_id}</RequestId><HostId>{secrets.token_urlsafe(32)}</HostId></Error>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    server: LoopbackServer[AwsFaultProxy]

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def do_PATCH(self) -> None:
        self._proxy()

    def do_OPTIONS(self) -> None:
        self._proxy()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)  # noqa: G003

    def _read_body(self) -> bytes | None:
        """The request body, de-chunked; None when the request had no framing (no body)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length))

    def _proxy(self) -> None:
        proxy = self.server.owner
        method = self.command
        path, _, query = self.path.partition("?")
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        rule = proxy._take_fault(method, path)
        if rule is not None:
            # Logged before the answer goes out: a client that has its answer finds it in the log.
            proxy._record(ProxiedRequest(time.time(), method, path, query, rule.status, rule.code))
            self._send_fault(rule, path)
            return
        drip = proxy._hold(method, path)
        headers = [
            (k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-length"}
        ]
        try:
            status, reason, response_headers, payload = proxy._forward(method, self.path, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            logger.warning("forwarding %s %s failed: %s", method, path, exc)
            status, reason, payload = 502, "Bad Gateway", f"upstream failed: {exc}\n".encode()
            response_headers = [("Content-Type", "text/plain")]
        proxy._record(ProxiedRequest(time.time(), method, path, query, status))
        self._relay(method, status, reason, response_headers, payload, drip=drip)

    def _relay(
        self,
        method: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        payload: bytes,
        *,
        drip: Stall | None = None,
    ) -> None:
        self.send_response_only(status, reason)
        if drip is not None:
            self._dribble(drip)
        bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and not bodiless):
                continue
            self.send_header(name, value)
        if not bodiless:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not bodiless and payload:
            self.wfile.write(payload)
        self.wfile.flush()

    def _dribble(self, stall: Stall) -> None:
        """One filler header a second until the stall is released or its time is up."""
        deadline = time.monotonic() + stall.seconds
        line = 0
        while not stall.release.is_set() and time.monotonic() < deadline:
            line += 1
            self.send_header("x-localworld-drip", str(line))
            self.flush_headers()
            stall.release.wait(1.0)

    def _send_fault(self, rule: FaultRule, path: str) -> None:
        request_id = secrets.token_hex(8).upper()
        body = b"" if self.command == "HEAD" else s3_error_body(rule.code, rule.message, request_id, path)
        self.send_response_only(rule.status)
        self.send_header("x-amz-request-id", request_id)
        self.send_header("x-amz-id-2", secrets.token_urlsafe(48))
        self.send_header("Content-Type", "application/xml")
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", "AmazonS3")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()
