"""The local S3 refuses reads of SSE-C objects without the customer key, as S3 does (moto serves
them in the clear to anyone): GET and presigned GET ``400 InvalidRequest``, HEAD a bare 400."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests
from botocore.exceptions import ClientError

from localworld.aws import LocalAws, MotoServer

BUCKET = "customer-keys-bucket"
KEY = "calls/secret é.wav"
CUSTOMER_KEY = os.urandom(32)
WITH_KEY = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY}


@pytest.fixture
def aws(moto: MotoServer) -> Iterator[LocalAws]:
    aws = LocalAws(moto.endpoint_url)
    aws.reset()
    aws.s3().create_bucket(Bucket=BUCKET)
    aws.s3().put_object(Bucket=BUCKET, Key=KEY, Body=b"RIFF-secret", **WITH_KEY)  # type: ignore[arg-type]
    yield aws
    aws.reset()


def test_reads_without_the_customer_key_are_refused_as_s3_refuses_them(aws: LocalAws) -> None:
    s3 = aws.s3()
    with pytest.raises(ClientError) as head:
        s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with pytest.raises(ClientError) as get:
        s3.get_object(Bucket=BUCKET, Key=KEY)
    assert get.value.response["Error"]["Code"] == "InvalidRequest"
    assert "Server Side Encryption" in get.value.response["Error"]["Message"]

    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": KEY})
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 400
    assert b"InvalidRequest" in fetched.content


def test_reads_with_the_key_and_other_objects_are_served(aws: LocalAws) -> None:
    s3 = aws.s3()
    got = s3.get_object(Bucket=BUCKET, Key=KEY, **WITH_KEY)  # type: ignore[arg-type]
    assert got["Body"].read() == b"RIFF-secret"
    s3.put_object(Bucket=BUCKET, Key="plain.wav", Body=b"RIFF")
    assert s3.get_object(Bucket=BUCKET, Key="plain.wav")["Body"].read() == b"RIFF"


def test_a_later_upload_without_a_customer_key_is_readable_again(aws: LocalAws) -> None:
    s3 = aws.s3()
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"RIFF-plain")

    assert s3.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"] == len(b"RIFF-plain")


def test_a_reset_world_forgets_which_keys_were_encrypted(aws: LocalAws) -> None:
    aws.reset()
    s3 = aws.s3()
    s3.create_bucket(Bucket=BUCKET)

    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=BUCKET, Key=KEY)
    assert gone.value.response["Error"]["Code"] == "NoSuchKey"  # gone, not "encrypted"
