"""The Deepgram capacity governor in-process (moto's DynamoDB mock): leases, expiry, the waits,
the audio-intelligence ceiling, lanes, AIMD after a 429, its cost in DynamoDB calls, and how every
way in keeps work that waited for capacity (never a failure record, never a used-up retry)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pytest
import requests
import responses
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.core.conftest import (
    ENV,
    INPUT_BUCKET,
    LISTEN_URL,
    UPLOAD_ETAG,
    FakeLambdaContext,
    s3_event,
    sqs_record,
    transcript_body,
    transcript_key,
)
from transcriber.config import Settings
from transcriber.domain import capacity_core as core
from transcriber.domain.capacity_core import DEEPGRAM_PROCESSING_LIMIT_S
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import ConfigurationError, ErrorDetails, RetryableError
from transcriber.pipeline.adapters import handle_event
from transcriber.pipeline.dead_letter import DeadLetterRetrier
from transcriber.pipeline.workflow import Transcriber
from transcriber.services.capacity import (
    CAPACITY_REASON,
    GAVE_UP_REASON,
    CapacityGovernor,
    CapacityRequeue,
    PoolSettings,
    PoolState,
    Unlimited,
    build_governor,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from tests.core.conftest import Aws
    from transcriber.domain.retry import DeadLetterRetryPolicy

CAPACITY_TABLE = "core-capacity"
POOL = PoolSettings(table=CAPACITY_TABLE, name="project-a", size=3, ai_ceiling=2)


@dataclass
class Clock:
    """Wall-clock seconds, settable; the fake Lambda clock's sleeps advance it too."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(aws: Aws) -> str:
    aws.admin.dynamodb.create_table(
        TableName=CAPACITY_TABLE,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return CAPACITY_TABLE


@dataclass
class Waits:
    """Stands in for ``time.sleep``: records the delays, advances the Lambda and wall clocks, and
    runs ``on_sleep`` (what other functions do meanwhile)."""

    context: FakeLambdaContext
    clock: Clock
    delays: list[float] = field(default_factory=list)
    on_sleep: Callable[[int], None] | None = None

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.context.remaining_ms -= int(seconds * 1000)
        self.clock.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.delays))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps(lambda_context: FakeLambdaContext, clock: Clock) -> Waits:
    return Waits(lambda_context, clock)


def governor(
    aws: Aws, sleeps: Waits, clock: Clock, pool: PoolSettings = POOL, **kwargs: Any
) -> CapacityGovernor:
    return CapacityGovernor(pool, aws.dynamodb, sleep=sleeps, clock=clock, **kwargs)


def items(dynamodb: DynamoDBClient) -> dict[str, dict[str, Any]]:
    found = dynamodb.scan(TableName=CAPACITY_TABLE)["Items"]
    return {item["sk"]["S"]: item for item in found}


def context(seconds: float = 600) -> FakeLambdaContext:
    """Another invocation's context (its clock does not move)."""
    return FakeLambdaContext(remaining_ms=int(seconds * 1000))


def waiting(sleeps: Waits, seconds: float) -> FakeLambdaContext:
    """The context of the invocation that waits: its clock moves with each poll."""
    sleeps.context.remaining_ms = int(seconds * 1000)
    return sleeps.context


# -- leases -------------------------------------------------------------------------------------


def test_a_lease_holds_one_slot_for_its_term_within_the_invocations_deadline_and_is_released(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock)
    assert gov.acquire(context(40)).expires_at == pytest.approx(clock.now + 40, abs=0.01)  # the deadline

    lease = gov.acquire(context(120))

    (key,) = lease.keys
    stored = items(aws.admin.dynamodb)[key]
    assert key.startswith("slot#")
    assert float(stored["expires_at"]["N"]) == pytest.approx(clock.now + 45, abs=0.01)  # its term
    assert stored["lane"]["S"] == "live"
    gov.release(lease)
    assert key not in items(aws.admin.dynamodb)


def test_a_lease_is_renewed_while_its_request_runs_and_a_dead_holders_comes_back_after_one_term(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=1, lease_term_s=0.3)  # renewed every 0.1 s
    gov = governor(aws, sleeps, clock, pool)

    with gov.slot(context(600), [("model", "nova-3")]) as lease:
        clock.now += 10  # the request runs long past the lease's first term
        deadline = time.monotonic() + 5
        while float(items(aws.admin.dynamodb)[lease.keys[0]]["expires_at"]["N"]) < clock.now:
            assert time.monotonic() < deadline, "never renewed"
            time.sleep(0.05)
    assert items(aws.admin.dynamodb) == {}  # released at the end

    dead = gov.acquire(context(600))  # a holder that never renews: its sandbox was killed
    clock.now = dead.expires_at + 0.01
    assert gov.acquire(context(600)).keys == dead.keys


