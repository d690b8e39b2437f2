"""The governor's sans-IO core driven directly: scripted store answers and times in, commands out."""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import pytest

from transcriber.domain import capacity_core as core
from transcriber.domain.capacity_core import (
    Acquired,
    ConditionalPut,
    Exhausted,
    Limit,
    PoolSettings,
    PoolState,
    Query,
    Sleep,
)

POOL = PoolSettings(table="t", name="p", size=3, ai_ceiling=2)
NOW = 1_000.0


def state(now: float = NOW, held: tuple[str, ...] = (), lanes: dict[str, int] | None = None) -> PoolState:
    slots = sum(key.startswith("slot#") for key in held)
    return PoolState(now=now, held=frozenset(held), lanes=lanes if lanes is not None else {"live": slots})


def steps(
    pool: PoolSettings = POOL,
    *,
    lane: str = "live",
    classes: tuple[str, ...] = (),
    deadline: float = NOW + 600,
) -> Generator[core.Command, Any, Acquired | Exhausted]:
    return core.acquire(pool, lane=lane, classes=classes, deadline=deadline, rng=random.Random(7))  # noqa: S311 - seeded: reproducible draws


def finish(gen: Generator[core.Command, Any, Acquired | Exhausted], answer: Any) -> Acquired | Exhausted:
    with pytest.raises(StopIteration) as done:
        gen.send(answer)
    return done.value.value  # type: ignore[no-any-return]


def test_a_free_pool_costs_one_read_and_one_conditional_put() -> None:
    gen = steps()
    assert isinstance(next(gen), Query)
    put = gen.send(state())
    assert isinstance(put, ConditionalPut)
    assert put.lease.keys[0].startswith("slot#")
    # It lasts one term (renewed while its request runs), never past the invocation's deadline.
    assert (put.lease.taken_at, put.lease.expires_at, put.lease.lane) == (NOW, NOW + 45, "live")
    assert put.lease.deadline == NOW + 600
    assert put.lease.renew_every(POOL) == 15

    outcome = finish(gen, True)

    assert outcome == Acquired(put.lease, polls=0)


def test_a_lost_race_tries_other_slots_it_saw_free_then_waits_with_growing_jitter() -> None:
    gen = steps(replace(POOL, size=5))
    next(gen)
    tried = [gen.send(state())]
    tried += [gen.send(False) for _ in range(2)]
    keys = {put.lease.keys for put in tried if isinstance(put, ConditionalPut)}
    assert len(keys) == 3  # three different slots, then no more writes on that read
    first_sleep = gen.send(False)
    assert isinstance(first_sleep, Sleep)
    assert POOL.poll_min_s <= first_sleep.seconds <= 2 * POOL.poll_min_s

    delays = [first_sleep.seconds]
    full = state(held=tuple(f"slot#{i:03d}" for i in range(5)))
    for n in range(2, 8):
        assert isinstance(gen.send(None), Query)
        sleep = gen.send(replace(full, now=NOW + n))
        assert isinstance(sleep, Sleep)
        assert sleep.seconds <= min(POOL.poll_max_s, POOL.poll_min_s * 2**n)
        delays.append(sleep.seconds)
    assert max(delays) > 2 * POOL.poll_min_s


def test_waiting_ends_when_the_next_wait_would_eat_into_the_reserve() -> None:
    gen = steps(deadline=NOW + 3 * POOL.reserve_s)
    next(gen)
    full = state(held=("slot#000", "slot#001", "slot#002"))
    sleep = gen.send(full)
    assert isinstance(sleep, Sleep)
    next(gen)

    outcome = finish(gen, replace(full, now=NOW + 2 * POOL.reserve_s - 0.2))

    assert outcome == Exhausted(polls=2)


def test_a_short_invocation_keeps_half_its_time_rather_than_the_whole_reserve() -> None:
    gen = steps(deadline=NOW + POOL.reserve_s)  # keeps reserve_s / 2
    next(gen)
    full = state(held=("slot#000", "slot#001", "slot#002"))
    assert isinstance(gen.send(full), Sleep)
    next(gen)
    assert isinstance(gen.send(replace(full, now=NOW + POOL.reserve_s / 2 - 1.1)), Sleep)
    next(gen)

    assert finish(gen, replace(full, now=NOW + POOL.reserve_s / 2 - 0.2)) == Exhausted(polls=3)


def test_an_intelligence_request_takes_its_ceiling_slot_too_and_waits_when_the_ceiling_is_full() -> None:
    gen = steps(classes=("intelligence",))
    next(gen)
    put = gen.send(state(held=("intelligence#000",)))
    assert isinstance(put, ConditionalPut)
    assert put.lease.keys[1] == "intelligence#001"

    gen = steps(classes=("intelligence",))
    next(gen)
    assert isinstance(
        gen.send(state(held=("slot#000", "slot#001", "intelligence#000", "intelligence#001"))), Sleep
    )


def test_a_lane_with_a_share_stops_at_it_and_live_takes_the_rest() -> None:
    pool = replace(POOL, size=4, lane_shares={"backfill": 0.5})
    seen = state(held=("slot#000", "slot#001", "lane-backfill#000", "lane-backfill#001"))
    assert core.lane_is_full(pool, seen, "backfill")
    assert not core.lane_is_full(pool, seen, "live")
    assert core.lane_is_full(pool, replace(seen, held=seen.held | {"slot#002", "slot#003"}), "live")


