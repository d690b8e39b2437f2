"""A simple DELETE of a missing key in a versioned bucket adds a delete marker, as on AWS."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from localworld import s3_delete_markers


def test_a_delete_of_a_missing_key_leaves_a_marker_only_in_a_versioned_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3_delete_markers.install()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("versioned-bucket", "plain-bucket"):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket="versioned-bucket", VersioningConfiguration={"Status": "Enabled"})

        answers = {
            bucket: s3.delete_object(Bucket=bucket, Key="never-written")
            for bucket in ("versioned-bucket", "plain-bucket")
        }

        assert answers["versioned-bucket"].get("DeleteMarker") is True
        assert "DeleteMarker" not in answers["plain-bucket"]
        versions = s3.list_object_versions(Bucket="versioned-bucket")
        assert [m["Key"] for m in versions.get("DeleteMarkers", [])] == ["never-written"]
        with pytest.raises(s3.exceptions.ClientError) as head:
            s3.head_object(Bucket="versioned-bucket", Key="never-written")
        assert head.value.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker") == "true"
