"""S3's check of presigned (SigV4 query-string) requests, in front of moto: moto checks none.

``PresignCheck(app)`` wraps moto's WSGI application. A request whose query carries SigV4
query-string authentication (``X-Amz-Algorithm``, ``X-Amz-Signature``...) is checked the way S3
checks it before moto sees it; every other request (header-signed SDK calls, moto's own API) goes
straight through. What is checked, in S3's order, and what a failure answers (S3's XML
``<Error>`` document, ``x-amz-request-id``, no body for HEAD):

* the algorithm and all of ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``,
  ``X-Amz-SignedHeaders``, ``X-Amz-Signature`` are present and well formed, and
  ``X-Amz-Expires`` is at most a week -> 400 ``AuthorizationQueryParametersError``;
* the URL has not expired (``X-Amz-Date`` + ``X-Amz-Expires`` before now) -> 403 ``AccessDenied``
  "Request has expired"; a date more than 15 minutes ahead -> 403 ``AccessDenied`` "Request is not
  valid yet";
* the access key is one the local world issued -> else 403 ``InvalidAccessKeyId``; a session
  token, when sent, is the one issued with it -> else 400 ``InvalidToken``;
* the signature is the one botocore's own S3 query signer computes for this method, path, query
  (all parameters but ``X-Amz-Signature``), the signed headers as received, ``UNSIGNED-PAYLOAD``
  and the issued secret -> else 403 ``SignatureDoesNotMatch`` (with the string to sign, as S3
  gives it).

``clock_offset_s`` moves the checker's clock (S3's) ahead of the machine's: a fetch made that many
seconds after the signing, without waiting for it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import HmacV1Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

logger = logging.getLogger("localworld.s3_presign")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES_S = 7 * 24 * 3600  # S3: "X-Amz-Expires must be less than a week (in seconds)"
MAX_CLOCK_AHEAD_S = 15 * 60
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_REQUIRED = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
INVALID_TOKEN = "The provided token is malformed or otherwise invalid."  # noqa: S105 - S3's words
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


@dataclass(frozen=True)
class IssuedCredentials:
    """One access key the local world hands out, with its secret and (optional) session token."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class Refusal:
    """What S3 answers a presigned request it refuses."""

    status: int
    code: str
    message: str
    extra: tuple[tuple[str, str], ...] = ()


def is_presigned(query: Mapping[str, str]) -> bool:
    """True when the query carries query-string authentication (SigV4, or SigV2's three fields)."""
    return _is_sigv4(query) or {"AWSAccessKeyId", "Signature", "Expires"} <= query.keys()


def _is_sigv4(query: Mapping[str, str]) -> bool:
    return "X-Amz-Algorithm" in query or "X-Amz-Signature" in query or "X-Amz-Credential" in query


class _SigV2Signer(HmacV1Auth):
    """botocore's SigV2 signer with the URL's ``Expires`` in the place of the date."""

    def __init__(self, credentials: Credentials, expires: str) -> None:
        super().__init__(credentials)
        self._expires = expires

    def _get_date(self) -> str:
        return self._expires


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal


@dataclass(frozen=True)
class PresignedRequest:
    """A request as S3 sees it: the method, the path as sent, the decoded query in order and the
    headers by lowercase name."""

    method: str
    raw_path: str
    pairs: list[tuple[str, str]]
    headers: Mapping[str, str]

    @property
    def query(self) -> dict[str, str]:
        return dict(self.pairs)

    @property
    def canonical_path(self) -> str:
        """The path as S3 canonicalises it: decoded, then all but unreserved bytes and "/" escaped."""
        return quote(unquote(self.raw_path), safe="/~")


