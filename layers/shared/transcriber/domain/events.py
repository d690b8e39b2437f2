"""One normaliser for every way in: turn an event into the S3 objects to transcribe.

Accepted shapes (see ``ACCEPTED_SHAPES``): S3 notifications, EventBridge "Object Created" from
aws.s3, SNS carrying an S3 notification, SQS carrying any of these (or an SNS envelope of one),
a direct ``{"bucket", "key"[, "version_id"]}`` payload or a list of them, and S3 Batch Operations
(schema 1.0 and 2.0). Parsing uses Powertools' event source data classes, imported by the first
event that needs them (the package loads every event type it knows); an S3 notification, what an
upload's cold start parses, is read from its dict directly.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from transcriber.domain.upload_options import from_event as options_from_event
from transcriber.domain.work import Order
from transcriber.errors import ErrorDetails, PermanentError
from transcriber.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.s3_batch_operation_event import S3BatchOperationEvent

# An upload, or a restore of an archived object completing (its copy can now be read: see
# transcriber.domain.archive): both mean "this object version can be transcribed now".
UPLOAD_EVENT_PREFIXES = ("ObjectCreated:", "ObjectRestore:Completed")
# S3 itself names records without it ("ObjectCreated:Put"); its configuration's names carry it
# ("s3:ObjectCreated:*"), and some tools and tests emit those, the wildcard included.
_CONFIGURATION_PREFIX = "s3:"
UPLOAD_DETAIL_TYPES = frozenset({"Object Created", "Object Restore Completed"})
ACCEPTED_SHAPES = (
    "an S3 notification {'Records': [{'eventSource': 'aws:s3', ...}]}; "
    "an EventBridge event {'source': 'aws.s3', 'detail-type': 'Object Created', 'detail': {...}}; "
    "SNS {'Records': [{'EventSource': 'aws:sns', 'Sns': {'Message': '<S3 notification>'}}]}; "
    "SQS {'Records': [{'eventSource': 'aws:sqs', 'body': '<any of these>'}]}; "
    "a direct payload {'bucket': '...', 'key': '...', 'version_id': '...'} or a list of them; "
    "S3 Batch Operations {'invocationSchemaVersion': '1.0'|'2.0', 'tasks': [...]}"
)


class Source(StrEnum):
    S3 = "s3"
    EVENTBRIDGE = "eventbridge"
    SNS = "sns"
    SQS = "sqs"
    DIRECT = "direct"
    S3_BATCH = "s3-batch-operations"
    S3_TEST = "s3-test-event"
    SNS_CONFIRMATION = "sns-confirmation"


@dataclass(frozen=True)
class S3ObjectRef:
    """One object version to transcribe; the key is decoded (S3 events URL-encode it)."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str | None = None
    # S3's order of events for one key (hex; compare as numbers): notifications and EventBridge.
    sequencer: str | None = None
    # Per-upload Deepgram options as (option, value) pairs: from the event (direct, Batch
    # Operations) or the object's metadata; None: not read yet (see transcriber.domain.upload_options).
    options: tuple[tuple[str, str], ...] | None = None
    lane: str = "live"  # the capacity pool's lane: "backfill" for S3 Batch Operations tasks
    # Whether a newer version supersedes it, once a step has learned it (preflight's HEAD of the
    # key's current object, or ``Storage.decided``); None: not asked yet (transcriber.domain.ordering).
    order: Order | None = field(default=None, compare=False)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


# S3's bucket naming rules, the legacy us-east-1 ones included (capitals, underscores, 255 long):
# letters, digits, dots, hyphens (underscores), starting and ending with a letter or a digit.
_BUCKET_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{1,253})[A-Za-z0-9]")
_RESERVED_BUCKET_AFFIXES = (("xn--", "sthree-", "amzn-s3-demo-"), ("-s3alias", "--ol-s3"))
MAX_KEY_BYTES = 1024
SNS_CONFIRMATION_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})


