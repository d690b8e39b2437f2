"""Trust: the same object delivered many times, at once or while it is being transcribed, makes one
Deepgram request and one transcript; nothing is lost, and an invocation that dies mid-work leaves
the object retryable once its Lambda deadline has passed (Powertools ties the in-progress record's
expiry to it through ``register_lambda_context``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from localworld.aws_faults import AwsFaultProxy
    from localworld.lambda_runtime import InvocationResult, LocalFunction
    from localworld.pytest_plugin import DeliveryFactory, FunctionFactory, Uploads
    from localworld.world import LocalWorld

COPIES = 10
DEEPGRAM_LATENCY_S = 2.0  # long enough for every copy to arrive while the first is in flight
# 25 s of Lambda: the handler keeps 15 s back for writing, so Deepgram gets under 10 s (>= 5 s needed).
SHORT_TIMEOUT_S = 25.0


def output_keys(world: LocalWorld) -> list[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json"))


def listen_requests(world: LocalWorld) -> list[Any]:
    return [r for r in world.emulator.requests if r.path == "/v1/listen"]


def refused_as_in_progress(result: InvocationResult) -> bool:
    return (
        result.error is not None
        and result.error["errorType"] == "RetryableError"
        and result.error["errorMessage"].startswith("in-progress-elsewhere")
    )


def replayed(result: InvocationResult) -> bool:
    return result.error is None and result.payload["objects"][0]["replayed"] is True


def invoke_together(function: LocalFunction, events: Iterable[Any]) -> list[InvocationResult]:
    """Invoke every event at the same moment, one thread each (a barrier lines them up)."""
    events = list(events)
    barrier = threading.Barrier(len(events))

    def invoke(event: Any) -> InvocationResult:
        barrier.wait()
        return function.invoke(event)

    with ThreadPoolExecutor(len(events)) as pool:
        return list(pool.map(invoke, events))


def s3_test_event(world: LocalWorld) -> dict[str, Any]:
    return {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": world.input_bucket}


def warm_containers(function: LocalFunction, world: LocalWorld, count: int = COPIES) -> None:
    """Start `count` containers by invoking a trivial event `count` times at once. A container whose
    init runs past Lambda's 10 s (a loaded machine starting ten at once) is gone: start it again."""
    for _ in range(3):
        invoke_together(function, [s3_test_event(world)] * count)
        if function.container_count >= count:
            return
    raise AssertionError(f"could not start {count} containers: {function.container_count} running")


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture
def slow_deepgram(world: LocalWorld) -> Iterator[None]:
    previous = world.emulator.latency
    world.emulator.latency = DEEPGRAM_LATENCY_S
    yield
    world.emulator.latency = previous


def test_ten_simultaneous_deliveries_make_one_request_and_one_transcript(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    slow_deepgram: None,
    sample_audio: bytes,
) -> None:
    event = uploads.put("dup/ten.wav", sample_audio)
    function = start_function()
    function.max_concurrency = COPIES
    # Start ten containers first, so the ten copies below run side by side, not one after another.
    warm_containers(function, world)

    results = invoke_together(function, [event] * COPIES)

    assert len({r.container_id for r in results}) == COPIES  # really ten at once
    first = [r for r in results if r.error is None and r.payload["objects"][0]["replayed"] is False]
    assert len(first) == 1, [r.error or r.payload for r in results]
    others = [r for r in results if r is not first[0]]
    assert all(refused_as_in_progress(r) or replayed(r) for r in others), [
        r.error or r.payload for r in others
    ]
    refused = [r for r in others if refused_as_in_progress(r)]
    assert refused, "no copy overlapped the first: the test proves nothing"
    assert len(listen_requests(world)) == 1
    assert output_keys(world) == [world.transcript_key("dup/ten.wav")]

    # Lambda retries the refused ones after the first finished: each is answered from the record.
    retried = invoke_together(function, [event] * len(refused))

    assert all(replayed(r) for r in retried), [r.error or r.payload for r in retried]
    assert {r.payload["objects"][0]["request_id"] for r in retried} == {
        first[0].payload["objects"][0]["request_id"]
    }
    assert len(listen_requests(world)) == 1
    assert output_keys(world) == [world.transcript_key("dup/ten.wav")]


