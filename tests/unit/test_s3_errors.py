from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from transcriber.errors import PermanentError, RetryableError
from transcriber.services.storage import classify_s3_error


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "HeadObject")


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


class RefusingS3:
    def put_object(self, **_: object) -> None:
        raise client_error("AccessDenied", 403)

    def delete_object(self, **_: object) -> None:
        raise client_error("AccessDenied", 403)


@pytest.mark.parametrize("action", ["write_failure", "delete_failure"])
def test_an_output_bucket_that_refuses_writes_blocks_instead_of_failing_the_object(action: str) -> None:
    from transcriber.domain.events import S3ObjectRef
    from transcriber.errors import BlockedError
    from transcriber.services.storage import Storage

    storage = Storage(RefusingS3(), "out", "transcripts/", "failures/", home_bucket="in")  # type: ignore[arg-type]
    obj = S3ObjectRef("in", "a.wav")
    calls: dict[str, Callable[[], object]] = {
        "write_failure": lambda: storage.write_failure(obj, {"reason": "x"}, marked=True),
        "delete_failure": lambda: storage.delete_failure(obj),
    }

    with pytest.raises(BlockedError) as caught:
        calls[action]()

    assert caught.value.reason == "output-bucket-unwritable"
    assert "s3://out/failures/a.wav.json" in caught.value.details.message


class HeadRefusingS3:
    """S3 whose HEADs of outputs fail (denied, or the network) and of sources say 'not found'."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def head_object(self, **_: object) -> None:
        raise self.error


@pytest.mark.parametrize("error", [client_error("AccessDenied", 403), client_error("SlowDown", 503)])
def test_an_unreadable_output_is_raised_when_asked_and_ignored_when_ordering(error: Exception) -> None:
    from transcriber.domain.events import S3ObjectRef
    from transcriber.domain.work import Order
    from transcriber.errors import TranscriptionError
    from transcriber.services.storage import Storage

    storage = Storage(HeadRefusingS3(error), "out", "transcripts/", "failures/", home_bucket="in")  # type: ignore[arg-type]
    obj = S3ObjectRef("in", "a.wav", etag="e", sequencer="01")

    with pytest.raises(TranscriptionError):
        storage.transcript_of(obj)
    # The source HEAD failed too: nothing says it is older.
    assert storage.decided(obj).order is Order.UNKNOWN


def test_a_broken_connection_reading_an_output_is_an_output_error() -> None:
    from botocore.exceptions import EndpointConnectionError

    from transcriber.domain.events import S3ObjectRef
    from transcriber.errors import RetryableError
    from transcriber.services.storage import Storage

    storage = Storage(
        HeadRefusingS3(EndpointConnectionError(endpoint_url="https://s3")),  # type: ignore[arg-type]
        "out",
        "transcripts/",
        "failures/",
    )

    with pytest.raises(RetryableError):
        storage.transcript_of(S3ObjectRef("in", "a.wav"))


class BareHead400S3:
    """S3 whose HEAD answers a bare 400 and whose one-byte GET answers ``get_error`` (or works)."""

    def __init__(self, get_error: Exception | None) -> None:
        self.get_error = get_error
        self.gets: list[dict[str, object]] = []

    def head_object(self, **_: object) -> None:
        raise client_error("400", 400)

    def get_object(self, **params: object) -> dict[str, object]:
        self.gets.append(params)
        if self.get_error is not None:
            raise self.get_error

        class Body:
            def close(self) -> None: ...

        return {"Body": Body()}


def test_a_bare_400_head_is_told_as_sse_c_by_a_one_byte_get() -> None:
    from transcriber.domain.events import S3ObjectRef
    from transcriber.errors import PermanentError
    from transcriber.services.source import SSE_C_REASON, SourceObjects

    refusing = client_error("InvalidRequest", 400)
    refusing.response["Error"]["Message"] = "The object was stored using a form of Server Side Encryption."
    s3 = BareHead400S3(refusing)

    with pytest.raises(PermanentError) as caught:
        SourceObjects(s3).describe(S3ObjectRef("in", "a.wav", version_id="v1"))  # type: ignore[arg-type]

    assert caught.value.reason == SSE_C_REASON
    assert s3.gets == [{"Bucket": "in", "Key": "a.wav", "VersionId": "v1", "Range": "bytes=0-0"}]


@pytest.mark.parametrize("get_error", [None, client_error("InvalidArgument", 400)])
def test_a_bare_400_head_that_is_not_sse_c_stays_an_s3_error(get_error: Exception | None) -> None:
    from transcriber.domain.events import S3ObjectRef
    from transcriber.errors import PermanentError
    from transcriber.services.source import SourceObjects

    source = SourceObjects(BareHead400S3(get_error))  # type: ignore[arg-type]
    with pytest.raises(PermanentError) as caught:
        source.describe(S3ObjectRef("in", "a.wav"))

    assert caught.value.reason == "s3-error"
