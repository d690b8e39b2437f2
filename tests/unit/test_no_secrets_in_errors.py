"""Secret hygiene, proven to bite: the scanner of ``tests/hygiene.py`` flags planted leaks, and
exceptions raised from the Deepgram client never carry the API key or the presigned URL."""

from __future__ import annotations

import io
import json
import re
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests import hygiene
from tests.hygiene import Registry, find_leaks, fingerprint, leak_report
from transcriber.errors import TranscriptionError
from transcriber.observability import redact_url
from transcriber.services.deepgram import DeepgramClient

API_KEY = "3f1c9a7be0d24c58a6e1f03b9d7c2e4a5b6c7d8e"  # 40 hex, shaped like a Deepgram key
SIGNATURE = "9b2f6c1d8e7a5f4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"
SECURITY_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCWV1LXdlc3QtMSJHMEUCIQD+example/token=="
CREDENTIAL = "ASIAEXAMPLEKEYID0001/20260101/eu-central-1/s3/aws4_request"
PRESIGNED_URL = (
    "https://transcriber-local-inputbucket.s3.eu-central-1.amazonaws.com/calls/hello%20world.wav"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={quote(CREDENTIAL, safe='')}"
    "&X-Amz-Date=20260101T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Security-Token={quote(SECURITY_TOKEN, safe='')}"
    f"&X-Amz-Signature={SIGNATURE}"
)
OPTIONS = [("model", "nova-3"), ("smart_format", "true")]


def lower_escapes(text: str) -> str:
    """``%252F`` -> ``%252f``: what some encoders write."""
    return re.sub(r"%(?:25)?[0-9A-F]{2}", lambda m: m.group().lower(), text)


def registry() -> Registry:
    """The secrets of this module, as the hygiene plugin would register them."""
    known = Registry()
    known.add("api key", API_KEY, "this test")
    known.add("presigned url", PRESIGNED_URL, "this test")
    known.add_presigned_url(PRESIGNED_URL, "this test")
    return known


@pytest.fixture(autouse=True)
def _register_with_the_plugin() -> None:
    # Whatever these tests print or log is checked for the same secrets by the running plugin.
    running = hygiene.current()
    if running is not None:
        running.registry.add("api key", API_KEY, "tests/unit/test_no_secrets_in_errors.py")
        running.registry.add_presigned_url(PRESIGNED_URL, "tests/unit/test_no_secrets_in_errors.py")


# --- (a) the scanner flags planted leaks ---------------------------------------------------------


def test_the_presigned_url_secrets_are_registered_and_the_dummy_access_key_is_not() -> None:
    known = registry()

    assert SIGNATURE in known
    assert SECURITY_TOKEN in known
    assert CREDENTIAL in known
    moto_style = Registry()
    moto_style.add_presigned_url(
        "http://127.0.0.1:5000/b/k?X-Amz-Credential=testing%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Security-Token=testing&X-Amz-Signature=" + SIGNATURE,
        "moto",
    )
    assert "testing" not in moto_style  # the dummy token/key id: too short, everywhere
    assert "testing/20260101/us-east-1/s3/aws4_request" in moto_style
    assert SIGNATURE in moto_style


def test_short_values_are_ignored() -> None:
    known = Registry()
    known.add("api key", "abc", "t")
    known.add_secret_value('{"token": "abc", "api_key": "' + API_KEY + '"}', "t")

    assert "abc" not in known
    assert API_KEY in known
    assert find_leaks(known, [("log", "token abc")]) == []


def test_a_secret_with_spaces_is_found_in_both_url_encodings() -> None:
    known = Registry()
    known.add_secret_value("pass phrase / with+plus 1234", "t")

    found = {leak.form for leak in find_leaks(known, [("a", "pass%20phrase%20%2F%20with%2Bplus%201234")])}
    found |= {leak.form for leak in find_leaks(known, [("b", "pass+phrase+%2F+with%2Bplus+1234")])}

    assert found == {"url-encoded", "url-encoded (plus)"}