def invalid_name(obj: S3ObjectRef) -> str | None:
    """Why an event's bucket or key can't name an S3 object (crafted or corrupt), or None.

    Judged before any AWS or Deepgram call: botocore would refuse such a bucket name client-side,
    and a key with ``.``/``..`` segments is rewritten by URL normalisation on the way to Deepgram,
    which would then fetch a different object or none."""
    bucket, key = obj.bucket, obj.key
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket or _is_ip_address(bucket):
        return f"{bucket[:80]!r} is not a valid S3 bucket name"
    if bucket.lower().startswith(_RESERVED_BUCKET_AFFIXES[0]) or bucket.lower().endswith(
        _RESERVED_BUCKET_AFFIXES[1]
    ):
        return f"{bucket[:80]!r} uses a prefix or suffix S3 reserves"
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        return f"the key is {size} bytes; S3 keys are at most {MAX_KEY_BYTES}"
    if has_dot_segments(key):
        return "the key has '.' or '..' path segments, which URLs rewrite into another key"
    return None


def version_or_none(value: Any) -> str | None:
    """An event's version id; S3's literal ``null`` (an unversioned or versioning-suspended
    bucket, or an object older than versioning) means there is none."""
    if value is None or value in {"", "null"}:
        return None
    return str(value)


def sequencer_value(sequencer: str | None) -> int | None:
    """S3's sequencer as a number (hex strings of different lengths compare left-padded), or None."""
    if not sequencer:
        return None
    try:
        return int(sequencer, 16)
    except ValueError:
        return None


def has_dot_segments(key: str) -> bool:
    return any(segment in {".", ".."} for segment in key.split("/"))


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def unrecognised_event(detail: str) -> PermanentError:
    return PermanentError(
        ErrorDetails(
            reason="unrecognised-event", message=f"{detail}; accepted event shapes: {ACCEPTED_SHAPES}"
        )
    )


def detect_source(event: Any) -> Source:
    """Which way in this event came; a permanent error, naming the accepted shapes, otherwise."""
    if isinstance(event, list):
        return Source.DIRECT
    if not isinstance(event, Mapping):
        raise unrecognised_event(f"the event is a {type(event).__name__}, not a JSON object")
    for source, matches in _SIGNATURES:
        if matches(event):
            return source
    raise unrecognised_event("unrecognised event")


def _records_from(field: str, value: str) -> Callable[[Mapping[str, Any]], bool]:
    def matches(event: Mapping[str, Any]) -> bool:
        records = event.get("Records")
        return (
            isinstance(records, list)
            and bool(records)
            and all(isinstance(r, Mapping) and r.get(field) == value for r in records)
        )

    return matches


# First match wins; each signature is what distinguishes that service's envelope.
_SIGNATURES: tuple[tuple[Source, Callable[[Mapping[str, Any]], bool]], ...] = (
    (Source.S3_TEST, lambda e: e.get("Event") == "s3:TestEvent"),
    # What SNS sends a queue of another account on (un)subscribing: confirmed by a person, not us.
    (Source.SNS_CONFIRMATION, lambda e: e.get("Type") in SNS_CONFIRMATION_TYPES and "TopicArn" in e),
    (Source.S3_BATCH, lambda e: "invocationSchemaVersion" in e and "tasks" in e),
    (Source.EVENTBRIDGE, lambda e: e.get("source") == "aws.s3" and "detail" in e),
    # An SNS envelope, as SQS receives it without raw message delivery.
    (Source.SNS, lambda e: e.get("Type") == "Notification" and "Message" in e),
    (Source.DIRECT, lambda e: "bucket" in e and "key" in e),
    (Source.S3, _records_from("eventSource", "aws:s3")),
    (Source.SNS, _records_from("EventSource", "aws:sns")),
    (Source.SQS, _records_from("eventSource", "aws:sqs")),
)


