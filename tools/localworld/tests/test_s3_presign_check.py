"""The local S3 checks presigned URLs as S3 does (moto checks none): signature against the issued
credentials, expiry, the parameters; refusals in S3's XML. And the emulator, fetching such a URL,
answers what Deepgram answers for a URL it can't fetch."""

from __future__ import annotations

import datetime as dt
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import pytest
import requests
from botocore.config import Config

from localworld.aws import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    DUMMY_SESSION_TOKEN,
    ISSUED_CREDENTIALS,
    LocalAws,
    MotoServer,
)
from localworld.deepgram import DeepgramEmulator
from localworld.s3_presign import PresignVerifier

BUCKET = "presign-check-bucket"
KEY = "talks/a b+é.wav"
BODY = b"RIFF-not-really-audio"


@pytest.fixture
def aws(moto: MotoServer) -> Iterator[LocalAws]:
    aws = LocalAws(moto.endpoint_url)
    aws.reset()
    aws.s3().create_bucket(Bucket=BUCKET)
    aws.s3().put_object(Bucket=BUCKET, Key=KEY, Body=BODY)
    moto.presign_check.verifier.clock_offset_s = 0.0
    yield aws
    moto.presign_check.verifier.clock_offset_s = 0.0
    aws.reset()


def presign(
    moto: MotoServer,
    *,
    secret: str = DUMMY_SECRET_ACCESS_KEY,
    expires: int = 300,
    version: str = "s3v4",
    **params: str,
) -> str:
    s3 = boto3.client(
        "s3",
        config=Config(signature_version=version),
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=params.pop("access_key", DUMMY_ACCESS_KEY_ID),
        aws_secret_access_key=secret,
        aws_session_token=params.pop("token", DUMMY_SESSION_TOKEN),
    )
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": KEY, **params}, ExpiresIn=expires
    )
    return url


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def s3_error(response: requests.Response) -> dict[str, str]:
    root = ET.fromstring(response.content)  # noqa: S314 - our own server's answer
    return {child.tag: child.text or "" for child in root}


def test_a_valid_presigned_url_is_served(moto: MotoServer, aws: LocalAws) -> None:
    response = requests.get(presign(moto), timeout=10)
    assert response.status_code == 200
    assert response.content == BODY
    # The method is signed: a GET URL does not HEAD (S3: 403, and no body for a HEAD).
    head = requests.head(presign(moto), timeout=10)
    assert (head.status_code, head.content) == (403, b"")


def test_a_version_pinned_url_and_sdk_calls_pass(moto: MotoServer, aws: LocalAws) -> None:
    version = aws.s3().head_object(Bucket=BUCKET, Key=KEY).get("VersionId") or "null"
    assert requests.get(presign(moto, VersionId=version), timeout=10).status_code in (200, 404)
    # Header-signed SDK calls are not presigned: they go straight to moto.
    assert aws.s3().get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == BODY


def test_a_tampered_signature_is_refused_like_s3(moto: MotoServer, aws: LocalAws) -> None:
    url = presign(moto)
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    tampered = with_query(url, **{"X-Amz-Signature": ("0" if signature[0] != "0" else "1") + signature[1:]})

    response = requests.get(tampered, timeout=10)

    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/xml"
    assert response.headers["x-amz-request-id"]
    error = s3_error(response)
    assert error["Code"] == "SignatureDoesNotMatch"
    assert error["Message"].startswith("The request signature we calculated does not match")
    assert error["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert ("GET", f"/{BUCKET}/{KEY}", "SignatureDoesNotMatch") in moto.presign_check.refusals


@pytest.mark.parametrize("change", [{"response-content-type": "text/html"}, {"X-Amz-Expires": "600"}])
def test_a_changed_signed_parameter_is_refused(
    moto: MotoServer, aws: LocalAws, change: dict[str, str]
) -> None:
    response = requests.get(with_query(presign(moto), **change), timeout=10)
    assert response.status_code == 403
    assert s3_error(response)["Code"] == "SignatureDoesNotMatch"


def test_another_key_path_is_refused(moto: MotoServer, aws: LocalAws) -> None:
    aws.s3().put_object(Bucket=BUCKET, Key="other.wav", Body=BODY)
    parts = urlsplit(presign(moto))
    response = requests.get(urlunsplit(parts._replace(path=f"/{BUCKET}/other.wav")), timeout=10)
    assert response.status_code == 403
    assert s3_error(response)["Code"] == "SignatureDoesNotMatch"


def test_a_url_signed_with_the_wrong_secret_is_refused(moto: MotoServer, aws: LocalAws) -> None:
    response = requests.get(presign(moto, secret="not-the-issued-secret"), timeout=10)
    assert response.status_code == 403
    assert s3_error(response)["Code"] == "SignatureDoesNotMatch"


def test_an_unknown_access_key_or_token_is_refused(moto: MotoServer, aws: LocalAws) -> None:
    unknown = requests.get(presign(moto, access_key="AKIAUNKNOWN"), timeout=10)
    assert unknown.status_code == 403
    assert s3_error(unknown) | {"RequestId": "", "HostId": ""} == {
        "Code": "InvalidAccessKeyId",
        "Message": "The AWS Access Key Id you provided does not exist in our records.",
        "AWSAccessKeyId": "AKIAUNKNOWN",
        "RequestId": "",
        "HostId": "",
    }
    bad_token = requests.get(presign(moto, token="another-token"), timeout=10)
    assert bad_token.status_code == 400
    assert s3_error(bad_token)["Code"] == "InvalidToken"


def test_an_expired_url_is_refused_like_s3(moto: MotoServer, aws: LocalAws) -> None:
    url = presign(moto, expires=1)
    time.sleep(2.1)  # X-Amz-Date has whole seconds: 2 s later is past it for sure

    response = requests.get(url, timeout=10)

    assert response.status_code == 403
    error = s3_error(response)
    assert (error["Code"], error["Message"], error["X-Amz-Expires"]) == (
        "AccessDenied",
        "Request has expired",
        "1",
    )
    assert error["Expires"] < error["ServerTime"]


def test_s3s_clock_ahead_expires_a_url_and_one_from_the_future_is_not_valid_yet(
    moto: MotoServer, aws: LocalAws
) -> None:
    url = presign(moto, expires=300)
    moto.presign_check.verifier.clock_offset_s = 301
    assert s3_error(requests.get(url, timeout=10))["Message"] == "Request has expired"
    moto.presign_check.verifier.clock_offset_s = -16 * 60
    assert s3_error(requests.get(url, timeout=10))["Message"] == "Request is not valid yet"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"X-Amz-Expires": "604801"}, "X-Amz-Expires must be less than a week"),
        ({"X-Amz-Expires": "soon"}, "X-Amz-Expires should be a number"),
        ({"X-Amz-Algorithm": "AWS4-HMAC-SHA1"}, "X-Amz-Algorithm only supports"),
        ({"X-Amz-Date": "yesterday"}, "X-Amz-Date must be in the ISO8601 Long Format"),
        ({"X-Amz-Credential": "testing/20260101"}, "the Credential is mal-formed"),
        ({"X-Amz-SignedHeaders": ""}, "requires the X-Amz-Algorithm"),
    ],
)
def test_malformed_query_parameters_are_refused(
    moto: MotoServer, aws: LocalAws, change: dict[str, str], message: str
) -> None:
    response = requests.get(with_query(presign(moto), **change), timeout=10)
    assert response.status_code == 400
    error = s3_error(response)
    assert error["Code"] == "AuthorizationQueryParametersError"
    assert message in error["Message"]


