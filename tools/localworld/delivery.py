"""The Lambda service's event plumbing, locally: S3 -> async invoke -> retries -> DLQ, and SQS -> function.

`LocalDelivery(stack, aws, extra_env)` runs every function of a resolved stack in a
`LocalFunction` and wires up its event sources the way Lambda does:

* S3 events: the bucket notifications go to an SQS routing queue
  (`LocalAws.route_bucket_notifications`); a router thread takes each S3 event from it,
  accepts it into the function's internal asynchronous event queue and deletes the
  message. `invoke_async` puts an event into the same queue directly.
* Asynchronous invocation: a pool of as many workers as the function's concurrency runs
  the queued events. A failed attempt (any `InvocationResult.error`, timeouts included)
  is retried up to `EventInvokeConfig.MaximumRetryAttempts` times (2 without one), after
  Lambda's waits of 1 and then 2 minutes; every attempt of one event has the same request
  id. An event older than `MaximumEventAgeInSeconds` (6 hours by default) is not run any
  more. A throttled attempt (reserved concurrency 0) goes back into the queue with a
  backoff of 1 s doubling to 5 min and does not count as a retry. An event that failed for
  good goes to the function's SQS `DeadLetterQueue` with the unchanged event as the body
  and Lambda's three message attributes (see `dead_letter_attributes`); without one, it is
  dropped, logged loudly and counted in `stats().dropped`. (EventInvokeConfig destinations
  and SNS dead-letter topics are not emulated: the stack uses neither.)
* SQS event source mappings: a poller per SQS event receives batches of up to
  `BatchSize` messages (10 per ReceiveMessage, more by repeated receives), with at most
  `ScalingConfig.MaximumConcurrency` batches (default: the function's concurrency) in
  flight, builds Lambda's SQS event and invokes synchronously. On success it deletes the
  batch, except the `batchItemFailures` when the event declares
  `FunctionResponseTypes: [ReportBatchItemFailures]`; on error it deletes nothing. Messages
  it does not delete keep whatever visibility the handler gave them (ChangeMessageVisibility
  for a backoff is never undone) and otherwise come back after the queue's visibility
  timeout. A queue's RedrivePolicy is applied by moto itself, on ReceiveMessage: a visible
  message already received `maxReceiveCount` times is moved to the dead-letter target
  instead of being returned, as SQS does; so with maxReceiveCount N the handler sees a
  message N times, and it moves on the next poll after its last visibility timeout.

`time_scale` scales the Lambda service's own waits, so tests run in seconds: the async
retry delays (60 s, 120 s), the maximum event age and the throttle backoff. It does not
scale the function's Timeout, nor SQS visibility timeouts or delays, which moto keeps in
real whole seconds.

`wait_until_idle()` is true when nothing is running or queued in the delivery and its
source queues (S3 routing queues and SQS event sources) have no visible or delayed
messages. Messages a handler deliberately made invisible (backoff) or that wait for their
visibility timeout after a failure are "waiting": reported per queue by `stats()`, and
only awaited with `wait_until_idle(include_waiting=True)`.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from localworld.aws import LocalAws, is_s3_test_event, s3_subscriptions
from localworld.lambda_runtime import InvocationResult, LocalFunction
from localworld.template import FunctionSpec, Stack

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef, MessageTypeDef

logger = logging.getLogger(__name__)

# Lambda's asynchronous invocation defaults (real seconds, before time_scale).
DEFAULT_MAX_RETRY_ATTEMPTS: Final = 2
RETRY_DELAYS_S: Final = (60.0, 120.0)  # before the 1st and the 2nd retry
DEFAULT_MAX_EVENT_AGE_S: Final = 21600.0
THROTTLE_BACKOFF_S: Final = (1.0, 300.0)  # first delay, ceiling
# SQS event source mapping defaults.
DEFAULT_SQS_BATCH_SIZE: Final = 10
# Concurrency when neither the template (ReservedConcurrentExecutions) nor `concurrency` sets one.
DEFAULT_CONCURRENCY: Final = 10

# The DLQ attribute ErrorCode is "the 3-digit HTTP status code" of the invoke. A function
# error (handler exception, timeout, runtime exit) is an invoke that returned 200 with
# X-Amz-Function-Error, so it is 200; an event that only ever got throttled (and then
# aged out) carries 429, TooManyRequestsException's status.
FUNCTION_ERROR_CODE: Final = "200"
THROTTLED_ERROR_CODE: Final = "429"
ERROR_MESSAGE_LIMIT_BYTES: Final = 1024

_THROTTLE_ERROR_TYPE: Final = "TooManyRequestsException"
# How long close() waits for its containers and threads, in all. A container killed on a loaded
# machine can take seconds to exit: under three busy loops, one still had its SIGKILL pending
# (state R) 5.5 s after it was sent, and was gone 3 s later.
CLOSE_WAIT_S: Final = 12.0


def dead_letter_attributes(request_id: str, error_code: str, error_message: str) -> dict[str, Any]:
    """The message attributes Lambda sets on an event it sends to a dead-letter queue/topic."""
    message = error_message.encode("utf-8")[:ERROR_MESSAGE_LIMIT_BYTES].decode("utf-8", errors="ignore")
    return {
        "RequestID": {"DataType": "String", "StringValue": request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": error_code},
        # SQS rejects empty string values; Lambda's error messages are never empty.
        "ErrorMessage": {"DataType": "String", "StringValue": message or "Unknown error"},
    }


def sqs_event_record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the event Lambda builds from a received SQS message."""
    attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attribute: dict[str, Any] = {}
        if "StringValue" in value:
            attribute["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        attribute["stringListValues"] = list(value.get("StringListValues") or [])
        attribute["binaryListValues"] = [
            base64.b64encode(item).decode("ascii") for item in value.get("BinaryListValues") or []
        ]
        attribute["dataType"] = value["DataType"]
        attributes[name] = attribute
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record |= {"eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region}
    return record


def _failed_message_ids(payload: Any, message_ids: list[str]) -> set[str]:
    """Which messages to keep after a successful invoke with ReportBatchItemFailures.

    As Lambda: no response, or no/empty/null batchItemFailures, is full success; a
    malformed response or an itemIdentifier that is empty or not in the batch fails the
    whole batch.
    """
    if payload is None:
        return set()
    if not isinstance(payload, dict):
        return set(message_ids)
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


# --- public records ------------------------------------------------------------------------


@dataclass(frozen=True)
class InvocationRecord:
    """One invocation the delivery made: which function, why, which attempt, what came out."""

    function: str  # logical id
    source: str  # "async" (S3 or invoke_async), "sqs", or "sync"
    attempt: int  # 1-based attempt of this event (async retries); 1 otherwise
    event: Any
    result: InvocationResult


@dataclass
class FunctionStats:
    invocations: int = 0
    errors: int = 0  # invocations that returned an error (throttles excluded)
    throttles: int = 0
    retries: int = 0  # async retries scheduled
    dlq_sends: int = 0  # events sent to the DeadLetterQueue
    dropped: int = 0  # failed async events with nowhere to go (Lambda discards them)
    expired: int = 0  # async events that passed MaximumEventAgeInSeconds
    async_queued: int = 0  # accepted async events not finished (waiting, scheduled or running)
    in_flight: int = 0  # invocations running now
    peak_in_flight: int = 0


@dataclass(frozen=True)
class QueueStats:
    name: str
    url: str
    role: str  # "s3-events", "event-source", "dead-letter", "redrive-target"
    function: str  # the logical id it feeds or collects for
    visible: int  # ApproximateNumberOfMessages
    not_visible: int  # ApproximateNumberOfMessagesNotVisible
    delayed: int  # ApproximateNumberOfMessagesDelayed
    held: int  # of the not-visible ones, those a delivery poller is processing right now

    @property
    def waiting(self) -> int:
        """Invisible but not being processed: a handler's backoff or a failed batch's timeout."""
        return max(0, self.not_visible - self.held)


@dataclass(frozen=True)
class DeliveryStats:
    functions: dict[str, FunctionStats]
    queues: dict[str, QueueStats]  # by queue name

    def _total(self, name: str) -> int:
        return sum(int(getattr(stats, name)) for stats in self.functions.values())

    @property
    def invocations(self) -> int:
        return self._total("invocations")

    @property
    def errors(self) -> int:
        return self._total("errors")

    @property
    def retries(self) -> int:
        return self._total("retries")

    @property
    def dlq_sends(self) -> int:
        return self._total("dlq_sends")

    @property
    def dropped(self) -> int:
        return self._total("dropped")

    @property
    def in_flight(self) -> int:
        return self._total("in_flight")

    @property
    def waiting(self) -> int:
        return sum(queue.waiting for queue in self.queues.values() if queue.role in _SOURCE_ROLES)


_SOURCE_ROLES: Final = frozenset({"s3-events", "event-source"})


# --- internals -----------------------------------------------------------------------------


@dataclass
class _AsyncEvent:
    event: Any
    body: str  # the event's JSON text as accepted: what the DLQ gets, unchanged
    request_id: str
    accepted_at: float  # monotonic
    expires_at: float  # monotonic
    attempts: int = 0
    throttles: int = 0
    last_result: InvocationResult | None = None


class _DelayQueue:
    """Lambda's internal event queue for one function: events become due at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _AsyncEvent]] = []
        self._seq = itertools.count()
        self._running = 0
        self._closed = False

    def put(self, item: _AsyncEvent, due: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), item))
            self._cond.notify()

    def requeue(self, item: _AsyncEvent, due: float) -> None:
        """Put back an event taken with `get` (a retry): it stays counted throughout."""
        with self._cond:
            self._running -= 1
            heapq.heappush(self._heap, (due, next(self._seq), item))
            self._cond.notify()

    def get(self) -> _AsyncEvent | None:
        """The next due event (blocks), or None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    item = heapq.heappop(self._heap)[2]
                    self._running += 1
                    return item
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)

    def done(self) -> None:
        with self._cond:
            self._running -= 1

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._running

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class _SourceQueue:
    """A queue the delivery consumes: an S3 routing queue or an SQS event source."""

    url: str
    name: str
    role: str
    function: str
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while receiving
    held: int = 0  # messages received and not yet settled
    batches: int = 0  # batches being processed


@dataclass(frozen=True)
class _SqsMapping:
    """One SQS event source mapping."""

    source: _SourceQueue
    queue_arn: str
    batch_size: int
    report_failures: bool
    max_batches: int
    executor: ThreadPoolExecutor


class LocalDelivery:
    """Event plumbing for a stack's functions: S3 -> async invoke (retries, DLQ), SQS -> function."""

    def __init__(
        self,
        stack: Stack,
        aws: LocalAws,
        extra_env: Mapping[str, str] | None = None,
        *,
        env_overrides: Mapping[str, Mapping[str, str]] | None = None,
        concurrency: Mapping[str, int | None] | None = None,
        time_scale: float = 0.01,
        functions: Collection[str] | None = None,
        default_concurrency: int = DEFAULT_CONCURRENCY,
        poll_interval_s: float = 0.05,
        on_result: Callable[[InvocationRecord], None] | None = None,
        duplicate_s3_events: bool = False,
        hold_s3_events: bool = False,
    ) -> None:
        """`functions` limits which functions get event sources wired (default: all).

        S3 delivers notifications at least once and in no guaranteed order; on demand, so do we:
        `duplicate_s3_events` accepts every S3 event twice (two invocations of one event, as
        S3 does now and then); `hold_s3_events` keeps S3 events back until `release_held()`
        hands them over, last first (out of order) unless told otherwise. Held events are not
        "in flight" for `is_idle`.

        `concurrency` overrides a function's ReservedConcurrentExecutions (None: the
        `default_concurrency`); it caps the function's containers, and so its async
        workers, SQS batches and synchronous invokes together, as reserved concurrency does.
        """
        unknown = sorted(set(functions or ()) - set(stack.functions))
        unknown += sorted(set(concurrency or {}) - set(stack.functions))
        unknown += sorted(set(env_overrides or {}) - set(stack.functions))
        if unknown:
            raise ValueError(f"unknown functions: {', '.join(sorted(set(unknown)))}")
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.stack = stack
        self.aws = aws
        self.extra_env = dict(extra_env if extra_env is not None else aws.env())
        self.env_overrides = {name: dict(values) for name, values in (env_overrides or {}).items()}
        self.time_scale = time_scale
        self.poll_interval_s = poll_interval_s
        self.on_result = on_result
        self._selected = list(functions) if functions is not None else list(stack.functions)
        self._concurrency_overrides = dict(concurrency or {})
        self._default_concurrency = default_concurrency

        # Own clients: the pumps run many threads, more than botocore's default pool of 10.
        session = boto3.session.Session(
            aws_access_key_id=self.extra_env.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=self.extra_env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            aws_session_token=self.extra_env.get("AWS_SESSION_TOKEN", "testing"),
            region_name=aws.region,
        )
        config = Config(max_pool_connections=64, retries={"max_attempts": 3, "mode": "standard"})
        self._sqs: SQSClient = session.client("sqs", endpoint_url=aws.endpoint_url, config=config)

        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = False
        self._closed = False
        self._functions: dict[str, LocalFunction] = {}
        self._stats: dict[str, FunctionStats] = {name: FunctionStats() for name in stack.functions}
        self._async_queues: dict[str, _DelayQueue] = {}
        self._threads: list[threading.Thread] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._sources: list[_SourceQueue] = []
        self._sinks: dict[str, tuple[str, str, str]] = {}  # url -> (name, role, function)
        self._queue_urls: dict[str, str] = {}  # queue ARN -> URL
        self._logs: list[str] = []
        self._records: list[InvocationRecord] = []
        self.duplicate_s3_events = duplicate_s3_events
        self._holding = hold_s3_events
        self._held: list[tuple[str, Any, str]] = []  # (function, event, body), in arrival order

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Create the functions, route S3 events, start routers, async workers and pollers."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        for logical_id in self._selected:
            spec = self.stack.function(logical_id)
            self.function(logical_id)  # fail now on a bad CodeUri or undeclared override
            s3_events = s3_subscriptions(self.stack, logical_id)
            sqs_events = {
                n: e.get("Properties") or {} for n, e in spec.events.items() if e.get("Type") == "SQS"
            }
            if s3_events:
                url = self.aws.route_bucket_notifications(self.stack, logical_id)
                source = _SourceQueue(url, url.rsplit("/", 1)[-1], "s3-events", logical_id)
                self._sources.append(source)
                self._spawn(f"s3-router-{logical_id}", self._route_s3, source)
                self._async_queue(logical_id)
            for event_name, props in sqs_events.items():
                self._start_sqs_poller(logical_id, event_name, props)
            self._register_sinks(spec)
        return self

    def close(self) -> None:
        """Stop every thread and container; work in progress is abandoned."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queues = list(self._async_queues.values())
            functions = list(self._functions.values())
        self._stop.set()
        for delay_queue in queues:
            delay_queue.close()
        closers = [threading.Thread(target=f.close, args=(0.5,), daemon=True) for f in functions]
        for closer in closers:
            closer.start()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for thread in [*closers, *self._threads]:
            thread.join(max(0.0, deadline - time.monotonic()))
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)
        self._sqs.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"delivery-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    # --- functions ------------------------------------------------------------------------

    def concurrency_of(self, logical_id: str) -> int:
        spec = self.stack.function(logical_id)
        if logical_id in self._concurrency_overrides:
            value = self._concurrency_overrides[logical_id]
        else:
            value = spec.reserved_concurrency
        return self._default_concurrency if value is None else value

    def function(self, logical_id: str) -> LocalFunction:
        """The function's LocalFunction, created on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("delivery is closed")
            if logical_id not in self._functions:
                spec = self.stack.function(logical_id)
                self._functions[logical_id] = LocalFunction(
                    spec,
                    self.env_overrides.get(logical_id),
                    self.extra_env,
                    max_concurrency=self.concurrency_of(logical_id),
                )
            return self._functions[logical_id]

    def _run(
        self, logical_id: str, event: Any, source: str, attempt: int = 1, request_id: str | None = None
    ) -> InvocationResult:
        function = self.function(logical_id)
        stats = self._stats[logical_id]
        with self._lock:
            stats.in_flight += 1
            stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            result = function.invoke(event, request_id=request_id)
        finally:
            with self._lock:
                stats.in_flight -= 1
        throttled = result.error is not None and result.error.get("errorType") == _THROTTLE_ERROR_TYPE
        record = InvocationRecord(logical_id, source, attempt, event, result)
        with self._lock:
            if throttled:
                stats.throttles += 1
            else:
                stats.invocations += 1
                stats.errors += 0 if result.ok else 1
            self._logs.extend(result.logs)
            self._records.append(record)
        if self.on_result is not None:
            try:
                self.on_result(record)
            except Exception:
                logger.exception("on_result callback failed")
        return result

    def invoke(self, logical_id: str, event: Any) -> InvocationResult:
        """Synchronous (RequestResponse) invoke, counted and logged like the others."""
        return self._run(logical_id, event, "sync")

    def invoke_async(self, logical_id: str, event: Any) -> str:
        """Asynchronous (Event) invoke: queue the event, return its request id (as Lambda's 202)."""
        return self._accept(logical_id, event, json.dumps(event))

    # --- asynchronous invocation ----------------------------------------------------------

    def _async_queue(self, logical_id: str) -> _DelayQueue:
        with self._lock:
            if self._closed:
                raise RuntimeError("delivery is closed")
            if logical_id not in self._async_queues:
                self.function(logical_id)
                delay_queue = _DelayQueue()
                self._async_queues[logical_id] = delay_queue
                for index in range(max(1, self.concurrency_of(logical_id))):
                    self._spawn(f"async-{logical_id}-{index}", self._async_worker, logical_id, delay_queue)
            return self._async_queues[logical_id]

    def _invoke_config(self, logical_id: str) -> dict[str, Any]:
        return self.stack.function(logical_id).event_invoke_config or {}

    def _accept(self, logical_id: str, event: Any, body: str) -> str:
        delay_queue = self._async_queue(logical_id)
        max_age = float(
            self._invoke_config(logical_id).get("MaximumEventAgeInSeconds", DEFAULT_MAX_EVENT_AGE_S)
        )
        now = time.monotonic()
        item = _AsyncEvent(event, body, str(uuid.uuid4()), now, now + max_age * self.time_scale)
        with self._lock:
            self._stats[logical_id].async_queued += 1
        delay_queue.put(item, now)
        return item.request_id

    def _async_worker(self, logical_id: str, delay_queue: _DelayQueue) -> None:
        while (item := delay_queue.get()) is not None:
            try:
                # Closed: no new invocation (a cold one started now would outlive the close).
                requeue_at = None if self._stop.is_set() else self._attempt(logical_id, item)
            except Exception:
                if not self._stop.is_set():
                    logger.exception("%s: async invocation failed in the delivery", logical_id)
                requeue_at = None
            if requeue_at is not None and not self._stop.is_set():
                delay_queue.requeue(item, requeue_at)
                continue
            delay_queue.done()
            with self._lock:
                self._stats[logical_id].async_queued -= 1

    def _attempt(self, logical_id: str, item: _AsyncEvent) -> float | None:
        """Run one attempt; the monotonic time to try again, or None when the event is done."""
        if time.monotonic() >= item.expires_at:
            with self._lock:
                self._stats[logical_id].expired += 1
            self._fail(logical_id, item, "EventAgeExceeded")
            return None
        result = self._run(logical_id, item.event, "async", item.attempts + 1, item.request_id)
        if self._stop.is_set():
            return None
        item.last_result = result
        error_type = (result.error or {}).get("errorType")
        if error_type == _THROTTLE_ERROR_TYPE:
            first, ceiling = THROTTLE_BACKOFF_S
            delay = min(ceiling, first * 2.0**item.throttles) * self.time_scale
            item.throttles += 1
            return min(time.monotonic() + delay, item.expires_at)
        item.attempts += 1
        if result.ok:
            return None
        max_retries = int(
            self._invoke_config(logical_id).get("MaximumRetryAttempts", DEFAULT_MAX_RETRY_ATTEMPTS)
        )
        if item.attempts > max_retries:
            self._fail(logical_id, item, "RetriesExhausted")
            return None
        with self._lock:
            self._stats[logical_id].retries += 1
        delay = RETRY_DELAYS_S[min(item.attempts, len(RETRY_DELAYS_S)) - 1] * self.time_scale
        # An event that ages out while it waits is discarded then, not at its retry time.
        return min(time.monotonic() + delay, item.expires_at)

    def _fail(self, logical_id: str, item: _AsyncEvent, condition: str) -> None:
        spec = self.stack.function(logical_id)
        result = item.last_result
        if result is None or result.error is None:
            error_code, message = THROTTLED_ERROR_CODE, "Rate Exceeded."
        elif result.error.get("errorType") == _THROTTLE_ERROR_TYPE:
            error_code, message = (
                THROTTLED_ERROR_CODE,
                str(result.error.get("errorMessage") or "Rate Exceeded."),
            )
        else:
            error_code, message = FUNCTION_ERROR_CODE, str(result.error.get("errorMessage") or "")
            message = message or str(result.error.get("errorType") or "")
        if spec.dead_letter_queue is not None:
            attributes = dead_letter_attributes(item.request_id, error_code, message)
            try:
                self._sqs.send_message(
                    QueueUrl=self.queue_url(spec.dead_letter_queue.target_arn),
                    MessageBody=item.body,
                    MessageAttributes=attributes,
                )
            except (ClientError, BotoCoreError, ValueError):
                logger.exception("%s: could not send event %s to its DLQ", logical_id, item.request_id)
            else:
                with self._lock:
                    self._stats[logical_id].dlq_sends += 1
                return
        with self._lock:
            self._stats[logical_id].dropped += 1
        logger.error(
            "%s: DROPPED async event %s after %d attempt(s) (%s: %s); the function has no "
            "DeadLetterQueue, so Lambda discards it",
            logical_id,
            item.request_id,
            item.attempts,
            condition,
            message[:200],
        )

    def queue_url(self, queue_arn: str) -> str:
        """The URL of the queue with this ARN (cached)."""
        with self._lock:
            if queue_arn in self._queue_urls:
                return self._queue_urls[queue_arn]
        parts = queue_arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise ValueError(f"not an SQS queue ARN: {queue_arn}")
        url = self._sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
        with self._lock:
            self._queue_urls[queue_arn] = url
        return url

    # --- S3 routing -----------------------------------------------------------------------

    def _route_s3(self, source: _SourceQueue) -> None:
        while not self._stop.is_set():
            accepted = 0
            try:
                with source.lock:
                    messages = self._sqs.receive_message(
                        QueueUrl=source.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
                    ).get("Messages", [])
                    for message in messages:
                        body = message.get("Body", "")
                        if not is_s3_test_event(body):
                            try:
                                event = json.loads(body)
                            except ValueError:
                                logger.error("%s: discarding a non-JSON S3 notification", source.function)
                            else:
                                self._route_s3_event(source.function, event, body)
                                accepted += 1
                        # Accepted into the async queue (or not an event): S3 is done with it.
                        self._sqs.delete_message(QueueUrl=source.url, ReceiptHandle=message["ReceiptHandle"])
            except (ClientError, BotoCoreError, RuntimeError):
                if self._stop.is_set():
                    return
                logger.exception("%s: S3 event routing failed; retrying", source.function)
            if not accepted:
                self._stop.wait(self.poll_interval_s)

    def _route_s3_event(self, logical_id: str, event: Any, body: str) -> None:
        with self._lock:
            if self._holding:
                self._held.append((logical_id, event, body))
                return
        self._accept(logical_id, event, body)
        if self.duplicate_s3_events:
            self._accept(logical_id, event, body)

    def hold(self) -> None:
        """From now on, keep S3 events back until ``release_held()`` (as ``hold_s3_events``)."""
        with self._lock:
            self._holding = True

    def held(self) -> int:
        """How many S3 events are held back (``hold_s3_events``)."""
        with self._lock:
            return len(self._held)

    def release_held(self, *, reverse: bool = True, keep_holding: bool = False) -> int:
        """Hand the held S3 events to their functions, the newest first unless ``reverse`` is
        False; then stop holding (unless ``keep_holding``). Returns how many were released."""
        with self._lock:
            held, self._held = self._held, []
            self._holding = keep_holding
        for logical_id, event, body in reversed(held) if reverse else held:
            self._accept(logical_id, event, body)
            if self.duplicate_s3_events:
                self._accept(logical_id, event, body)
        return len(held)

    # --- SQS event source mappings ---------------------------------------------------------

    def _start_sqs_poller(self, logical_id: str, event_name: str, props: Mapping[str, Any]) -> None:
        if str(props.get("Enabled", True)).lower() == "false":
            logger.info("%s.%s: event source mapping disabled", logical_id, event_name)
            return
        if props.get("FilterCriteria"):
            logger.warning("%s.%s: FilterCriteria are not applied locally", logical_id, event_name)
        queue_arn = str(props["Queue"])
        url = self.queue_url(queue_arn)
        source = _SourceQueue(url, queue_arn.rsplit(":", 1)[-1], "event-source", logical_id)
        self._sources.append(source)
        batch_size = max(1, int(props.get("BatchSize", DEFAULT_SQS_BATCH_SIZE)))
        report_failures = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])
        scaling = props.get("ScalingConfig") or {}
        max_batches = int(scaling.get("MaximumConcurrency", 0)) or max(1, self.concurrency_of(logical_id))
        executor = ThreadPoolExecutor(max_batches, thread_name_prefix=f"delivery-sqs-{logical_id}")
        self._executors.append(executor)
        self._register_redrive_target(url, logical_id)
        mapping = _SqsMapping(source, queue_arn, batch_size, report_failures, max_batches, executor)
        self._spawn(f"sqs-poller-{logical_id}-{event_name}", self._poll_sqs, mapping)

    def _receive_batch(self, source: _SourceQueue, batch_size: int) -> list[MessageTypeDef]:
        """Up to ``batch_size`` messages, gathered the way Lambda's poller does (10 per receive)."""
        messages: list[MessageTypeDef] = []
        try:
            with source.lock:
                while len(messages) < batch_size:
                    received = self._sqs.receive_message(
                        QueueUrl=source.url,
                        MaxNumberOfMessages=min(10, batch_size - len(messages)),
                        WaitTimeSeconds=0,
                        AttributeNames=["All"],
                        MessageAttributeNames=["All"],
                    ).get("Messages", [])
                    messages += received
                    if not received:
                        break
                if messages:
                    source.held += len(messages)
                    source.batches += 1
        except (ClientError, BotoCoreError):
            if not self._stop.is_set():
                logger.exception("%s: ReceiveMessage on %s failed", source.function, source.name)
        return messages

    def _poll_sqs(self, mapping: _SqsMapping) -> None:
        source, batch_size, executor = mapping.source, mapping.batch_size, mapping.executor
        queue_arn, report_failures = mapping.queue_arn, mapping.report_failures
        slots = threading.Semaphore(mapping.max_batches)
        while not self._stop.is_set():
            if not slots.acquire(timeout=self.poll_interval_s):
                continue
            messages = self._receive_batch(source, batch_size)
            if not messages:
                slots.release()
                self._stop.wait(self.poll_interval_s)
                continue

            def process(batch: list[MessageTypeDef] = messages) -> None:
                try:
                    self._process_batch(source, queue_arn, batch, report_failures)
                except Exception:
                    if not self._stop.is_set():
                        logger.exception("%s: SQS batch processing failed", source.function)
                finally:
                    with source.lock:
                        source.held -= len(batch)
                        source.batches -= 1
                    slots.release()

            try:
                executor.submit(process)
            except RuntimeError:  # shut down while closing
                return

    def _process_batch(
        self, source: _SourceQueue, queue_arn: str, messages: list[MessageTypeDef], report_failures: bool
    ) -> None:
        event = {"Records": [sqs_event_record(m, queue_arn, self.stack.region) for m in messages]}
        result = self._run(source.function, event, "sqs")
        if self._stop.is_set() or not result.ok:
            return  # nothing deleted: the messages come back after their visibility timeout
        message_ids = [m["MessageId"] for m in messages]
        keep = _failed_message_ids(result.payload, message_ids) if report_failures else set()
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]}
            for index, m in enumerate(messages)
            if m["MessageId"] not in keep
        ]
        for start in range(0, len(entries), 10):
            response = self._sqs.delete_message_batch(
                QueueUrl=source.url, Entries=entries[start : start + 10]
            )
            for failure in response.get("Failed", []):
                # E.g. the handler deleted the message itself: nothing left to do.
                logger.debug("%s: delete of %s failed: %s", source.function, failure["Id"], failure["Code"])

    # --- sinks (for stats) ----------------------------------------------------------------

    def _register_sinks(self, spec: FunctionSpec) -> None:
        if spec.dead_letter_queue is None:
            return
        arn = spec.dead_letter_queue.target_arn
        with contextlib.suppress(ClientError, ValueError):
            url = self.queue_url(arn)
            self._sinks.setdefault(url, (arn.rsplit(":", 1)[-1], "dead-letter", spec.logical_id))

    def _register_redrive_target(self, url: str, logical_id: str) -> None:
        with contextlib.suppress(ClientError, ValueError):
            attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
            policy = attributes.get("Attributes", {}).get("RedrivePolicy")
            if policy:
                arn = str(json.loads(policy)["deadLetterTargetArn"])
                self._sinks.setdefault(
                    self.queue_url(arn), (arn.rsplit(":", 1)[-1], "redrive-target", logical_id)
                )

    # --- observation ----------------------------------------------------------------------

    @property
    def logs(self) -> list[str]:
        """Every log line of every invocation so far (a copy)."""
        with self._lock:
            return list(self._logs)

    @property
    def records(self) -> list[InvocationRecord]:
        """Every invocation so far, in completion order (a copy)."""
        with self._lock:
            return list(self._records)

    def _queue_counts(self, url: str) -> tuple[int, int, int]:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    @contextlib.contextmanager
    def _sources_locked(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for source in self._sources:
                stack.enter_context(source.lock)
            yield

    def stats(self) -> DeliveryStats:
        """Counters per function and message counts per queue (sources and sinks)."""
        queues: dict[str, QueueStats] = {}
        with self._sources_locked():
            held = {source.url: source.held for source in self._sources}
            for source in self._sources:
                visible, not_visible, delayed = self._queue_counts(source.url)
                queues[source.name] = QueueStats(
                    source.name,
                    source.url,
                    source.role,
                    source.function,
                    visible,
                    not_visible,
                    delayed,
                    source.held,
                )
            with self._lock:
                functions = {name: replace(stats) for name, stats in self._stats.items()}
        for url, (name, role, function) in self._sinks.items():
            if name not in queues:
                visible, not_visible, delayed = self._queue_counts(url)
                queues[name] = QueueStats(
                    name, url, role, function, visible, not_visible, delayed, held.get(url, 0)
                )
        return DeliveryStats(functions, queues)

    def is_idle(self, *, include_waiting: bool = False) -> bool:
        """Nothing running or queued, and no visible (or, optionally, invisible) source messages."""
        with self._sources_locked():
            with self._lock:
                if any(stats.in_flight or stats.async_queued for stats in self._stats.values()):
                    return False
            for source in self._sources:
                if source.batches:
                    return False
                visible, not_visible, delayed = self._queue_counts(source.url)
                if visible or delayed or (include_waiting and not_visible):
                    return False
        return True

    def wait_until_idle(self, timeout_s: float = 30.0, *, include_waiting: bool = False) -> bool:
        """Wait for `is_idle`; False on timeout. `include_waiting` also awaits invisible messages."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.is_idle(include_waiting=include_waiting):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval_s)