def test_never_more_leases_than_the_pool_and_the_full_pool_ends_as_a_capacity_retry(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock)
    held = [gov.acquire(context()) for _ in range(POOL.size)]
    assert len({lease.keys for lease in held}) == POOL.size

    with pytest.raises(RetryableError) as raised:
        gov.acquire(waiting(sleeps, 30))

    assert raised.value.reason == CAPACITY_REASON
    # It polled (with jitter) while the invocation had time, and kept what the request needs.
    assert sleeps.delays
    assert all(POOL.poll_min_s <= d <= POOL.poll_max_s for d in sleeps.delays)
    # The first polls come quickly, later ones spread out (the bound doubles up to poll_max_s).
    bounds = [min(POOL.poll_max_s, POOL.poll_min_s * 2**n) for n in range(1, len(sleeps.delays) + 1)]
    assert all(d <= bound for d, bound in zip(sleeps.delays, bounds, strict=True))
    assert max(sleeps.delays) > 2 * POOL.poll_min_s
    assert len(set(sleeps.delays)) > 1
    assert sleeps.context.remaining_ms / 1000 >= min(POOL.reserve_s, 30 / 2)  # at most half waited
    assert len(items(aws.admin.dynamodb)) == POOL.size


def test_a_lost_race_for_a_slot_tries_another_free_slot_before_waiting(
    aws: Aws, table: str, sleeps: Waits, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = governor(aws, sleeps, clock)
    before = gov.read()  # every slot free, as another waiter also saw it
    taken = {gov.acquire(context()).keys for _ in range(POOL.size - 1)}  # they won the race
    monkeypatch.setattr(gov, "read", lambda: before)

    lease = gov.acquire(context())

    assert sleeps.delays == []  # no poll: the slot still free was tried at once
    assert lease.keys not in taken
    assert len(items(aws.admin.dynamodb)) == POOL.size


def test_a_waiting_invocation_gets_the_slot_another_releases(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock)
    held = [gov.acquire(context()) for _ in range(POOL.size)]
    sleeps.on_sleep = lambda polls: gov.release(held[0]) if polls == 2 else None

    lease = gov.acquire(context())

    assert len(sleeps.delays) == 2
    assert lease.keys == held[0].keys


def test_a_killed_invocations_lease_frees_its_slot_at_its_deadline(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock, replace(POOL, size=1))
    killed = gov.acquire(context(40))  # never released: the function was killed

    with pytest.raises(RetryableError):
        gov.acquire(waiting(sleeps, 25))  # before its deadline the slot is taken
    clock.now = killed.expires_at + 0.01

    lease = gov.acquire(context())

    assert lease.keys == killed.keys
    gov.release(killed)  # a late release by the dead holder can't free the new lease
    assert items(aws.admin.dynamodb)[lease.keys[0]]["holder"]["S"] == lease.holder


def test_two_governors_on_one_pool_share_its_slots_and_other_pools_are_apart(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    dev, prod = governor(aws, sleeps, clock), governor(aws, sleeps, clock)
    other_project = governor(aws, sleeps, clock, replace(POOL, name="project-b"))
    leases = [dev.acquire(context()), prod.acquire(context()), dev.acquire(context())]

    with pytest.raises(RetryableError):
        prod.acquire(waiting(sleeps, 25))
    assert other_project.acquire(context()).keys[0].startswith("slot#")
    assert len({lease.keys for lease in leases}) == 3


def test_a_slot_another_took_at_the_same_moment_is_not_shared(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock, replace(POOL, size=2))
    rival = governor(aws, sleeps, clock, replace(POOL, size=2))
    stale = gov.read()  # both saw the same free slots
    rival_lease = rival.acquire(context())
    reads = iter([stale])
    gov.read = lambda: next(reads, None) or CapacityGovernor.read(gov)  # type: ignore[method-assign]

    lease = gov.acquire(context())

    holders = {key: item["holder"]["S"] for key, item in items(aws.admin.dynamodb).items()}
    assert sorted(holders.values()) == sorted([lease.holder, rival_lease.holder])


# -- audio-intelligence ceilings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "classes"),
    [
        ([("model", "nova-3")], ()),
        ([("summarize", "v2")], ("intelligence",)),
        ([("topics", "true")], ("intelligence",)),
        ([("sentiment", "false"), ("intents", "true")], ("intelligence",)),
        ([("detect_entities", "true"), ("summarize", "v2")], ("intelligence", "entities")),
        ([("summarize", "false")], ()),
        ([("model", "whisper-large"), ("detect_entities", "true")], ("intelligence", "entities", "whisper")),
    ],
)
def test_the_classes_follow_the_options_sent(query: list[tuple[str, str]], classes: tuple[str, ...]) -> None:
    assert core.request_classes(query) == classes


def test_audio_intelligence_requests_are_held_to_their_ceiling_inside_the_pool(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock)
    ai = [gov.acquire(context(), ("intelligence",)) for _ in range(2)]
    assert all(len(lease.keys) == 2 and lease.keys[1].startswith("intelligence#") for lease in ai)

    with pytest.raises(RetryableError):
        gov.acquire(waiting(sleeps, 25), ("intelligence",))
    plain = gov.acquire(context())  # the pool still has a slot for plain transcription
    with pytest.raises(RetryableError):
        gov.acquire(waiting(sleeps, 25))  # and the AI requests count inside it: 3 of 3 held

    for lease in (*ai, plain):
        gov.release(lease)
    assert items(aws.admin.dynamodb) == {}


# -- lanes (a backfill's share) --------------------------------------------------------------------


def test_a_lane_other_than_live_holds_at_most_its_share(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=4, lane_shares={"backfill": 0.5})
    backfill = governor(aws, sleeps, clock, pool, lane="backfill")
    live = governor(aws, sleeps, clock, pool)
    backfill.acquire(context())
    backfill.acquire(context())

    with pytest.raises(RetryableError):
        backfill.acquire(waiting(sleeps, 25))
    assert [live.acquire(context()) for _ in range(2)]  # live uploads keep the rest


# -- AIMD ---------------------------------------------------------------------------------------


def test_a_429_halves_the_pool_for_everyone_holds_for_retry_after_then_grows_back(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=8, hold_s=10, increase_every_s=5)
    gov, other = governor(aws, sleeps, clock, pool), governor(aws, sleeps, clock, pool)
    first, second = gov.acquire(context()), other.acquire(context())

    gov.throttled(first, retry_after_s=30)
    other.throttled(second, retry_after_s=None)  # the same congestion: no second halving

    assert other.read().effective_size(pool) == 4
    clock.now += 29
    assert gov.read().effective_size(pool) == 4  # Retry-After (30 s) is longer than hold_s
    clock.now += 1 + 2 * 5
    assert gov.read().effective_size(pool) == 6  # one slot more per 5 s
    clock.now += 60
    assert gov.read().effective_size(pool) == 8  # never above the pool's size

    later = gov.acquire(context())
    gov.throttled(later, retry_after_s=None)  # a new congestion halves again
    assert gov.read().effective_size(pool) == 4


def test_a_lowered_pool_admits_no_more_than_its_effective_size(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=4, hold_s=30.0)
    gov = governor(aws, sleeps, clock, pool)
    leases = sorted((gov.acquire(context()) for _ in range(4)), key=lambda lease: lease.keys[0])
    gov.throttled(leases[0], retry_after_s=None)  # 4 -> 2
    for lease in leases[:2]:
        gov.release(lease)  # slot#000 and slot#001 are free; #002 and #003, taken before, are not

    # each waits at most half of 8 s: inside the decrease's hold
    with pytest.raises(RetryableError):
        gov.acquire(waiting(sleeps, 8))  # 2 in flight against 2
    gov.release(leases[3])
    with pytest.raises(RetryableError):
        gov.acquire(waiting(sleeps, 8))  # nobody is let in while a slot above the cap is held
    gov.release(leases[2])
    again = [gov.acquire(waiting(sleeps, 8)) for _ in range(2)]
    assert sorted(lease.keys[0] for lease in again) == ["slot#000", "slot#001"]


def test_a_429_from_deepgram_lowers_the_pool_and_releases_the_slot_before_the_retry(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=4)
    transcriber = governed_transcriber(aws, sleeps, clock, pool)
    aws.upload("busy.wav")
    deepgram.add(responses.POST, LISTEN_URL, status=429, json={"err_code": "TOO_MANY_REQUESTS"})
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    outcome = transcriber.process(obj("busy.wav"), sleeps.context)

    assert outcome.status == "transcribed"
    limit = items(aws.admin.dynamodb).pop("limit")
    assert int(limit["reduced_to"]["N"]) == 2
    assert items(aws.admin.dynamodb).keys() == {"limit"}  # both leases released


# -- the workflow, and its cost -------------------------------------------------------------------


def governed_transcriber(aws: Aws, sleeps: Waits, clock: Clock, pool: PoolSettings = POOL) -> Transcriber:
    from transcriber.compose import transcriber_from  # here: this fixture alone changed with compose

    settings = Settings.from_env({**ENV, "CAPACITY_TABLE": pool.table, "CAPACITY_POOL": pool.name})
    return transcriber_from(
        settings,
        s3=aws.s3,
        dynamodb=aws.dynamodb,
        secretsmanager=aws.secretsmanager,
        events=aws.events,
        http=requests.Session(),
        sleep=sleeps,
        capacity=governor(aws, sleeps, clock, pool),
    )


def obj(key: str) -> S3ObjectRef:
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=16, etag=UPLOAD_ETAG)