def parse_event(event: Any) -> list[S3ObjectRef]:
    """The objects of any event except SQS batches and Batch Operations, which need per-item
    answers (see ``transcriber.pipeline.adapters``)."""
    source = detect_source(event)
    if source is Source.S3_BATCH:
        raise unrecognised_event("Batch Operations events are answered per task, not parsed here")
    try:
        return _PARSERS[source](event)
    except PermanentError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise unrecognised_event(f"malformed {source} event ({type(exc).__name__}: {exc})") from None


def parse_message_body(body: str) -> list[S3ObjectRef]:
    """An SQS message body: JSON of any shape that ``parse_event`` accepts."""
    try:
        document = json.loads(body)
    except ValueError:
        raise unrecognised_event("the SQS message body is not JSON") from None
    if isinstance(document, Mapping) and detect_source(document) in {Source.SQS, Source.S3_BATCH}:
        raise unrecognised_event("an SQS message body cannot hold an SQS or Batch Operations event")
    return parse_event(document)


def _from_s3_test(_event: Any) -> list[S3ObjectRef]:
    logger.info("Skipping s3:TestEvent", extra={"skip_reason": "s3-test-event"})
    return []


def _from_sns_confirmation(event: Any) -> list[S3ObjectRef]:
    # Logged without its Token or SubscribeURL: either one confirms the subscription.
    logger.info(
        f"Skipping SNS {event.get('Type')}",
        extra={"skip_reason": "sns-confirmation", "topic_arn": str(event.get("TopicArn"))[:256]},
    )
    return []


def _from_s3_notification(event: Any) -> list[S3ObjectRef]:
    # The fields Powertools' S3Event reads, read in its order, so a malformed record fails alike.
    objects: list[S3ObjectRef] = []
    for record in event["Records"]:
        event_name = record["eventName"]
        if not is_upload_event_name(event_name):
            logger.info(
                "Skipping S3 record that is not an upload",
                extra={"event_name": event_name, "skip_reason": "not-object-created"},
            )
            continue
        message = record["s3"]
        s3_object = message.get("get_object") or message["object"]  # IntelligentTiering: get_object
        objects.append(
            S3ObjectRef(
                bucket=_text(message["bucket"]["name"], "bucket name"),
                # The key is still URL-encoded: 'a+b%C3%A9.wav' is 'a bé.wav'.
                key=unquote_plus(_text(s3_object["key"], "object key")),
                version_id=version_or_none(s3_object.get("versionId")),
                size=_size(s3_object.get("size")),
                etag=s3_object.get("eTag") or None,
                sequencer=_optional_text(s3_object.get("sequencer")),
            )
        )
    return objects


def is_upload_event_name(name: str) -> bool:
    """An S3 record's ``eventName`` that means an object version can be read now: any
    ``ObjectCreated:`` (``Put``, ``Copy``, ``*``...) or ``ObjectRestore:Completed``, with or
    without the ``s3:`` of S3's configuration names. ``ObjectRestore:*`` is not one: it covers a
    restore that has only begun."""
    return name.removeprefix(_CONFIGURATION_PREFIX).startswith(UPLOAD_EVENT_PREFIXES)


def _from_eventbridge(event: Any) -> list[S3ObjectRef]:
    from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent  # noqa: PLC0415 - see the module doc
    from aws_lambda_powertools.utilities.data_classes.s3_event import (  # noqa: PLC0415
        S3EventBridgeNotificationDetail,
    )

    bridge = EventBridgeEvent(dict(event))
    if bridge.detail_type not in UPLOAD_DETAIL_TYPES:
        logger.info(
            "Skipping EventBridge event that is not an upload",
            extra={"detail_type": bridge.detail_type, "skip_reason": "not-object-created"},
        )
        return []
    detail = S3EventBridgeNotificationDetail(bridge.detail)
    return [
        S3ObjectRef(
            bucket=_text(detail.bucket.name, "detail.bucket.name"),
            key=_text(detail.object.key, "detail.object.key"),  # the data class decodes it
            version_id=version_or_none(detail.object.get("version-id")),
            size=_size(detail.object.size),
            etag=detail.object.etag or None,
            sequencer=_optional_text(detail.object.get("sequencer")),
        )
    ]


