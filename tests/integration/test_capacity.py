"""The Deepgram capacity governor over real HTTP: the real handler in local Lambda containers, its
leases in moto server's DynamoDB (the table template.yaml declares), and the emulator counting the
requests in flight itself (one limit for every key, like a Deepgram project)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from transcriber.errors import RetryableError
from transcriber.observability import metrics
from transcriber.services.capacity import CAPACITY_REASON, CapacityGovernor, PoolSettings

if TYPE_CHECKING:
    from localworld.lambda_runtime import InvocationResult, LocalFunction
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

POOL_SIZE = 2
LATENCY_S = 1.0
KILLED_TIMEOUT_S = 25.0


def invoke_together(calls: list[tuple[LocalFunction, Any]]) -> list[InvocationResult]:
    barrier = threading.Barrier(len(calls))

    def invoke(call: tuple[LocalFunction, Any]) -> InvocationResult:
        barrier.wait()
        return call[0].invoke(call[1])

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(invoke, calls))


def warm(function: LocalFunction, world: LocalWorld, count: int) -> None:
    """Start ``count`` containers with a trivial event first: a container whose init runs past
    Lambda's 10 s (this loaded machine starting several at once) is gone, so start it again."""
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": world.input_bucket}
    for _ in range(6):
        invoke_together([(function, test_event)] * count)
        if function.container_count >= count:
            return
    raise AssertionError(f"could not start {count} containers: {function.container_count} running")


def listen(world: LocalWorld) -> list[Any]:
    return [r for r in world.emulator.requests if r.path == "/v1/listen"]


def capacity_table(world: LocalWorld) -> str:
    return world.function("TranscribeFunction").environment["CAPACITY_TABLE"]


def pool_items(world: LocalWorld) -> dict[str, dict[str, Any]]:
    items = world.aws.dynamodb().scan(TableName=capacity_table(world))["Items"]
    return {item["sk"]["S"]: dict(item) for item in items}


@pytest.fixture
def limited_deepgram(world: LocalWorld) -> Iterator[None]:
    """The emulator's own limit is the pool's size: any request over it would be a 429. A request
    an earlier test's client gave up on (a stalled answer) still holds an emulator slot, as it
    would at Deepgram: wait for those to finish, so every request counted is this test's."""
    wait_until(lambda: world.emulator.counters["in_flight"] == 0, timeout_s=90)
    previous = (world.emulator.latency, world.emulator.max_concurrency)
    world.emulator.latency, world.emulator.max_concurrency = LATENCY_S, POOL_SIZE
    yield
    world.emulator.latency, world.emulator.max_concurrency = previous


def test_a_burst_never_has_more_than_the_pool_in_flight_at_deepgram(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    limited_deepgram: None,
    sample_audio: bytes,
) -> None:
    function = start_function(CAPACITY_POOL_SIZE=str(POOL_SIZE))
    function.max_concurrency = 4
    warm(function, world, 4)
    events = [uploads.put(f"burst/{i}.wav", sample_audio) for i in range(4)]

    results = invoke_together([(function, event) for event in events])

    assert all(r.error is None and r.payload["transcribed"] == 1 for r in results), [
        r.error or r.payload for r in results
    ]
    counters = world.emulator.counters
    assert counters["max_in_flight"] <= POOL_SIZE  # the emulator's own count
    assert counters.get("status_429", 0) == 0
    assert len(listen(world)) == 4  # one request per object
    assert all((r.in_flight or 0) <= POOL_SIZE for r in listen(world))
    assert pool_items(world) == {}  # every lease released


def test_two_stacks_sharing_one_pool_stay_under_its_size_together(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    limited_deepgram: None,
    sample_audio: bytes,
) -> None:
    # Two deployments (their own settings, tags and containers) on one Deepgram project: the same
    # pool name in the same table.
    dev = start_function(CAPACITY_POOL_SIZE=str(POOL_SIZE), DEEPGRAM_TAG="dev")
    prod = start_function(CAPACITY_POOL_SIZE=str(POOL_SIZE), DEEPGRAM_TAG="prod")
    dev.max_concurrency = prod.max_concurrency = 2
    warm(dev, world, 2)
    warm(prod, world, 2)
    events = [uploads.put(f"shared/{i}.wav", sample_audio) for i in range(4)]

    results = invoke_together([(dev if i % 2 else prod, event) for i, event in enumerate(events)])

    assert all(r.error is None for r in results), [r.error for r in results]
    assert world.emulator.counters["max_in_flight"] <= POOL_SIZE
    assert world.emulator.counters.get("status_429", 0) == 0
    assert {dict(r.query)["tag"] for r in listen(world)} == {"dev", "prod"}


