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
commands out with the wall clock and the invocation's remaining time, through the pool's items in
DynamoDB (``capacity_store.PoolStore``). ``capacity_requeue.CapacityRequeue`` hands waiting SQS
work back. The simulator in ``bench/sim`` drives the same core against simulated stores and time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from transcriber.domain import capacity_core as core
from transcriber.domain.capacity_core import (
    BACKFILL_LANE,
    LIVE_LANE,
    Lease,
    PoolSettings,
    PoolState,
    Rng,
)
from transcriber.errors import ErrorDetails, RetryableError, TranscriptionError
from transcriber.observability import logger, metrics
from transcriber.services.capacity_requeue import CapacityRequeue
from transcriber.services.capacity_store import PoolStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from transcriber.config import Settings

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
GAVE_UP_REASON = "deepgram-timeout"  # we stopped waiting for the answer; Deepgram may not have


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
        self._store = PoolStore(pool, dynamodb, clock)
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
                return self._store.write_lease(command.lease)
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
                answer = self._store.delete(command)

    def hold(self, lease: Lease) -> None:
        """The request timed out at our end but Deepgram may still be working on it: keep its
        slots until Deepgram's processing limit instead of releasing them (a log line on failure:
        the lease then ends at its expiry)."""
        self._store.extend(core.hold(lease), "Could not hold a capacity slot")

    def renew(self, lease: Lease) -> None:
        """Extend the lease by its term (``PoolSettings.lease_term_s``); a failure is logged (the
        next renewal, a third of the term later, tries again)."""
        self._store.extend(core.renew(self.pool, lease, self._clock()), "Could not renew a capacity lease")

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
        """One strongly consistent read of the pool (``PoolStore.read``)."""
        return self._store.read()

    # -- AIMD -------------------------------------------------------------------------------------
    def throttled(self, lease: Lease, retry_after_s: float | None) -> None:
        """Deepgram answered 429 although we held a slot: halve the effective pool, once per
        congestion episode (a lease taken before the last decrease's hold ended belongs to the
        episode that decrease already answered)."""
        step = core.decrease(self.pool, lease, retry_after_s, self._clock())
        if not self._store.lower(step):
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


def build_governor(
    settings: Settings, dynamodb: DynamoDBClient, *, sleep: Callable[[float], None] = time.sleep
) -> Governor:
    """The governor the settings ask for: a DynamoDB pool, or none without ``CAPACITY_TABLE``."""
    if settings.capacity is None:
        return Unlimited()
    return CapacityGovernor(settings.capacity, dynamodb, sleep=sleep)