@pytest.mark.parametrize(
    ("planted", "form"),
    [
        (f'{{"level":"INFO","message":"calling deepgram","key":"{API_KEY}"}}', "verbatim"),
        (f"Authorization: Token {API_KEY}", "verbatim"),
        (f"fetching {PRESIGNED_URL}", "verbatim"),
        (f"url={quote(PRESIGNED_URL, safe='')}", "url-encoded"),
        (f"url={quote_plus(PRESIGNED_URL)}", "url-encoded"),  # no space: same as quote()
        (f"signature only: ...{SIGNATURE.upper()}...", "verbatim"),
        (f"two signatures glued: {SIGNATURE}{SIGNATURE[::-1]}", "verbatim"),
        (f"token: {SECURITY_TOKEN}", "verbatim"),
        (f"token: {quote(SECURITY_TOKEN, safe='')}", "url-encoded"),
        # Doubly encoded: a URL quoted inside a query string that is quoted again (a proxy's log,
        # an error body quoting the request line).
        (f"url={quote(quote(PRESIGNED_URL, safe=''), safe='')}", "url-encoded twice"),
        (f"token: {quote(quote(SECURITY_TOKEN, safe=''), safe='')}", "url-encoded twice"),
        (f"token: {quote_plus(quote_plus(SECURITY_TOKEN))}", "url-encoded twice"),  # no space: the same text
        (f"credential: {quote(quote(CREDENTIAL, safe=''), safe='')}", "url-encoded twice"),
        (
            f"credential: {lower_escapes(quote(quote(CREDENTIAL, safe=''), safe=''))}",
            "url-encoded twice, lowercase escapes",
        ),
        (f"key: {quote(quote('Token ' + API_KEY, safe=''), safe='')}", "verbatim"),  # hex survives encoding
    ],
)
def test_the_scanner_flags_a_planted_leak(planted: str, form: str) -> None:
    text = f"START RequestId: 1\nclean line\n{planted}\nEND RequestId: 1"

    leaks = find_leaks(registry(), [("invocation of TranscribeFunction: logs", text)])

    assert leaks, planted
    assert form in {leak.form for leak in leaks}
    assert all("(line 3)" in leak.where for leak in leaks)


SIGV2_SIGNATURE = "ySvdtP+mI6pX+ebljnIQwvCIPyo="  # base64: "+", "/" and "=" change when encoded
SIGV2_URL = (
    f"http://127.0.0.1:5000/b/k?AWSAccessKeyId=testing&Signature={quote(SIGV2_SIGNATURE, safe='')}&Expires=1"
)


@pytest.mark.parametrize(
    ("planted", "form"),
    [
        (SIGV2_SIGNATURE, "verbatim"),
        (quote(SIGV2_SIGNATURE, safe=""), "url-encoded"),
        (quote(quote(SIGV2_SIGNATURE, safe=""), safe=""), "url-encoded twice"),
        (
            lower_escapes(quote(quote(SIGV2_SIGNATURE, safe=""), safe="")),
            "url-encoded twice, lowercase escapes",
        ),
        (quote_plus(quote_plus(SIGV2_SIGNATURE)), "url-encoded twice"),  # no space: the same text
        (quote(quote(SIGV2_URL, safe=""), safe=""), "url-encoded twice"),
    ],
)
def test_a_planted_doubly_encoded_sigv2_signature_is_caught(planted: str, form: str) -> None:
    """A SigV2 signature (base64) is not hex: each encoding is its own text, and each is searched."""
    known = Registry()
    known.add_presigned_url(SIGV2_URL, "this test")

    leaks = find_leaks(known, [("failure record", f'{{"message": "Deepgram said: {planted}"}}')])

    assert form in {leak.form for leak in leaks}, leak_report(leaks)
    assert all(leak.secret.kind == "presigned-url signature" for leak in leaks)


def test_the_report_names_kind_and_place_but_never_the_secret() -> None:
    known = Registry()
    known.add_secret_value(json.dumps({"api_key": API_KEY, "owner": "team-a"}), "create_secret('k')")
    leaks = find_leaks(
        known,
        [("s3://out/failures/a.wav.json body", f'{{"message": "bad key {API_KEY}"}}'), ("clean", "nothing")],
    )

    message = leak_report(leaks)

    assert len(leaks) == 1
    assert "api key" in message
    assert "JSON field '$.api_key'" in message
    assert "s3://out/failures/a.wav.json body" in message
    assert fingerprint(API_KEY) in message
    assert API_KEY not in message