def test_audio_intelligence_requests_are_held_to_their_ceiling(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    world.emulator.latency = LATENCY_S
    function = start_function(CAPACITY_AI_CEILING="2", DEEPGRAM_EXTRA_OPTIONS="summarize=v2")
    function.max_concurrency = 3
    warm(function, world, 3)
    events = [uploads.put(f"ai/{i}.wav", sample_audio) for i in range(3)]
    try:
        results = invoke_together([(function, event) for event in events])
    finally:
        world.emulator.latency = 0

    assert all(r.error is None for r in results), [r.error for r in results]
    counters = world.emulator.counters
    assert counters["max_in_flight_10"] <= 2  # the emulator counts summarize requests on their own
    assert counters.get("status_429", 0) == 0


def test_a_capacity_wait_ends_as_a_retry_with_no_request_and_no_failure_record(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    # Another stack holds the only slot for the next ten minutes.
    pool = PoolSettings(table=capacity_table(world), size=1)
    other = CapacityGovernor(pool, world.aws.dynamodb())
    held = other.acquire(FixedContext(600))
    event = uploads.put("waits/a.wav", sample_audio)

    result = start_function(timeout_s=23, CAPACITY_POOL_SIZE="1").invoke(event)

    assert result.error is not None
    assert result.error["errorType"] == "RetryableError"
    assert result.error["errorMessage"].startswith(CAPACITY_REASON)
    assert listen(world) == []  # no billable request
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0
    other.release(held)


def test_a_killed_invocations_lease_frees_its_slot_at_its_deadline(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    first = uploads.put("killed/a.wav", sample_audio)
    second = uploads.put("killed/b.wav", sample_audio)
    doomed = start_function(timeout_s=KILLED_TIMEOUT_S, CAPACITY_POOL_SIZE="1")
    world.emulator.latency = 3.0
    with ThreadPoolExecutor(1) as pool:
        started = time.time()
        killed = pool.submit(doomed.invoke, first)
        wait_until(lambda: world.emulator.counters["in_flight"] >= 1 or killed.done())
        # Killed while Deepgram works, as Lambda kills a sandbox (out of memory, a crash): the
        # function never gets to release its lease.
        for pid in doomed.worker_pids:
            os.kill(pid, signal.SIGKILL)
        result = killed.result()
    world.emulator.latency = 0

    assert result.error is not None
    (slot,) = pool_items(world).values()  # the dead function never released its slot
    expires_at = float(slot["expires_at"]["N"])
    # The lease ends with the invocation's own deadline, not at the lease term. The deadline counts
    # from when the runtime starts the invocation, after the container's start and init: later than
    # ``started`` on a loaded machine, where containers run at nice +10 (5.1 s later once, in make
    # test), so up to 12 s later; still before the term would end.
    assert started + KILLED_TIMEOUT_S - 2 <= expires_at <= started + KILLED_TIMEOUT_S + 12
    term = PoolSettings(table="t").lease_term_s
    assert term is not None
    assert term > KILLED_TIMEOUT_S + 12
    # A second past it: the next invocation reads the lease with its own clock, on a loaded machine.
    wait_until(lambda: time.time() > expires_at + 1, timeout_s=KILLED_TIMEOUT_S + 15)

    after = start_function(timeout_s=KILLED_TIMEOUT_S, CAPACITY_POOL_SIZE="1").invoke(second)

    assert after.error is None, after.error
    assert after.payload["transcribed"] == 1


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_a_429_that_still_arrives_lowers_the_pool_for_everyone(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.retry_after = 2
    world.emulator.faults.next(1, status=429)
    event = uploads.put("aimd/a.wav", sample_audio)
    started = time.time()
    try:
        result = start_function(CAPACITY_POOL_SIZE="8").invoke(event)
    finally:
        world.emulator.retry_after = None

    assert result.error is None, result.error
    assert [r.status for r in listen(world)] == [429, 200]
    limit = pool_items(world)["limit"]
    assert int(limit["reduced_to"]["N"]) == 4  # halved, for every function of the pool
    assert float(limit["hold_until"]["N"]) >= started + 2  # at least Retry-After


class FixedContext:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


class _Remaining:
    """An invocation with minutes left: a lease lasts its term, longer than any pause a loaded
    machine gives a racer (Lambda would kill a holder past its deadline; a thread here lives on,
    so a lease ending at a near deadline would let a paused holder count beside its successor)."""

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


@pytest.fixture
def in_process_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Governors run in this process: their metrics get the namespace Lambda's environment gives
    (Powertools flushes at 100 metrics and refuses a set without one), and go with the test."""
    monkeypatch.setattr(metrics.provider, "namespace", "CapacityRace")
    yield
    metrics.clear_metrics()


def _race(
    world: LocalWorld, pool: PoolSettings, query: list[tuple[str, str]], lane: str, racers: int = 24
) -> int:
    """``racers`` threads, each with its own client, take and release slots for a few seconds
    against moto server; the most leases they held at once."""
    lock = threading.Lock()
    held = [0, 0, 0]  # now, most, leases taken
    started = time.monotonic()

    def racing() -> bool:
        # At least 6 s and 2 leases per racer (a loaded machine is slow to start), at most 60 s.
        elapsed = time.monotonic() - started
        return elapsed < 60.0 and (elapsed < 6.0 or held[2] < 2 * racers)

    # Waits end within a second (the lane's patience), so the racers keep coming back.
    patient = replace(pool, lane_patience_s={lane: 1.0})

    def racer() -> None:
        governor = CapacityGovernor(patient, world.aws.dynamodb(), lane=lane)
        while racing():
            try:
                with governor.slot(_Remaining(), query):
                    with lock:
                        held[0] += 1
                        held[2] += 1
                        held[1] = max(held[:2])
                    time.sleep(0.05)
                    with lock:
                        held[0] -= 1
            except RetryableError:
                continue

    with ThreadPoolExecutor(racers) as executor:
        for future in [executor.submit(racer) for _ in range(racers)]:
            future.result()
    return held[1]


@pytest.mark.usefixtures("in_process_metrics")
def test_concurrent_backfill_leases_never_exceed_the_lanes_share(world: LocalWorld) -> None:
    pool = PoolSettings(table=capacity_table(world), name="race-lane", size=6, lane_shares={"backfill": 0.5})
    assert 0 < _race(world, pool, [("model", "nova-3")], "backfill") <= 3


@pytest.mark.usefixtures("in_process_metrics")
def test_concurrent_whisper_leases_never_exceed_the_whisper_class(world: LocalWorld) -> None:
    pool = PoolSettings(table=capacity_table(world), name="race-whisper", size=20, whisper_size=3)
    assert 0 < _race(world, pool, [("model", "whisper-large")], "live") <= 3
