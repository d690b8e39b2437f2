"""Backfill an archive: one S3 Batch Operations job that sends every object under a prefix through
the transcribe function, then the job's completion report summed up.

Why Batch Operations and not a Step Functions Distributed Map: the transcribe function already
answers Batch Operations tasks (``Succeeded`` / ``TemporaryFailure`` / ``PermanentFailure``); S3
builds the manifest from the prefix itself (no listing code, no inventory needed), retries
temporary failures, tracks progress and writes a per-object completion report; and nothing new
runs in the account besides one IAM role (the stack's ``BackfillRole``). A state machine would
add a resource to deploy, its own retry policy to keep in step with the function's, and per
state-transition cost for every object.

Plain boto3 only (``s3control``, ``s3``, ``sts``), so it runs against AWS and, through the
standard endpoint variables, against the local world's Batch Operations stand-in.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3control import S3ControlClient

REPORT_PREFIX = "backfill-reports"
FINAL_STATUSES = frozenset({"Complete", "Failed", "Cancelled"})
SCHEMA_VERSION = "2.0"  # carries the job's userArguments; the function reads both schemas
STACK_OUTPUTS = {
    "function_arn": "TranscribeFunctionArn",
    "role_arn": "BackfillRoleArn",
    "report_bucket": "OutputBucketName",
    "bucket": "InputBucketName",
}


@dataclass(frozen=True)
class Backfill:
    """What one backfill job needs: whose account, which function and role, which objects."""

    account_id: str
    function_arn: str
    role_arn: str
    bucket: str
    prefix: str
    report_bucket: str
    report_prefix: str = REPORT_PREFIX


@dataclass
class CompletionReport:
    """The job's completion report summed up: one row per task."""

    transcribed: int = 0
    deferred: int = 0  # no transcript yet: waiting in the dead-letter queue for the retry function
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # by the function's reason
    rows: int = 0

    @property
    def succeeded(self) -> int:
        return self.transcribed + self.deferred + sum(self.skipped.values())

    def lines(self) -> list[str]:
        lines = [
            f"tasks: {self.rows}",
            f"succeeded: {self.succeeded} (transcribed {self.transcribed}, deferred {self.deferred})",
        ]
        lines += [f"  skipped, {reason}: {n}" for reason, n in sorted(self.skipped.items())]
        lines.append(f"failed: {sum(self.failed.values())}")
        lines += [f"  {reason}: {n}" for reason, n in sorted(self.failed.items())]
        return lines


def start_backfill(s3control: S3ControlClient, backfill: Backfill, *, token: str | None = None) -> str:
    """Create the job (it starts at once: no confirmation); its id. ``token`` makes a retried call
    create one job, not two."""
    response = s3control.create_job(
        AccountId=backfill.account_id,
        ConfirmationRequired=False,
        ClientRequestToken=token or str(uuid.uuid4()),
        Description=f"transcribe s3://{backfill.bucket}/{backfill.prefix}"[:256],
        Priority=10,
        RoleArn=backfill.role_arn,
        Operation={
            "LambdaInvoke": {
                "FunctionArn": backfill.function_arn,
                "InvocationSchemaVersion": SCHEMA_VERSION,
                "UserArguments": {"backfill": backfill.prefix or "/"},
            }
        },
        ManifestGenerator={
            "S3JobManifestGenerator": {
                "SourceBucket": f"arn:aws:s3:::{backfill.bucket}",
                "EnableManifestOutput": False,
                "Filter": {"KeyNameConstraint": {"MatchAnyPrefix": [backfill.prefix]}}
                if backfill.prefix
                else {},
            }
        },
        Report={
            "Bucket": f"arn:aws:s3:::{backfill.report_bucket}",
            "Format": "Report_CSV_20180820",
            "Enabled": True,
            "Prefix": backfill.report_prefix,
            "ReportScope": "AllTasks",
        },
    )
    return response["JobId"]


def progress_line(job: Mapping[str, Any]) -> str:
    summary = job.get("ProgressSummary", {})
    total = summary.get("TotalNumberOfTasks", 0)
    done = summary.get("NumberOfTasksSucceeded", 0) + summary.get("NumberOfTasksFailed", 0)
    elapsed = summary.get("Timers", {}).get("ElapsedTimeInActiveSeconds", 0)
    rate = f", {done / elapsed:.1f}/s" if elapsed else ""
    return (
        f"{job.get('Status')}: {done}/{total} tasks done "
        f"({summary.get('NumberOfTasksSucceeded', 0)} succeeded, "
        f"{summary.get('NumberOfTasksFailed', 0)} failed{rate})"
    )


def follow(
    s3control: S3ControlClient,
    account_id: str,
    job_id: str,
    *,
    poll_s: float = 10.0,
    report: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the job until it ends, reporting each change of progress; the final job description."""
    last = ""
    while True:
        job = dict(s3control.describe_job(AccountId=account_id, JobId=job_id)["Job"])
        line = progress_line(job)
        if line != last:
            report(line)
            last = line
        if job.get("Status") in FINAL_STATUSES:
            return job
        sleep(poll_s)


def read_completion_report(s3: S3Client, bucket: str, prefix: str, job_id: str) -> CompletionReport:
    """Sum the job's completion report (``<prefix>/job-<id>/manifest.json`` and its CSV files)."""
    base = f"{prefix.rstrip('/')}/job-{job_id}" if prefix else f"job-{job_id}"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{base}/manifest.json")["Body"].read())
    report = CompletionReport()
    for entry in manifest.get("Results", []):
        body = s3.get_object(Bucket=entry["Bucket"], Key=entry["Key"])["Body"].read().decode("utf-8")
        for row in csv.reader(io.StringIO(body)):
            if len(row) >= 7:
                _count(report, task_status=row[3], message=row[6])
    return report


def _count(report: CompletionReport, *, task_status: str, message: str) -> None:
    """The transcribe function's result strings: the output key, ``skipped: <reason>``,
    ``deferred (<reason>): ...`` or, for a failure, ``<reason>: <detail>``."""
    report.rows += 1
    if task_status != "succeeded":
        report.failed[message.split(":", 1)[0].strip() or "unknown"] += 1
    elif message.startswith("skipped: "):
        report.skipped[message.removeprefix("skipped: ").strip()] += 1
    elif message.startswith("deferred "):  # handed to the dead-letter queue: no transcript yet
        report.deferred += 1
    else:
        report.transcribed += 1
