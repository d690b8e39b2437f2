"""Operator tools for a deployed transcriber: failure records, the usage report, parked messages,
backfills, where one object is, and uploads.

Plain boto3 (``status`` also reads the product's key mapping and event parsing from the layer), so
it runs against real AWS and (through the standard ``AWS_ENDPOINT_URL``) against the local world's
moto server. Every command prints its result on stdout as one JSON document (``--text`` gives the
tables for people where there are some) and its progress and logs on stderr; exit status 0 on
success, 1 when the command failed (stdout then holds ``{"error": ...}``), 2 for wrong flags.

Usage::

    python scripts/operate.py failures --bucket OUTPUT_BUCKET [--prefix failures/] [--reason R]
        [--since ISO] [--text]
    python scripts/operate.py redrive --from PARKING_QUEUE_URL --to DLQ_URL [--max N] [--dry-run]
    python scripts/operate.py backfill --stack STACK_NAME [--bucket BUCKET] [--prefix PREFIX] [--no-wait]
    python scripts/operate.py report --bucket OUTPUT_BUCKET [--since ISO] [--until ISO] [--text]
    python scripts/operate.py status (--stack STACK_NAME | --bucket INPUT_BUCKET) --key KEY
    python scripts/operate.py upload --stack STACK_NAME --file PATH [--key KEY] [--options Q] [--speakers S]
    python scripts/operate.py <command> --stack STACK_NAME ...   # buckets/queues from stack outputs

Importable as ``scripts.operate``::

    from scripts.operate import list_failures, redrive, upload, usage_report
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import boto3
from botocore.exceptions import BotoCoreError, ClientError

if not __package__:  # run as a script: make the project root and the layer importable, as make does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "layers" / "shared"))
from scripts import backfill

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueOutputTypeDef,
        MessageAttributeValueTypeDef,
        MessageTypeDef,
    )

DEFAULT_PREFIX = "failures/"
TRANSCRIPT_PREFIX = "transcripts/"
# What the transcribe function writes in each transcript's S3 metadata (transcriber.domain.cost.metadata).
AUDIO_SECONDS_METADATA = "audio-seconds"
COST_METADATA = "estimated-cost-usd"
DEFAULT_REPORT_DAYS = 30
MESSAGE_WIDTH = 60
READ_THREADS = 16
RECEIVE_WAIT_S = 1  # long polling: an empty answer then means the queue really is empty
HOLD_VISIBILITY_S = 120  # how long a received message stays hidden while we move or inspect it
RESERVED_ATTRIBUTE_PREFIXES = ("aws.", "amazon.")  # send_message refuses these names
MAX_MESSAGE_ATTRIBUTES = 10

STACK_OUTPUTS = {  # argument -> the stack output that fills it
    "bucket": "OutputBucketName",
    "source": "ParkingQueueUrl",
    "target": "DeadLetterQueueUrl",
}
FLAGS = {"bucket": "--bucket", "source": "--from", "target": "--to"}


# --- failure records ---------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """ISO 8601 (``Z`` allowed, date alone allowed); naive times are UTC."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _is_failure_record(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("source"), dict) and "reason" in document