def test_a_decrease_halves_what_the_lease_saw_and_recovers_one_slot_per_interval() -> None:
    pool = replace(POOL, size=8)
    gen = steps(pool)
    next(gen)
    put = gen.send(state())
    assert isinstance(put, ConditionalPut)

    step = core.decrease(pool, put.lease, retry_after_s=9, now=NOW + 1)

    assert step.limit == Limit(reduced_to=4, hold_until=NOW + 10, decreased_at=NOW + 1)
    assert (step.taken_at, step.from_size, step.hold_s) == (NOW, 8, 9)
    assert core.decrease(pool, put.lease, None, NOW).hold_s == pool.hold_s
    after = core.pool_state(NOW + 10 + 2 * pool.increase_every_s, [], step.limit)
    assert after.effective_size(pool) == 6
    assert core.pool_state(NOW + 5, [], step.limit).effective_size(pool) == 4


def test_a_read_counts_only_unexpired_leases_per_lane() -> None:
    seen = core.pool_state(
        NOW,
        [
            ("slot#000", "live", NOW + 1),
            ("slot#001", "backfill", NOW - 1),
            ("intelligence#000", "live", NOW + 5),
        ],
        None,
    )
    assert seen.held == {"slot#000", "intelligence#000"}
    assert seen.lanes == {"live": 1}
    assert seen.effective_size(POOL) == POOL.size


def test_release_deletes_each_key_as_its_holder_and_tries_a_failed_delete_again() -> None:
    lease = core.Lease(("slot#001", "intelligence#000"), "h", NOW, NOW + 9, state())
    gen = core.release(lease, random.Random(1))  # noqa: S311
    commands = [next(gen)]
    # slot: failed, then freed; the ceiling slot: failed, then freed.
    commands += [gen.send(answer) for answer in (False, None, True, False, None)]
    with pytest.raises(StopIteration):
        gen.send(True)

    deletes = [(c.key, c.holder) for c in commands if isinstance(c, core.Delete)]
    assert deletes == [
        ("slot#001", "h"),
        ("slot#001", "h"),
        ("intelligence#000", "h"),
        ("intelligence#000", "h"),
    ]
    sleeps = [c.seconds for c in commands if isinstance(c, Sleep)]
    assert len(sleeps) == 2
    assert all(0.05 <= s <= 0.5 for s in sleeps)


def test_a_release_gives_up_after_its_tries_and_a_conflict_is_not_retried() -> None:
    lease = core.Lease(("slot#001",), "h", NOW, NOW + 9, state())
    gen = core.release(lease, random.Random(1))  # noqa: S311
    command = next(gen)
    deletes = 1
    while True:
        try:
            command = gen.send(False if isinstance(command, core.Delete) else None)
        except StopIteration:
            break
        deletes += isinstance(command, core.Delete)
    assert deletes == core.RELEASE_TRIES


def test_after_a_timeout_the_slots_are_held_until_deepgrams_processing_limit() -> None:
    lease = core.Lease(("slot#001", "intelligence#000"), "h", NOW, NOW + 30, state())
    assert [(h.key, h.holder, h.until) for h in core.hold(lease)] == [
        ("slot#001", "h", NOW + core.DEEPGRAM_PROCESSING_LIMIT_S),
        ("intelligence#000", "h", NOW + core.DEEPGRAM_PROCESSING_LIMIT_S),
    ]
    later = core.Lease(("slot#001",), "h", NOW, NOW + 900, state())
    assert core.hold(later)[0].until == NOW + 900  # never shorter than the lease already was


def test_an_unavailable_store_is_waited_through_like_a_full_pool() -> None:
    gen = steps(deadline=NOW + 60)
    next(gen)
    assert isinstance(gen.send(core.Unavailable(NOW)), Sleep)  # the read failed: one more poll
    next(gen)
    put = gen.send(state(now=NOW + 1))
    assert isinstance(put, ConditionalPut)
    assert isinstance(gen.send(core.Unavailable(NOW + 1)), Sleep)  # the write failed: no more tries
    next(gen)
    put = gen.send(state(now=NOW + 2))
    assert isinstance(put, ConditionalPut)

    assert finish(gen, True) == Acquired(put.lease, polls=2)


def test_a_store_still_unavailable_at_the_end_of_the_wait_says_so() -> None:
    gen = steps(deadline=NOW + 3 * POOL.reserve_s)
    next(gen)
    gen.send(core.Unavailable(NOW))
    next(gen)

    outcome = finish(gen, core.Unavailable(NOW + 2 * POOL.reserve_s - 0.2))

    assert outcome == Exhausted(polls=2, store_failed=True)


def test_the_same_seed_makes_the_same_decisions() -> None:
    def run(seed: int) -> list[Any]:
        gen = core.acquire(POOL, lane="live", deadline=NOW + 60, rng=random.Random(seed))  # noqa: S311
        out: list[Any] = [next(gen)]
        answers = iter([state(), False, False, None, state(held=("slot#000",))])
        for answer in answers:
            out.append(gen.send(answer))
        return [(type(c).__name__, getattr(c, "seconds", None), getattr(c, "lease", None)) for c in out]

    assert run(3) == run(3)
    assert run(3) != run(4)