def _from_sns(event: Any) -> list[S3ObjectRef]:
    if event.get("Type") == "Notification":
        messages = [event["Message"]]
    else:
        from aws_lambda_powertools.utilities.data_classes import SNSEvent  # noqa: PLC0415 - see the module doc

        messages = [record.sns.message for record in SNSEvent(dict(event)).records]
    objects: list[S3ObjectRef] = []
    for message in messages:
        try:
            document = json.loads(_text(message, "SNS Message"))
        except ValueError:
            raise unrecognised_event("the SNS message is not JSON") from None
        if detect_source(document) in {Source.SNS, Source.SQS, Source.S3_BATCH}:
            raise unrecognised_event("an SNS message must carry an S3 or EventBridge event")
        objects.extend(parse_event(document))
    return objects


def _from_sqs(event: Any) -> list[S3ObjectRef]:
    from aws_lambda_powertools.utilities.data_classes import SQSEvent  # noqa: PLC0415 - see the module doc

    objects: list[S3ObjectRef] = []
    for record in SQSEvent(dict(event)).records:
        objects.extend(parse_message_body(record.body))
    return objects


def _from_direct(event: Any) -> list[S3ObjectRef]:
    items = event if isinstance(event, list) else [event]
    if not items:
        raise unrecognised_event("an empty list")
    objects = []
    for item in items:
        if not isinstance(item, Mapping):
            raise unrecognised_event(f"a direct payload item is a {type(item).__name__}, not an object")
        version = item.get("version_id")
        if version is not None and not isinstance(version, str):
            raise unrecognised_event("version_id must be a string")
        objects.append(
            S3ObjectRef(
                bucket=_text(item.get("bucket"), "bucket"),
                key=_text(item.get("key"), "key"),  # as stored: direct callers don't URL-encode
                version_id=version_or_none(version),
                options=_options(item),
            )
        )
    return objects


def _options(fields: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """The raw per-upload options of a direct payload or Batch Operations job (validated later,
    per object, so a refused option is that object's failure record)."""
    if fields.get("options") is None:
        return None
    try:
        return options_from_event(fields["options"])
    except ValueError as exc:
        raise unrecognised_event(str(exc)) from None


def batch_operation_objects(event: S3BatchOperationEvent) -> list[tuple[str, S3ObjectRef]]:
    """(task id, object) per Batch Operations task; keys arrive URL-encoded in both schemas."""
    if event.invocation_schema_version not in {"1.0", "2.0"}:
        raise unrecognised_event(f"unsupported invocationSchemaVersion {event.invocation_schema_version!r}")
    # Schema 2.0: the job's userArguments may carry "options" (a query string) for every task.
    job = event.get("job") or {}
    user_arguments = job.get("userArguments") if isinstance(job, Mapping) else None
    options = _options(user_arguments) if isinstance(user_arguments, Mapping) else None
    return [
        (
            _text(task.task_id, "taskId"),
            S3ObjectRef(
                bucket=_text(task.s3_bucket, "s3Bucket"),
                key=_text(task.s3_key, "s3Key"),
                version_id=version_or_none(task.s3_version_id),
                options=options,
            ),
        )
        for task in event.tasks
    ]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise unrecognised_event(f"{what} must be a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise unrecognised_event("object size must be a number")
    return int(value)


_PARSERS = {
    Source.S3: _from_s3_notification,
    Source.S3_TEST: _from_s3_test,
    Source.SNS_CONFIRMATION: _from_sns_confirmation,
    Source.EVENTBRIDGE: _from_eventbridge,
    Source.SNS: _from_sns,
    Source.SQS: _from_sqs,
    Source.DIRECT: _from_direct,
}
