"""S3 Batch Operations, locally: the S3 Control job API and an engine that runs LambdaInvoke jobs.

moto has no Batch Operations jobs, so this stands in for them, over HTTP, for plain boto3:

* **The API.** ``CreateJob`` and ``DescribeJob`` in S3 Control's REST-XML. boto3 puts
  the account id in the host name (``<account>.s3-control...``), which no local DNS resolves, so
  the service is reached as an HTTP *proxy*: clients get ``AWS_ENDPOINT_URL_S3_CONTROL`` (any
  name) and ``HTTP_PROXY`` pointing here (see ``client_env``), and the request line carries the
  full URL. Other endpoints are bypassed through ``NO_PROXY``.
* **The manifest.** Only what the backfill uses: an ``S3JobManifestGenerator`` over a source bucket
  with ``KeyNameConstraint.MatchAnyPrefix``; current versions only (with their version ids when the
  bucket is versioned), as S3 generates it. Anything else is refused with S3's 400.
* **The tasks.** One task per invocation, schema 1.0 or 2.0 events as S3 builds them (keys
  URL-encoded, ``userArguments`` in 2.0), invoked synchronously through the function given for the
  job's ``FunctionArn``, ``concurrency`` at a time. ``TemporaryFailure`` is retried after a delay
  (``temporary_failure_attempts`` in all: AWS does not publish its count, so this retries less, never
  more, than S3 might); a function error or an answer that is not a Batch Operations response fails
  the task. A job fails once at least 1,000 tasks ran and more than half failed (S3's documented
  threshold).
* **The completion report** (``Report_CSV_20180820``): ``<prefix>/job-<id>/manifest.json`` and
  ``<prefix>/job-<id>/results/<id>.csv`` in the report bucket, rows of bucket, key, version id,
  task status, error code, HTTP status code and result message.

Not emulated: job confirmation and priorities (jobs start at once), pausing, cancelling, tags,
manifest output, CSV/inventory manifests, other operations, the job's IAM role (nothing checks it).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import secrets
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote_plus, urlsplit

import boto3
from botocore.config import Config

from localworld.aws import DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, DUMMY_SESSION_TOKEN
from localworld.loopback import LoopbackServer, Service
from samstack import DEFAULT_REGION

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3control import S3ControlClient

log = logging.getLogger(__name__)

NAMESPACE = "http://awss3control.amazonaws.com/doc/2018-08-20/"
JOBS_PATH = "/v20180820/jobs"
S3_CONTROL_ENDPOINT = "http://s3-control.localworld"  # any name: requests go through the proxy
FAILURE_THRESHOLD_TASKS = 1000
REPORT_SCHEMA = "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage"

Invoke = Callable[[dict[str, Any]], tuple[Any, dict[str, Any] | None]]
"""Runs a function synchronously: (payload, error) as Lambda's Invoke would answer."""


class JobRequestError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class TaskResult:
    bucket: str
    key: str
    version_id: str | None
    succeeded: bool
    error_code: str
    result: str
    attempts: int


