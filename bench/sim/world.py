"""The simulated world around the governor's real core (``transcriber.domain.capacity_core``).

* **DynamoDB**: the pool's partition, with the product's conditional writes (a slot is taken when
  free or expired; a release deletes only its own holder's item; one decrease per congestion),
  latency drawn from a log-normal (single-digit milliseconds with a tail), the per-partition
  limits (3,000 read and 1,000 write units a second) and throttling on demand (a storm); a
  throttled call is retried once by the SDK (standard mode, 2 attempts, ``transcriber.services.clients``).
* **Deepgram**: a project limit for every request and a lower one for audio-intelligence requests
  (a 429 above either, not billed); a request that is accepted is billed and holds its place until
  its service time ends, even when the client that sent it has died.
* **Lambda**: per-function concurrency; asynchronous events throttled and retried with a backoff
  from 1 s to 5 min, function errors retried twice (1 and 2 minutes later), events older than
  the maximum age or out of retries go to the dead-letter queue, which the retry function (2 at
  once) works through with the product's policy; S3 Batch Operations tasks invoked synchronously
  by a fixed number of workers, a ``TemporaryFailure`` retried; cold starts; sandboxes killed.
* **One object's invocation**: the workflow's per-object decisions that matter for capacity (the
  idempotency record, in-invocation retries, the hand-back when waiting for capacity is over,
  the lane and the class of the request), with the core's commands answered by the above.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from bench.sim import product
from bench.sim.engine import Draws, Loop, Proc
from transcriber.domain import capacity_core as core
from transcriber.domain.capacity_core import BACKFILL_LANE, LIVE_LANE, PoolSettings, PoolState
from transcriber.pipeline.workflow import IN_PROGRESS_REASON
from transcriber.services.capacity import CAPACITY_REASON

# What the product does not count as a failure of the object: it waits for it, using no attempt.
WAITS = frozenset({CAPACITY_REASON, IN_PROGRESS_REASON})
# In-invocation retries of a Deepgram request: the product's policy (template's attempts).
_REQUESTS = product.request_policy()
REQUEST_ATTEMPTS = _REQUESTS.max_attempts
RETRY_BASE_S, RETRY_CAP_S = _REQUESTS.base_delay_s, _REQUESTS.max_delay_s
RETRY_RESERVE_S, MIN_REQUEST_S = _REQUESTS.reserve_s, _REQUESTS.min_request_s
# Lambda's asynchronous invocation (docs: "How Lambda handles errors and retries with asynchronous
# invocation"): retries 1 then 2 minutes apart, as many as the template's AsyncRetryAttempts;
# throttled events retried from 1 s up to 5 min.
ASYNC_RETRY_DELAYS_S = (60.0, 120.0)[: int(product.setting("Failures", "AsyncRetryAttempts"))]
MAX_EVENT_AGE_S = float(product.setting("Failures", "MaximumEventAgeSeconds"))
THROTTLE_BACKOFF_MAX_S = 300.0
FUNCTION_TIMEOUT_S = float(product.setting("Functions", "FunctionTimeout"))
# The retry function: its concurrency on the queue (template) and its backoff (the product's policy).
RETRY_FUNCTION_CONCURRENCY = product.retry_function_concurrency()
# A backfill task handed to the dead-letter queue is delayed by a jitter of up to this (services/capacity.py).
DEFERRAL_JITTER_S = 30.0
_DEAD_LETTERS = product.dead_letter_policy()
DLQ_MAX_ATTEMPTS = _DEAD_LETTERS.max_attempts
DLQ_BASE_S, DLQ_CAP_S = float(_DEAD_LETTERS.base_delay_s), float(_DEAD_LETTERS.max_delay_s)
BATCH_TASK_ATTEMPTS = product.batch_task_attempts()
# DynamoDB: per-partition limits, item size of a lease, unit sizes.
PARTITION_RCU, PARTITION_WCU = 3000.0, 1000.0
LEASE_ITEM_BYTES = 150
# Where a doomed sandbox dies, and how often: while it waits for a slot (polling, or with a
# conditional write in flight), in the middle of its Deepgram request, between Deepgram's answer
# and the transcript's write, or while it releases its slot.
KILL_POINTS = {"waiting": 0.3, "request": 0.4, "after-answer": 0.15, "release": 0.15}


@dataclass(slots=True)
class Version:
    """One object version and what happened to it."""

    index: int
    service_s: float  # Deepgram's processing time for its audio
    arrived_at: float
    ceiling: int | None = None
    lane: str = LIVE_LANE
    stack: int = 0
    live: bool = True
    done_at: float = -1.0
    in_progress_until: float = -math.inf
    billable: int = 0
    answered: int = 0  # 200s
    throttled: int = 0  # 429s
    lost: str = ""  # parked or dropped: why


@dataclass(slots=True)
class Invocation:
    version: Version
    function: Function
    deadline: float
    cold: bool
    kill_point: str | None  # where it is to be killed (``KILL_POINTS``), if it is
    lease: core.Lease | None = None
    proc: Proc | None = None
    waiting: str | None = None  # the kind of request it waits for a slot for, while it does


@dataclass
class Function:
    name: str
    concurrency: int
    timeout_s: float = FUNCTION_TIMEOUT_S
    running: int = 0
    idle: int = 0


@dataclass(frozen=True, slots=True)
class Listen:
    """The Deepgram request, sent while ``lease`` is held; answer: 200, 429 or "timeout"."""

    invocation: Invocation


@dataclass(frozen=True, slots=True)
class Aws:
    """Another AWS call (S3, the idempotency table): only its time."""

    seconds: float


class Handback(Exception):
    """The invocation hands the object back (RetryableError in the product)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Counters:
    ddb_calls: int = 0
    ddb_throttled: int = 0
    queries: int = 0
    puts: int = 0
    deletes: int = 0
    decreases: int = 0
    holds: int = 0
    renewals: int = 0
    timeouts: int = 0  # requests the client gave up on (Deepgram worked on)
    requests: int = 0
    answered: int = 0
    throttled_429: int = 0
    billable: int = 0
    kills: int = 0
    # A killed invocation's slots, watched in the table until they are takeable again (renewals
    # stopped): late when that is past the invocation's deadline or past the kill plus one term.
    kills_at: dict[str, int] = field(default_factory=dict)  # kill point -> kills
    killed_slots: int = 0
    killed_slots_late: int = 0
    killed_slot_back_max_s: float = 0.0
    # The governor's own unexpired leases in the table, at most (Deepgram's 429s aside).
    max_slot_leases: int = 0
    max_ceiling_leases: int = 0
    max_backfill_leases: int = 0
    max_in_flight: int = 0
    max_ai_in_flight: int = 0
    first_request: float = math.inf
    last_answer: float = 0.0
    invocations: int = 0
    cold_starts: int = 0
    lambda_throttles: int = 0
    dead_lettered: int = 0
    deferred: int = 0  # backfill tasks whose lane was full or whose object was in progress, handed to the DLQ
    parked: int = 0
    capacity_handbacks: int = 0


