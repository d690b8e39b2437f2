"""The local S3 refuses user metadata over 2 KB as S3 does (moto accepts any size), so a write
that would fail on AWS fails here too."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests
from botocore.exceptions import ClientError

from localworld.aws import LocalAws, MotoServer
from localworld.s3_limits import MAX_USER_METADATA_BYTES

BUCKET = "metadata-limit-bucket"


@pytest.fixture
def aws(moto: MotoServer) -> Iterator[LocalAws]:
    aws = LocalAws(moto.endpoint_url)
    aws.reset()
    aws.s3().create_bucket(Bucket=BUCKET)
    yield aws
    aws.reset()


def metadata_of(size: int) -> dict[str, str]:
    """User metadata whose names and values add up to exactly ``size`` bytes."""
    return {"a": "x" * (size - 1 - len("b") - 1), "b": "y"}


def test_metadata_up_to_the_limit_is_stored(aws: LocalAws) -> None:
    aws.s3().put_object(Bucket=BUCKET, Key="k", Body=b"x", Metadata=metadata_of(MAX_USER_METADATA_BYTES))

    head = aws.s3().head_object(Bucket=BUCKET, Key="k")
    assert sum(len(k) + len(v) for k, v in head["Metadata"].items()) == MAX_USER_METADATA_BYTES


def test_one_byte_over_is_refused_as_s3_refuses_it_and_nothing_is_stored(
    aws: LocalAws, moto: MotoServer
) -> None:
    with pytest.raises(ClientError) as raised:
        aws.s3().put_object(Bucket=BUCKET, Key="k", Body=b"x" * 4096, Metadata=metadata_of(2049))

    assert raised.value.response["Error"]["Code"] == "MetadataTooLarge"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert aws.s3().list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    assert moto.metadata_limit.refusals[-1][2] == 2049
    # The connection is still good for the next request.
    aws.s3().put_object(Bucket=BUCKET, Key="k2", Body=b"x")
    assert aws.s3().list_objects_v2(Bucket=BUCKET)["KeyCount"] == 1


def test_a_multipart_upload_over_the_limit_is_refused_at_its_start(aws: LocalAws) -> None:
    # (botocore itself refuses non-ASCII metadata before sending it.)
    with pytest.raises(ClientError) as raised:
        aws.s3().create_multipart_upload(Bucket=BUCKET, Key="m", Metadata={"long-name": "x" * 2100})
    assert raised.value.response["Error"]["Code"] == "MetadataTooLarge"


def test_error_document_is_s3s_xml(aws: LocalAws, moto: MotoServer) -> None:
    response = requests.put(
        f"{moto.endpoint_url}/{BUCKET}/raw",
        data=b"x",
        headers={
            "x-amz-meta-big": "z" * 3000,
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIA/20261126/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=0",
        },
        timeout=10,
    )

    assert response.status_code == 400
    root = ET.fromstring(response.content)  # noqa: S314 - our own server's answer
    assert root.findtext("Code") == "MetadataTooLarge"
    assert root.findtext("RequestId") == response.headers["x-amz-request-id"]