class PresignVerifier:
    """Checks one presigned request against the issued credentials (see the module docstring)."""

    def __init__(self, issued: Iterable[IssuedCredentials], clock: Callable[[], float] = time.time) -> None:
        self._issued = {c.access_key_id: c for c in issued}
        self._clock = clock
        self.clock_offset_s = 0.0

    def now(self) -> float:
        return self._clock() + self.clock_offset_s

    def check(
        self, method: str, raw_path: str, pairs: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> Refusal | None:
        """None when S3 would accept the request; else S3's refusal. ``pairs`` is the decoded
        query in order; ``headers`` maps lowercase names to values as received."""
        request = PresignedRequest(method.upper(), raw_path, pairs, headers)
        try:
            if _is_sigv4(request.query):
                self._check_v4(request)
            else:
                self._check_v2(request)
        except _Refused as refused:
            return refused.refusal
        return None

    def _check_v4(self, request: PresignedRequest) -> None:
        query = request.query
        _check_v4_parameters(query)
        signed_at = dt.datetime.strptime(query["X-Amz-Date"], _TIMESTAMP).replace(tzinfo=dt.UTC).timestamp()
        expires_s = int(query["X-Amz-Expires"])
        now = self.now()
        if signed_at - now > MAX_CLOCK_AHEAD_S:
            raise _Refused(Refusal(403, "AccessDenied", "Request is not valid yet"))
        if now > signed_at + expires_s:
            extra = (("X-Amz-Expires", str(expires_s)), ("Expires", _iso(signed_at + expires_s)))
            raise _Refused(_expired(extra, now))
        access_key, _, scope = query["X-Amz-Credential"].partition("/")
        issued = self._issued_for(access_key, query.get("X-Amz-Security-Token"))
        expected, string_to_sign = _signature(request, issued, scope)
        _compare(query["X-Amz-Signature"], expected, access_key, string_to_sign)

    def _check_v2(self, request: PresignedRequest) -> None:
        """SigV2 query authentication (``AWSAccessKeyId``, ``Expires``, ``Signature``): what boto3
        presigns without ``signature_version="s3v4"`` and S3 still accepts in older regions."""
        query = request.query
        if not query["Expires"].isdigit():
            raise _Refused(Refusal(403, "AccessDenied", "Invalid date (should be seconds since epoch)"))
        now = self.now()
        if now > int(query["Expires"]):
            raise _Refused(_expired((("Expires", _iso(int(query["Expires"]))),), now))
        token = query.get("x-amz-security-token")
        issued = self._issued_for(query["AWSAccessKeyId"], token)
        signer = _SigV2Signer(
            Credentials(issued.access_key_id, issued.secret_access_key, None), query["Expires"]
        )
        signed: Any = HTTPHeaders()  # botocore's signer reads it with get_all
        for name in ("content-md5", "content-type"):
            if query.get(name) or request.headers.get(name):
                signed[name] = query.get(name) or request.headers[name]
        if token is not None:
            signed["x-amz-security-token"] = token
        unsigned = "&".join(
            f"{k}={quote(v, safe='')}" if v else k
            for k, v in request.pairs
            if k not in {"AWSAccessKeyId", "Signature", "Expires"}
        )
        split = urlsplit(request.canonical_path + ("?" + unsigned if unsigned else ""))
        string_to_sign = signer.canonical_string(request.method, split, signed)
        _compare(query["Signature"], signer.sign_string(string_to_sign), issued.access_key_id, string_to_sign)

    def _issued_for(self, access_key: str, token: str | None) -> IssuedCredentials:
        issued = self._issued.get(access_key)
        if issued is None:
            raise _Refused(
                Refusal(
                    403,
                    "InvalidAccessKeyId",
                    "The AWS Access Key Id you provided does not exist in our records.",
                    (("AWSAccessKeyId", access_key),),
                )
            )
        if token is not None and not _equal(token, issued.session_token or ""):
            raise _Refused(
                Refusal(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")
            )
        return issued


def _expired(extra: tuple[tuple[str, str], ...], now: float) -> Refusal:
    return Refusal(403, "AccessDenied", "Request has expired", (*extra, ("ServerTime", _iso(now))))


def _compare(provided: str, expected: str, access_key: str, string_to_sign: str) -> None:
    if not _equal(provided, expected):
        raise _Refused(
            Refusal(
                403,
                "SignatureDoesNotMatch",
                SIGNATURE_MISMATCH,
                (("AWSAccessKeyId", access_key), ("StringToSign", string_to_sign)),
            )
        )


def _check_v4_parameters(query: Mapping[str, str]) -> None:
    message = _v4_parameter_problem(query)
    if message is not None:
        raise _Refused(Refusal(400, "AuthorizationQueryParametersError", message))


def _v4_parameter_problem(query: Mapping[str, str]) -> str | None:
    """S3's message for the first malformed query-authentication parameter, in S3's order."""
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        return 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'
    if any(not query.get(name) for name in _REQUIRED):
        return (
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    checks: list[tuple[bool, str]] = [
        (
            len(query["X-Amz-Credential"].split("/")) != 5,
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed.",
        ),
        (
            _bad_timestamp(query["X-Amz-Date"]),
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        ),
        (not query["X-Amz-Expires"].isdigit(), "X-Amz-Expires should be a number"),
        (
            query["X-Amz-Expires"].isdigit() and int(query["X-Amz-Expires"]) > MAX_EXPIRES_S,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ),
    ]
    return next((message for failed, message in checks if failed), None)


def _bad_timestamp(value: str) -> bool:
    try:
        dt.datetime.strptime(value, _TIMESTAMP)
    except ValueError:
        return True
    return False


def _signature(request: PresignedRequest, issued: IssuedCredentials, scope: str) -> tuple[str, str]:
    """(signature, string to sign) as botocore's S3 presigner computes them for this request."""
    query = request.query
    _date, region, service, _terminator = scope.split("/")
    signed = [name.strip().lower() for name in query["X-Amz-SignedHeaders"].split(";") if name.strip()]
    aws_request = AWSRequest(
        method=request.method,
        url="https://s3.local" + request.canonical_path,
        headers={name: request.headers.get(name, "") for name in signed},
    )
    aws_request.params = {key: value for key, value in request.pairs if key != "X-Amz-Signature"}
    aws_request.context["timestamp"] = query["X-Amz-Date"]
    signer = S3SigV4QueryAuth(
        Credentials(issued.access_key_id, issued.secret_access_key, issued.session_token),
        service,
        region,
        expires=int(query["X-Amz-Expires"]),
    )
    string_to_sign = signer.string_to_sign(aws_request, signer.canonical_request(aws_request))
    return signer.signature(string_to_sign, aws_request), string_to_sign


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_document(refusal: Refusal, request_id: str) -> bytes:
    """S3's ``<Error>`` XML for a refusal."""
    fields = [("Code", refusal.code), ("Message", refusal.message), *refusal.extra]
    fields += [("RequestId", request_id), ("HostId", request_id)]
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


class PresignCheck:
    """WSGI middleware: refuses presigned requests S3 would refuse; passes everything else on."""

    def __init__(self, app: WsgiApp, verifier: PresignVerifier) -> None:
        self._app = app
        self.verifier = verifier
        self.refusals: list[tuple[str, str, str]] = []  # (method, path, S3 error code)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if not is_presigned(dict(pairs)):
            return self._app(environ, start_response)
        method = str(environ.get("REQUEST_METHOD", "GET"))
        raw_path = str(environ.get("RAW_URI") or environ.get("PATH_INFO", "/")).split("?", 1)[0]
        refusal = self.verifier.check(method, raw_path, pairs, _headers(environ))
        if refusal is None:
            return self._app(environ, start_response)
        self.refusals.append((method, unquote(raw_path), refusal.code))
        logger.info("presigned %s %s refused: %s", method, unquote(raw_path), refusal.code)
        return refuse(start_response, refusal, method)


_REASONS = {400: "Bad Request", 403: "Forbidden"}


def refuse(start_response: Callable[..., Any], refusal: Refusal, method: str) -> list[bytes]:
    """Answer a request as S3 refuses it: its ``<Error>`` XML and request id (no body for a HEAD)."""
    request_id = secrets.token_hex(8).upper()
    body = error_document(refusal, request_id)
    start_response(
        f"{refusal.status} {_REASONS[refusal.status]}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", request_id),
        ],
    )
    return [] if method == "HEAD" else [body]


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Request headers by lowercase name, as the client sent them."""
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers
