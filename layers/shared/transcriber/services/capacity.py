"""The Deepgram capacity governor: a pool of concurrency slots shared through DynamoDB.

Deepgram limits concurrent requests per *project* (every key, every stack that uses them) and has
no server-side queue: above the limit it answers 429 and the request is lost time. The governor
makes every function that sends requests take a **lease** on one slot of a named pool before each
request, and release it as soon as Deepgram answers (also on errors):

* the pool is items in one DynamoDB partition (``pk`` = the pool's name): ``slot#NNN`` for the
  pool's general slots, one family per class of request (``intelligence#NNN`` for summarize,
  topics, intents, sentiment; ``entities#NNN`` for detect_entities; ``whisper#NNN`` for Whisper
  models), ``lane-backfill#NNN`` for the backfill lane's share, and ``limit`` for the shared AIMD
  state. A request takes one slot of every family it belongs to, numbered below the family's cap
  now, in one transaction that also checks the ``limit`` item is the one its read saw: a slot is
  taken by one conditional write, nobody is let in while a family holds a slot at or above its
  cap (taken before a decrease), and no decrease can slip between the read and the write, so no
  interleaving exceeds a cap (``capacity_core.blocked``);
* a lease lasts one term (``PoolSettings.lease_term_s``) past its last renewal, renewed by a
  thread while the request runs, and never past the invocation's own deadline, so a function
  that is killed (timeout, out of memory) frees its slot within one term;
* when no slot is free the function waits, polling with jitter (no billable request is made),
  while its time allows; then it hands the object back as retryable, reason ``deepgram-capacity``
  (never a failure record: see ``DeadLetterRetrier`` and the adapters for how each way in keeps
  the work without using up its retries);
* a 429 that still arrives (another client of the same project, a limit lower than configured)
  halves the pool's effective size for everyone (multiplicative decrease, held for ``Retry-After``
  or at least ``hold_s``, at most ``max_hold_s``: the retry policy's 30 s), after which it grows
  back by one slot every ``increase_every_s`` (additive increase, computed from the time of the
  decrease, so it costs no writes). One congestion episode halves once: a 429 to a request let in
  before the last decrease's hold ended changes nothing.

Lanes: each lease carries a lane (``live`` by default). A lane other than ``live`` may hold at
most its share of the effective pool (``lane_shares``), so a backfill can never take the slots live
uploads need: S3 Batch Operations tasks lease in the ``backfill`` lane (``transcriber.pipeline.adapters``),
whose share is ``CAPACITY_BACKFILL_PERCENT`` of the pool, and whose tasks wait at most
``CAPACITY_BACKFILL_WAIT_SECONDS`` (a few seconds) for a slot; then the task's object is handed to
the dead-letter queue as a capacity deferral (``CapacityRequeue.defer``), which the retry function,
at its own small concurrency, transcribes later, rather than hold the reserved concurrency live
uploads need (see docs/backfill.md).

The decisions (which slot, whether to wait and how long, what a decrease sets) are
``transcriber.domain.capacity_core``, which does no I/O and reads no clock; this module carries its
commands out against DynamoDB with the wall clock and the invocation's remaining time. The
simulator in ``bench/sim`` drives the same core against simulated stores and time.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain import capacity_core as core
from transcriber.domain.capacity_core import (
    BACKFILL_LANE,
    LIVE_LANE,
    Lease,
    Limit,
    PoolSettings,
    PoolState,
    Rng,
)
from transcriber.errors import BlockedError, ErrorDetails, RetryableError, TranscriptionError
from transcriber.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from transcriber.config import Settings
    from transcriber.domain.events import S3ObjectRef

__all__ = [
    "BACKFILL_LANE",
    "CAPACITY_REASON",
    "LIVE_LANE",
    "CapacityGovernor",
    "CapacityRequeue",
    "Governor",
    "Lease",
    "PoolSettings",
    "PoolState",
    "Unlimited",
    "build_governor",
]

CAPACITY_REASON = "deepgram-capacity"
# The transcribe function's dead-letter queue, where backfill tasks that found their lane full wait.
GAVE_UP_REASON = "deepgram-timeout"  # we stopped waiting for the answer; Deepgram may not have
_CONFLICTS = (
    "ConditionalCheckFailedException",
    "TransactionCanceledException",
    "TransactionConflictException",
)
_TRANSIENT = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_rng = random.Random()  # noqa: S311 - requeue delays, not cryptography


class Clock(Protocol):
    def __call__(self) -> float: ...


class ContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class Governor(Protocol):
    """What the workflow asks of a governor: hold a slot for the length of one request."""

    def slot(self, context: ContextLike, query: Sequence[tuple[str, str]], lane: str = LIVE_LANE) -> Any: ...


class Unlimited:
    """No governor (no ``CAPACITY_TABLE``): every request goes straight out."""

    @contextmanager
    def slot(
        self, context: ContextLike, query: Sequence[tuple[str, str]], lane: str = LIVE_LANE
    ) -> Iterator[None]:
        yield


class CapacityGovernor:
    """The Lambda side of ``transcriber.domain.capacity_core``: its commands carried out against DynamoDB,
    with the wall clock and the invocation's remaining time."""

    def __init__(
        self,
        pool: PoolSettings,
        dynamodb: DynamoDBClient,
        *,
        lane: str = LIVE_LANE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = time.time,
        rng: Rng | None = None,
    ) -> None:
        self.pool = pool
        self.lane = lane
        self._ddb = dynamodb
        self._sleep = sleep
        self._clock = clock
        self._rng: Rng = rng or random.SystemRandom()  # holder ids must not repeat across containers

    # -- the hook the workflow uses -------------------------------------------------------------
    @contextmanager
    def slot(
        self, context: ContextLike, query: Sequence[tuple[str, str]], lane: str | None = None
    ) -> Iterator[Lease]:
        """Hold a slot of ``lane`` (default: the governor's) while the body sends one request. A 429
        raised from the body lowers the pool's effective size for everyone before the slot is released;
        after a timeout the slot is held (``hold``), not released."""
        lease = self.acquire(context, core.request_classes(query), lane=lane)
        held = False
        try:
            with self._renewed(lease):
                yield lease
        except TranscriptionError as exc:
            if exc.details.http_status == 429:
                self.throttled(lease, exc.details.retry_after_s)
            if exc.reason == GAVE_UP_REASON:
                self.hold(lease)
                held = True
            raise
        finally:
            if not held:
                self.release(lease)

    # -- leases -----------------------------------------------------------------------------------
    def acquire(
        self, context: ContextLike, classes: tuple[str, ...] = (), *, lane: str | None = None
    ) -> Lease:
        """A lease, waiting with jittered polling while the invocation has time (and the lane's
        patience allows); else ``RetryableError(deepgram-capacity)``."""
        started = self._clock()
        deadline = started + context.get_remaining_time_in_millis() / 1000
        steps = core.acquire(
            self.pool, lane=lane or self.lane, classes=classes, deadline=deadline, rng=self._rng
        )
        answer: Any = None
        while True:
            try:
                command = steps.send(answer)
            except StopIteration as done:
                return self._outcome(done.value, started, classes)
            answer = self._carry_out(command)

    def _carry_out(self, command: core.Command) -> Any:
        """One of the core's commands against DynamoDB; a store that cannot serve it for now is
        answered ``Unavailable``: waited through, like a full pool."""
        try:
            if isinstance(command, core.Query):
                return self.read()
            if isinstance(command, core.ConditionalPut):
                return self._write_lease(command.lease)
            return self._sleep(command.seconds)
        except RetryableError as exc:
            if not exc.details.extra.get("transient"):
                raise
            return core.Unavailable(self._clock())

    def _outcome(
        self, outcome: core.Acquired | core.Exhausted, started: float, classes: tuple[str, ...]
    ) -> Lease:
        waited = self._clock() - started
        if isinstance(outcome, core.Acquired):
            if outcome.polls:
                metrics.add_metric(name="CapacityWaitSeconds", unit=MetricUnit.Seconds, value=waited)
            return outcome.lease
        if outcome.store_failed:
            raise RetryableError(
                ErrorDetails(
                    reason="capacity-store-error",
                    message=f"the pool's table was unavailable for {waited:.1f} s",
                )
            )
        metrics.add_metric(name="CapacityWaitsExhausted", unit=MetricUnit.Count, value=1)
        raise RetryableError(
            ErrorDetails(
                reason=CAPACITY_REASON,
                message=(
                    f"no free slot in Deepgram pool {self.pool.name!r} after "
                    f"{waited:.1f} s; leaving the object for a retry"
                ),
                extra={"capacity_polls": outcome.polls, "classes": list(classes)},
            )
        )

    def _write_lease(self, lease: Lease) -> bool:
        """The lease's slots, each by a conditional put, with a check that the ``limit`` item is
        the one the read saw, in one transaction: False when another function took a slot first
        or the pool was lowered since the read."""
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.pool.table,
                    "Item": {
                        "pk": {"S": self.pool.name},
                        "sk": {"S": key},
                        "holder": {"S": lease.holder},
                        "lane": {"S": lease.lane},
                        "taken_at": {"N": _number(lease.taken_at)},
                        "expires_at": {"N": _number(lease.expires_at)},
                    },
                    "ConditionExpression": "attribute_not_exists(sk) OR expires_at < :now",
                    "ExpressionAttributeValues": {":now": {"N": _number(lease.taken_at)}},
                }
            }
            for key in lease.keys
        ]
        items.append({"ConditionCheck": self._limit_unchanged(lease.seen)})
        try:
            self._ddb.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _CONFLICTS:
                return False
            raise _store_error(exc) from exc
        except BotoCoreError as exc:
            raise _store_error(exc) from exc
        return True

    def _limit_unchanged(self, seen: PoolState) -> dict[str, Any]:
        check: dict[str, Any] = {
            "TableName": self.pool.table,
            "Key": {"pk": {"S": self.pool.name}, "sk": {"S": "limit"}},
            "ConditionExpression": "attribute_not_exists(decreased_at)",
        }
        if seen.reduced_to is not None:
            check["ConditionExpression"] = "decreased_at = :seen"
            check["ExpressionAttributeValues"] = {":seen": {"N": _number(seen.decreased_at)}}
        return check

    def release(self, lease: Lease) -> None:
        """Free the lease's slots; a slot someone took after our lease expired stays theirs. A
        delete the store fails is tried again (``capacity_core.release``); if it still fails, a log
        line only: the lease still ends at the invocation's deadline."""
        steps = core.release(lease, self._rng)
        answer: bool | None = None
        while True:
            try:
                command = steps.send(answer)
            except StopIteration:
                return
            if isinstance(command, core.Sleep):
                answer = self._sleep(command.seconds)
            else:
                answer = self._delete(command)

    def _delete(self, delete: core.Delete) -> bool:
        try:
            self._ddb.delete_item(
                TableName=self.pool.table,
                Key={"pk": {"S": self.pool.name}, "sk": {"S": delete.key}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": delete.holder}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _CONFLICTS:
                return True  # not ours any more: nothing to free
            _release_failed(delete.key, exc)
            return False
        except BotoCoreError as exc:
            _release_failed(delete.key, exc)
            return False
        return True

    def hold(self, lease: Lease) -> None:
        """The request timed out at our end but Deepgram may still be working on it: keep its
        slots until Deepgram's processing limit instead of releasing them (a log line on failure:
        the lease then ends at its expiry)."""
        self._extend(core.hold(lease), "Could not hold a capacity slot")

    def renew(self, lease: Lease) -> None:
        """Extend the lease by its term (``PoolSettings.lease_term_s``); a failure is logged (the
        next renewal, a third of the term later, tries again)."""
        self._extend(core.renew(self.pool, lease, self._clock()), "Could not renew a capacity lease")

    def _extend(self, steps: Sequence[core.Hold], failure: str) -> None:
        for step in steps:
            try:
                self._ddb.update_item(
                    TableName=self.pool.table,
                    Key={"pk": {"S": self.pool.name}, "sk": {"S": step.key}},
                    UpdateExpression="SET expires_at = :until",
                    # Never shorter: a renewal that lands after a hold must not cut the hold short.
                    ConditionExpression="holder = :holder AND expires_at < :until",
                    ExpressionAttributeValues={
                        ":until": {"N": _number(step.until)},
                        ":holder": {"S": step.holder},
                    },
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    continue  # released, taken over after expiry, or already held longer: nothing to do
                logger.warning(failure, extra={"slot": step.key, "error": str(exc)})
            except BotoCoreError as exc:
                logger.warning(failure, extra={"slot": step.key, "error": str(exc)})

    @contextmanager
    def _renewed(self, lease: Lease) -> Iterator[None]:
        """Renew the lease from a background thread while the body runs (the request blocks the
        invocation's own thread); a killed sandbox stops renewing, so its slot comes back within
        one term."""
        every = lease.renew_every(self.pool)
        if every is None:
            yield
            return
        stop = threading.Event()

        def keep_alive() -> None:
            while not stop.wait(every):
                self.renew(lease)

        thread = threading.Thread(target=keep_alive, name="capacity-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=every)

    def read(self) -> PoolState:
        """One strongly consistent query of the pool's partition."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.pool.table,
            "KeyConditionExpression": "pk = :pool",
            "ExpressionAttributeValues": {":pool": {"S": self.pool.name}},
            "ConsistentRead": True,
        }
        try:
            while True:
                page = self._ddb.query(**kwargs)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc) from exc
        return _state(items, self._clock())

    # -- AIMD -------------------------------------------------------------------------------------
    def throttled(self, lease: Lease, retry_after_s: float | None) -> None:
        """Deepgram answered 429 although we held a slot: halve the effective pool, once per
        congestion episode (a lease taken before the last decrease's hold ended belongs to the
        episode that decrease already answered)."""
        step = core.decrease(self.pool, lease, retry_after_s, self._clock())
        try:
            self._ddb.update_item(
                TableName=self.pool.table,
                Key={"pk": {"S": self.pool.name}, "sk": {"S": "limit"}},
                UpdateExpression="SET reduced_to = :reduced, hold_until = :until, decreased_at = :now",
                ConditionExpression="attribute_not_exists(hold_until) OR hold_until < :taken",
                ExpressionAttributeValues={
                    ":reduced": {"N": str(step.limit.reduced_to)},
                    ":until": {"N": _number(step.limit.hold_until)},
                    ":now": {"N": _number(step.limit.decreased_at)},
                    ":taken": {"N": _number(step.taken_at)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _CONFLICTS:
                logger.warning("Could not lower the capacity pool", extra={"error": str(exc)})
            return
        except BotoCoreError as exc:
            logger.warning("Could not lower the capacity pool", extra={"error": str(exc)})
            return
        metrics.add_metric(name="CapacityDecreases", unit=MetricUnit.Count, value=1)
        logger.warning(
            "Deepgram throttled a governed request; lowering the pool",
            extra={
                "pool": self.pool.name,
                "from": step.from_size,
                "to": step.limit.reduced_to,
                "hold_s": step.hold_s,
            },
        )


def _state(items: list[dict[str, Any]], now: float) -> PoolState:
    leases: list[tuple[str, str, float]] = []
    limit: Limit | None = None
    for item in items:
        key = item["sk"]["S"]
        if key == "limit":
            limit = Limit(
                reduced_to=int(item["reduced_to"]["N"]),
                hold_until=float(item["hold_until"]["N"]),
                decreased_at=float(item["decreased_at"]["N"]),
            )
        else:
            lane = item.get("lane", {}).get("S", LIVE_LANE)
            leases.append((key, lane, float(item["expires_at"]["N"])))
    return core.pool_state(now, leases, limit)


def _release_failed(key: str, exc: Exception) -> None:
    logger.warning("Could not release a capacity slot", extra={"slot": key, "error": str(exc)})


def _number(value: float) -> str:
    return str(Decimal(str(round(value, 3))))


# The table is missing or the role may not use it (or its key): every object alike, until a
# person fixes the deployment. Blocked, so the work waits and no failure record is written.
_DEPLOYMENT_FAULTS = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSNotFoundException",
        "KMSInvalidStateException",
    }
)


def _deployment_fault(exc: Exception) -> BlockedError | None:
    """A capacity table that is missing or denied: a deployment fault (item 10), not the object's."""
    if not isinstance(exc, ClientError):
        return None
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code not in _DEPLOYMENT_FAULTS:
        return None
    return BlockedError(
        ErrorDetails(
            reason="capacity-store-error",
            message=f"capacity table: {code}; check CapacityTable and the function's role",
            extra={"transient": False, "deployment_fault": True},
        )
    )


def _store_error(exc: Exception) -> RetryableError:
    """capacity-store-error; ``transient`` when waiting may help (throttled, a server error, the
    network) rather than a fault of configuration (no grant, no table: blocked)."""
    blocked = _deployment_fault(exc)
    if blocked is not None:
        return blocked
    transient = isinstance(exc, BotoCoreError) or (
        isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _TRANSIENT
    )
    return RetryableError(
        ErrorDetails(
            reason="capacity-store-error", message=type(exc).__name__, extra={"transient": transient}
        )
    )


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
        if not self.deferral_queue_url:
            return None
        payload: dict[str, str] = {"bucket": obj.bucket, "key": obj.key}
        if obj.version_id:
            payload["version_id"] = obj.version_id
        if obj.options is not None:
            payload["options"] = urlencode(obj.options)  # the job's query-string form
        # The lane frees as its tasks' requests finish (seconds): a short jitter, not a backoff.
        delay = _rng.randint(0, self.delay_min_s)
        attributes = {"CapacityDeferrals": {"DataType": "Number", "StringValue": "1"}}
        if not self._send(self.deferral_queue_url, json.dumps(payload), delay, attributes):
            return None
        metrics.add_metric(name="BackfillCapacityDeferrals", unit=MetricUnit.Count, value=1)
        logger.info("Backfill lane full; object deferred to the dead-letter queue", extra={"delay_s": delay})
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


def build_governor(
    settings: Settings, dynamodb: DynamoDBClient, *, sleep: Callable[[float], None] = time.sleep
) -> Governor:
    """The governor the settings ask for: a DynamoDB pool, or none without ``CAPACITY_TABLE``."""
    if settings.capacity is None:
        return Unlimited()
    return CapacityGovernor(settings.capacity, dynamodb, sleep=sleep)