def test_ten_async_deliveries_through_lambdas_retries_end_in_one_transcript(
    world: LocalWorld,
    uploads: Uploads,
    start_delivery: DeliveryFactory,
    slow_deepgram: None,
    sample_audio: bytes,
) -> None:
    event = uploads.put("dup/async.wav", sample_audio)
    # time_scale 0.1: Lambda's retry waits of 60 s and 120 s become 6 s and 12 s.
    with start_delivery(
        functions=["TranscribeFunction"],
        concurrency={"TranscribeFunction": COPIES},
        time_scale=0.1,
    ) as delivery:
        # Warm the ten containers (outside the delivery's books), so the first attempt takes about
        # the Deepgram latency, well inside Lambda's two retry waits (6 s + 12 s here).
        warm_containers(delivery.function("TranscribeFunction"), world)
        request_ids = [delivery.invoke_async("TranscribeFunction", event) for _ in range(COPIES)]
        assert delivery.wait_until_idle(timeout_s=40)
        stats = delivery.stats().functions["TranscribeFunction"]
        records = delivery.records

    assert (stats.dlq_sends, stats.dropped, stats.expired) == (0, 0, 0)
    assert len(listen_requests(world)) == 1
    assert output_keys(world) == [world.transcript_key("dup/async.wav")]
    failed = [r.result for r in records if not r.result.ok]
    assert failed, "no delivery overlapped the first: the test proves nothing"
    assert all(refused_as_in_progress(r) for r in failed), [r.error for r in failed]
    assert stats.retries == len(failed)
    # Every delivery was answered in the end: one by transcribing, the others from the record.
    final = {r.result.request_id: r.result for r in records}  # records are in completion order
    assert sorted(final) == sorted(request_ids)
    assert all(r.ok for r in final.values()), [r.error for r in final.values()]
    assert sorted(r.payload["objects"][0]["replayed"] for r in final.values()) == [False] + [True] * (
        COPIES - 1
    )


def test_a_deepgram_stall_past_the_timeout_is_given_up_in_time_and_leaves_the_object_retryable(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("dup/stalled.wav", sample_audio)
    world.emulator.faults.next(1, kind="stall", stall_seconds=SHORT_TIMEOUT_S + 5)
    function = start_function(timeout_s=SHORT_TIMEOUT_S)
    with ThreadPoolExecutor(1) as pool:
        stalled = pool.submit(function.invoke, event)
        wait_until(lambda: listen_requests(world) or stalled.done())  # in flight, stalled
        during = function.invoke(event)  # a second container
        first = stalled.result()
    after = function.invoke(event)

    assert refused_as_in_progress(during), during.error or during.payload
    # The handler bounds its Deepgram read by the time left minus its 15 s reserve, so a stall
    # ends as its own retryable error before Lambda would kill it, and Powertools releases the
    # in-progress record: the very next delivery may try again at once.
    assert first.error is not None
    assert first.error["errorType"] == "RetryableError", first.error
    assert first.error["errorMessage"].startswith("deepgram-timeout")
    assert first.duration_s < SHORT_TIMEOUT_S
    assert after.error is None, after.logs
    assert after.payload["objects"][0]["replayed"] is False
    assert len(listen_requests(world)) == 2
    assert output_keys(world) == [world.transcript_key("dup/stalled.wav")]


def test_a_function_killed_at_its_timeout_mid_work_is_retryable_once_its_deadline_passed(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
) -> None:
    """Lambda kills the container while the transcript is being written (after Deepgram answered):
    the in-progress record stays behind, and must block duplicates only until the dead
    invocation's deadline, not forever; the retry then finds the transcript and pays nothing."""
    event = uploads.put("dup/killed.wav", sample_audio)
    # S3 stores the transcript but its answer dribbles in: the layer's read timeout bounds each wait
    # for bytes, not the whole answer, so only Lambda's deadline ends the invocation.
    write = aws_fault_proxy.stall(
        "PUT", world.transcript_key("dup/killed.wav"), SHORT_TIMEOUT_S + 10, drip=True
    )
    function = start_function(timeout_s=SHORT_TIMEOUT_S, extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})
    with ThreadPoolExecutor(1) as pool:
        started = time.time()
        doomed = pool.submit(function.invoke, event)
        wait_until(lambda: write.held or doomed.done())  # Deepgram answered; the write's answer hangs
        before_deadline = function.invoke(event)
        killed = doomed.result()
    write.release.set()  # the hung write may now reach S3, as a late PUT on AWS can
    deadline_passed_by_s = time.time() - started - SHORT_TIMEOUT_S
    after = function.invoke(event)

    assert refused_as_in_progress(before_deadline), before_deadline.error or before_deadline.payload
    assert killed.error is not None
    assert killed.error["errorType"] == "Sandbox.Timedout", killed.error
    assert deadline_passed_by_s >= 0
    assert not refused_as_in_progress(after), "still 'in progress' after the dead invocation's deadline"
    assert after.error is None, after.logs
    # The killed invocation's answer was never recorded, but its transcript reached S3 (only S3's
    # reply was held): the transcript in the bucket says the work is done, so no second request.
    assert after.payload["objects"][0]["replayed"] is True
    assert [r.status for r in listen_requests(world)] == [200]
    assert output_keys(world) == [world.transcript_key("dup/killed.wav")]