@dataclass
class Settings:
    pool: PoolSettings
    deepgram_cap: int
    ai_cap: int = 10
    kill_share: float = 0.0
    storm: tuple[float, float, float] | None = None  # start, end, share of calls throttled
    max_event_age_s: float = MAX_EVENT_AGE_S


class PoolTable:
    """The pool's partition: the lease items and the limit item, with DynamoDB's conditions."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, str, float]] = {}  # key -> holder, lane, expires_at
        self.limit: core.Limit | None = None
        self._version = 0
        self._cached: tuple[int, float, frozenset[str], dict[str, int]] | None = None

    def read(self, now: float) -> PoolState:
        cached = self._cached
        if cached is None or cached[0] != self._version or now >= cached[1]:
            held: set[str] = set()
            lanes: dict[str, int] = {}
            next_expiry = math.inf
            for key, (_, lane, expires_at) in self.leases.items():
                if expires_at > now:
                    held.add(key)
                    next_expiry = min(next_expiry, expires_at)
                    if key.startswith("slot#"):
                        lanes[lane] = lanes.get(lane, 0) + 1
            cached = self._cached = (self._version, next_expiry, frozenset(held), lanes)
        limit = self.limit
        if limit is None:
            return PoolState(now, cached[2], cached[3])
        return PoolState(now, cached[2], cached[3], limit.reduced_to, limit.hold_until, limit.decreased_at)

    def put(self, lease: core.Lease) -> bool:
        leases = self.leases
        seen = None if lease.seen.reduced_to is None else lease.seen.decreased_at
        if (None if self.limit is None else self.limit.decreased_at) != seen:
            return False  # the product's transaction checks the limit item is the one it read
        for key in lease.keys:
            found = leases.get(key)
            if found is not None and not found[2] < lease.taken_at:
                return False
        for key in lease.keys:
            leases[key] = (lease.holder, lease.lane, lease.expires_at)
        self._version += 1
        return True

    def held(self, now: float) -> tuple[int, int, int]:
        """Unexpired leases now: slots, ceiling slots, slots in the backfill lane."""
        slots = ceilings = backfill = 0
        for key, (_, lane, expires_at) in self.leases.items():
            if expires_at > now:
                if key.startswith("slot#"):
                    slots += 1
                    backfill += lane == BACKFILL_LANE
                elif not key.startswith("lane-"):
                    ceilings += 1
        return slots, ceilings, backfill

    def delete(self, key: str, holder: str) -> None:
        found = self.leases.get(key)
        if found is not None and found[0] == holder:
            del self.leases[key]
            self._version += 1

    def hold(self, step: core.Hold) -> None:
        found = self.leases.get(step.key)
        if found is not None and found[0] == step.holder:
            self.leases[step.key] = (found[0], found[1], step.until)
            self._version += 1

    def decrease(self, step: core.Decrease) -> None:
        if self.limit is None or self.limit.hold_until < step.taken_at:
            self.limit = step.limit


@dataclass
class World:
    settings: Settings
    seed: int
    loop: Loop = field(default_factory=Loop)
    counters: Counters = field(default_factory=Counters)
    table: PoolTable = field(default_factory=PoolTable)
    versions: list[Version] = field(default_factory=list)
    retry_function: Function = field(default_factory=lambda: Function("retry", RETRY_FUNCTION_CONCURRENCY))

    def __post_init__(self) -> None:
        self.draw = Draws(self.seed)
        self.core_rng = Draws(self.seed + 1).rng  # the governor's own draws: jitter, slot order, holder ids
        self.in_flight = 0
        self.ai_in_flight = 0
        # While anything waits for a slot: Deepgram's busy slot-seconds, and the slot-seconds the
        # caps would let the waiting work use (see ``_account``).
        self.waiting = {"plain": 0, "ai": 0, "backfill": 0}
        self.flying = {"plain": 0, "ai": 0, "backfill": 0}
        self.busy_s = 0.0
        self.usable_s = 0.0
        self._accounted = 0.0
        self.accepted: list[tuple[float, float]] = []  # each billed request: Deepgram's start, end
        self._window = (-1, 0.0, 0.0)  # second, read units, write units used in it
        self._dlq: deque[tuple[Version, int]] = deque()
        self._handlers: dict[type, Callable[[Proc, Any], None]] = {
            core.Query: self._dynamodb,
            core.ConditionalPut: self._dynamodb,
            core.Delete: self._dynamodb,
            core.Decrease: self._dynamodb,
            core.Hold: self._dynamodb,
            core.Sleep: self._sleep,
            Aws: self._sleep,
            Listen: self._listen,
        }

    # -- processes ---------------------------------------------------------------------------------
    def start(
        self, function: Function, version: Version, done: Callable[[Version, str | None], None]
    ) -> None:
        """Run one invocation of ``function`` for ``version`` (the caller checked its concurrency)."""
        function.running += 1
        cold = function.idle == 0
        if cold:
            self.counters.cold_starts += 1
        else:
            function.idle -= 1
        self.counters.invocations += 1
        point = None
        if self.settings.kill_share > 0 and self.draw.chance(self.settings.kill_share):
            point = self.draw.rng.choices(tuple(KILL_POINTS), tuple(KILL_POINTS.values()))[0]
        invocation = Invocation(version, function, self.loop.now + function.timeout_s, cold, point)
        invocation.proc = Proc(self._invocation(invocation), (invocation, done))
        self._step(invocation.proc, None)

    def _step(self, proc: Proc, answer: Any) -> None:
        try:
            command = proc.gen.send(answer)
        except StopIteration:
            self._ended(proc, None)
            return
        except Handback as handback:
            self._ended(proc, handback.reason)
            return
        self._handlers[type(command)](proc, command)

    def _resume(self, arg: tuple[Proc, Any]) -> None:
        proc, answer = arg
        if proc.alive:
            self._step(proc, answer)

    def _ended(self, proc: Proc, error: str | None, *, killed: bool = False) -> None:
        proc.alive = False
        invocation, done = proc.data
        invocation.function.running -= 1
        if not killed:  # a killed sandbox is gone: the next invocation starts a new one
            invocation.function.idle += 1
        done(invocation.version, error)

    def kill(self, proc: Proc) -> None:
        if not proc.alive:
            return
        invocation: Invocation = proc.data[0]
        self.counters.kills += 1
        point = invocation.kill_point or "request"
        self.counters.kills_at[point] = self.counters.kills_at.get(point, 0) + 1
        lease = invocation.lease
        if invocation.waiting is not None:  # it waits no more
            self._account()
            self.waiting[invocation.waiting] -= 1
        proc.gen.close()
        self._ended(proc, "killed", killed=True)
        if lease is not None:  # written (its answer perhaps still on the way), not yet released
            for key in lease.keys:
                self.counters.killed_slots += 1
                self._watch_killed((key, lease.holder, self.loop.now, invocation.deadline))

    def _watch_killed(self, arg: tuple[str, str, float, float]) -> None:
        """Follow a killed holder's slot in the table until it is takeable again: gone, or expired
        as the store sees it (a renewal that went on after the kill would push that later)."""
        key, holder, killed_at, deadline = arg
        now = self.loop.now
        found = self.table.leases.get(key)
        if found is not None and found[0] == holder and found[2] > now:
            self.loop.at(found[2], self._watch_killed, arg)
            return
        counters, term = self.counters, self.settings.pool.lease_term_s
        counters.killed_slot_back_max_s = max(counters.killed_slot_back_max_s, now - killed_at)
        if now > deadline or (term is not None and now > killed_at + term + 1e-6):
            counters.killed_slots_late += 1

    # -- one object: the workflow's decisions ----------------------------------------------------
    def _invocation(self, invocation: Invocation) -> Generator[Any, Any]:
        version, now = invocation.version, self.loop
        if invocation.cold:
            yield Aws(self.draw.lognormal(0.45, 0.35))  # init: imports, settings, clients
        yield Aws(self._aws_call())  # the idempotency record's PutItem (its own table)
        if version.done_at >= 0:
            return  # replayed: no Deepgram request
        if version.in_progress_until > now.now:
            raise Handback(IN_PROGRESS_REASON)
        # Powertools: the in-progress record expires with the invocation; deleted if it raises.
        version.in_progress_until = invocation.deadline
        try:
            yield from self._call_deepgram(invocation)
        except Handback:
            version.in_progress_until = -math.inf
            raise
        put_s = self.draw.lognormal(0.06, 0.5)  # the transcript's PUT
        if invocation.kill_point == "after-answer":
            self._kill_within(invocation, put_s)
        yield Aws(put_s)
        yield Aws(self._aws_call())  # the idempotency record completes
        version.done_at = now.now
        version.in_progress_until = -math.inf

    def _call_deepgram(self, invocation: Invocation) -> Generator[Any, Any]:
        version, pool = invocation.version, self.settings.pool
        attempt = 0
        while True:
            attempt += 1
            kind = _kind(version)
            self._account()
            self.waiting[kind] += 1
            invocation.waiting = kind
            acquiring = core.acquire(
                pool,
                lane=version.lane,
                classes=() if version.ceiling is None else (core.INTELLIGENCE,),
                deadline=invocation.deadline,
                rng=self.core_rng,
            )
            if invocation.kill_point == "waiting" and attempt == 1:
                acquiring = self._killed_while(invocation, acquiring, self.draw.rng.randint(1, 4))
            outcome = yield from acquiring
            self._account()
            self.waiting[kind] -= 1
            invocation.waiting = None
            if isinstance(outcome, core.Exhausted) and outcome.store_failed:
                yield core.Sleep(self._retry_delay(invocation, attempt, "capacity-store-error"))
                continue
            if isinstance(outcome, core.Exhausted):
                self.counters.capacity_handbacks += 1
                raise Handback(CAPACITY_REASON)
            lease = invocation.lease = outcome.lease
            every = lease.renew_every(pool)
            if every is not None:  # the product's renewal thread, while the request runs
                self.loop.at(self.loop.now + every, self._renew, (invocation.proc, lease, every))
            status = yield Listen(invocation)
            if status == 429:
                yield core.decrease(pool, lease, None, self.loop.now)
            if status == "timeout":  # the product's slot(): held, not released, after a timeout
                yield from core.hold(lease)
            else:
                if invocation.kill_point == "release":
                    self._kill_within(invocation, 0.012)  # about one Delete's latency
                yield from core.release(lease, self.core_rng)
            invocation.lease = None
            if status == 200:
                return
            yield core.Sleep(self._retry_delay(invocation, attempt, str(status)))

    def _killed_while(
        self, invocation: Invocation, steps: Generator[Any, Any, Any], nth: int
    ) -> Generator[Any, Any, Any]:
        """``steps``, with the invocation killed during its ``nth`` command (a poll's sleep, a read,
        a conditional write the store may already have applied), or just after the last one."""
        answer, issued = None, 0
        while True:
            try:
                command = steps.send(answer)
            except StopIteration as finished:
                if issued < nth:
                    self._kill_within(invocation, 0.01)
                return finished.value
            issued += 1
            if issued == nth:
                self._kill_within(invocation, command.seconds if isinstance(command, core.Sleep) else 0.008)
            answer = yield command

    def _kill_within(self, invocation: Invocation, seconds: float) -> None:
        assert invocation.proc is not None
        self.loop.at(self.loop.now + self.draw.uniform(0.0, seconds), self.kill, invocation.proc)

    def _retry_delay(self, invocation: Invocation, attempt: int, reason: str) -> float:
        """InvocationRetryPolicy: full jitter, while one more request fits in the time left."""
        if attempt >= REQUEST_ATTEMPTS:
            raise Handback(reason)
        delay = self.draw.uniform(0.0, min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempt - 1)))
        if invocation.deadline - self.loop.now - delay < RETRY_RESERVE_S + MIN_REQUEST_S:
            raise Handback(reason)
        return delay

    def _aws_call(self) -> float:
        return self.draw.lognormal(0.012, 0.5)

    # -- commands -----------------------------------------------------------------------------------
    def _sleep(self, proc: Proc, command: core.Sleep | Aws) -> None:
        self.loop.at(self.loop.now + command.seconds, self._resume, (proc, None))

    def _dynamodb(self, proc: Proc, command: Any, retried: bool = False) -> None:
        """One call on the pool's partition, applied when it is made, answered after its latency."""
        counters, now = self.counters, self.loop.now
        counters.ddb_calls += 1
        kind = type(command)
        read = kind is core.Query
        if read:
            units = math.ceil((len(self.table.leases) + 1) * LEASE_ITEM_BYTES / 4096)
            latency = self.draw.lognormal(0.004 + 0.00002 * len(self.table.leases), 0.5)
        else:
            keys = len(command.lease.keys) if kind is core.ConditionalPut else 1
            units = keys if keys == 1 else 2 * keys  # a transaction costs two units per item
            latency = self.draw.lognormal(0.005 * (2 if keys > 1 else 1), 0.5)
        if self._throttled(now, read, units):
            counters.ddb_throttled += 1
            if not retried:  # the SDK's one retry, after its jittered backoff (at most 1 s)
                self.loop.at(now + latency + self.draw.uniform(0.0, 1.0), self._retry_call, (proc, command))
            elif kind is core.Query or kind is core.ConditionalPut:  # the core waits it through
                self.loop.at(now + latency, self._resume, (proc, core.Unavailable(now + latency)))
            else:  # the release is told it failed (it may try again); a decrease is only logged
                self.loop.at(now + latency, self._resume, (proc, False))
            return
        answer: Any = None
        if read:
            counters.queries += 1
            answer = self.table.read(now)
        elif kind is core.ConditionalPut:
            counters.puts += 1
            answer = self.table.put(command.lease)
            if answer:  # the slot is the invocation's from now, whether or not it lives to hear so
                proc.data[0].lease = command.lease
                slots, ceilings, backfill = self.table.held(now)
                counters.max_slot_leases = max(counters.max_slot_leases, slots)
                counters.max_ceiling_leases = max(counters.max_ceiling_leases, ceilings)
                counters.max_backfill_leases = max(counters.max_backfill_leases, backfill)
        elif kind is core.Delete:
            counters.deletes += 1
            self.table.delete(command.key, command.holder)
            answer = True
        elif kind is core.Hold:
            counters.holds += 1
            self.table.hold(command)
        else:
            counters.decreases += 1
            self.table.decrease(command)
        self.loop.at(now + latency, self._resume, (proc, answer))

    def _renew(self, arg: tuple[Proc, core.Lease, float]) -> None:
        """One renewal by the lease's holder (a thread beside the request in the product)."""
        proc, lease, every = arg
        if not proc.alive or proc.data[0].lease is not lease:
            return
        now = self.loop.now
        for step in core.renew(self.settings.pool, lease, now):
            self.counters.ddb_calls += 1
            if self._throttled(now, False, 1):  # and the SDK's retry, at once: a simplification
                self.counters.ddb_throttled += 1
                self.counters.ddb_calls += 1
                if self._throttled(now, False, 1):
                    self.counters.ddb_throttled += 1
                    continue
            self.counters.renewals += 1
            self.table.hold(step)
        self.loop.at(now + every, self._renew, arg)

    def _retry_call(self, arg: tuple[Proc, Any]) -> None:
        proc, command = arg
        if proc.alive:
            self._dynamodb(proc, command, retried=True)

    def _throttled(self, now: float, read: bool, units: float) -> bool:
        storm = self.settings.storm
        if storm is not None and storm[0] <= now < storm[1] and self.draw.chance(storm[2]):
            return True
        second, reads, writes = self._window
        if int(now) != second:
            second, reads, writes = int(now), 0.0, 0.0
        if read:
            if reads + units > PARTITION_RCU:
                return True
            reads += units
        else:
            if writes + units > PARTITION_WCU:
                return True
            writes += units
        self._window = (second, reads, writes)
        return False

    def _account(self) -> None:
        """Integrate up to now, while anything waits: busy = requests in flight at Deepgram;
        usable = what the caps allow the work present: the whole pool while a plain live request
        waits, else the ceiling for waiting audio-intelligence requests plus the backfill's share
        for waiting backfill tasks plus what classes with no waiter have in flight."""
        now = self.loop.now
        elapsed, self._accounted = now - self._accounted, now
        waiting, flying = self.waiting, self.flying
        if elapsed <= 0 or not (waiting["plain"] or waiting["ai"] or waiting["backfill"]):
            return
        pool = self.settings.pool
        if waiting["plain"]:
            usable = pool.size
        else:
            usable = self.settings.ai_cap if waiting["ai"] else flying["ai"]
            share = pool.lane_shares.get(BACKFILL_LANE, 1.0)
            usable += max(1, int(pool.size * share)) if waiting["backfill"] else flying["backfill"]
            usable = min(pool.size, usable + flying["plain"])
        self.busy_s += elapsed * self.in_flight
        self.usable_s += elapsed * usable

    def _listen(self, proc: Proc, command: Listen) -> None:
        arrive = self.loop.now + self.draw.lognormal(0.03, 0.3)  # connection and request upload
        self.loop.at(arrive, self._arrive, proc)

    def _arrive(self, proc: Proc) -> None:
        """Deepgram receives the request: 429 over a limit, else it is billed and holds a place."""
        counters, now = self.counters, self.loop.now
        invocation: Invocation = proc.data[0]
        version = invocation.version
        counters.requests += 1
        counters.first_request = min(counters.first_request, now)
        ai = version.ceiling is not None
        if self.in_flight >= self.settings.deepgram_cap or (ai and self.ai_in_flight >= self.settings.ai_cap):
            counters.throttled_429 += 1
            version.throttled += 1
            self.loop.at(now + self.draw.lognormal(0.03, 0.3), self._resume, (proc, 429))
            return
        self._account()
        self.flying[_kind(version)] += 1
        self.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, self.in_flight)
        if ai:
            self.ai_in_flight += 1
            counters.max_ai_in_flight = max(counters.max_ai_in_flight, self.ai_in_flight)
        counters.billable += 1
        version.billable += 1
        service = version.service_s
        self.accepted.append((now, now + service))
        budget = invocation.deadline - now - RETRY_RESERVE_S
        answers = service <= budget
        self.loop.at(now + service, self._served, (proc, answers))
        if not answers:  # the client's read timeout ends first; Deepgram works on (and bills)
            counters.timeouts += 1
            self.loop.at(now + budget, self._resume, (proc, "timeout"))
        if invocation.kill_point == "request":
            self.loop.at(now + self.draw.uniform(0.0, min(service, budget)), self.kill, proc)

    def _served(self, arg: tuple[Proc, bool]) -> None:
        proc, answers = arg
        invocation: Invocation = proc.data[0]
        self._account()
        self.flying[_kind(invocation.version)] -= 1
        self.in_flight -= 1
        if invocation.version.ceiling is not None:
            self.ai_in_flight -= 1
        if proc.alive and answers:
            self.counters.last_answer = self.loop.now
            self.counters.answered += 1
            invocation.version.answered += 1
            self.loop.at(self.loop.now + self.draw.lognormal(0.03, 0.3), self._resume, (proc, 200))

    # -- Lambda: asynchronous events ----------------------------------------------------------------
    def deliver(self, arg: tuple[Function, Version, int, int, float]) -> None:
        """An asynchronous event (S3 notification): run, or throttled and tried again later."""
        function, version, retries, throttles, first_at = arg
        now = self.loop.now
        if now - first_at > self.settings.max_event_age_s:
            self.dead_letter(version)
            return
        if function.running >= function.concurrency:
            self.counters.lambda_throttles += 1
            backoff = min(THROTTLE_BACKOFF_MAX_S, 2.0**throttles) * self.draw.uniform(0.5, 1.0)
            self.loop.at(now + backoff, self.deliver, (function, version, retries, throttles + 1, first_at))
            return

        def done(version: Version, error: str | None) -> None:
            if error is None:
                return
            if retries < len(ASYNC_RETRY_DELAYS_S):
                event = (function, version, retries + 1, 0, first_at)
                self.loop.at(self.loop.now + ASYNC_RETRY_DELAYS_S[retries], self.deliver, event)
            else:
                self.dead_letter(version)

        self.start(function, version, done)

    # -- the dead-letter queue and the retry function ----------------------------------------------
    def dead_letter(self, version: Version, attempts: int = 0, delay: float = 0.0) -> None:
        if attempts == 0 and delay == 0.0:
            self.counters.dead_lettered += 1
        self.loop.at(self.loop.now + delay, self._visible, (version, attempts))

    def _visible(self, message: tuple[Version, int]) -> None:
        self._dlq.append(message)
        self._pump()

    def _pump(self) -> None:
        function = self.retry_function
        while self._dlq and function.running < function.concurrency:
            version, attempts = self._dlq.popleft()
            self.start(function, version, self._retried(attempts + 1))

    def _retried(self, attempt: int) -> Callable[[Version, str | None], None]:
        def done(version: Version, error: str | None) -> None:
            if error in WAITS:  # requeued: no attempt used
                self.dead_letter(version, attempt - 1, self._dlq_delay(1))
            elif error is not None and attempt >= DLQ_MAX_ATTEMPTS:
                self.counters.parked += 1
                version.lost = f"parked: {error}"
            elif error is not None:
                self.dead_letter(version, attempt, self._dlq_delay(attempt))
            self._pump()

        return done

    def _dlq_delay(self, attempt: int) -> float:
        ceiling = min(DLQ_CAP_S, DLQ_BASE_S * 2 ** (attempt - 1))
        return self.draw.uniform(ceiling / 2, ceiling)  # equal jitter

    # -- S3 Batch Operations ------------------------------------------------------------------------
    def batch_job(self, function: Function, versions: list[Version], workers: int) -> None:
        """Tasks invoked synchronously, ``workers`` at a time; TemporaryFailure tried again."""
        tasks: deque[tuple[Version, int]] = deque((version, 0) for version in versions)

        def next_task(_: object = None) -> None:
            if not tasks:
                return
            version, attempts = tasks.popleft()
            if function.running >= function.concurrency:  # TooManyRequests: S3 tries again
                self.counters.lambda_throttles += 1
                tasks.appendleft((version, attempts))
                self.loop.at(self.loop.now + self.draw.uniform(1.0, 5.0), next_task)
                return

            def done(version: Version, error: str | None) -> None:
                if error is None:
                    pass
                elif error in WAITS:  # the product defers it: Succeeded, waits in the DLQ
                    self.counters.deferred += 1
                    # It keeps its lane: the retry function re-runs it in the backfill lane (CapacityLane).
                    self.dead_letter(version, 0, self.draw.uniform(0.001, DEFERRAL_JITTER_S))
                elif attempts + 1 < BATCH_TASK_ATTEMPTS:  # a killed sandbox's task too
                    tasks.append((version, attempts + 1))
                else:
                    version.lost = f"task failed: {error}"
                self.loop.at(self.loop.now + self.draw.uniform(0.01, 0.05), next_task)

            self.start(function, version, done)

        for worker in range(workers):
            self.loop.at(worker * 0.01, next_task)


def _kind(version: Version) -> str:
    if version.ceiling is not None:
        return "ai"
    return "plain" if version.lane == LIVE_LANE else "backfill"


def backfill_lane(version: Version) -> Version:
    version.lane = BACKFILL_LANE
    version.live = False
    return version