def _failed_at(record: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(str(record["failed_at"]))
    except (KeyError, ValueError):
        return None


def _record_keys(s3: S3Client, bucket: str, prefix: str, since: datetime | None) -> list[str]:
    """JSON objects under ``prefix``, skipping those last modified before ``since``."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".json") and (since is None or item["LastModified"] >= since):
                keys.append(item["Key"])
    return keys


def _read_record(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """The failure record at ``key`` with ``record_key`` added; None if it is gone or not one."""
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None  # deleted since the listing (a later success supersedes a failure)
        raise
    except ValueError:
        return None
    if not _is_failure_record(document):
        return None
    return {**document, "record_key": key}


def list_failures(
    s3: S3Client,
    bucket: str,
    prefix: str = DEFAULT_PREFIX,
    reason: str | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The failure records under ``prefix``, oldest first, each with ``record_key`` added.

    Objects that are not failure records (not JSON, or JSON without ``source``/``reason``) are
    skipped. ``since`` keeps records whose ``failed_at`` is at or after it; objects last modified
    before it are not even read (a record is written after its ``failed_at``).
    """
    keys = _record_keys(s3, bucket, prefix, since)
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        read = pool.map(lambda key: _read_record(s3, bucket, key), keys)
        records = [record for record in read if record is not None]

    if reason is not None:
        records = [record for record in records if record.get("reason") == reason]
    if since is not None:
        records = [r for r in records if (at := _failed_at(r)) is None or at >= since]
    records.sort(key=lambda r: (str(r.get("failed_at") or ""), r["record_key"]))
    return records


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_failures(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """A plain-text table plus a count per reason."""
    header = ("FAILED_AT", "REASON", "HTTP", "SOURCE_KEY", "ATTEMPTS", "MESSAGE")
    rows = [
        (
            _cell(r.get("failed_at")),
            _cell(r.get("reason")),
            _cell(r.get("http_status")),
            _cell(r.get("source", {}).get("key")),
            _cell(r.get("attempts")),
            _truncate(_cell(r.get("message")), MESSAGE_WIDTH),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in [header, *rows]
    ]
    lines.append("")
    lines.extend(format_counts(records))
    return lines


def format_counts(records: Sequence[Mapping[str, Any]]) -> list[str]:
    counts = Counter(str(r.get("reason")) for r in records)
    lines = [f"{len(records)} failure record(s)"]
    lines.extend(
        f"  {count:>6}  {reason}" for reason, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return lines


# --- usage report ------------------------------------------------------------------------------


def _transcript_objects(
    s3: S3Client, bucket: str, prefix: str, since: datetime, until: datetime
) -> list[str]:
    """Deepgram's JSON transcripts (``.json``; other formats beside them are not counted) written
    in [since, until)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".json") and since <= item["LastModified"] < until:
                keys.append(item["Key"])
    return keys


def _number(metadata: Mapping[str, str], name: str) -> float | None:
    try:
        return float(metadata[name])
    except (KeyError, ValueError):
        return None


def _transcript_usage(s3: S3Client, bucket: str, key: str) -> tuple[float | None, float | None] | None:
    """(audio seconds, estimated USD) from a transcript's metadata (one HEAD); None if it is gone."""
    try:
        metadata = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise
    return _number(metadata, AUDIO_SECONDS_METADATA), _number(metadata, COST_METADATA)


def usage_report(
    s3: S3Client,
    bucket: str,
    since: datetime,
    until: datetime,
    *,
    transcript_prefix: str = TRANSCRIPT_PREFIX,
    failure_prefix: str = DEFAULT_PREFIX,
) -> dict[str, Any]:
    """Transcripts, audio hours, estimated cost and failures by reason for [since, until), from the
    output bucket: each transcript's metadata (one HEAD each) and the failure records. Transcripts
    written before the metadata existed count as transcripts without audio or cost."""
    keys = _transcript_objects(s3, bucket, transcript_prefix, since, until)
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        usage = [u for u in pool.map(lambda key: _transcript_usage(s3, bucket, key), keys) if u is not None]
    failures = [
        r
        for r in list_failures(s3, bucket, failure_prefix, since=since)
        if (at := _failed_at(r)) is None or at < until
    ]
    by_reason = Counter(str(r.get("reason")) for r in failures)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "transcripts": len(usage),
        "audio_hours": round(sum(seconds or 0.0 for seconds, _ in usage) / 3600, 4),
        "estimated_cost_usd": round(sum(usd or 0.0 for _, usd in usage), 6),
        "transcripts_without_estimate": sum(usd is None for _, usd in usage),
        "failures": len(failures),
        "failures_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def format_report(report: Mapping[str, Any]) -> list[str]:
    lines = [
        f"from {report['since']} to {report['until']}",
        f"  transcripts           {report['transcripts']}",
        f"  audio hours           {report['audio_hours']:.2f}",
        f"  estimated cost (USD)  {report['estimated_cost_usd']:.2f}   (from the stack's prices: not a bill)",
    ]
    if report["transcripts_without_estimate"]:
        lines.append(f"  without an estimate   {report['transcripts_without_estimate']} (older transcripts)")
    lines.append(f"  failures              {report['failures']}")
    lines.extend(f"  {count:>6}  {reason}" for reason, count in report["failures_by_reason"].items())
    return lines


# --- redrive -----------------------------------------------------------------------------------


class RedriveError(Exception):
    """Sending or deleting failed part-way; ``moved`` messages had been moved by then."""

    def __init__(self, moved: int, message: str) -> None:
        super().__init__(message)
        self.moved = moved


def sendable_attributes(
    attributes: Mapping[str, MessageAttributeValueOutputTypeDef],
) -> dict[str, MessageAttributeValueTypeDef]:
    """The message attributes ``send_message`` accepts again: no reserved ``AWS.``/``Amazon.``
    names, only DataType with StringValue or BinaryValue (the list values are reserved)."""
    sendable: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in attributes.items():
        if name.lower().startswith(RESERVED_ATTRIBUTE_PREFIXES):
            continue
        kept: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        elif "BinaryValue" in value:
            kept["BinaryValue"] = value["BinaryValue"]
        else:
            continue
        sendable[name] = kept
        if len(sendable) == MAX_MESSAGE_ATTRIBUTES:
            break
    return sendable


def _receive(sqs: SQSClient, queue_url: str, count: int, wait_s: int) -> list[MessageTypeDef]:
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max(1, min(10, count)),
        WaitTimeSeconds=wait_s,
        VisibilityTimeout=HOLD_VISIBILITY_S,
        MessageAttributeNames=["All"],
        AttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def _describe(message: MessageTypeDef) -> str:
    """One line per message for --dry-run: id, Lambda's ErrorCode attribute, receives, body."""
    error_code = message.get("MessageAttributes", {}).get("ErrorCode")
    error = error_code.get("StringValue", "-") if error_code else "-"
    received = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    body = message.get("Body", "")
    return f"{message.get('MessageId')}  error={error}  receives={received}  {_truncate(body, 80)}"


def redrive(
    sqs: SQSClient,
    source_url: str,
    target_url: str,
    max_messages: int | None = None,
    dry_run: bool = False,
    *,
    wait_s: int | None = None,
) -> int:
    """Move messages from ``source_url`` to ``target_url``; return how many moved.

    Each message is sent with the same body and message attributes, and deleted from the source
    only after the send succeeded (if the send fails the message stays in the source and is visible
    again after ``HOLD_VISIBILITY_S``). With ``dry_run`` nothing is sent or deleted: the messages
    are listed on stderr and made visible again, and the count is what would have moved.
    ``wait_s`` is the long-poll wait per receive (default ``RECEIVE_WAIT_S``); it ends when a
    receive comes back empty.
    """
    wait = RECEIVE_WAIT_S if wait_s is None else wait_s
    moved = 0
    held: list[str] = []  # dry run: receipt handles to make visible again at the end
    seen: set[str] = set()
    try:
        while max_messages is None or moved < max_messages:
            wanted = 10 if max_messages is None else max_messages - moved
            messages = _receive(sqs, source_url, wanted, wait)
            if dry_run:
                held.extend(m["ReceiptHandle"] for m in messages)
            fresh = [m for m in messages if m.get("MessageId") not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message.get("MessageId", ""))
                if dry_run:
                    print(f"would move {_describe(message)}", file=sys.stderr)
                else:
                    _move(sqs, message, source_url, target_url, moved)
                moved += 1
    finally:
        for receipt_handle in held:
            # if this fails, the message becomes visible by itself when its timeout runs out
            with contextlib.suppress(ClientError, BotoCoreError):
                sqs.change_message_visibility(
                    QueueUrl=source_url, ReceiptHandle=receipt_handle, VisibilityTimeout=0
                )
    return moved


def _move(sqs: SQSClient, message: MessageTypeDef, source_url: str, target_url: str, moved: int) -> None:
    message_id = message.get("MessageId")
    try:
        sqs.send_message(
            QueueUrl=target_url,
            MessageBody=message["Body"],
            MessageAttributes=sendable_attributes(message.get("MessageAttributes", {})),
        )
    except (ClientError, BotoCoreError) as exc:
        raise RedriveError(moved, f"sending {message_id} failed (left in the source): {exc}") from exc
    try:
        sqs.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])
    except (ClientError, BotoCoreError) as exc:
        raise RedriveError(
            moved + 1, f"sent {message_id} but could not delete it from the source (it may repeat): {exc}"
        ) from exc


# --- upload ------------------------------------------------------------------------------------


OPTION_METADATA_PREFIX = "dg-"  # transcriber.domain.upload_options.METADATA_PREFIX: x-amz-meta-dg-<option>


def option_metadata(options: str = "", speakers: str = "") -> dict[str, str]:
    """Per-upload options (a query string, ``language=es&diarize=true``) and named speakers
    (``0=Alice,1=Bob``) as the S3 user metadata the transcribe function reads: ``dg-<option>``, ``_``
    written ``-``; a repeated option's values joined by commas; non-ASCII values as RFC 2047 encoded
    words (S3 metadata is ASCII; the function decodes them). The stack's allow-list judges them."""
    pairs = parse_qsl(options, keep_blank_values=True, strict_parsing=bool(options))
    if speakers:
        pairs.append(("speakers", speakers))
    metadata: dict[str, str] = {}
    for name, value in pairs:
        field = OPTION_METADATA_PREFIX + name.strip().lower().replace("_", "-")
        metadata[field] = f"{metadata[field]},{value}" if field in metadata else value
    return {name: _ascii(value) for name, value in metadata.items()}


def _ascii(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep=" ")  # one line: words too long are split in several


def upload(
    s3: S3Client, source: Path, bucket: str, key: str, metadata: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Put ``source`` at ``bucket``/``key`` as ``aws s3 cp`` would (boto3's managed transfer:
    multipart when large), with a content type guessed from the name and ``metadata`` (user
    metadata, names without ``x-amz-meta-``); what S3 then holds."""
    content_type = mimetypes.guess_type(source.name)[0]
    extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
    if metadata:
        extra["Metadata"] = dict(metadata)
    s3.upload_file(str(source), bucket, key, ExtraArgs=extra)
    head = s3.head_object(Bucket=bucket, Key=key)
    version = head.get("VersionId")
    return {
        "bucket": bucket,
        "key": key,
        "size": head.get("ContentLength"),
        "etag": str(head.get("ETag", "")).strip('"'),
        "version_id": None if version in (None, "null") else version,
        "content_type": head.get("ContentType"),
        "metadata": dict(head.get("Metadata") or {}),
    }


# --- command line ------------------------------------------------------------------------------


def emit(result: Any) -> None:
    """The command's result: one JSON document on stdout."""
    print(json.dumps(result, ensure_ascii=False, sort_keys=True, default=str), flush=True)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def describe_stack(stack_name: str) -> Mapping[str, Any]:
    [stack] = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    return stack


def stack_outputs(stack_name: str) -> dict[str, str]:
    """The CloudFormation outputs of ``stack_name`` (OutputKey -> OutputValue)."""
    stack = describe_stack(stack_name)
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) if "OutputKey" in o}


STACK_NAME_TAG = "aws:cloudformation:stack-name"  # CloudFormation tags every bucket it creates


def stack_of_bucket(bucket: str) -> str:
    """The stack that created ``bucket``, from the tag CloudFormation gives it."""
    ask = "name the stack with STACK=<stack> (--stack)"
    try:
        tags = boto3.client("s3").get_bucket_tagging(Bucket=bucket)["TagSet"]
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code != "NoSuchTagSet":  # no bucket, or no s3:GetBucketTagging: the stack can't be found
            raise CommandError(
                f"could not read bucket {bucket}'s tags ({code}): {ask}", bucket=bucket
            ) from exc
        tags = []
    names = [tag["Value"] for tag in tags if tag["Key"] == STACK_NAME_TAG]
    if not names:
        raise CommandError(
            f"bucket {bucket} has no {STACK_NAME_TAG} tag (a stack did not create it): {ask}", bucket=bucket
        )
    log(f"bucket {bucket} belongs to stack {names[0]} (its {STACK_NAME_TAG} tag)")
    return names[0]


def _fill_from_stack(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    needed: Sequence[str],
    outputs_by_dest: Mapping[str, str] = STACK_OUTPUTS,
    *,
    optional: Sequence[str] = (),
) -> None:
    """Fill the missing ``needed`` (and ``optional``) arguments from the stack's outputs; a missing
    needed one without ``--stack`` is a usage error."""
    missing = [dest for dest in [*needed, *optional] if not getattr(args, dest)]
    if not missing:
        return
    if not args.stack:
        required = [dest for dest in missing if dest in needed]
        if required:
            parser.error(
                f"give {' and '.join(FLAGS.get(d, '--' + d.replace('_', '-')) for d in required)}, or --stack"
            )
        return
    outputs = stack_outputs(args.stack)
    for dest in missing:
        output = outputs_by_dest[dest]
        if output in outputs:
            setattr(args, dest, outputs[output])
        elif dest in needed:
            parser.error(f"stack {args.stack} has no output {output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="operate.py",
        description="Operator tools for the transcriber. Results are JSON on stdout; logs go to stderr.",
    )
    stack = argparse.ArgumentParser(add_help=False)
    stack.add_argument(
        "--stack",
        metavar="NAME",
        help="read missing buckets, queues and tables from this CloudFormation stack's outputs",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _failures_parser(commands, stack)
    _redrive_parser(commands, stack)
    _report_parser(commands, stack)
    _backfill_parser(commands, stack)
    _status_parser(commands, stack)
    _upload_parser(commands, stack)
    return parser


def _failures_parser(commands: Any, stack: argparse.ArgumentParser) -> None:
    failures = commands.add_parser(
        "failures",
        parents=[stack],
        help="list failure records from the output bucket",
        description="List failure records (failures/<input key>.json) with a count per reason: "
        '{"bucket", "prefix", "count", "by_reason", "records": [...]} (--text: a table).',
    )
    failures.set_defaults(parser=failures, run=_failures_command, needs=["bucket"])
    failures.add_argument("--bucket", metavar="OUTPUT_BUCKET", help="the output bucket")
    failures.add_argument("--prefix", default=DEFAULT_PREFIX, help="record prefix (default: %(default)s)")
    failures.add_argument("--reason", metavar="R", help="only records with this reason")
    failures.add_argument("--since", metavar="ISO", type=parse_time, help="only failed at or after this time")
    failures.add_argument("--text", action="store_true", help="a table and counts for people, not JSON")
    failures.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the default now


def _redrive_parser(commands: Any, stack: argparse.ArgumentParser) -> None:
    redrive_cmd = commands.add_parser(
        "redrive",
        parents=[stack],
        help="move parked messages back to the dead-letter queue for another try",
        description="Move messages from the parking queue back to the dead-letter queue, where the "
        "retry function picks them up again: same body and message attributes, deleted from the "
        "source only after the send succeeded. On real AWS `aws sqs start-message-move-task` does "
        "the same (see the stack output RedriveCommand); this command also works where that API "
        'is missing (e.g. moto, the local world). Prints {"from", "to", "dry_run", "moved"}.',
    )
    redrive_cmd.set_defaults(parser=redrive_cmd, run=_redrive_command, needs=["source", "target"])
    redrive_cmd.add_argument("--from", dest="source", metavar="PARKING_QUEUE_URL", help="source queue URL")
    redrive_cmd.add_argument("--to", dest="target", metavar="DLQ_URL", help="target queue URL")
    redrive_cmd.add_argument("--max", type=int, metavar="N", help="move at most N messages")
    redrive_cmd.add_argument(
        "--dry-run", action="store_true", help="list what would move (on stderr); send and delete nothing"
    )


def _report_parser(commands: Any, stack: argparse.ArgumentParser) -> None:
    report = commands.add_parser(
        "report",
        parents=[stack],
        help="transcripts, audio hours, estimated cost and failures by reason for a period",
        description="Usage for a period, from the output bucket: transcripts (each one's metadata: "
        "audio seconds, estimated cost), and failure records counted by reason (--text: for people).",
    )
    report.set_defaults(parser=report, run=_report_command, needs=["bucket"])
    report.add_argument("--bucket", metavar="OUTPUT_BUCKET", help="the output bucket")
    report.add_argument(
        "--since", metavar="ISO", type=parse_time, help=f"start (default: {DEFAULT_REPORT_DAYS} days ago)"
    )
    report.add_argument("--until", metavar="ISO", type=parse_time, help="end, exclusive (default: now)")
    report.add_argument("--text", action="store_true", help="lines for people, not JSON")
    report.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the default now


def _backfill_parser(commands: Any, stack: argparse.ArgumentParser) -> None:
    backfill_cmd = commands.add_parser(
        "backfill",
        parents=[stack],
        help="transcribe every object under a prefix with one S3 Batch Operations job",
        description="Start an S3 Batch Operations job over BUCKET/PREFIX that invokes the transcribe "
        "function per object, follow its progress (on stderr), then sum up its completion report "
        "(JSON on stdout). Needs the stack deployed with the EnableBackfill setting true (its BackfillRole). "
        "Objects already transcribed cost nothing: the function answers them from its idempotency store.",
    )
    backfill_cmd.set_defaults(parser=backfill_cmd, run=_backfill_command, needs=[])
    backfill_cmd.add_argument("--bucket", help="the bucket to backfill (default: the stack's input bucket)")
    backfill_cmd.add_argument("--prefix", default="", help="only keys under this prefix (default: all)")
    backfill_cmd.add_argument("--function-arn", help="default: the stack's TranscribeFunctionArn")
    backfill_cmd.add_argument("--role-arn", help="default: the stack's BackfillRoleArn")
    backfill_cmd.add_argument("--report-bucket", help="default: the stack's output bucket")
    backfill_cmd.add_argument("--poll", type=float, default=10.0, metavar="S", help="seconds between polls")
    backfill_cmd.add_argument("--no-wait", action="store_true", help="start the job and print its id")


STATUS_OUTPUTS = {  # status argument -> the stack output that fills it
    "bucket": "InputBucketName",
    "input_bucket": "InputBucketName",
    "output_bucket": "OutputBucketName",
    "table": "IdempotencyTableName",
    "dlq": "DeadLetterQueueUrl",
    "parking": "ParkingQueueUrl",
    "buffer": "UploadBufferQueueUrl",
    "buffer_dlq": "UploadBufferDeadLetterQueueUrl",
    "transcript_prefix": "TranscriptPrefix",
    "failure_prefix": "FailurePrefix",
}
QUEUE_NAMES = {  # status argument -> the queue's name in the answer
    "dlq": "dead-letter",
    "parking": "parking",
    "buffer": "upload-buffer",
    "buffer_dlq": "upload-buffer-dead-letter",
}


def _status_parser(commands: Any, stack: argparse.ArgumentParser) -> None:
    status = commands.add_parser(
        "status",
        parents=[stack],
        help="where one object is: transcribed, failed, waiting in a queue, in flight, answer kept",
        description="Where one object is, as JSON: its states (in_flight, answer_kept, waiting, "
        "failed, transcribed), the most current as `state` (`unknown` when nothing names it), and "
        "the evidence of each. Queue messages are peeked: received with a short visibility timeout "
        "and made visible again at once (each peek counts as a receive); hidden and delayed ones "
        "can't be, so `unknown` comes with `possibly_waiting`, their counts per queue, if any. "
        "Without --stack, the stack is the one whose aws:cloudformation:stack-name tag --bucket carries.",
    )
    status.set_defaults(parser=status, run=_status_command, needs=["bucket", "output_bucket"])
    status.add_argument("--key", required=True, help="the object's key, as stored (not URL-encoded)")
    status.add_argument(
        "--bucket",
        help="the object's bucket (default: the stack's input bucket); without --stack, one a stack created",
    )
    status.add_argument(
        "--input-bucket", help="the stack's input bucket (default: from the stack, or --bucket)"
    )
    status.add_argument("--output-bucket", help="the stack's output bucket")
    status.add_argument("--table", metavar="IDEMPOTENCY_TABLE", help="the idempotency table")
    for dest, name in QUEUE_NAMES.items():
        status.add_argument(f"--{dest.replace('_', '-')}", dest=dest, metavar="URL", help=f"the {name} queue")
    status.add_argument("--transcript-prefix", help="default: transcripts/ (or the stack's)")
    status.add_argument("--failure-prefix", help="default: failures/ (or the stack's)")
    status.add_argument("--kept-prefix", default="kept-answers/", help="kept answers' staging prefix")


def _upload_parser(commands: Any, stack: argparse.ArgumentParser) -> None:
    upload = commands.add_parser(
        "upload",
        parents=[stack],
        help="upload a recording to the stack's input bucket (what `aws s3 cp` would do)",
        description="Upload FILE to the input bucket with boto3 (multipart when large), with its "
        "per-upload options and named speakers as S3 metadata; prints "
        '{"bucket", "key", "size", "etag", "version_id", "content_type", "metadata"}.',
    )
    upload.set_defaults(parser=upload, run=_upload_command, needs=["bucket"])
    upload.add_argument("--file", required=True, type=Path, help="the recording to upload")
    upload.add_argument("--bucket", help="default: the stack's input bucket")
    upload.add_argument("--key", help="default: the stack's InputPrefix output (if any) + the file's name")
    upload.add_argument(
        "--options",
        default="",
        metavar="QUERY",
        help="per-upload options, e.g. 'language=es&diarize=true' (each becomes x-amz-meta-dg-<name>)",
    )
    upload.add_argument(
        "--speakers", default="", metavar="0=NAME,...", help="named speakers, e.g. '0=Alice,1=Bob'"
    )


@dataclass
class Result:
    """What a command prints on stdout: a JSON document, or ``text`` lines when asked for them."""

    document: Any = None
    text: list[str] | None = None
    exit_code: int = 0


class CommandError(Exception):
    """The command could not finish; ``details`` say how far it got."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: argparse.ArgumentParser = args.parser
    try:
        if args.command == "status":
            if not args.stack and args.bucket and not args.output_bucket:
                args.stack = stack_of_bucket(args.bucket)
            optional = [dest for dest in STATUS_OUTPUTS if dest not in {"bucket", "output_bucket"}]
            _fill_from_stack(command, args, ["bucket", "output_bucket"], STATUS_OUTPUTS, optional=optional)
        elif args.command == "upload":
            _fill_from_stack(command, args, ["bucket"], {"bucket": "InputBucketName"})
        else:
            _fill_from_stack(command, args, args.needs)
        result: Result = args.run(command, args)
    except CommandError as exc:
        log(f"error: {exc}")
        emit({"error": str(exc), **exc.details})
        return 1
    except (ClientError, BotoCoreError) as exc:
        log(f"error: {exc}")
        emit({"error": str(exc)})
        return 1
    if result.text is not None:
        print("\n".join(result.text), flush=True)
    else:
        emit(result.document)
    return result.exit_code


def _failures_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    del parser
    s3: S3Client = boto3.client("s3")
    records = list_failures(s3, args.bucket, args.prefix, reason=args.reason, since=args.since)
    if args.text:
        return Result(text=format_failures(records))
    for line in format_counts(records):
        log(line)
    counts = Counter(str(r.get("reason")) for r in records)
    return Result(
        {
            "bucket": args.bucket,
            "prefix": args.prefix,
            "count": len(records),
            "by_reason": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "records": records,
        }
    )


def _report_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    del parser
    s3: S3Client = boto3.client("s3")
    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(days=DEFAULT_REPORT_DAYS)
    report = usage_report(s3, args.bucket, since, until)
    return Result(text=format_report(report)) if args.text else Result(report)


def _redrive_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    if args.max is not None and args.max < 1:
        parser.error("--max must be at least 1")
    sqs: SQSClient = boto3.client("sqs")
    where = {"from": args.source, "to": args.target, "dry_run": args.dry_run}
    try:
        moved = redrive(sqs, args.source, args.target, max_messages=args.max, dry_run=args.dry_run)
    except RedriveError as exc:
        raise CommandError(str(exc), **where, moved=exc.moved) from exc
    log(f"{'would move' if args.dry_run else 'moved'} {moved} message(s) from {args.source} to {args.target}")
    return Result({**where, "moved": moved})


def _backfill_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    needed = [dest for dest in backfill.STACK_OUTPUTS if not getattr(args, dest)]
    if needed:
        if not args.stack:
            parser.error(f"give --{' --'.join(d.replace('_', '-') for d in needed)}, or --stack")
        outputs = stack_outputs(args.stack)
        for dest in needed:
            output = backfill.STACK_OUTPUTS[dest]
            if output not in outputs:
                parser.error(
                    f"stack {args.stack} has no output {output} "
                    "(set EnableBackfill in template.yaml's Settings, then deploy)"
                )
            setattr(args, dest, outputs[output])
    job = backfill.Backfill(
        account_id=boto3.client("sts").get_caller_identity()["Account"],
        function_arn=args.function_arn,
        role_arn=args.role_arn,
        bucket=args.bucket,
        prefix=args.prefix,
        report_bucket=args.report_bucket,
    )
    s3control = boto3.client("s3control")
    job_id = backfill.start_backfill(s3control, job)
    log(f"started job {job_id}: s3://{job.bucket}/{job.prefix}")
    started = {"job_id": job_id, "bucket": job.bucket, "prefix": job.prefix}
    if args.no_wait:
        return Result({**started, "status": "started"})
    final = backfill.follow(s3control, job.account_id, job_id, poll_s=args.poll, report=log)
    reasons = [str(reason.get("FailureReason")) for reason in final.get("FailureReasons", [])]
    for reason in reasons:
        log(f"job failure: {reason}")
    report = backfill.read_completion_report(boto3.client("s3"), job.report_bucket, job.report_prefix, job_id)
    for line in report.lines():
        log(line)
    summary = {
        **started,
        "status": final.get("Status"),
        "job_failure_reasons": reasons,
        "tasks": report.rows,
        "succeeded": report.succeeded,
        "transcribed": report.transcribed,
        "deferred": report.deferred,
        "skipped": dict(sorted(report.skipped.items())),
        "failed": dict(sorted(report.failed.items())),
    }
    ok = final.get("Status") == "Complete" and not report.failed
    return Result(summary, exit_code=0 if ok else 1)


def _status_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    del parser
    from scripts import status  # noqa: PLC0415 - the layer's imports cost a second: only here

    places = status.Places(
        input_bucket=args.input_bucket or args.bucket,
        output_bucket=args.output_bucket,
        idempotency_table=args.table,
        queues={name: getattr(args, dest) for dest, name in QUEUE_NAMES.items() if getattr(args, dest)},
        transcript_prefix=args.transcript_prefix or status.Places.transcript_prefix,
        failure_prefix=args.failure_prefix or status.Places.failure_prefix,
        kept_answer_prefix=args.kept_prefix,
    )
    clients = status.Clients(boto3.client("s3"), boto3.client("sqs"), boto3.client("dynamodb"))
    return Result(status.object_status(clients, places, args.bucket, args.key))


def _upload_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Result:
    source: Path = args.file
    if not source.is_file():
        parser.error(f"no such file: {source}")
    key = args.key
    if not key:
        # the InputPrefix output exists only when Settings.Uploads.InputPrefix is not empty
        prefix = stack_outputs(args.stack).get("InputPrefix", "") if args.stack else ""
        key = f"{prefix}{source.name}"
    try:
        metadata = option_metadata(args.options, args.speakers)
    except ValueError as exc:
        parser.error(f"--options must be a query string like language=es&diarize=true: {exc}")
    return Result(upload(boto3.client("s3"), source, args.bucket, key, metadata))


if __name__ == "__main__":
    sys.exit(main())
