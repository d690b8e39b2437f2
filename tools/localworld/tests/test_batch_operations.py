"""The local S3 Batch Operations stand-in, through plain boto3 ``s3control`` over HTTP: job API,
manifest from a prefix, per-task invocation and retries, the completion report."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from localworld.aws import LocalAws
from localworld.batch_operations import LocalBatchOperations

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:transcribe"
ACCOUNT = "123456789012"
SOURCE = "archive-bucket"
REPORTS = "report-bucket"


class FakeFunction:
    """Answers each task like the transcribe function would, by key; records every event."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
        with self._lock:
            self.events.append(event)
            [task] = event["tasks"]
            key = unquote_plus(task["s3Key"])
            codes = self.answers.get(key, ["Succeeded"])
            code = codes.pop(0) if len(codes) > 1 else codes[0]
        if code == "crash":
            return None, {"errorType": "RuntimeError", "errorMessage": "boom"}
        text = f"transcripts/{key}.json" if code == "Succeeded" else f"some-reason: {key}"
        return {
            "invocationSchemaVersion": event["invocationSchemaVersion"],
            "treatMissingKeysAs": "PermanentFailure",
            "invocationId": event["invocationId"],
            "results": [{"taskId": task["taskId"], "resultCode": code, "resultString": text}],
        }, None


@pytest.fixture
def buckets(local_aws: LocalAws) -> LocalAws:
    s3 = local_aws.s3()
    for name in (SOURCE, REPORTS):
        s3.create_bucket(Bucket=name)
    for key in ("a/1.wav", "a/two words.wav", "a/3.wav", "b/4.wav"):
        s3.put_object(Bucket=SOURCE, Key=key, Body=b"RIFF")
    return local_aws


@pytest.fixture
def function() -> FakeFunction:
    return FakeFunction()


@pytest.fixture
def engine(buckets: LocalAws, function: FakeFunction) -> Iterator[LocalBatchOperations]:
    with LocalBatchOperations(
        buckets.s3(), {FUNCTION_ARN: function}, concurrency=2, temporary_failure_delay_s=0.01
    ) as service:
        yield service


def create_job(engine: LocalBatchOperations, prefix: str = "a/", **overrides: Any) -> str:
    request: dict[str, Any] = {
        "AccountId": ACCOUNT,
        "ConfirmationRequired": False,
        "ClientRequestToken": "token-1",
        "Priority": 10,
        "RoleArn": "arn:aws:iam::123456789012:role/backfill",
        "Operation": {
            "LambdaInvoke": {
                "FunctionArn": FUNCTION_ARN,
                "InvocationSchemaVersion": "2.0",
                "UserArguments": {"backfill": prefix},
            }
        },
        "ManifestGenerator": {
            "S3JobManifestGenerator": {
                "SourceBucket": f"arn:aws:s3:::{SOURCE}",
                "EnableManifestOutput": False,
                "Filter": {"KeyNameConstraint": {"MatchAnyPrefix": [prefix]}},
            }
        },
        "Report": {
            "Bucket": f"arn:aws:s3:::{REPORTS}",
            "Format": "Report_CSV_20180820",
            "Enabled": True,
            "Prefix": "reports",
            "ReportScope": "AllTasks",
        },
        **overrides,
    }
    return engine.client().create_job(**request)["JobId"]


def report_rows(aws: LocalAws, job_id: str) -> list[list[str]]:
    s3 = aws.s3()
    manifest = json.loads(
        s3.get_object(Bucket=REPORTS, Key=f"reports/job-{job_id}/manifest.json")["Body"].read()
    )
    assert manifest["Format"] == "Report_CSV_20180820"
    rows: list[list[str]] = []
    for entry in manifest["Results"]:
        body = s3.get_object(Bucket=entry["Bucket"], Key=entry["Key"])["Body"].read().decode()
        rows += list(csv.reader(io.StringIO(body)))
    return sorted(rows, key=lambda row: row[1])


def test_a_job_invokes_the_function_once_per_object_under_the_prefix(
    engine: LocalBatchOperations, buckets: LocalAws, function: FakeFunction
) -> None:
    job_id = create_job(engine)
    engine.wait(job_id)

    job = engine.client().describe_job(AccountId=ACCOUNT, JobId=job_id)["Job"]
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 3
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 3
    keys = sorted(unquote_plus(e["tasks"][0]["s3Key"]) for e in function.events)
    assert keys == ["a/1.wav", "a/3.wav", "a/two words.wav"]  # b/ is not under the prefix
    event = function.events[0]
    assert event["invocationSchemaVersion"] == "2.0"
    assert event["job"] == {"id": job_id, "userArguments": {"backfill": "a/"}}
    assert event["tasks"][0]["s3Bucket"] == SOURCE
    assert event["tasks"][0]["s3VersionId"] is None  # unversioned bucket
    assert {e["tasks"][0]["s3Key"] for e in function.events} >= {"a/two+words.wav"}  # URL-encoded
    rows = report_rows(buckets, job_id)
    assert [(r[1], r[3], r[6]) for r in rows] == [
        ("a/1.wav", "succeeded", "transcripts/a/1.wav.json"),
        ("a/3.wav", "succeeded", "transcripts/a/3.wav.json"),
        ("a/two+words.wav", "succeeded", "transcripts/a/two words.wav.json"),
    ]


def test_the_same_client_request_token_starts_one_job(engine: LocalBatchOperations) -> None:
    first = create_job(engine)
    assert create_job(engine) == first
    assert create_job(engine, ClientRequestToken="token-2") != first


def test_temporary_failures_are_retried_and_permanent_ones_reported(
    buckets: LocalAws, engine: LocalBatchOperations, function: FakeFunction
) -> None:
    function.answers = {
        "a/1.wav": ["TemporaryFailure", "Succeeded"],
        "a/3.wav": ["TemporaryFailure"],  # every attempt
        "a/two words.wav": ["crash"],
    }
    job_id = create_job(engine)
    job = engine.wait(job_id)

    assert (job.succeeded, job.failed) == (1, 2)
    attempts = {r.key: r.attempts for r in job.results}
    assert attempts == {"a/1.wav": 2, "a/3.wav": engine.temporary_failure_attempts, "a/two words.wav": 1}
    rows = {r[1]: r for r in report_rows(buckets, job_id)}
    assert rows["a/3.wav"][3:5] == ["failed", "TemporaryFailure"]
    assert rows["a/two+words.wav"][3] == "failed"
    assert "function error" in rows["a/two+words.wav"][6]


def test_a_versioned_bucket_gives_the_current_versions(
    buckets: LocalAws, engine: LocalBatchOperations, function: FakeFunction
) -> None:
    s3 = buckets.s3()
    s3.put_bucket_versioning(Bucket=SOURCE, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=SOURCE, Key="c/1.wav", Body=b"old")
    latest = s3.put_object(Bucket=SOURCE, Key="c/1.wav", Body=b"new")["VersionId"]

    engine.wait(create_job(engine, prefix="c/"))

    [event] = function.events
    assert event["tasks"][0]["s3VersionId"] == latest


def test_requests_it_does_not_emulate_are_refused_like_s3(engine: LocalBatchOperations) -> None:
    with pytest.raises(ClientError) as refused:
        create_job(engine, Operation={"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}})
    assert refused.value.response["Error"]["Code"] == "InvalidRequest"
    with pytest.raises(ClientError) as missing:
        engine.client().describe_job(AccountId=ACCOUNT, JobId="no-such-job")
    assert missing.value.response["Error"]["Code"] == "NoSuchJob"
