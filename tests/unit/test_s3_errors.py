import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from transcriber.errors import PermanentError, RetryableError
from transcriber.storage import classify_s3_error


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject"
    )


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (client_error("NoSuchKey", 404), PermanentError, "s3-object-missing"),
        (client_error("NoSuchVersion", 404), PermanentError, "s3-object-missing"),
        (client_error("AccessDenied", 403), PermanentError, "s3-access-denied"),
        (client_error("SlowDown", 503), RetryableError, "s3-throttled"),
        (client_error("InternalError", 500), RetryableError, "s3-throttled"),
        (EndpointConnectionError(endpoint_url="https://s3"), RetryableError, "s3-unreachable"),
        (client_error("InvalidObjectState", 403), PermanentError, "s3-error"),
    ],
)
def test_aws_errors_are_classified(error: ClientError, kind: type, reason: str) -> None:
    classified = classify_s3_error(error, "reading", "s3://b/k.wav")

    assert type(classified) is kind
    assert classified.reason == reason
    assert "s3://b/k.wav" in classified.details.message