def test_the_governor_costs_three_dynamodb_calls_per_object(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    transcriber = governed_transcriber(aws, sleeps, clock)
    calls: Counter[tuple[str, str]] = Counter()

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        first: dict[str, Any] = next(iter((params.get("TransactItems") or [{}])[0].values()), {})
        calls[(model.name, params.get("TableName") or first.get("TableName", ""))] += 1

    aws.dynamodb.meta.events.register("provide-client-params.dynamodb", count)
    for index in range(5):
        aws.upload(f"cost/{index}.wav")
        deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
        assert transcriber.process(obj(f"cost/{index}.wav"), sleeps.context).status == "transcribed"

    capacity = {name: n for (name, table_name), n in calls.items() if table_name == CAPACITY_TABLE}
    assert capacity == {"Query": 5, "TransactWriteItems": 5, "DeleteItem": 5}
    assert items(aws.admin.dynamodb) == {}


def test_a_full_pool_makes_no_request_and_no_failure_record_and_is_retried(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    transcriber = governed_transcriber(aws, sleeps, clock)
    others = governor(aws, sleeps, clock)
    for _ in range(POOL.size):
        others.acquire(context())
    aws.upload("waits.wav")
    sleeps.context.remaining_ms = 60_000

    with pytest.raises(RetryableError) as raised:
        transcriber.process(obj("waits.wav"), sleeps.context)

    assert raised.value.reason == CAPACITY_REASON
    assert len(deepgram.calls) == 0
    assert aws.output_keys() == []


def test_batch_operations_answer_temporary_failure_for_a_capacity_wait(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    transcriber = governed_transcriber(aws, sleeps, clock)
    for _ in range(POOL.size):
        governor(aws, sleeps, clock).acquire(context())
    aws.upload("batch.wav")
    sleeps.context.remaining_ms = 60_000
    event = {
        "invocationSchemaVersion": "1.0",
        "invocationId": "inv-1",
        "job": {"id": "job-1"},
        "tasks": [
            {
                "taskId": "t1",
                "s3Key": "batch.wav",
                "s3VersionId": None,
                "s3BucketArn": f"arn:aws:s3:::{INPUT_BUCKET}",
            }
        ],
    }

    response = handle_event(event, sleeps.context, transcriber)

    (result,) = response["results"]
    assert result["resultCode"] == "TemporaryFailure"
    assert result["resultString"].startswith(CAPACITY_REASON)


def batch_task_event(key: str) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": "2.0",
        "invocationId": f"inv-{key}",
        "job": {"id": "job-1", "userArguments": {}},
        "tasks": [{"taskId": f"t-{key}", "s3Key": key, "s3VersionId": None, "s3Bucket": INPUT_BUCKET}],
    }


def test_batch_operations_tasks_lease_in_the_backfill_lane_and_leave_live_uploads_their_share(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=4, lane_shares={"backfill": 0.5})
    transcriber = governed_transcriber(aws, sleeps, clock, pool)
    backfill = governor(aws, sleeps, clock, pool, lane="backfill")
    backfill.acquire(context())  # another backfill task holds one of the lane's two slots
    for key in ("archive/1.wav", "archive/2.wav", "live.wav"):
        aws.upload(key)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    seen: list[str] = []

    def lanes_held(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems":
            seen.append(params["TransactItems"][0]["Put"]["Item"]["lane"]["S"])

    aws.dynamodb.meta.events.register("provide-client-params.dynamodb", lanes_held)
    done = handle_event(batch_task_event("archive/1.wav"), sleeps.context, transcriber)
    assert done["results"][0]["resultCode"] == "Succeeded"
    assert seen == ["backfill"]

    backfill.acquire(context())  # now the lane is full: two of four slots
    sleeps.context.remaining_ms = 60_000
    waits = handle_event(batch_task_event("archive/2.wav"), sleeps.context, transcriber)
    assert waits["results"][0]["resultCode"] == "TemporaryFailure"
    assert waits["results"][0]["resultString"].startswith(CAPACITY_REASON)

    sleeps.context.remaining_ms = 600_000
    assert transcriber.process(obj("live.wav"), sleeps.context).status == "transcribed"  # live keeps the rest
    assert seen[-1] == "live"


# -- the retry function: a capacity wait uses no attempt -----------------------------------------


def receive(aws: Aws) -> SQSRecord:
    message = aws.admin.sqs.receive_message(
        QueueUrl=aws.dead_letter_queue_url,
        AttributeNames=["ApproximateReceiveCount"],
        MessageAttributeNames=["All"],
        VisibilityTimeout=0,
    )["Messages"][0]
    return sqs_record(message)


def test_the_retry_function_requeues_a_capacity_wait_without_using_an_attempt(
    aws: Aws,
    table: str,
    deepgram: responses.RequestsMock,
    sleeps: Waits,
    clock: Clock,
    dead_letter_policy: DeadLetterRetryPolicy,
) -> None:
    no_delay = replace(dead_letter_policy, base_delay_s=0)  # the requeued message is visible at once
    retrier = DeadLetterRetrier(governed_transcriber(aws, sleeps, clock), no_delay, aws.sqs)
    whole_time = replace(POOL, lease_term_s=None)  # others' leases last their invocations' time
    held = [governor(aws, sleeps, clock, whole_time).acquire(context(10_000)) for _ in range(POOL.size)]
    aws.upload("dlq.wav")
    aws.sqs.send_message(
        QueueUrl=aws.dead_letter_queue_url,
        MessageBody=json.dumps(s3_event("dlq.wav")),
        MessageAttributes={"ErrorMessage": {"DataType": "String", "StringValue": "deepgram-capacity: ..."}},
    )
    receive(aws)  # an earlier receive that really failed
    record = receive(aws)  # the 2nd receive: the pool is full

    for round_ in range(dead_letter_policy.max_attempts + 2):  # more waits than there are attempts
        sleeps.context.remaining_ms = 60_000
        assert retrier.process_record(record, sleeps.context) == {"deferred": CAPACITY_REASON}
        aws.admin.sqs.delete_message(QueueUrl=aws.dead_letter_queue_url, ReceiptHandle=record.receipt_handle)
        record = receive(aws)
        attributes = {name: value["stringValue"] for name, value in record["messageAttributes"].items()}
        assert attributes["PriorAttempts"] == "1"
        assert attributes["CapacityDeferrals"] == str(round_ + 1)
        assert attributes["ErrorMessage"] == "deepgram-capacity: ..."
    assert aws.output_keys() == []  # no parked failure record

    for lease in held:
        CapacityGovernor(POOL, aws.dynamodb).release(lease)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    sleeps.context.remaining_ms = 60_000
    assert retrier.process_record(record, sleeps.context)["transcribed"] == 1
    assert aws.output_keys() == [transcript_key("dlq.wav")]


def test_attempts_carried_over_a_requeue_still_park_the_event(
    aws: Aws,
    table: str,
    deepgram: responses.RequestsMock,
    sleeps: Waits,
    clock: Clock,
    dead_letter_policy: DeadLetterRetryPolicy,
) -> None:
    retrier = DeadLetterRetrier(governed_transcriber(aws, sleeps, clock), dead_letter_policy, aws.sqs)
    aws.upload("carried.wav")
    aws.sqs.send_message(
        QueueUrl=aws.dead_letter_queue_url,
        MessageBody=json.dumps(s3_event("carried.wav")),
        MessageAttributes={"PriorAttempts": {"DataType": "Number", "StringValue": "2"}},
    )
    deepgram.add(responses.POST, LISTEN_URL, status=503)
    record = receive(aws)  # receive 1 + 2 carried = the policy's 3 attempts

    assert retrier.process_record(record, sleeps.context) == {"parked": True}
    parked = aws.admin.sqs.receive_message(QueueUrl=aws.parking_queue_url)["Messages"]
    assert len(parked) == 1


# -- configuration and failures of the store ------------------------------------------------------


def test_settings_turn_the_governor_on_with_a_table() -> None:
    assert Settings.from_env(ENV).capacity is None
    settings = Settings.from_env(
        {
            **ENV,
            "CAPACITY_TABLE": "t",
            "CAPACITY_POOL": "p",
            "CAPACITY_POOL_SIZE": "7",
            "CAPACITY_AI_CEILING": "3",
        }
    )
    assert settings.capacity == PoolSettings(
        table="t",
        name="p",
        size=7,
        ai_ceiling=3,
        lane_shares={"backfill": 0.6},
        lane_patience_s={"backfill": 5},
    )
    with pytest.raises(ConfigurationError, match="CAPACITY_POOL_SIZE"):
        Settings.from_env({**ENV, "CAPACITY_TABLE": "t", "CAPACITY_POOL_SIZE": "0"})


def test_build_governor_follows_the_settings(aws: Aws) -> None:
    assert isinstance(build_governor(Settings.from_env(ENV), aws.dynamodb), Unlimited)
    governed = build_governor(Settings.from_env({**ENV, "CAPACITY_TABLE": "t"}), aws.dynamodb)
    assert isinstance(governed, CapacityGovernor)
    assert (governed.pool.size, governed.pool.ai_ceiling) == (45, 10)


def test_a_store_that_fails_is_a_retryable_error_and_a_failed_release_only_a_log_line(
    aws: Aws, table: str, sleeps: Waits, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = governor(aws, sleeps, clock)
    lease = gov.acquire(context())
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "Query")

    def fail(**_: Any) -> None:
        raise throttled

    for operation in ("query", "delete_item", "update_item"):
        monkeypatch.setattr(aws.dynamodb, operation, fail)
    with pytest.raises(RetryableError) as raised:
        gov.acquire(context())
    assert raised.value.reason == "capacity-store-error"
    gov.release(lease)  # logged; the lease ends at its deadline anyway
    gov.throttled(lease, None)  # logged; the next 429 tries again


def test_no_governor_lets_every_request_through() -> None:
    with Unlimited().slot(context(), [("summarize", "v2")]) as held:
        assert held is None


@pytest.mark.parametrize(
    "failure",
    [
        ClientError({"Error": {"Code": "InternalServerError"}}, "PutItem"),
        EndpointConnectionError(endpoint_url="x"),
    ],
)
def test_a_lease_write_that_fails_is_a_retryable_store_error_and_the_rest_is_logged(
    aws: Aws, table: str, sleeps: Waits, clock: Clock, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    # A few seconds' patience: each failed poll is logged, and the invocation has ten minutes.
    gov = governor(aws, sleeps, clock, replace(POOL, lane_patience_s={"live": 5.0}))
    lease = gov.acquire(context(), ("intelligence",))

    def fail(**_: Any) -> None:
        raise failure

    for operation in ("put_item", "transact_write_items", "delete_item", "update_item"):
        monkeypatch.setattr(aws.dynamodb, operation, fail)
    for classes in ((), ("intelligence",)):
        with pytest.raises(RetryableError) as raised:
            gov.acquire(context(), classes)
        assert raised.value.reason == "capacity-store-error"
    gov.release(lease)
    gov.throttled(lease, None)


def test_a_pool_read_follows_every_page(aws: Aws, table: str, sleeps: Waits, clock: Clock) -> None:
    gov = governor(aws, sleeps, clock)
    held = [gov.acquire(context()) for _ in range(2)]
    query = aws.dynamodb.query

    def one_item_per_page(**kwargs: Any) -> Any:
        return query(**kwargs, Limit=1)

    aws.dynamodb.query = one_item_per_page  # type: ignore[method-assign]

    assert gov.read().held == {key for lease in held for key in lease.keys}


# -- SQS ways in: a capacity wait is requeued, not a used-up receive ------------------------------


def sqs_event(aws: Aws, queue_url: str, key: str) -> dict[str, Any]:
    arn = aws.admin.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return {
        "Records": [
            {
                "messageId": "msg-1",
                "receiptHandle": "rh-1",
                "body": json.dumps(s3_event(key)),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {"Origin": {"stringValue": "s3", "dataType": "String"}},
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
        ]
    }


def test_an_sqs_message_that_waited_for_capacity_is_requeued_not_failed(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    transcriber = governed_transcriber(aws, sleeps, clock)
    transcriber.capacity_requeue = CapacityRequeue(lambda: aws.sqs, delay_min_s=0, delay_max_s=0)
    for _ in range(POOL.size):
        governor(aws, sleeps, clock).acquire(context())
    queue_url = aws.admin.sqs.create_queue(QueueName="buffer")["QueueUrl"]
    aws.upload("buffered.wav")
    sleeps.context.remaining_ms = 60_000

    response = handle_event(sqs_event(aws, queue_url, "buffered.wav"), sleeps.context, transcriber)

    assert response == {"batchItemFailures": []}
    (message,) = aws.admin.sqs.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(message["Body"]) == s3_event("buffered.wav")
    assert message["MessageAttributes"]["CapacityDeferrals"]["StringValue"] == "1"
    assert message["MessageAttributes"]["Origin"]["StringValue"] == "s3"
    assert len(deepgram.calls) == 0


def test_an_sqs_message_that_cannot_be_requeued_is_a_batch_item_failure(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    transcriber = governed_transcriber(aws, sleeps, clock)
    denied = ClientError({"Error": {"Code": "AccessDenied"}}, "SendMessage")

    def no_grant() -> Any:
        raise denied

    transcriber.capacity_requeue = CapacityRequeue(no_grant)
    for _ in range(POOL.size):
        governor(aws, sleeps, clock).acquire(context())
    queue_url = aws.admin.sqs.create_queue(QueueName="users-own")["QueueUrl"]
    fifo_url = aws.admin.sqs.create_queue(QueueName="ordered.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    aws.upload("own.wav")

    for url in (queue_url, fifo_url):
        sleeps.context.remaining_ms = 60_000
        response = handle_event(sqs_event(aws, url, "own.wav"), sleeps.context, transcriber)
        assert response == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}


# -- what the simulation led to: timeouts hold, releases retry, throttling is waited through ----------


def test_a_request_that_timed_out_keeps_its_slot_until_deepgrams_processing_limit(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock)
    timed_out = RetryableError(ErrorDetails(reason=GAVE_UP_REASON, message="no answer"))

    with pytest.raises(RetryableError), gov.slot(context(120), [("model", "nova-3")]) as lease:
        raise timed_out

    (key,) = lease.keys
    stored = items(aws.admin.dynamodb)[key]
    assert stored["holder"]["S"] == lease.holder  # not released: Deepgram may still be working
    assert float(stored["expires_at"]["N"]) == pytest.approx(lease.taken_at + DEEPGRAM_PROCESSING_LIMIT_S)


def test_a_release_the_store_throttles_is_tried_again(
    aws: Aws, table: str, sleeps: Waits, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = governor(aws, sleeps, clock)
    lease = gov.acquire(context())
    delete = aws.dynamodb.delete_item
    failures = iter([ClientError({"Error": {"Code": "ThrottlingException"}}, "DeleteItem")])

    def throttled_once(**kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return delete(**kwargs)

    monkeypatch.setattr(aws.dynamodb, "delete_item", throttled_once)

    gov.release(lease)

    assert items(aws.admin.dynamodb) == {}
    assert len(sleeps.delays) == 1


def test_a_throttled_pool_is_waited_through_and_a_refused_one_fails_at_once(
    aws: Aws, table: str, sleeps: Waits, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = governor(aws, sleeps, clock)
    query = aws.dynamodb.query
    failures = iter([ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "Query")] * 3)

    def throttled_thrice(**kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return query(**kwargs)

    monkeypatch.setattr(aws.dynamodb, "query", throttled_thrice)
    assert gov.acquire(context()).keys
    assert len(sleeps.delays) == 3

    def refused(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "Query")

    monkeypatch.setattr(aws.dynamodb, "query", refused)
    with pytest.raises(RetryableError) as raised:
        gov.acquire(context())
    assert raised.value.reason == "capacity-store-error"
    assert len(sleeps.delays) == 3  # no wait for a fault of configuration


def test_a_hold_that_fails_is_only_a_log_line(
    aws: Aws, table: str, sleeps: Waits, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = governor(aws, sleeps, clock)
    lease = gov.acquire(context(120))

    def fail(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="x")

    monkeypatch.setattr(aws.dynamodb, "update_item", fail)
    gov.hold(lease)

    assert float(items(aws.admin.dynamodb)[lease.keys[0]]["expires_at"]["N"]) == pytest.approx(
        lease.expires_at
    )


def test_a_renewal_that_lands_after_a_hold_never_cuts_the_hold_short(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock)
    lease = gov.acquire(context(600))
    gov.hold(lease)  # the request timed out at our end: keep the slot while Deepgram may still work
    held_until = float(items(aws.admin.dynamodb)[lease.keys[0]]["expires_at"]["N"])

    gov.renew(lease)  # the renewal thread, a moment late

    assert float(items(aws.admin.dynamodb)[lease.keys[0]]["expires_at"]["N"]) == held_until


# -- classes of one pool, caps that hold by construction, one halving per episode -----------------


def shared_pool(ai_ceiling: int = 10) -> PoolSettings:
    """Leases until the deadline, and a second's wait: the test's clock moves with each wait."""
    return PoolSettings(
        table=CAPACITY_TABLE,
        name="project-a",
        lease_term_s=None,
        lane_patience_s={"live": 1.0},
        ai_ceiling=ai_ceiling,
    )


def hold_slots(gov: CapacityGovernor, stack: ExitStack, query: list[tuple[str, str]], sleeps: Waits) -> int:
    """Slots ``gov`` lets requests with ``query`` hold at once."""
    held = 0
    while held < 50:
        try:
            stack.enter_context(gov.slot(context(), query))
        except RetryableError:
            return held
        held += 1
    return held


def test_whisper_requests_are_a_class_of_their_own_inside_the_pool(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    # Deepgram's table (45 and 5) scaled down: each lease read pages the whole pool.
    gov = governor(aws, sleeps, clock, replace(shared_pool(), size=9, whisper_size=3))
    with ExitStack() as stack:
        assert hold_slots(gov, stack, [("model", "whisper-large")], sleeps) == 3
        assert hold_slots(gov, stack, [("model", "nova-3")], sleeps) == 6  # the rest of the pool


def test_intelligence_is_one_class_for_every_feature_and_every_stack_on_the_pool(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    """Summarize and entities count in one intelligence class, and two stacks with different
    sizes for it share it: together they never hold more than the larger size."""
    one = governor(aws, sleeps, clock, shared_pool(ai_ceiling=4))
    two = governor(aws, sleeps, clock, shared_pool(ai_ceiling=3))
    with ExitStack() as stack:
        held = hold_slots(one, stack, [("summarize", "v2")], sleeps)
        held += hold_slots(two, stack, [("detect_entities", "true")], sleeps)
        held += hold_slots(one, stack, [("detect_entities", "true")], sleeps)
        assert held == 4


def test_a_decrease_between_a_read_and_a_write_lets_nobody_in_over_the_reduced_size(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    pool = replace(POOL, size=4)
    other = governor(aws, sleeps, clock, pool)
    held = [other.acquire(context()) for _ in range(2)]
    gov = governor(aws, sleeps, clock, pool)
    read = gov.read

    def then_a_429_elsewhere() -> PoolState:
        seen = read()
        if "limit" not in items(aws.admin.dynamodb):
            other.throttled(held[0], retry_after_s=None)  # 4 -> 2, with 2 in flight
        return seen

    gov.read = then_a_429_elsewhere  # type: ignore[method-assign]
    with pytest.raises(RetryableError):
        gov.acquire(waiting(sleeps, 8))  # it saw 2 of 4 held; the write must not make it 3 of 2
    assert int(items(aws.admin.dynamodb)["limit"]["reduced_to"]["N"]) == 2


def test_one_congestion_episode_halves_the_pool_once_and_holds_at_most_the_retry_cap(
    aws: Aws, table: str, sleeps: Waits, clock: Clock
) -> None:
    gov = governor(aws, sleeps, clock, replace(POOL, size=8))
    first = gov.acquire(context())
    clock.now += 1
    retried = gov.acquire(context())  # the same object's retry, taken inside the decrease's hold
    gov.throttled(first, retry_after_s=7200)  # 8 -> 4, held 30 s at most, not two hours
    gov.throttled(retried, retry_after_s=7200)  # the same episode: no second halving
    limit = items(aws.admin.dynamodb)["limit"]
    assert int(limit["reduced_to"]["N"]) == 4
    assert float(limit["hold_until"]["N"]) == pytest.approx(clock.now + 30)

    gov.release(first)
    gov.release(retried)
    clock.now += 31  # the hold is over: a 429 to a request let in now is a new episode
    later = gov.acquire(context())
    gov.throttled(later, retry_after_s=None)
    assert int(items(aws.admin.dynamodb)["limit"]["reduced_to"]["N"]) == 2


def test_one_objects_429s_through_the_handler_halve_the_pool_once(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    transcriber = governed_transcriber(aws, sleeps, clock, replace(POOL, size=8))
    aws.upload("busy.wav")
    for _ in range(2):
        deepgram.add(
            responses.POST,
            LISTEN_URL,
            status=429,
            json={"err_code": "TOO_MANY_REQUESTS"},
            headers={"Retry-After": "3600"},
        )
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    assert transcriber.process(obj("busy.wav"), sleeps.context).status == "transcribed"
    assert int(items(aws.admin.dynamodb)["limit"]["reduced_to"]["N"]) == 4
    assert max(sleeps.delays) <= 30  # no wait beyond the retry policy's cap


def test_a_backfill_task_that_finds_its_lane_full_hands_its_task_back_within_seconds(
    aws: Aws, table: str, deepgram: responses.RequestsMock, sleeps: Waits, clock: Clock
) -> None:
    """It does not wait inside the function (holding reserved concurrency live uploads need) for
    as long as its invocation allows: Batch Operations retries a TemporaryFailure."""
    pool = replace(POOL, size=4, lane_shares={"backfill": 0.5}, lane_patience_s={"backfill": 5.0})
    transcriber = governed_transcriber(aws, sleeps, clock, pool)
    backfill = governor(aws, sleeps, clock, pool, lane="backfill")
    for _ in range(2):
        backfill.acquire(context())
    aws.upload("archive/3.wav")
    sleeps.context.remaining_ms = 900_000

    waits = handle_event(batch_task_event("archive/3.wav"), sleeps.context, transcriber)

    assert waits["results"][0]["resultCode"] == "TemporaryFailure"
    assert sum(sleeps.delays) <= 5.0


def test_the_backfill_lane_share_holds_when_two_tasks_race_on_one_read() -> None:
    """Two backfill tasks read the pool with the lane one short of its share, then both write: the
    slot space encodes the share, so only one can win."""
    pool = PoolSettings(table="t", name="p", size=10, lane_shares={"backfill": 0.5})
    lane = [f"lane-backfill#{n:03d}" for n in range(4)]
    seen = PoolState(
        now=1.0, held=frozenset([f"slot#{n:03d}" for n in range(4)] + lane), lanes={"backfill": 4}
    )
    store: set[str] = set(seen.held)
    won = 0
    for seed in (1, 2):
        steps = core.acquire(pool, lane="backfill", deadline=600.0, rng=random.Random(seed))  # noqa: S311 - seeded
        next(steps)
        command = steps.send(seen)
        while isinstance(command, core.ConditionalPut):
            keys = set(command.lease.keys)
            free = not keys & store
            store |= keys if free else set()
            won += free
            command = steps.send(free) if not free else None  # type: ignore[assignment]
    assert won == 1
    assert sum(key.startswith("slot#") for key in store) <= 5  # the lane's 5 of 10, not 6