def test_the_verifier_accepts_exactly_what_botocore_signs() -> None:
    verifier = PresignVerifier([ISSUED_CREDENTIALS], clock=lambda: 1_800_000_000.0)
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        config=Config(signature_version="s3v4"),
        region_name="eu-west-1",
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
    )
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k ~é/x.wav"}, ExpiresIn=60)
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    verifier.clock_offset_s = _signed_at(query["X-Amz-Date"]) - 1_800_000_000.0 + 30
    assert verifier.check("GET", parts.path, pairs, {"host": parts.netloc}) is None
    refused = verifier.check("PUT", parts.path, pairs, {"host": parts.netloc})
    assert refused is not None
    assert refused.code == "SignatureDoesNotMatch"
    refused = verifier.check("GET", parts.path, pairs, {"host": "127.0.0.1:2"})
    assert refused is not None
    assert refused.code == "SignatureDoesNotMatch"


def _signed_at(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()


def test_the_emulator_answers_what_deepgram_answers_for_an_expired_url(
    moto: MotoServer, aws: LocalAws, deepgram_emulator: DeepgramEmulator, deepgram_api_key: str
) -> None:
    """A presign expiry shorter than the time before Deepgram fetches: Deepgram's 400."""
    url = presign(moto, expires=1)
    deepgram_emulator.latency = 2.1  # before the fetch

    response = requests.post(
        f"{deepgram_emulator.url}/v1/listen?model=nova-3",
        data=json.dumps({"url": url}),
        headers={"Authorization": f"Token {deepgram_api_key}", "Content-Type": "application/json"},
        verify=str(deepgram_emulator.ca_bundle),
        timeout=30,
    )

    assert response.status_code == 400
    body = response.json()
    assert body["err_code"] == "REMOTE_CONTENT_ERROR"
    assert body["err_msg"] == "The remote server hosting the media returned a client error: 403 Forbidden"
    assert ("GET", f"/{BUCKET}/{KEY}", "AccessDenied") in moto.presign_check.refusals


def test_sigv2_presigned_urls_are_checked_too(moto: MotoServer, aws: LocalAws) -> None:
    """boto3 presigns SigV2 without ``signature_version="s3v4"``: checked as S3 checks it."""
    url = presign(moto, version="s3", ResponseContentType="audio/wav")
    assert "Signature=" in url
    assert "X-Amz-Signature" not in url
    assert requests.get(url, timeout=10).status_code == 200
    assert s3_error(requests.get(presign(moto, version="s3", secret="wrong"), timeout=10))["Code"] == (
        "SignatureDoesNotMatch"
    )
    assert (
        s3_error(requests.get(with_query(url, **{"response-content-type": "text/html"}), timeout=10))["Code"]
        == "SignatureDoesNotMatch"
    )
    assert (
        s3_error(requests.get(presign(moto, version="s3", token="other"), timeout=10))["Code"]
        == "InvalidToken"
    )
    moto.presign_check.verifier.clock_offset_s = 301
    expired = s3_error(requests.get(url, timeout=10))
    assert (expired["Code"], expired["Message"]) == ("AccessDenied", "Request has expired")
