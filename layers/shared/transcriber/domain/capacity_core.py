"""The capacity governor's decisions, without I/O: told the time and the store's answers, it says
what to read, write or wait for (``transcriber.services.capacity`` drives it with DynamoDB and real time).

Taking a lease is a generator: it yields commands and is sent each one's answer.

* ``Query()``: read the pool's partition (strongly consistent); answer: the ``PoolState`` seen,
  which carries the time of the read (the core has no clock of its own);
* ``ConditionalPut(lease)``: write the lease's items if each slot is free or its lease has
  expired at ``lease.taken_at``, and the pool's limit item is still the one the read saw (no
  decrease since), all in one transaction; answer: ``True`` when written, ``False`` when another
  took one or the pool was lowered meanwhile;
* either answered ``Unavailable(now)`` when the store could not serve it for now;
* ``Sleep(seconds)``: wait; answer: ``None``.

It returns ``Acquired`` or, when waiting longer would eat into what the invocation needs after
the wait, ``Exhausted``. Releasing (``release``) and lowering the pool after a 429 (``decrease``)
are one step each: they say which writes to make. Randomness (the jitter, which free slots are
tried, the holder's id) comes from the ``Rng`` the caller passes in.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, Protocol

LIVE_LANE = "live"
BACKFILL_LANE = "backfill"
GENERAL = "slot"  # every request's class: the project's pre-recorded concurrency
INTELLIGENCE = "intelligence"  # summarize, topics, intents, sentiment
ENTITIES = "entities"  # detect_entities
WHISPER = "whisper"  # Whisper Cloud models
CLASSES = (INTELLIGENCE, ENTITIES, WHISPER)
_TRIES_PER_READ = 3  # conditional writes on slots one read saw free, before the next poll
# Deepgram cuts pre-recorded processing at 10 minutes (504): no request holds its place longer.
DEEPGRAM_PROCESSING_LIMIT_S = 600.0
RELEASE_TRIES = 4  # a delete the store failed is tried again: a slot left behind is lost until expiry


class Rng(Protocol):
    """What the core draws on: ``random.Random`` (seeded in a simulation) or ``random.SystemRandom``."""

    def uniform(self, a: float, b: float) -> float: ...

    def sample(self, population: Sequence[Any], k: int) -> list[Any]: ...

    def getrandbits(self, k: int, /) -> int: ...


@dataclass(frozen=True)
class PoolSettings:
    """One pool: its name (shared by every stack on one Deepgram project), its size and ceilings."""

    table: str
    name: str = "deepgram"
    size: int = 45
    ai_ceiling: int = 10  # the intelligence class's size (Deepgram: 10)
    entities_size: int = 5  # the entities class's size (Deepgram: 5)
    whisper_size: int = 5  # the Whisper class's size (Deepgram: 3 to 5)
    lane_shares: Mapping[str, float] = field(default_factory=dict)  # lane -> share of the pool
    # How long a lane's request waits for a slot before handing its work back (a lane not named
    # here waits while its invocation's time allows): a waiting backfill task would hold the
    # reserved concurrency live uploads need, so it gives its task back to S3 Batch Operations.
    lane_patience_s: Mapping[str, float] = field(default_factory=dict)
    hold_s: float = 5.0  # least time a decrease holds (longer when Retry-After says so)
    max_hold_s: float = 30.0  # ... but never longer than the retry policy's cap on one wait
    increase_every_s: float = 2.0  # then one slot more per this many seconds
    # A waiter's polls spread out (full jitter, the bound doubling up to poll_max_s): a freed slot
    # is still found within about poll_max_s / waiters, and a long queue of waiters does not turn
    # into a storm of reads on the pool's partition.
    poll_min_s: float = 0.25
    poll_max_s: float = 4.0
    # Kept back after the wait (at most half the invocation's time): what the workflow needs for
    # the request and for writing the result. A request sent with less time than it takes is cut
    # off by the client's timeout, billed, and sent again: the simulation showed 20 s did that to
    # the waiters that got a slot late (requests take about 20 s on average and minutes in the tail).
    reserve_s: float = 120.0
    # A lease lasts this long past its last renewal (renewed every third of it while its request
    # runs), never past the invocation's deadline: a killed sandbox's slot comes back within it
    # rather than at the deadline (the simulation: 5 % of sandboxes killed cost 4/5 of the pool).
    # Shorter, and a killed sandbox's request still running at Deepgram outlives its lease (30 s:
    # 429s); longer, and the slot idles after it (60 s: 0.89 of the pool's rate, 45 s: 0.92).
    # None: every lease lasts until the deadline.
    lease_term_s: float | None = 45.0

    def class_size(self, name: str) -> int:
        return {INTELLIGENCE: self.ai_ceiling, ENTITIES: self.entities_size, WHISPER: self.whisper_size}[name]


@dataclass(frozen=True)
class PoolState:
    """What one read of the pool saw: the active leases and the AIMD state."""

    now: float
    held: frozenset[str]  # sort keys of unexpired leases
    lanes: dict[str, int]  # unexpired slot leases per lane
    reduced_to: int | None = None
    hold_until: float = 0.0
    decreased_at: float = 0.0

    def effective_size(self, pool: PoolSettings) -> int:
        """The pool's size now: full, or the AIMD decrease recovering one slot per interval."""
        if self.reduced_to is None:
            return pool.size
        if self.now < self.hold_until:
            return self.reduced_to
        grown = int((self.now - self.hold_until) // pool.increase_every_s)
        return min(pool.size, self.reduced_to + grown)

    @cached_property
    def families(self) -> dict[str, tuple[int, int]]:
        """Per slot family: how many of its slots are held, and the highest number held."""
        found: dict[str, tuple[int, int]] = {}
        for key in self.held:
            family, _, number = key.rpartition("#")
            count, top = found.get(family, (0, -1))
            found[family] = (count + 1, max(top, int(number)))
        return found

    def caps(self, pool: PoolSettings, lane: str, classes: Iterable[str]) -> dict[str, int]:
        """The slot families a request of ``lane`` and ``classes`` takes one slot in, each with its
        cap now: slots ``family#n`` for n below the cap are the only ones it may take."""
        size = self.effective_size(pool)
        caps = {GENERAL: size}
        share = pool.lane_shares.get(lane)
        if share is not None:
            caps[f"lane-{lane}"] = max(1, int(size * share))
        for name in classes:
            caps[name] = min(pool.class_size(name), size)
        return caps


@dataclass(frozen=True)
class Lease:
    keys: tuple[str, ...]  # sort keys held: one slot per family (general, lane, classes)
    holder: str
    taken_at: float
    expires_at: float
    seen: PoolState
    lane: str = LIVE_LANE
    deadline: float | None = None  # the invocation's: renewals never go past it (None: expires_at)

    def renew_every(self, pool: PoolSettings) -> float | None:
        """How often the holder renews the lease while its request runs (None: no need)."""
        if pool.lease_term_s is None or self.expires_at >= (self.deadline or self.expires_at):
            return None
        return pool.lease_term_s / 3


@dataclass(frozen=True, slots=True)
class Limit:
    """The pool's shared AIMD state (the ``limit`` item)."""

    reduced_to: int
    hold_until: float
    decreased_at: float


def request_classes(query: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The classes of the pool a request with these options takes a slot in, besides the general
    one (Deepgram: a request counts under every limit it falls under; entity detection is an
    audio-intelligence feature with a lower limit of its own)."""
    sent = dict(query)
    on = {name for name, value in sent.items() if value != "false"}
    classes = []
    if on & {"summarize", "topics", "intents", "sentiment", "detect_entities"}:
        classes.append(INTELLIGENCE)
    if "detect_entities" in on:
        classes.append(ENTITIES)
    if sent.get("model", "").startswith("whisper"):
        classes.append(WHISPER)
    return tuple(classes)


def pool_state(now: float, leases: Iterable[tuple[str, str, float]], limit: Limit | None) -> PoolState:
    """The state a read shows at ``now``, from the stored leases (sort key, lane, expiry) and limit."""
    held: set[str] = set()
    lanes: dict[str, int] = {}
    for key, lane, expires_at in leases:
        if expires_at > now:
            held.add(key)
            if key.startswith(f"{GENERAL}#"):
                lanes[lane] = lanes.get(lane, 0) + 1
    if limit is None:
        return PoolState(now=now, held=frozenset(held), lanes=lanes)
    return PoolState(
        now=now,
        held=frozenset(held),
        lanes=lanes,
        reduced_to=limit.reduced_to,
        hold_until=limit.hold_until,
        decreased_at=limit.decreased_at,
    )


# -- commands ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """Read the pool's partition; answer with the ``PoolState`` seen."""


@dataclass(frozen=True, slots=True)
class ConditionalPut:
    """Write each of the lease's keys if no unexpired lease holds it; answer True when written."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the slot's item if ``holder`` still holds it (a later holder's lease stays)."""

    key: str
    holder: str


@dataclass(frozen=True, slots=True)
class Hold:
    """Set the slot's expiry to ``until`` if ``holder`` still holds it."""

    key: str
    holder: str
    until: float


@dataclass(frozen=True, slots=True)
class Decrease:
    """Set the limit item unless the last decrease's hold ends at or after ``taken_at`` (one per
    congestion episode)."""

    limit: Limit
    taken_at: float
    from_size: int
    hold_s: float


Command = Query | ConditionalPut | Sleep
QUERY = Query()


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The answer when the store could not serve a command for now (throttled, unreachable)."""

    now: float


@dataclass(frozen=True, slots=True)
class Acquired:
    lease: Lease
    polls: int  # reads that found no slot before this one


@dataclass(frozen=True, slots=True)
class Exhausted:
    polls: int
    store_failed: bool = False  # the last poll found the store unavailable, not the pool full


# -- decisions --------------------------------------------------------------------------------------


def acquire(
    pool: PoolSettings,
    *,
    lane: str,
    classes: tuple[str, ...] = (),
    deadline: float,
    rng: Rng,
) -> Generator[Command, Any, Acquired | Exhausted]:
    """Take a lease that expires at ``deadline`` (the invocation's own), waiting with jittered polls
    while the time left after the next wait still covers ``pool.reserve_s`` (or half the time the
    invocation had when it started waiting, if less) and, for a lane with a patience, no longer
    than that. A read or a write the store could not serve for now (answered ``Unavailable``:
    throttled, unreachable) counts as one more poll: a throttling storm is waited through like a
    full pool, not turned into a failure."""
    polls = 0
    give_up_at: float | None = None
    while True:
        seen: PoolState | Unavailable = yield QUERY
        if give_up_at is None:
            give_up_at = _give_up_at(pool, lane, seen.now, deadline)
        failed = seen if isinstance(seen, Unavailable) else None
        if failed is None:
            tried = yield from _try(pool, seen, lane, classes, deadline=deadline, rng=rng)  # type: ignore[arg-type]
            if isinstance(tried, Lease):
                return Acquired(tried, polls)
            failed = tried
        polls += 1
        delay = rng.uniform(pool.poll_min_s, min(pool.poll_max_s, pool.poll_min_s * 2**polls))
        if (failed or seen).now + delay > give_up_at:
            return Exhausted(polls, store_failed=failed is not None)
        yield Sleep(delay)


def _give_up_at(pool: PoolSettings, lane: str, now: float, deadline: float) -> float:
    keep = min(pool.reserve_s, (deadline - now) / 2)
    patience = pool.lane_patience_s.get(lane)
    return deadline - keep if patience is None else min(deadline - keep, now + patience)


def blocked(caps: Mapping[str, int], state: PoolState) -> bool:
    """No slot now: in some family every slot below the cap is held, or a slot at or above the cap
    still is (taken before a decrease): nobody is let in while the family is over its cap, so no
    interleaving of admissions can exceed it."""
    families = state.families
    for family, cap in caps.items():
        count, top = families.get(family, (0, -1))
        if count >= cap or top >= cap:
            return True
    return False


def lane_is_full(pool: PoolSettings, state: PoolState, lane: str, classes: tuple[str, ...] = ()) -> bool:
    """No slot for a request of ``lane`` (and ``classes``)."""
    return blocked(state.caps(pool, lane, classes), state)


def _try(
    pool: PoolSettings,
    state: PoolState,
    lane: str,
    classes: tuple[str, ...],
    *,
    deadline: float,
    rng: Rng,
) -> Generator[Command, Any, Lease | Unavailable | None]:
    caps = state.caps(pool, lane, classes)
    if blocked(caps, state):
        return None
    # Waiters that read the same state race for the same free slots: the loser tries other slots
    # it saw free (each write is conditional) rather than waiting a whole poll for them.
    families = [_free_keys(family, cap, state, rng) for family, cap in caps.items()]
    for keys in zip(*families, strict=False):
        lease = Lease(
            keys=tuple(keys),
            holder=f"{rng.getrandbits(128):032x}",
            taken_at=state.now,
            expires_at=_expiry(pool, state.now, deadline),
            seen=state,
            lane=lane,
            deadline=deadline,
        )
        written: bool | Unavailable = yield ConditionalPut(lease)
        if isinstance(written, Unavailable):
            return written
        if written:
            return lease
    return None


@cache
def _keys(family: str, count: int) -> tuple[str, ...]:
    return tuple(f"{family}#{i:03d}" for i in range(count))


def _free_keys(family: str, count: int, state: PoolState, rng: Rng) -> list[str]:
    """Up to ``_TRIES_PER_READ`` of the family's slots no unexpired lease holds, in random order."""
    held = state.held
    free = [key for key in _keys(family, count) if key not in held]
    return rng.sample(free, min(_TRIES_PER_READ, len(free)))


def release(lease: Lease, rng: Rng) -> Generator[Delete | Sleep, bool | None]:
    """Delete the lease's slots as their holder. Answer each ``Delete`` with False when the store
    failed it (throttled, unreachable; not a lost condition): it is tried again after a short
    jittered wait, ``RELEASE_TRIES`` in all, since a slot left behind is unusable until its expiry
    (the invocation's deadline: minutes of a slot for a second of waiting)."""
    for key in lease.keys:
        for attempt in range(1, RELEASE_TRIES + 1):
            if (yield Delete(key, lease.holder)) is not False:
                break
            if attempt < RELEASE_TRIES:
                yield Sleep(rng.uniform(0.05, 0.25 * 2**attempt))


def _expiry(pool: PoolSettings, now: float, deadline: float) -> float:
    return deadline if pool.lease_term_s is None else min(deadline, now + pool.lease_term_s)


def renew(pool: PoolSettings, lease: Lease, now: float) -> tuple[Hold, ...]:
    """Extend the lease by its term from ``now`` (never past the invocation's deadline)."""
    until = _expiry(pool, now, lease.deadline or lease.expires_at)
    return tuple(Hold(key, lease.holder, until) for key in lease.keys)


def hold(lease: Lease) -> tuple[Hold, ...]:
    """The client gave up on its request (a timeout) but Deepgram still works on it and holds its
    place: keep the slots until Deepgram's processing limit (from when the lease was taken, just
    before the request was sent) rather than free them for a request that would meet a 429."""
    until = max(lease.expires_at, lease.taken_at + DEEPGRAM_PROCESSING_LIMIT_S)
    return tuple(Hold(key, lease.holder, until) for key in lease.keys)


def decrease(pool: PoolSettings, lease: Lease, retry_after_s: float | None, now: float) -> Decrease:
    """Deepgram answered 429 although ``lease`` held a slot: halve the pool that lease saw, held
    for ``Retry-After`` or at least ``pool.hold_s``, never past ``pool.max_hold_s``. The store
    applies it only when the lease was taken after the last decrease's hold ended (``taken_at``):
    a 429 to a request let in during the hold belongs to the episode already answered, so one
    episode halves the pool once, however many requests and retries meet a 429 in it."""
    current = lease.seen.effective_size(pool)
    hold = min(pool.max_hold_s, max(pool.hold_s, retry_after_s or 0.0))
    return Decrease(
        Limit(reduced_to=max(1, current // 2), hold_until=now + hold, decreased_at=now),
        taken_at=lease.taken_at,
        from_size=current,
        hold_s=hold,
    )
