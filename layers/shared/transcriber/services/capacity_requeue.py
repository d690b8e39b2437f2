"""SQS ways in that only waited for Deepgram capacity: the message sent again with a delay. A
backfill task whose lane is full, or whose object is in progress elsewhere: the object handed to
the dead-letter queue (``transcriber.services.capacity`` explains the pool; docs/backfill.md the
deferral)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain.capacity_core import BACKFILL_LANE
from transcriber.observability import logger, metrics

if TYPE_CHECKING:
    from transcriber.domain.events import S3ObjectRef

__all__ = ["CAPACITY_LANE", "CapacityRequeue"]

# The lane a deferred object keeps in the retry function (a message attribute): a backfill task's
# object waits for the backfill's share of the pool there too, not for the live uploads' slots.
CAPACITY_LANE = "CapacityLane"

_rng = random.Random()  # noqa: S311 - requeue delays, not cryptography


class CapacityRequeue:
    """SQS ways in: a message whose objects only waited for capacity is sent again as a new message
    (a delay of ``delay_min_s``-``delay_max_s``, a ``CapacityDeferrals`` count) so that the wait
    does not count towards its queue's ``maxReceiveCount``; the caller then reports it done."""

    def __init__(
        self,
        sqs: Callable[[], Any],
        *,
        delay_min_s: int = 30,
        delay_max_s: int = 90,
        deferral_queue_url: str | None = None,
    ) -> None:
        self._make_sqs = sqs  # made on first use: most containers never requeue
        self._sqs: Any = None
        self.delay_min_s, self.delay_max_s = delay_min_s, delay_max_s
        self.deferral_queue_url = deferral_queue_url or None

    def defer(self, obj: S3ObjectRef) -> str | None:
        """Backfill: hand ``obj`` to the dead-letter queue as a direct payload (a shape the retry
        function re-runs) marked as a capacity deferral, so no Batch task waits inside the function.
        The queue's name, or None (no queue configured, or the send failed: the caller answers
        ``TemporaryFailure`` as before, so nothing is lost)."""
        counted = {"CapacityDeferrals": {"DataType": "Number", "StringValue": "1"}}
        return self._hand_over(
            obj,
            counted,
            "BackfillCapacityDeferrals",
            "Backfill lane full; object deferred to the dead-letter queue",
        )

    def defer_in_progress(self, obj: S3ObjectRef) -> str | None:
        """Backfill: another invocation is transcribing ``obj``. A killed sandbox's record lasts to
        its deadline, longer than Batch Operations' quick retries of the task, which would all meet
        it; in the dead-letter queue the retry function requeues it, using no attempt, until that
        invocation's outcome exists or its record has expired. As ``defer``, None to answer
        ``TemporaryFailure``."""
        return self._hand_over(
            obj,
            {},
            "BackfillInProgressDeferrals",
            "Object in progress elsewhere; deferred to the dead-letter queue",
        )

    def _hand_over(self, obj: S3ObjectRef, counts: dict[str, Any], metric: str, message: str) -> str | None:
        if not self.deferral_queue_url:
            return None
        payload: dict[str, str] = {"bucket": obj.bucket, "key": obj.key}
        if obj.version_id:
            payload["version_id"] = obj.version_id
        if obj.options is not None:
            payload["options"] = urlencode(obj.options)  # the job's query-string form
        # The lane frees as its tasks' requests finish (seconds): a short jitter, not a backoff.
        delay = _rng.randint(0, self.delay_min_s)
        attributes = {**counts, CAPACITY_LANE: {"DataType": "String", "StringValue": BACKFILL_LANE}}
        if not self._send(self.deferral_queue_url, json.dumps(payload), delay, attributes):
            return None
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        logger.info(message, extra={"delay_s": delay})
        return self.deferral_queue_url.rstrip("/").rsplit("/", 1)[-1]

    def requeue(self, record: Any) -> bool:
        """True when the message was sent again; False (the caller reports a batch item failure)
        for a FIFO queue (no per-message delay) or when the send fails (e.g. no grant on the queue)."""
        parts = str(record.event_source_arn or "").split(":")
        if len(parts) != 6 or parts[5].endswith(".fifo"):
            return False
        _, _, _, region, account, name = parts
        delay = _rng.randint(self.delay_min_s, self.delay_max_s)
        url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
        if not self._send(
            url, record.body, delay, _deferred_attributes(record.get("messageAttributes") or {})
        ):
            return False
        metrics.add_metric(name="CapacityRequeues", unit=MetricUnit.Count, value=1)
        logger.info("Waiting for Deepgram capacity; message requeued", extra={"delay_s": delay})
        return True

    def _send(self, queue_url: str, body: str, delay: int, attributes: dict[str, Any]) -> bool:
        """One delayed message; False (logged) when the send fails, e.g. no grant on the queue."""
        try:
            self._sqs = self._sqs or self._make_sqs()
            self._sqs.send_message(
                QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay, MessageAttributes=attributes
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("Could not send a capacity wait to its queue", extra={"error": str(exc)})
            return False
        return True


def _deferred_attributes(received: dict[str, Any]) -> dict[str, Any]:
    """The message's string attributes, and ``CapacityDeferrals`` counted one more."""
    attributes = {
        key: {"DataType": "String", "StringValue": str(value["stringValue"])}
        for key, value in received.items()
        if value.get("stringValue") is not None and key != "CapacityDeferrals"
    }
    previous = received.get("CapacityDeferrals") or {}
    deferrals = int(previous.get("stringValue") or 0) + 1
    attributes["CapacityDeferrals"] = {"DataType": "Number", "StringValue": str(deferrals)}
    return attributes