def test_text_redacted_the_products_way_has_no_leaks() -> None:
    text = f"fetching {redact_url(PRESIGNED_URL)} with Token ****{API_KEY[-4:]}"

    assert find_leaks(registry(), [("log", text)]) == []


# --- (b) exceptions from the Deepgram client -----------------------------------------------------


class StubAdapter(HTTPAdapter):
    """Stands in for the network: raises like urllib3 would, or answers with a canned response."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        response: requests.Response = self.answer(request)
        return response


def _whole_request(request: requests.PreparedRequest) -> str:
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
    return f"{request.method} {request.url} Authorization: {request.headers['Authorization']} body: {body}"


def raising(kind: type[requests.RequestException]) -> Any:
    def answer(request: requests.PreparedRequest) -> requests.Response:
        # urllib3's messages name the URL; the exception also holds the request (key + body)
        raise kind(
            f"HTTPSConnectionPool(host='api.deepgram.test', port=443): Max retries exceeded with url: "
            f"{request.url} (Caused by NewConnectionError('Failed to establish a new connection'))",
            request=request,
        )

    return answer


def responding(status: int, style: str) -> Any:
    def answer(request: requests.PreparedRequest) -> requests.Response:
        echo = _whole_request(request)
        bodies = {
            "legacy": json.dumps({"err_code": "REMOTE_CONTENT_ERROR", "err_msg": echo, "request_id": "r1"}),
            "modern": json.dumps({"category": "INVALID_AUTH", "message": echo, "details": echo}),
            "string": json.dumps(echo),
            "text": echo,
            "html": f"<html><body><h1>{status}</h1><pre>{echo}</pre></body></html>",
        }
        response = requests.Response()
        response.status_code = status
        response.raw = io.BytesIO(bodies[style].encode())  # read as a stream, like urllib3's
        response.headers["Content-Type"] = "application/json"
        response.headers["X-Echo-Authorization"] = request.headers["Authorization"]
        response.url = request.url or ""
        response.request = request
        return response

    return answer


def transcribe(answer: Any) -> TranscriptionError:
    session = requests.Session()
    adapter = StubAdapter(answer)
    session.mount("https://", adapter)
    client = DeepgramClient("https://api.deepgram.test", session=session)
    with pytest.raises(TranscriptionError) as raised:
        client.transcribe_url(
            api_key=API_KEY,
            media_url=PRESIGNED_URL,
            options=OPTIONS,
            connect_timeout_s=1.0,
            read_timeout_s=2.0,
        )
    assert adapter.sent, "the stub saw no request"
    assert API_KEY in adapter.sent[0].headers["Authorization"]  # the stub really had the secrets
    assert PRESIGNED_URL in str(adapter.sent[0].body)
    return raised.value


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything reachable through __cause__ and __context__."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def assert_carries_no_secret(exc: TranscriptionError) -> None:
    texts = [
        ("str(exc)", str(exc)),
        ("repr(exc)", repr(exc)),
        ("exc.as_record()", json.dumps(exc.as_record(), default=str)),
        ("traceback", "".join(traceback.format_exception(exc))),
    ]
    for depth, link in enumerate(chain(exc)):
        texts += [(f"chain[{depth}] str", str(link)), (f"chain[{depth}] repr", repr(link))]
        texts += [(f"chain[{depth}] args", repr(link.args))]
    leaks = find_leaks(registry(), texts)
    assert not leaks, leak_report(leaks)


@pytest.mark.parametrize(
    "kind",
    [requests.ConnectTimeout, requests.ReadTimeout, requests.Timeout, requests.ConnectionError],
)
def test_transport_errors_carry_no_secret(kind: type[requests.RequestException]) -> None:
    exc = transcribe(raising(kind))

    assert exc.retryable
    assert_carries_no_secret(exc)


def test_transport_errors_show_no_requests_exception_in_their_traceback() -> None:
    # ``raise ... from None``: the requests exception (which holds the request, key and body)
    # stays reachable as __context__ but is suppressed from every traceback and log.
    exc = transcribe(raising(requests.ConnectionError))

    assert exc.__cause__ is None
    assert exc.__suppress_context__
    assert "ConnectionError: HTTPSConnectionPool" not in "".join(traceback.format_exception(exc))


STATUSES = [301, 307, 400, 401, 402, 403, 404, 408, 413, 418, 429, 500, 502, 503, 504]
# An error body may echo the request (proxies do): the client scrubs the key and the presigned URL
# from the message before it reaches str(exc), as_record(), logs and failure records.


STYLES = ["legacy", "modern", "string", "text", "html"]


@pytest.mark.parametrize(
    ("status", "style"), [(status, STYLES[i % len(STYLES)]) for i, status in enumerate(STATUSES)]
)
def test_error_answers_that_echo_the_request_carry_no_secret(status: int, style: str) -> None:
    exc = transcribe(responding(status, style))

    assert exc.details.http_status == status
    assert_carries_no_secret(exc)


@pytest.mark.parametrize("status", STATUSES)
def test_error_answers_with_plain_bodies_carry_no_secret(status: int) -> None:
    def answer(request: requests.PreparedRequest) -> requests.Response:
        response: requests.Response = responding(status, "legacy")(request)
        response.raw = io.BytesIO(b'{"err_code": "SOMETHING", "err_msg": "went wrong", "request_id": "r1"}')
        return response

    exc = transcribe(answer)

    assert exc.details.http_status == status
    assert_carries_no_secret(exc)


# --- (c) every encoding of the key and of the presigned credentials is scrubbed ------------------


def _lowercase_escapes(text: str) -> str:
    return re.sub(r"%(?:25)?[0-9A-F]{2}", lambda m: m.group().lower(), text)


ENCODINGS: dict[str, Callable[[str], str]] = {
    "percent": lambda v: quote(v, safe=""),
    "percent-path": quote,
    "percent-twice": lambda v: quote(quote(v, safe=""), safe=""),
    "plus": quote_plus,
    "plus-twice": lambda v: quote_plus(quote_plus(v)),
    "percent-lowercase": lambda v: _lowercase_escapes(quote(v, safe="")),
    "percent-twice-lowercase": lambda v: quote(_lowercase_escapes(quote(v, safe="")), safe=""),
}
ECHOED = {
    "api key": API_KEY,
    "presigned url": PRESIGNED_URL,
    "security token": SECURITY_TOKEN,
    "credential": CREDENTIAL,
    "signature": SIGNATURE,
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("what", sorted(ECHOED))
def test_an_error_body_echoing_a_secret_in_any_encoding_is_scrubbed(what: str, encoding: str) -> None:
    echoed = ENCODINGS[encoding](ECHOED[what])

    def answer(request: requests.PreparedRequest) -> requests.Response:
        response: requests.Response = responding(400, "legacy")(request)
        error = {
            "err_code": "REMOTE_CONTENT_ERROR",
            "err_msg": f"could not fetch {echoed}",
            "request_id": "r1",
        }
        response.raw = io.BytesIO(json.dumps(error).encode())
        return response

    exc = transcribe(answer)

    assert "could not fetch" in exc.details.message
    assert_carries_no_secret(exc)
    assert echoed not in exc.details.message


def test_a_secret_past_the_kept_message_length_is_scrubbed_before_truncation() -> None:
    def answer(request: requests.PreparedRequest) -> requests.Response:
        response: requests.Response = responding(502, "text")(request)
        response.raw = io.BytesIO(("x" * 480 + quote(quote(PRESIGNED_URL, safe=""), safe="")).encode())
        return response

    exc = transcribe(answer)

    assert_carries_no_secret(exc)
    assert SIGNATURE[:12] not in exc.details.message


SPACED = "pass phrase / with+plus 1234"


@pytest.mark.parametrize(
    ("planted", "form"),
    [
        (quote_plus(quote_plus(SPACED)), "url-encoded (plus) twice"),
        (_lowercase_escapes(quote(SPACED, safe="")), "url-encoded, lowercase escapes"),
        (quote(SPACED), "url-encoded (path)"),
        (quote(_lowercase_escapes(quote(SPACED, safe="")), safe=""), "url-encoded twice, lowercase escapes"),
    ],
)
def test_the_scanner_searches_every_encoding(planted: str, form: str) -> None:
    known = Registry()
    known.add_secret_value(SPACED, "this test")

    leaks = find_leaks(known, [("log", f"echo: {planted}")])

    assert form in {leak.form for leak in leaks}
    assert Registry().redact(planted) == planted
    assert planted not in known.redact(f"echo: {planted}")
