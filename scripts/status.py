"""Where one uploaded object is in the pipeline (``make status``), from what the stack keeps about it.

Every place is read, not changed (but see queues below), and each that holds the object adds a state:

* ``in_flight``: its idempotency record is ``INPROGRESS`` and unexpired: a function holds it now
  (and, while Deepgram works, a capacity lease; leases don't name objects, so the record is the
  evidence);
* ``answer_kept``: Deepgram's answer was paid for but its write failed; it waits for the retry, in
  the idempotency record (``record``), a staging object under ``kept-answers/`` (``s3``) or one
  container's /tmp (``container``) (``transcriber.services.answers``);
* ``waiting``: a message naming it is in the dead-letter queue, the parking queue, or (buffered
  mode) the upload buffer queue or its dead-letter queue. SQS has no peek: messages are received
  with a short visibility timeout, then made visible again at once. Each such receive counts
  towards the queue's ``maxReceiveCount``, as the retry function's own receives do;
* ``failed``: a failure record (reason, message, record key);
* ``transcribed``: the transcript and its formats (their keys).

``state`` is the most current of them (in that order); ``unknown`` when nothing names the object.
A message SQS hides (the retry function's backoff hides one for minutes to hours; a message being
handled is hidden too) can't be read, so an ``unknown`` answer adds ``possibly_waiting``: each
queue's hidden and delayed message counts, when there are any, as the places it may still be.
The object is its current version (one HEAD gives the ETag the idempotency identity is made of).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain import upload_options
from transcriber.domain.events import S3ObjectRef, parse_event
from transcriber.domain.formats import FORMATS
from transcriber.domain.upload_options import UploadOptionPolicy
from transcriber.errors import PermanentError
from transcriber.observability import logger as product_logger
from transcriber.pipeline.workflow import IDEMPOTENCY_KEY_PREFIX, object_identity
from transcriber.services.answers import identity_name
from transcriber.services.storage import output_key

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

STATES = ("in_flight", "answer_kept", "waiting", "failed", "transcribed")  # most current first
PEEK_VISIBILITY_S = 10  # how long a peeked message stays hidden if making it visible again fails
MAX_PEEKED = 1000  # per queue: a status answer, not a queue dump
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True)
class Places:
    """Where the stack keeps things: the stack outputs ``operate.py`` reads (or flags)."""

    input_bucket: str
    output_bucket: str
    idempotency_table: str | None = None
    queues: dict[str, str] = field(default_factory=dict)  # name -> URL
    transcript_prefix: str = "transcripts/"
    failure_prefix: str = "failures/"
    kept_answer_prefix: str = "kept-answers/"


@dataclass(frozen=True)
class Clients:
    s3: S3Client
    sqs: SQSClient
    dynamodb: DynamoDBClient


def object_status(clients: Clients, places: Places, bucket: str, key: str) -> dict[str, Any]:
    """Where ``bucket``/``key`` is, as a JSON-ready dict (see the module's docstring)."""
    found: dict[str, Any] = {"bucket": bucket, "key": key}
    head = _head(clients.s3, bucket, key)
    found["object"] = head
    if head.get("exists"):
        record = _idempotency(clients, places, bucket, key, head)
        if record is not None:
            found.update(record)
    waiting = [
        m for name, url in places.queues.items() for m in peek_queue(clients.sqs, name, url, bucket, key)
    ]
    if waiting:
        found["waiting"] = waiting
    failure = _failure(clients.s3, places, bucket, key)
    if failure is not None:
        found["failed"] = failure
    outputs = _outputs(clients.s3, places, bucket, key)
    if outputs:
        found["transcribed"] = {"output_bucket": places.output_bucket, "keys": outputs}
    states = [state for state in STATES if state in found]
    found["states"] = states
    found["state"] = states[0] if states else "unknown"
    if not states:
        hidden = hidden_messages(clients.sqs, places.queues)
        if hidden:
            found["possibly_waiting"] = hidden
            found["hint"] = (
                "SQS can't show hidden (in backoff or being handled) or delayed messages: "
                "the object may be one of these; ask again when they are visible"
            )
    return found


# --- S3: the object, its outputs, its failure record ------------------------------------------


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


def _head(s3: S3Client, bucket: str, key: str) -> dict[str, Any]:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _missing(exc):
            return {"exists": False}
        raise
    version = head.get("VersionId")
    return {
        "exists": True,
        "etag": str(head.get("ETag", "")).strip('"'),
        "version_id": None if version in (None, "null") else version,
        "size": head.get("ContentLength"),
        "last_modified": head["LastModified"].isoformat() if "LastModified" in head else None,
        "metadata": dict(head.get("Metadata") or {}),
    }


def _exists(s3: S3Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _missing(exc):
            return False
        raise
    return True


def _outputs(s3: S3Client, places: Places, bucket: str, key: str) -> dict[str, str]:
    """The transcript's formats that exist (the product's one key mapping), by format."""
    keys = {
        fmt: output_key(
            places.transcript_prefix, key, f".{fmt}", bucket=bucket, home_bucket=places.input_bucket
        )
        for fmt in FORMATS
    }
    if not _exists(s3, places.output_bucket, keys["json"]):
        return {}
    return {fmt: k for fmt, k in keys.items() if fmt == "json" or _exists(s3, places.output_bucket, k)}


def _failure(s3: S3Client, places: Places, bucket: str, key: str) -> dict[str, Any] | None:
    record_key = output_key(places.failure_prefix, key, bucket=bucket, home_bucket=places.input_bucket)
    try:
        record = json.loads(s3.get_object(Bucket=places.output_bucket, Key=record_key)["Body"].read())
    except ClientError as exc:
        if _missing(exc):
            return None
        raise
    fields = ("reason", "message", "class", "http_status", "attempts", "failed_at", "deepgram_request_id")
    return {"record_key": record_key, **{name: record.get(name) for name in fields}}


# --- DynamoDB: the idempotency record, and an answer kept for the retry -------------------------


def identities(bucket: str, key: str, head: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The idempotency identities the function may have given this version (workflow's
    ``object_identity``): without per-upload options, and with its metadata's options if any
    (whether the stack reads them is the stack's setting)."""
    plain = {"bucket": bucket, "key": key, "etag": head["etag"]}
    options = upload_options.from_metadata(head.get("metadata") or {})
    try:  # normalised as the function does; which options the stack allows is its setting
        accepted = UploadOptionPolicy(frozenset(name for name, _ in options)).validate(options)
    except PermanentError:
        return [plain]  # the function refused them: a failure record, not a record of work
    identity = object_identity(S3ObjectRef(bucket, key, etag=head["etag"], options=accepted))
    return [plain] if identity == plain else [plain, identity]


def idempotency_key(identity: Mapping[str, Any]) -> str:
    """Powertools' key for ``idempotent_function(key_prefix=...)``: the prefix, ``#``, and the MD5
    of the identity as sorted JSON."""
    digest = hashlib.md5(json.dumps(identity, sort_keys=True).encode(), usedforsecurity=False)
    return f"{IDEMPOTENCY_KEY_PREFIX}#{digest.hexdigest()}"


def _idempotency(
    clients: Clients, places: Places, bucket: str, key: str, head: Mapping[str, Any]
) -> dict[str, Any] | None:
    now = time.time()
    for identity in identities(bucket, key, head):
        kept_key = f"{places.kept_answer_prefix}{identity_name(identity)}.json"
        staged = _exists(clients.s3, places.output_bucket, kept_key)
        item = None
        if places.idempotency_table:
            record_id = idempotency_key(identity)
            got = clients.dynamodb.get_item(TableName=places.idempotency_table, Key={"id": {"S": record_id}})
            item = got.get("Item")
        if item is not None and float(item.get("expiration", {}).get("N", "inf")) < now:
            item = None  # expired (TTL deletes it later): the function will not honour it
        if item is None and not staged:
            continue
        return _record_states(item, kept_key if staged else None, now)
    return None


def _record_states(item: Mapping[str, Any] | None, staged_key: str | None, now: float) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if item is not None:
        status = item.get("status", {}).get("S")
        record: dict[str, Any] = {"id": item["id"]["S"], "status": status}
        found["idempotency_record"] = record
        if status == "INPROGRESS":
            until_ms = item.get("in_progress_expiration", {}).get("N")
            record["in_progress_until"] = _iso(float(until_ms) / 1000) if until_ms else None
            if until_ms is None or float(until_ms) / 1000 > now:
                found["in_flight"] = {
                    "idempotency_record": record["id"],
                    "until": record["in_progress_until"],
                }
        data = _json(item.get("data", {}).get("S"))
        if status == "COMPLETED" and isinstance(data, dict) and isinstance(data.get("kept"), dict):
            kept = data["kept"]
            found["answer_kept"] = {
                "where": kept.get("where"),
                "staging_key": kept.get("key"),
                "deepgram_request_id": kept.get("request_id"),
                "write_error": (data.get("write_error") or {}).get("reason"),
                "idempotency_record": record["id"],
            }
    if staged_key is not None and "answer_kept" not in found:
        found["answer_kept"] = {"where": "s3", "staging_key": staged_key}
    return found


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


# --- SQS: messages that name the object ---------------------------------------------------------


@contextlib.contextmanager
def _product_logs_on_stderr() -> Iterator[None]:
    """The product's logger writes to stdout (Lambda's log stream); here stdout is the result."""
    handler = product_logger.registered_handler
    if not isinstance(handler, logging.StreamHandler):
        yield
        return
    previous = handler.setStream(sys.stderr)
    try:
        yield
    finally:
        if previous is not None:
            handler.setStream(previous)


def names_object(body: str, bucket: str, key: str) -> bool:
    """Whether a queued event (any shape the function accepts) names ``bucket``/``key``."""
    try:
        event = json.loads(body)
        with _product_logs_on_stderr():
            objects = parse_event(event)
    except Exception:  # a body the function can't read names nothing here
        return False
    return any(obj.bucket == bucket and obj.key == key for obj in objects)


def _peek(sqs: SQSClient, url: str) -> Iterator[MessageTypeDef]:
    """Every visible message once, hidden for at most ``PEEK_VISIBILITY_S`` and made visible
    again as soon as it has been read."""
    seen: set[str] = set()
    while len(seen) < MAX_PEEKED:
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=PEEK_VISIBILITY_S,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in messages if m.get("MessageId") not in seen]
        for message in messages:
            with contextlib.suppress(ClientError, BotoCoreError):  # else visible again in 10 s
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        if not fresh:
            return
        for message in fresh:
            seen.add(message.get("MessageId", ""))
            yield message


def peek_queue(sqs: SQSClient, name: str, url: str, bucket: str, key: str) -> list[dict[str, Any]]:
    """The messages of one queue that name the object."""
    found = []
    for message in _peek(sqs, url):
        if not names_object(message.get("Body", ""), bucket, key):
            continue
        error_attribute = message.get("MessageAttributes", {}).get("ErrorMessage")
        error = error_attribute.get("StringValue") if error_attribute else None
        found.append(
            {
                "queue": name,
                "queue_url": url,
                "message_id": message.get("MessageId"),
                "receives": int(message.get("Attributes", {}).get("ApproximateReceiveCount", "0")),
                "sent_at": _sent_at(message),
                "error": error,
            }
        )
    return found


def hidden_messages(sqs: SQSClient, queues: Mapping[str, str]) -> dict[str, int]:
    """Queue name -> messages it holds that can't be peeked (not visible, or delayed), if any."""
    counts: dict[str, int] = {}
    for name, url in queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        count = sum(int(value) for value in attributes.values())
        if count:
            counts[name] = count
    return counts


def _sent_at(message: MessageTypeDef) -> str | None:
    sent = message.get("Attributes", {}).get("SentTimestamp")
    return _iso(int(sent) / 1000) if sent else None
