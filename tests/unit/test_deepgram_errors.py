import pytest

from transcriber.errors import BlockedError, PermanentError, RetryableError
from transcriber.services.deepgram import classify_status, parse_error_body


@pytest.mark.parametrize(
    ("body", "code", "message", "request_id"),
    [
        (
            b'{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"r1"}',
            "INVALID_AUTH",
            "Invalid credentials.",
            "r1",
        ),
        (
            b'{"category":"INVALID_QUERY_PARAMETER","message":"bad","details":"d","request_id":"r2"}',
            "INVALID_QUERY_PARAMETER",
            "bad",
            "r2",
        ),
        (b'"Please try again later"', None, "Please try again later", None),
        (b"<html>502 Bad Gateway</html>", None, "<html>502 Bad Gateway</html>", None),
        (b"", None, "(empty body)", None),
        (b"[1, 2]", None, "[1, 2]", None),
    ],
)
def test_every_error_body_shape_parses(
    body: bytes, code: str | None, message: str, request_id: str | None
) -> None:
    parsed = parse_error_body(body)

    assert (parsed.code, parsed.message, parsed.request_id) == (code, message, request_id)


@pytest.mark.parametrize(
    ("status", "body", "kind", "reason"),
    [
        (
            400,
            b'{"err_code":"Bad Request","err_msg":"corrupt or unsupported data"}',
            PermanentError,
            "deepgram-unsupported-audio",
        ),
        (
            400,
            b'{"category":"INVALID_QUERY_PARAMETER","message":"x"}',
            PermanentError,
            "deepgram-invalid-options",
        ),
        (
            400,
            b'{"err_code":"REMOTE_CONTENT_ERROR","err_msg":"returned a client error: 403 Forbidden"}',
            PermanentError,
            "deepgram-remote-content",
        ),
        (
            400,
            b'{"err_code":"REMOTE_CONTENT_ERROR","err_msg":"The remote server failed to return valid data"}',
            RetryableError,
            "deepgram-remote-content-transient",
        ),
        (401, b'{"err_code":"INVALID_AUTH"}', BlockedError, "deepgram-invalid-credentials"),
        (402, b'{"err_code":"ASR_PAYMENT_REQUIRED"}', BlockedError, "deepgram-payment-required"),
        (
            403,
            b'{"err_code":"INSUFFICIENT_PERMISSIONS"}',
            BlockedError,
            "deepgram-insufficient-permissions",
        ),
        (301, b"", BlockedError, "deepgram-redirected"),
        (308, b"moved", BlockedError, "deepgram-redirected"),
        (404, b'{"err_code":"NOT_FOUND"}', BlockedError, "deepgram-endpoint-not-found"),
        (405, b"Method Not Allowed", BlockedError, "deepgram-method-not-allowed"),
        (408, b"timeout", RetryableError, "deepgram-request-timeout"),
        (429, b'{"err_code":"TOO_MANY_REQUESTS"}', RetryableError, "deepgram-throttled"),
        (500, b"Please try again later", RetryableError, "deepgram-unavailable"),
        (503, b"", RetryableError, "deepgram-unavailable"),
        (504, b"", RetryableError, "deepgram-processing-timeout"),
        (418, b"teapot", PermanentError, "deepgram-unexpected-status"),
    ],
)
def test_statuses_map_to_the_taxonomy(status: int, body: bytes, kind: type, reason: str) -> None:
    error = classify_status(status, parse_error_body(body), retry_after=None)

    assert type(error) is kind
    assert error.reason == reason
    assert error.details.http_status == status


def test_remote_content_errors_explain_the_likely_causes() -> None:
    error = classify_status(
        400, parse_error_body(b'{"err_code":"REMOTE_CONTENT_ERROR","err_msg":"403 Forbidden"}'), None
    )

    assert "presigned" in error.details.message
    assert "expired" in error.details.message


def test_an_error_body_nested_too_deep_to_parse_is_read_as_text() -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    error = parse_error_body(body)

    assert error.code is None
    assert len(error.message) <= 500