@dataclass
class Job:
    job_id: str
    function_arn: str
    schema: str
    user_arguments: dict[str, str]
    source_bucket: str
    prefixes: list[str]
    report_bucket: str | None
    report_prefix: str
    report_scope: str
    role_arn: str
    priority: int
    description: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = "New"
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    started_s: float = 0.0
    finished_s: float | None = None
    failure_reasons: list[str] = field(default_factory=list)
    results: list[TaskResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:us-east-1:000000000000:job/{self.job_id}"

    def elapsed_s(self) -> int:
        if not self.started_s:
            return 0
        end = self.finished_s if self.finished_s is not None else time.monotonic()
        return int(end - self.started_s)


class LocalBatchOperations(Service):
    """The S3 Control job API on a loopback port; ``functions`` maps a function ARN to its invoke."""

    def __init__(
        self,
        s3: S3Client,
        functions: Mapping[str, Invoke],
        *,
        concurrency: int = 8,
        temporary_failure_attempts: int = 3,
        temporary_failure_delay_s: float = 1.0,
    ) -> None:
        self._s3 = s3
        self.functions = dict(functions)
        self.concurrency = concurrency
        self.temporary_failure_attempts = temporary_failure_attempts
        self.temporary_failure_delay_s = temporary_failure_delay_s
        self.jobs: dict[str, Job] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server: LoopbackServer[LocalBatchOperations] | None = None

    # --- service ----------------------------------------------------------------------------
    def start(self) -> Self:
        self._server = LoopbackServer(("127.0.0.1", 0), _Handler, self, logger=log)
        self._server.serve_in_background("local-batch-operations")
        return self

    def stop(self) -> None:
        self._stop_server()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, no_proxy: str = "127.0.0.1,localhost") -> dict[str, str]:
        """What a process needs so that plain boto3's ``s3control`` client reaches this service."""
        return {
            "AWS_ENDPOINT_URL_S3_CONTROL": S3_CONTROL_ENDPOINT,
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def client(self, region: str = DEFAULT_REGION) -> S3ControlClient:
        """A plain boto3 ``s3control`` client that reaches this service (through it as a proxy)."""
        return boto3.client(
            "s3control",
            region_name=region,
            endpoint_url=S3_CONTROL_ENDPOINT,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            aws_session_token=DUMMY_SESSION_TOKEN,
            config=Config(proxies={"http": self.url}),
        )

    def wait(self, job_id: str, timeout_s: float = 600) -> Job:
        """Until the job is Complete or Failed."""
        deadline = time.monotonic() + timeout_s
        job = self.jobs[job_id]
        while job.status not in {"Complete", "Failed"}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout_s} s")
            time.sleep(0.05)
        return job

    # --- API --------------------------------------------------------------------------------
    def create_job(self, body: bytes) -> str:
        # Loopback only, from this machine's own boto3 clients: not untrusted input.
        request = _strip_namespaces(ET.fromstring(body))  # noqa: S314
        token = _text(request, "ClientRequestToken")
        with self._lock:
            if token in self._tokens:
                return self._tokens[token]
        job = _job_from_request(request)
        if job.function_arn not in self.functions:
            raise JobRequestError("InvalidRequest", f"no function {job.function_arn} in the local world")
        with self._lock:
            self.jobs[job.job_id] = job
            self._tokens[token] = job.job_id
        thread = threading.Thread(target=self._run, args=(job,), name=f"batch-job-{job.job_id}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return job.job_id

    def job(self, job_id: str) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobRequestError("NoSuchJob", f"The specified job does not exist: {job_id}", 404) from None

    # --- engine -----------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        job.status = "Preparing"
        try:
            manifest = list(self._manifest(job))
        except Exception as exc:
            job.failure_reasons.append(f"manifest: {exc}")
            job.status = "Failed"
            return
        job.total = len(manifest)
        job.status = "Active"
        job.started_s = time.monotonic()
        invoke = self.functions[job.function_arn]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for result in pool.map(lambda task: self._task(job, invoke, *task), manifest):
                with job.lock:
                    job.results.append(result)
        job.finished_s = time.monotonic()
        job.status = "Completing"
        self._write_report(job)
        job.status = "Failed" if job.failure_reasons else "Complete"

    def _manifest(self, job: Job) -> Iterator[tuple[str, str | None]]:
        versioned = self._s3.get_bucket_versioning(Bucket=job.source_bucket).get("Status") == "Enabled"
        for prefix in job.prefixes or [""]:
            if versioned:
                versions = self._s3.get_paginator("list_object_versions")
                for version_page in versions.paginate(Bucket=job.source_bucket, Prefix=prefix):
                    for version in version_page.get("Versions", []):
                        if version.get("IsLatest"):
                            yield version["Key"], version.get("VersionId")
            else:
                listing = self._s3.get_paginator("list_objects_v2")
                for page in listing.paginate(Bucket=job.source_bucket, Prefix=prefix):
                    for obj in page.get("Contents", []):
                        yield obj["Key"], None

    def _task(self, job: Job, invoke: Invoke, key: str, version_id: str | None) -> TaskResult:
        attempts = 0
        while True:
            attempts += 1
            if self._threshold_reached(job):
                return self._count(
                    job, TaskResult(job.source_bucket, key, version_id, False, "JobFailed", "", attempts)
                )
            code, text = _invoke_task(job, invoke, key, version_id)
            if code == "TemporaryFailure" and attempts < self.temporary_failure_attempts:
                time.sleep(self.temporary_failure_delay_s * attempts)
                continue
            succeeded = code == "Succeeded"
            result = TaskResult(
                job.source_bucket, key, version_id, succeeded, "200" if succeeded else code, text, attempts
            )
            return self._count(job, result)

    @staticmethod
    def _count(job: Job, result: TaskResult) -> TaskResult:
        with job.lock:
            if result.succeeded:
                job.succeeded += 1
            else:
                job.failed += 1
        return result

    @staticmethod
    def _threshold_reached(job: Job) -> bool:
        with job.lock:
            done = job.succeeded + job.failed
            if done >= FAILURE_THRESHOLD_TASKS and job.failed * 2 > done and not job.failure_reasons:
                job.failure_reasons.append("Job failed: the task failure threshold was exceeded")
            return bool(job.failure_reasons)

    def _write_report(self, job: Job) -> None:
        if job.report_bucket is None:
            return
        base = (
            f"{job.report_prefix.rstrip('/')}/job-{job.job_id}" if job.report_prefix else f"job-{job.job_id}"
        )
        rows: dict[bool, list[TaskResult]] = {True: [], False: []}
        for result in job.results:
            if job.report_scope == "AllTasks" or not result.succeeded:
                rows[result.succeeded].append(result)
        entries = []
        for succeeded, results in rows.items():
            if not results:
                continue
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for r in results:
                writer.writerow(
                    [
                        r.bucket,
                        quote_plus(r.key, safe="/"),
                        r.version_id or "",
                        "succeeded" if succeeded else "failed",
                        r.error_code,
                        "200" if succeeded else "",
                        r.result,
                    ]
                )
            body = buffer.getvalue().encode("utf-8")
            key = f"{base}/results/{uuid.uuid4().hex}.csv"
            self._s3.put_object(Bucket=job.report_bucket, Key=key, Body=body, ContentType="text/csv")
            entries.append(
                {
                    "TaskExecutionStatus": "succeeded" if succeeded else "failed",
                    "Bucket": job.report_bucket,
                    "MD5Checksum": hashlib.md5(body, usedforsecurity=False).hexdigest(),
                    "Key": key,
                }
            )
        manifest = {
            "Format": "Report_CSV_20180820",
            "ReportCreationDate": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "Results": entries,
            "ReportSchema": REPORT_SCHEMA,
        }
        self._s3.put_object(
            Bucket=job.report_bucket, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode("utf-8")
        )


def _invoke_task(job: Job, invoke: Invoke, key: str, version_id: str | None) -> tuple[str, str]:
    """One invocation for one task: its result code and result string, as S3 reads them."""
    task_id = base64.b64encode(secrets.token_bytes(12)).decode()
    task: dict[str, Any] = {"taskId": task_id, "s3Key": quote_plus(key, safe="/"), "s3VersionId": version_id}
    event: dict[str, Any] = {
        "invocationSchemaVersion": job.schema,
        "invocationId": base64.b64encode(secrets.token_bytes(24)).decode(),
        "job": {"id": job.job_id},
        "tasks": [task],
    }
    if job.schema == "2.0":
        task["s3Bucket"] = job.source_bucket
        event["job"]["userArguments"] = dict(job.user_arguments)
    else:
        task["s3BucketArn"] = f"arn:aws:s3:::{job.source_bucket}"
    payload, error = invoke(event)
    if error is not None:
        return "PermanentFailure", f"Lambda returned function error: {error.get('errorType', 'Unhandled')}"
    try:
        [answer] = [r for r in payload["results"] if r.get("taskId") == task_id]
        code, text = str(answer["resultCode"]), str(answer.get("resultString", ""))
    except (KeyError, TypeError, ValueError):
        return "PermanentFailure", "Lambda response did not answer the task"
    if code not in {"Succeeded", "TemporaryFailure", "PermanentFailure"}:
        return "PermanentFailure", f"invalid resultCode {code!r}"
    return code, text


def _job_from_request(request: ET.Element) -> Job:
    lambda_invoke = request.find("Operation/LambdaInvoke")
    if lambda_invoke is None:
        raise JobRequestError("InvalidRequest", "only the LambdaInvoke operation is emulated")
    generator = request.find("ManifestGenerator/S3JobManifestGenerator")
    if generator is None:
        raise JobRequestError("InvalidRequest", "only an S3JobManifestGenerator manifest is emulated")
    report = request.find("Report")
    enabled = report is not None and _text(report, "Enabled", "false") == "true"
    return Job(
        job_id=str(uuid.uuid4()),
        function_arn=_text(lambda_invoke, "FunctionArn"),
        schema=_text(lambda_invoke, "InvocationSchemaVersion", "1.0"),
        user_arguments={
            _text(entry, "key"): _text(entry, "value", "")
            for entry in lambda_invoke.findall("UserArguments/entry")
        },
        source_bucket=_bucket_name(_text(generator, "SourceBucket")),
        prefixes=[m.text or "" for m in generator.findall("Filter/KeyNameConstraint/MatchAnyPrefix/member")],
        report_bucket=_bucket_name(_text(report, "Bucket")) if enabled and report is not None else None,
        report_prefix=_text(report, "Prefix", "") if report is not None else "",
        report_scope=_text(report, "ReportScope", "AllTasks") if report is not None else "AllTasks",
        role_arn=_text(request, "RoleArn"),
        priority=int(_text(request, "Priority", "0")),
        description=_text(request, "Description", ""),
    )


def _bucket_name(arn: str) -> str:
    if not arn.startswith("arn:aws:s3:::"):
        raise JobRequestError("InvalidRequest", f"not a bucket ARN: {arn}")
    return arn.removeprefix("arn:aws:s3:::")


def _text(element: ET.Element, path: str, default: str | None = None) -> str:
    found = element.find(path)
    if found is None or found.text is None:
        if default is None:
            raise JobRequestError("InvalidRequest", f"{path} is required")
        return default
    return found.text


def _strip_namespaces(root: ET.Element) -> ET.Element:
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    return root


def describe_job_xml(job: Job) -> bytes:
    root = ET.Element("DescribeJobResult", xmlns=NAMESPACE)
    descriptor = ET.SubElement(root, "Job")
    _add(descriptor, "JobId", job.job_id)
    _add(descriptor, "JobArn", job.arn)
    _add(descriptor, "Description", job.description)
    _add(descriptor, "Status", job.status)
    _add(descriptor, "Priority", str(job.priority))
    _add(descriptor, "RoleArn", job.role_arn)
    _add(descriptor, "CreationTime", job.created_at.isoformat(timespec="seconds").replace("+00:00", "Z"))
    progress = ET.SubElement(descriptor, "ProgressSummary")
    with job.lock:
        _add(progress, "TotalNumberOfTasks", str(job.total))
        _add(progress, "NumberOfTasksSucceeded", str(job.succeeded))
        _add(progress, "NumberOfTasksFailed", str(job.failed))
    timers = ET.SubElement(progress, "Timers")
    _add(timers, "ElapsedTimeInActiveSeconds", str(job.elapsed_s()))
    reasons = ET.SubElement(descriptor, "FailureReasons")
    for reason in job.failure_reasons:
        item = ET.SubElement(reasons, "member")
        _add(item, "FailureCode", "JobFailed")
        _add(item, "FailureReason", reason)
    if job.report_bucket is not None:
        report = ET.SubElement(descriptor, "Report")
        _add(report, "Bucket", f"arn:aws:s3:::{job.report_bucket}")
        _add(report, "Format", "Report_CSV_20180820")
        _add(report, "Enabled", "true")
        _add(report, "Prefix", job.report_prefix)
        _add(report, "ReportScope", job.report_scope)
    return _xml(root)


def _xml(root: ET.Element) -> bytes:
    return bytes(ET.tostring(root, xml_declaration=True, encoding="utf-8"))


def _add(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _result_xml(tag: str, values: Mapping[str, str]) -> bytes:
    root = ET.Element(tag, xmlns=NAMESPACE)
    for name, value in values.items():
        _add(root, name, value)
    return _xml(root)


def _error_xml(code: str, message: str) -> bytes:
    root = ET.Element("ErrorResponse")
    error = ET.SubElement(root, "Error")
    _add(error, "Code", code)
    _add(error, "Message", message)
    _add(root, "RequestId", uuid.uuid4().hex)
    return _xml(root)


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer[LocalBatchOperations]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _path(self) -> str:
        return urlsplit(self.path).path  # a proxy request line carries the whole URL

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._path() != JOBS_PATH:
            self._send(404, _error_xml("NotFound", self._path()))
            return
        try:
            job_id = self.server.owner.create_job(body)
        except JobRequestError as exc:
            self._send(exc.status, _error_xml(exc.code, str(exc)))
            return
        except ET.ParseError as exc:
            self._send(400, _error_xml("MalformedXML", str(exc)))
            return
        self._send(200, _result_xml("CreateJobResult", {"JobId": job_id}))

    def do_GET(self) -> None:
        path = self._path()
        owner = self.server.owner
        if not path.startswith(f"{JOBS_PATH}/"):
            self._send(404, _error_xml("NotFound", path))
            return
        try:
            job = owner.job(path.removeprefix(f"{JOBS_PATH}/"))
        except JobRequestError as exc:
            self._send(exc.status, _error_xml(exc.code, str(exc)))
            return
        self._send(200, describe_job_xml(job))

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16])
        self.end_headers()
        self.wfile.write(body)
