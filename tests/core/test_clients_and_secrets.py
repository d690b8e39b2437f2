"""The composition root, the secret's read errors and the Deepgram client's transport edges."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
import pytest
import requests
import responses

from tests.core.conftest import ENV, LISTEN_URL, REGION, SECRET_ID, transcript_body
from transcriber.compose import build_retrier, build_transcriber
from transcriber.errors import BlockedError, ConfigurationError, RetryableError
from transcriber.services.clients import AWS_CLIENT_CONFIG, CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from transcriber.services.deepgram import DeepgramClient
from transcriber.services.secrets import ApiKeyProvider

if TYPE_CHECKING:
    from tests.core.conftest import Aws


def test_the_containers_objects_are_built_from_the_environment_with_bounded_clients(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        **ENV,
        "DEAD_LETTER_QUEUE_URL": aws.dead_letter_queue_url,
        "PARKING_QUEUE_URL": aws.parking_queue_url,
    }.items():
        monkeypatch.setenv(name, value)

    retrier = build_retrier()

    assert retrier.policy.dead_letter_queue_url == aws.dead_letter_queue_url
    s3_config = retrier.transcriber.storage._s3.meta.config
    assert (s3_config.connect_timeout, s3_config.read_timeout) == (  # type: ignore[attr-defined]
        CONNECT_TIMEOUT_S,
        READ_TIMEOUT_S,
    )
    assert s3_config.retries == AWS_CLIENT_CONFIG.retries  # type: ignore[attr-defined]
    assert build_transcriber().settings.output_bucket == ENV["OUTPUT_BUCKET"]


def test_a_missing_variable_stops_the_build_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ConfigurationError, match="OUTPUT_BUCKET"):
        build_transcriber()


def test_the_key_is_cached_until_a_forced_read(aws: Aws) -> None:
    provider = ApiKeyProvider(SECRET_ID, max_age_s=300, client=aws.secretsmanager)
    first = provider.get()
    aws.admin.secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString="dg-rotated-0123456789abcd")

    assert provider.get() == first
    assert provider.get(force_fetch=True) == "dg-rotated-0123456789abcd"
    assert provider.secret_id == SECRET_ID


def test_a_missing_secret_is_a_configuration_error_naming_it(aws: Aws) -> None:
    provider = ApiKeyProvider("deepgram/nowhere", max_age_s=300, client=aws.secretsmanager)

    with pytest.raises(ConfigurationError) as raised:
        provider.get()

    assert raised.value.reason == "secret-unreadable"
    assert "deepgram/nowhere" in str(raised.value)


def test_an_unreachable_secrets_manager_is_retryable() -> None:
    client = boto3.session.Session(region_name=REGION).client(
        "secretsmanager",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        config=AWS_CLIENT_CONFIG,
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    provider = ApiKeyProvider(SECRET_ID, max_age_s=300, client=client)

    with pytest.raises(RetryableError) as raised:
        provider.get()

    assert raised.value.reason == "secrets-manager-unreachable"
    assert not isinstance(raised.value, BlockedError)


def test_a_throttled_secret_read_is_retryable(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    def throttled(**_: object) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "GetSecretValue")

    monkeypatch.setattr(aws.secretsmanager, "get_secret_value", throttled)
    provider = ApiKeyProvider(SECRET_ID, max_age_s=300, client=aws.secretsmanager)

    with pytest.raises(RetryableError) as raised:
        provider.get()

    assert raised.value.reason == "secrets-manager-error"


# -- the Deepgram client's transport --------------------------------------------------------


def client() -> DeepgramClient:
    return DeepgramClient("https://api.deepgram.test")


def call(deepgram_client: DeepgramClient) -> object:
    return deepgram_client.transcribe_url(
        api_key="k", media_url="https://bucket/x.wav", options=[], connect_timeout_s=1, read_timeout_s=2
    )


def test_its_own_session_sends_its_user_agent_and_never_retries_a_post() -> None:
    deepgram_client = client()
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, json=transcript_body())
        call(deepgram_client)
        sent = mock.calls[0].request

    assert str(sent.headers["User-Agent"]).startswith("deepgram-s3-transcriber/")
    adapter = deepgram_client._session.get_adapter("https://api.deepgram.test")
    assert adapter.max_retries.total == 0  # type: ignore[attr-defined]


def test_plain_http_is_refused_before_any_request() -> None:
    with pytest.raises(ConfigurationError) as raised:
        DeepgramClient("http://api.deepgram.com")

    assert raised.value.reason == "insecure-api-url"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (requests.ReadTimeout("slow"), "deepgram-timeout"),
        (requests.ConnectionError("reset"), "deepgram-connection"),
    ],
)
def test_transport_failures_are_retryable(failure: Exception, reason: str) -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, body=failure)
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [b"<html>proxy</html>", b"[1, 2]", json.dumps({"metadata": {}, "results": {"channels": []}}).encode()],
)
def test_a_200_that_is_not_a_transcript_is_retryable(body: bytes) -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, body=body, status=200)
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.reason == "deepgram-invalid-response"


def test_a_slow_upload_answer_is_a_retryable_timeout() -> None:
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST, LISTEN_URL, status=400, json={"err_code": "SLOW_UPLOAD", "err_msg": "too slow"}
        )
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.reason == "deepgram-request-timeout"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("soon", 0.0),
        ("nan", 0.0),
        ("-5", 0.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_is_read_with_urllib3s_parser(header: str, seconds: float) -> None:
    """Unreadable, negative and past values read as 0 (the policy's floor applies), never None."""
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, status=429, body="busy", headers={"Retry-After": header})
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.details.retry_after_s == seconds


def test_retry_after_as_an_http_date_in_the_future_is_honoured() -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, status=503, body="busy", headers={"Retry-After": when})
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.details.retry_after_s is not None
    assert 17 <= raised.value.details.retry_after_s <= 20


def test_without_retry_after_the_policy_backs_off_itself() -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, status=429, body="busy")
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.details.retry_after_s is None


def test_a_200_nested_too_deep_to_parse_is_an_invalid_response() -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, status=200, body=b"[" * 100_000 + b"]" * 100_000)
        with pytest.raises(RetryableError) as raised:
            call(client())

    assert raised.value.reason == "deepgram-invalid-response"


def test_the_request_id_header_is_used_when_the_body_has_none() -> None:
    body = transcript_body()
    body["metadata"].pop("request_id")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, LISTEN_URL, json=body, headers={"dg-request-id": "from-header"})
        transcript = call(client())

    assert transcript.request_id == "from-header"  # type: ignore[attr-defined]
