"""A small client for Deepgram's pre-recorded API: the remote-file form (a URL Deepgram fetches)
and the local-file form (the media's bytes streamed in the request body).

Every failure leaves here already classified (see ``transcriber.errors``). Exceptions never carry
the API key or the presigned URL: the URL travels only in the request body.

A 200's body is never held whole in memory: it streams into a spool (memory up to
``SPOOL_MEMORY_BYTES``, then a file in the temporary directory, /tmp on Lambda), and is validated
and summarised (request id, duration, channels) by a streaming JSON parser (ijson's C backend)
that never builds the document. A long recording's answer (tens of MB) costs about the spool's
memory, not several copies of the answer.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, Protocol
from urllib.parse import urlencode, urlsplit

import ijson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from transcriber.errors import (
    BlockedError,
    ErrorDetails,
    PermanentError,
    RetryableError,
    TranscriptionError,
    configuration_error,
)
from transcriber.observability import scrub

USER_AGENT = "deepgram-s3-transcriber/0.1"
MAX_ERROR_BODY = 64 * 1024  # of an error answer, read; the message kept is at most 500 characters
REMOTE_CONTENT_HINT = (
    "Deepgram could not download the presigned S3 URL. Likely causes: the URL expired before "
    "Deepgram fetched it (raise PRESIGN_EXPIRY_SECONDS), a bucket policy or KMS key denies the "
    "function's role or Deepgram's network, the object is SSE-C encrypted, or the object was deleted. "
    "DELIVERY_MODE=auto or bytes sends the object's bytes instead."
)
MEDIA_TYPES = ("audio/", "video/")
OCTET_STREAM = "application/octet-stream"
# Bytes read from the source per write to Deepgram: memory held per request is about this much.
UPLOAD_CHUNK_BYTES = 256 * 1024
# A 200's body: read this much at a time; up to SPOOL_MEMORY_BYTES stays in memory, more goes to
# a file in the temporary directory (Lambda's /tmp: 512 MB unless EphemeralStorage says more).
ANSWER_CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 1024 * 1024
# Deepgram's answer is a few levels deep; anything deeper is not a transcript (and a parser that
# tracked it would spend memory on it).
MAX_ANSWER_DEPTH = 64


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Transcript:
    """Deepgram's 200 answer: its bytes, unchanged, in a spool (``body``: a seekable binary file,
    in memory when small, else in the temporary directory), validated as a transcript, and what
    the workflow needs from it. Whoever receives one closes it (``close``: the spool's file goes)."""

    body: IO[bytes]
    size: int
    request_id: str | None
    duration_s: float | None
    channels: int | None
    latency_s: float

    def rewind(self) -> IO[bytes]:
        """The body, positioned at its first byte (for a parser, or an upload)."""
        self.body.seek(0)
        return self.body

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class DeepgramErrorBody:
    code: str | None
    message: str
    request_id: str | None


def parse_error_body(body: bytes) -> DeepgramErrorBody:
    """Deepgram answers errors as a plain string, ``{err_code, err_msg}``, ``{category, message}``
    or something that is not JSON at all (a proxy's HTML page): read them all."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        return DeepgramErrorBody(code=None, message=text[:500] or "(empty body)", request_id=None)
    if isinstance(parsed, str):
        return DeepgramErrorBody(code=None, message=parsed[:500], request_id=None)
    if not isinstance(parsed, dict):
        return DeepgramErrorBody(code=None, message=text[:500], request_id=None)
    return _error_fields(parsed, text)


def _error_fields(parsed: dict[str, Any], text: str) -> DeepgramErrorBody:
    """An error body that is a JSON object: either of Deepgram's two spellings."""
    code = parsed.get("err_code") or parsed.get("category")
    message = parsed.get("err_msg") or parsed.get("message") or parsed.get("details") or text[:500]
    request_id = parsed.get("request_id")
    return DeepgramErrorBody(
        code=_text_or_none(code),
        message=str(message)[:500],
        request_id=_text_or_none(request_id),
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the answer asks us to wait (delta-seconds or an HTTP-date, parsed by urllib3), or
    None without the header. A header that is present but unreadable (negative, ``nan``, garbage)
    still asks for a wait: 0, which ``InvocationRetryPolicy.delay`` raises to its floor."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(Retry().parse_retry_after(value))
    except InvalidHeader:
        return 0.0


# status -> (class, reason) for answers that need no look at the body; the README has this table.
# 403, 404 and 405 on the listen path say the deployment is wrong (a key without the model's
# scope, a wrong DEEPGRAM_API_URL), not the object: blocked, so the work waits for the fix.
_STATUS_TAXONOMY: dict[int, tuple[type[TranscriptionError], str]] = {
    401: (BlockedError, "deepgram-invalid-credentials"),
    402: (BlockedError, "deepgram-payment-required"),
    403: (BlockedError, "deepgram-insufficient-permissions"),
    404: (BlockedError, "deepgram-endpoint-not-found"),
    405: (BlockedError, "deepgram-method-not-allowed"),
    408: (RetryableError, "deepgram-request-timeout"),
    413: (PermanentError, "deepgram-payload-too-large"),
    429: (RetryableError, "deepgram-throttled"),
    504: (RetryableError, "deepgram-processing-timeout"),
}


Kind = type[TranscriptionError]


def _bad_request(status: int, error: DeepgramErrorBody) -> tuple[Kind | None, str, str]:
    """What the body's error code decides (a slow upload, a 400's kind); (None, ...): the status does."""
    code = (error.code or "").upper()
    if code == "SLOW_UPLOAD":  # the upload to Deepgram was too slow, whatever the status says
        return RetryableError, "deepgram-request-timeout", error.message
    if status != 400:
        return None, "", error.message
    if code == "REMOTE_CONTENT_ERROR":
        message = f"{error.message} -- {REMOTE_CONTENT_HINT}"
        if "failed to return valid data" in error.message:
            return RetryableError, "deepgram-remote-content-transient", message
        return PermanentError, "deepgram-remote-content", message
    if code == "INVALID_QUERY_PARAMETER":
        return PermanentError, "deepgram-invalid-options", error.message
    return PermanentError, "deepgram-unsupported-audio", error.message


def _by_status(status: int) -> tuple[Kind, str]:
    if status in _STATUS_TAXONOMY:
        return _STATUS_TAXONOMY[status]
    if 300 <= status < 400:  # never followed: the API URL is wrong or moved (fix DEEPGRAM_API_URL)
        return BlockedError, "deepgram-redirected"
    if status >= 500:
        return RetryableError, "deepgram-unavailable"
    return PermanentError, "deepgram-unexpected-status"


def classify_status(status: int, error: DeepgramErrorBody, retry_after: float | None) -> TranscriptionError:
    """Map one Deepgram error answer to the taxonomy."""
    kind, reason, message = _bad_request(status, error)
    if kind is None:
        kind, reason = _by_status(status)
    return kind(
        ErrorDetails(
            reason=reason,
            message=message,
            http_status=status,
            deepgram_code=error.code,
            request_id=error.request_id,
            retry_after_s=retry_after,
        )
    )


class DeepgramClient:
    """One pooled HTTPS session per container; no transport-level retries (retrying a POST that
    Deepgram received is billed again, so the caller decides)."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.netloc:
            raise configuration_error("insecure-api-url", "the Deepgram API URL must use https://")
        self._listen_url = base_url.rstrip("/") + "/v1/listen"
        self._session = session or self._new_session()

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        return session

    def transcribe_url(
        self,
        *,
        api_key: str,
        media_url: str,
        options: Sequence[tuple[str, str]],
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> Transcript:
        """The remote-file request: Deepgram fetches ``media_url`` itself."""
        return self._post(
            api_key=api_key,
            options=options,
            body=json.dumps({"url": media_url}),
            content_type="application/json",
            timeout=_timeout(connect_timeout_s, read_timeout_s),
            secrets=(api_key, media_url),
        )

    def transcribe_stream(
        self,
        *,
        api_key: str,
        stream: Readable,
        length: int,
        content_type: str,
        options: Sequence[tuple[str, str]],
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> Transcript:
        """The local-file request: ``length`` bytes of ``stream`` in the body (``content_type`` is the
        object's; see ``media_type``), read and sent a chunk
        at a time (never whole in memory). The timeouts cover the upload and the processing together:
        the upload must end by then, and the wait for the answer gets only what the upload left."""
        deadline = time.monotonic() + connect_timeout_s + read_timeout_s
        return self._post(
            api_key=api_key,
            options=options,
            body=_Upload(stream, length, deadline),
            content_type=media_type(content_type),
            timeout=_timeout(connect_timeout_s, read_timeout_s),
            secrets=(api_key,),
        )

    def _post(
        self,
        *,
        api_key: str,
        options: Sequence[tuple[str, str]],
        body: str | _Upload,
        content_type: str,
        timeout: Timeout,
        secrets: tuple[str, ...],
    ) -> Transcript:
        url = f"{self._listen_url}?{urlencode(list(options))}"
        started = time.perf_counter()
        total = timeout.total  # the budget also covers reading the answer
        deadline = time.monotonic() + (float(total) if isinstance(total, int | float) else float("inf"))
        try:
            response = self._session.post(
                url,
                data=body,
                headers={"Authorization": f"Token {api_key}", "Content-Type": content_type},
                timeout=timeout,  # type: ignore[arg-type]  # requests passes a urllib3 Timeout through
                allow_redirects=False,
                stream=True,  # the body is read here, a chunk at a time
            )
        except requests.Timeout as exc:
            raise _timed_out(timeout, type(exc).__name__) from None
        except requests.ConnectionError as exc:
            # Also an upload cut short: the stream was consumed, so the caller re-opens the object.
            raise RetryableError(
                ErrorDetails(
                    reason="deepgram-connection", message=f"connection failed ({type(exc).__name__})"
                )
            ) from None
        with response:
            if response.status_code != 200:
                raise _error_answer(response, secrets)
            spool, size = _spool(response, deadline, timeout)
        latency = time.perf_counter() - started
        try:
            summary = _summarise(spool)
        except BaseException:
            spool.close()
            raise
        request_id = summary.get("request_id") or response.headers.get("dg-request-id")
        return Transcript(
            body=spool,
            size=size,
            request_id=str(request_id) if request_id else None,
            duration_s=summary.get("duration"),
            channels=summary.get("channels"),
            latency_s=latency,
        )


def _timed_out(timeout: Timeout, cause: str) -> RetryableError:
    return RetryableError(
        ErrorDetails(
            reason="deepgram-timeout",
            message=f"no answer from Deepgram in {timeout.total or 0:.0f} s ({cause})",
        )
    )


def _error_answer(response: requests.Response, secrets: tuple[str, ...]) -> TranscriptionError:
    """An error answer, classified; at most ``MAX_ERROR_BODY`` bytes of its body are read."""
    received = bytearray()
    try:
        for chunk in response.iter_content(ANSWER_CHUNK_BYTES):
            received += chunk
            if len(received) >= MAX_ERROR_BODY:
                break
    except requests.RequestException:
        pass  # the status says what happened; a body cut short only shortens the message
    # The body may quote our request back (proxies do): never carry the key or the URL on.
    # Scrubbed before parsing (so truncation can't cut a secret out of reach) and after
    # (JSON escapes hide a form until it is decoded).
    raw = scrub(bytes(received[:MAX_ERROR_BODY]).decode("utf-8", errors="replace"), secrets)
    error = parse_error_body(raw.encode("utf-8"))
    error = replace(error, message=scrub(error.message, secrets))
    return classify_status(response.status_code, error, _retry_after(response))


def _spool(response: requests.Response, deadline: float, timeout: Timeout) -> tuple[IO[bytes], int]:
    """The 200's body, streamed into a spool: memory up to SPOOL_MEMORY_BYTES, then a file."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - handed on open, closed by the owner
        max_size=SPOOL_MEMORY_BYTES, mode="w+b", prefix="deepgram-answer-"
    )
    size = 0
    try:
        for chunk in response.iter_content(ANSWER_CHUNK_BYTES):
            spool.write(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:  # a trickling body: the budget covers reading it too
                raise _timed_out(timeout, "the answer was still arriving")
    except requests.RequestException as exc:
        spool.close()
        raise RetryableError(
            ErrorDetails(
                reason="deepgram-connection",
                message=f"the answer was cut off after {size} bytes ({type(exc).__name__})",
                http_status=200,
            )
        ) from None
    except OSError as exc:
        spool.close()
        raise RetryableError(
            ErrorDetails(
                reason="answer-spool-failed",
                message=f"could not keep Deepgram's answer in {tempfile.gettempdir()} ({type(exc).__name__}: "
                f"{exc.strerror or exc}); give the function more ephemeral storage",
                http_status=200,
            )
        ) from None
    except BaseException:
        spool.close()
        raise
    return spool, size


def media_type(content_type: str) -> str:
    """The Content-Type of a bytes request: the object's own when it names audio or video, else
    ``application/octet-stream`` (Deepgram detects the container from the bytes; JSON would be read
    as the remote-file form, and S3's default ``binary/octet-stream`` means nothing)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind if kind.startswith(MEDIA_TYPES) else OCTET_STREAM


def _timeout(connect_s: float, read_s: float) -> Timeout:
    # total: the wait for the answer gets what the connection and the upload left of the budget.
    return Timeout(connect=connect_s, read=read_s, total=connect_s + read_s)


class _Upload:
    """A request body of known length that requests and urllib3 send chunk by chunk: ``__len__``
    gives them the Content-Length (no chunked encoding), ``__iter__`` the chunks. It can be sent
    once; a retry needs a new stream."""

    def __init__(self, stream: Readable, length: int, deadline: float) -> None:
        self._stream = stream
        self._length = length
        self._deadline = deadline

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        left = self._length
        while left > 0:
            if time.monotonic() > self._deadline:
                raise RetryableError(
                    ErrorDetails(
                        reason="deepgram-timeout",
                        message=f"the upload to Deepgram did not finish in time ({left} bytes left)",
                    )
                )
            chunk = self._stream.read(min(UPLOAD_CHUNK_BYTES, left))
            if not chunk:
                raise RetryableError(
                    ErrorDetails(
                        reason="s3-read-interrupted",
                        message=f"the object's body ended {left} bytes before its Content-Length",
                    )
                )
            left -= len(chunk)
            yield chunk


def _invalid_response(message: str) -> RetryableError:
    # A 200 that is not a transcript came from something between us and Deepgram, or a fault on
    # Deepgram's side; it was not our audio's fault, so trying again is right.
    return RetryableError(ErrorDetails(reason="deepgram-invalid-response", message=message, http_status=200))


# What is read out of the answer while it is validated: metadata scalars by their key.
_NUMBER = frozenset({"number", "integer", "double"})
_SUMMARY_FIELDS = {"request_id": frozenset({"string"}), "duration": _NUMBER, "channels": _NUMBER}
_OPEN = {"start_map": True, "start_array": False}
_CLOSE = frozenset({"end_map", "end_array"})


def _summarise(spool: IO[bytes]) -> dict[str, Any]:
    """Validate the spooled answer as a transcript in one streaming pass (ijson's C parser, no
    document built, no recursion) and read out ``metadata.request_id``, ``duration``, ``channels``.
    A body that is not JSON, is nested deeper than a transcript, is not an object or has no
    ``results.channels`` is a retryable ``deepgram-invalid-response``."""
    try:
        try:
            reader = _read(spool, ijson)
        except ijson.JSONError as exc:
            if "integer overflow" not in str(exc):
                raise
            # Valid JSON (integers have no bound) that the C parser refuses: paid for, so read it.
            reader = _read(spool, ijson.get_backend("python"))
    except (ijson.JSONError, ValueError, UnicodeDecodeError):
        raise _invalid_response("Deepgram answered 200 with a body that is not readable JSON") from None
    if reader.channels == 0:
        raise _invalid_response("Deepgram answered 200 without results.channels")
    summary = reader.fields
    if "duration" in summary:
        summary["duration"] = float(summary["duration"])
    if "channels" in summary:
        summary["channels"] = int(summary["channels"])
    return summary


def _read(spool: IO[bytes], backend: Any) -> _AnswerReader:
    spool.seek(0)
    reader = _AnswerReader()
    for event, value in backend.basic_parse(spool, use_float=True, buf_size=ANSWER_CHUNK_BYTES):
        reader.feed(event, value)
    return reader


class _AnswerReader:
    """Follows the parser's events: where it is (per open container, the key being read, or "[]"
    in an array), the metadata fields wanted, and how many items ``results.channels`` has."""

    def __init__(self) -> None:
        self.path: list[str] = []
        self.fields: dict[str, Any] = {}
        self.channels = 0

    def feed(self, event: str, value: Any) -> None:
        path = self.path
        if not path and event != "start_map":
            raise _invalid_response("Deepgram answered 200 with JSON that is not an object")
        if event == "map_key":
            path[-1] = value
            return
        if path == _CHANNELS_ITEMS:
            self.channels += event not in _CLOSE
        if event in _OPEN:
            self._open(_OPEN[event])
        elif event in _CLOSE:
            path.pop()
        elif len(path) == 2 and path[0] == "metadata" and event in _SUMMARY_FIELDS.get(path[1], ()):
            self.fields[path[1]] = value

    def _open(self, is_map: bool) -> None:
        if len(self.path) >= MAX_ANSWER_DEPTH:
            raise _invalid_response("Deepgram answered 200 with JSON nested deeper than a transcript")
        self.path.append("" if is_map else "[]")


_CHANNELS_ITEMS = ["results", "channels", "[]"]  # the path inside ``results.channels``
