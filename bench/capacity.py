"""Capacity: the governor's pool against an emulator that enforces Deepgram's limits itself.

Three runs, each counted by the emulator (its own in-flight high-water marks and status codes):

* two stacks, one pool: two groups of transcribe functions (their own containers and settings, as
  two deployments would have) invoked directly at once, 20 each, sharing one DynamoDB pool of 20
  slots in front of one emulator capped at 20 with 3 s of latency;
* half with ``summarize=v2``: the same, one group sending an audio-intelligence option, which the
  emulator (like Deepgram) holds to 10 in flight;
* mixed models and features: both groups let uploads pick options (``UPLOAD_OPTIONS``,
  ``UPLOAD_MODELS``), and the uploads, spread over both, carry mixed ``dg-model`` (nova-3, the
  deployment's, and ``whisper-large``) and features (``dg-summarize``, ``dg-detect-entities``) in
  their metadata: 0 x 429, and the most requests in flight per class (general, intelligence,
  entities, Whisper), counted from the emulator's log, within the class's cap;
* a backfill of an archive (``BACKFILL_OBJECTS``) through the local S3 Batch Operations stand-in
  while live uploads arrive through S3 notifications: nothing lost, Deepgram requests per object,
  and the live uploads' median time to transcript against the same uploads with no backfill. As on
  AWS, the Batch tasks and the live uploads run in one function, one concurrency limit
  (``SHARED_CONCURRENCY``), and the retry function drains the dead-letter queue (where backfill
  tasks that found their lane full wait); the archive's wall ends at its last transcript.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bench.burst import LEAN_OUTPUTS, RuntimeDelivery
from bench.common import FUNCTION, Row, SectionResult, Uploader, median, prime_emulator, runtime_python, say
from localworld.backfill_run import function_invoke
from localworld.batch_operations import LocalBatchOperations
from localworld.chaos import FAST_RETRY_FUNCTION
from localworld.lambda_runtime import FUNCTION_NICE, InvocationResult, LocalFunction

if TYPE_CHECKING:
    from localworld.world import LocalWorld

POOL = 20  # the pool's size and the emulator's own limit: one 429 means the governor let one over
AI_CEILING = 10
ENTITIES_SIZE = 5
WHISPER_SIZE = 5
# The mixed run's uploads' metadata (per-upload options), in turn: nova-3 (the deployment's model),
# Whisper, intelligence, entities (intelligence too), both features.
MIXED_UPLOADS: tuple[dict[str, str], ...] = (
    {},
    {"dg-model": "whisper-large"},
    {"dg-summarize": "v2"},
    {"dg-detect-entities": "true"},
    {"dg-summarize": "v2", "dg-detect-entities": "true"},
)
MIXED_ENV = {
    "UPLOAD_OPTIONS": "model,summarize,detect_entities",
    "UPLOAD_MODELS": "nova-3,whisper",
    "CAPACITY_WHISPER_SIZE": str(WHISPER_SIZE),
}
LATENCY_S = 3.0
PER_STACK = 100
BACKFILL_OBJECTS = 2000
BACKFILL_LATENCY_S = 1.0
BACKFILL_CONCURRENCY = 24  # tasks S3 runs at once (it would run more: the pool is what limits)
BACKFILL_PERCENT = 60
LIVE_UPLOADS = 30
LIVE_SPACING_S = 1.5
LIVE_CONCURRENCY = 10
# One function serves both (one reserved concurrency on AWS): the two groups' old limits, shared.
SHARED_CONCURRENCY = LIVE_CONCURRENCY + BACKFILL_CONCURRENCY
RETRY_FUNCTION = "RetryFunction"
POOL_ENV = {
    "CAPACITY_POOL_SIZE": str(POOL),
    "CAPACITY_BACKFILL_PERCENT": str(BACKFILL_PERCENT),
    **LEAN_OUTPUTS,
}


def _group(world: LocalWorld, python: str, concurrency: int, **env: str) -> LocalFunction:
    return LocalFunction(
        world.function(FUNCTION),
        {**POOL_ENV, **env},
        world.function_env(),
        max_concurrency=concurrency,
        python=python,
        nice=FUNCTION_NICE,  # the services keep priority (lambda_runtime.FUNCTION_NICE)
    )


def _invoke_all(calls: list[tuple[LocalFunction, dict[str, Any]]]) -> list[InvocationResult]:
    """Every call at once; a container that died in a slow init (Lambda's 10 s limit on 2 busy
    cores) is invoked again, as Lambda's caller would retry it."""

    def call(item: tuple[LocalFunction, dict[str, Any]]) -> InvocationResult:
        result = item[0].invoke(item[1])
        for _ in range(3):
            if result.ok:
                break
            result = item[0].invoke(item[1])
        return result

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, calls))


def _shared_pool_run(
    world: LocalWorld,
    python: str,
    label: str,
    second_env: dict[str, str],
    *,
    first_env: dict[str, str] | None = None,
    metadata: Sequence[dict[str, str]] = ({},),
) -> tuple[list[Row], dict[str, int]]:
    """Both groups at once, the uploads' ``metadata`` (per-upload options) taken in turn."""
    world.emulator.reset()
    uploader = Uploader(world, f"bench/capacity-{label.replace(' ', '-')}")
    s3 = world.aws.s3()
    groups = [
        _group(world, python, POOL, DEEPGRAM_TAG="stack-a", **(first_env or {})),
        _group(world, python, POOL, **second_env),
    ]
    calls = []
    for index in range(PER_STACK * 2):
        key = uploader.next_key()
        s3.put_object(
            Bucket=world.input_bucket,
            Key=key,
            Body=uploader.audio,
            ContentType="audio/wav",
            Metadata=metadata[index % len(metadata)],
        )
        calls.append((groups[index % 2], {"bucket": world.input_bucket, "key": key}))
    say(f"capacity ({label}): {len(calls)} objects, two function groups sharing a pool of {POOL}")
    started = time.monotonic()
    try:
        results = _invoke_all(calls)
    finally:
        for group in groups:
            group.close()
    wall_s = time.monotonic() - started
    counters = world.emulator.counters
    listen = [r for r in world.emulator.requests if r.path.startswith("/v1/listen")]
    statuses = Counter(str(r.status) for r in listen)
    ok = statuses.get("200", 0)
    ideal_s = len(calls) / POOL * LATENCY_S
    failed = sum(not r.ok for r in results)
    rows = [
        Row(
            "capacity",
            f"{label}: 429s / Deepgram requests per object",
            f"{statuses.get('429', 0)} / {len(listen) / len(calls):.2f}",
            "0 / 1.00",
            None,
            "0 x 429, 1.00",
            statuses.get("429", 0) == 0 and len(listen) == len(calls),
        ),
        Row(
            "capacity",
            f"{label}: most requests in flight (emulator's count)",
            str(counters.get("max_in_flight", 0)),
            f"{POOL} (the pool)",
            None,
            f"<= {POOL}",
            counters.get("max_in_flight", 0) <= POOL,
        ),
        Row(
            "capacity",
            f"{label}: wall for {len(calls)} objects",
            f"{wall_s:.1f} s ({ok} x 200, {failed} failed invocations)",
            f"{ideal_s:.1f} s (ideal)",
            wall_s / ideal_s,
        ),
    ]
    return rows, counters


def _classes(query: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The limits of Deepgram's table a request counts under besides the general one (read from
    what it sent, not from the governor: a request counts under every limit it falls under)."""
    sent = dict(query)
    on = {name for name, value in sent.items() if value != "false"}
    classes = []
    if on & {"summarize", "topics", "intents", "sentiment", "detect_entities"}:
        classes.append("intelligence")
    if "detect_entities" in on:
        classes.append("entities")
    if sent.get("model", "").startswith("whisper"):
        classes.append("whisper")
    return tuple(classes)


def most_in_flight(listen: Sequence[Any]) -> dict[str, int]:
    """Per class (``general`` for every request), the most requests that held a slot at once in
    the emulator, from each logged request's arrival to its answer."""
    edges: list[tuple[float, int, str]] = []
    for request in listen:
        if request.in_flight is None or request.answered_at is None:
            continue  # refused (429) or never answered: held no slot
        for name in ("general", *_classes(request.query)):
            edges += [(request.time, 1, name), (request.answered_at, -1, name)]
    now: Counter[str] = Counter()
    most: Counter[str] = Counter()
    for _, step, name in sorted(edges):  # at a tie, an answer (-1) before an arrival
        now[name] += step
        most[name] = max(most[name], now[name])
    return dict(most)


def _class_rows(label: str, listen: Sequence[Any]) -> list[Row]:
    caps = {"general": POOL, "intelligence": AI_CEILING, "entities": ENTITIES_SIZE, "whisper": WHISPER_SIZE}
    most = most_in_flight(listen)
    return [
        Row(
            "capacity",
            f"{label}: most {name} requests in flight (emulator's log)",
            str(most.get(name, 0)),
            f"{cap} (the class's cap)",
            None,
            f"<= {cap}",
            0 < most.get(name, 0) <= cap,
        )
        for name, cap in caps.items()
    ]


def _listed(world: LocalWorld, s3: Any, prefix: str) -> set[str]:
    """The output keys under ``prefix``: one paged LIST, not a HEAD per awaited key (the world's
    one process serves every function's AWS calls; the bench's own polling must not crowd them)."""
    found: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=world.output_bucket, Prefix=prefix):
        found.update(item["Key"] for item in page.get("Contents", []))
    return found


def _pool_read_s(world: LocalWorld) -> float:
    """Seconds one ``GetItem`` on the capacity table takes: a read queued with the functions' own
    capacity calls (the local world serves one request at a time per table)."""
    table = world.function(FUNCTION).environment["CAPACITY_TABLE"]
    asked = time.monotonic()
    world.aws.dynamodb().get_item(TableName=table, Key={"pk": {"S": "bench-probe"}, "sk": {"S": "-"}})
    return time.monotonic() - asked


def _time_to_transcript(
    world: LocalWorld,
    uploader: Uploader,
    count: int,
    spacing_s: float,
    *,
    lists: list[float] | None = None,
    reads: list[float] | None = None,
) -> list[float]:
    """Upload ``count`` objects ``spacing_s`` apart; seconds from each upload to its transcript,
    seen by one watcher listing the uploads' transcript prefix every 0.2 s (each LIST's own time
    appended to ``lists``, and a capacity-table read's to ``reads``: how fast the local world
    answers AWS calls meanwhile)."""
    s3 = world.aws.s3()
    uploaded: dict[str, float] = {}  # transcript key -> upload time
    waits: dict[str, float] = {}
    lists = [] if lists is None else lists
    reads = [] if reads is None else reads
    lock = threading.Lock()
    done = threading.Event()
    prefix = f"{world.transcript_prefix}{uploader.prefix}/"

    def watch() -> None:
        deadline = time.monotonic() + count * spacing_s + 300
        while time.monotonic() < deadline:
            asked = time.monotonic()
            listed = _listed(world, s3, prefix)
            now = time.monotonic()
            lists.append(now - asked)
            reads.append(_pool_read_s(world))
            with lock:
                for key in listed & uploaded.keys() - waits.keys():
                    waits[key] = now - uploaded[key]
                if done.is_set() and len(waits) == len(uploaded):
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for _ in range(count):
        key = uploader.next_key()
        uploader.upload(key)
        with lock:
            uploaded[world.transcript_key(key)] = time.monotonic()
        time.sleep(spacing_s)
    done.set()
    watcher.join()
    return list(waits.values())


def _backfill_run(world: LocalWorld, python: str, objects: int) -> list[Row]:
    world.emulator.reset()
    world.emulator.latency = BACKFILL_LATENCY_S
    archive = Uploader(world, "bench/archive")
    s3 = world.aws.s3()
    keys = [archive.next_key() for _ in range(objects)]
    say(f"capacity (backfill): uploading an archive of {objects} objects")
    with ThreadPoolExecutor(16) as pool:  # before any delivery runs: no notification is routed
        list(
            pool.map(lambda key: s3.put_object(Bucket=world.input_bucket, Key=key, Body=archive.audio), keys)
        )
    live = Uploader(world, "bench/live")
    with RuntimeDelivery(
        world.stack,
        world.aws,
        world.function_env(),
        python=python,
        concurrency={FUNCTION: SHARED_CONCURRENCY},
        functions=[FUNCTION, RETRY_FUNCTION],
        env_overrides={FUNCTION: POOL_ENV, RETRY_FUNCTION: {**POOL_ENV, **FAST_RETRY_FUNCTION}},
    ) as delivery:
        say(f"capacity (backfill): {LIVE_UPLOADS} live uploads, no backfill")
        lists_alone: list[float] = []
        reads_alone: list[float] = []
        alone = _time_to_transcript(
            world, live, LIVE_UPLOADS, LIVE_SPACING_S, lists=lists_alone, reads=reads_alone
        )
        alone_records = len(delivery.records)
        before = len(world.emulator.requests)
        spec = world.function(FUNCTION)
        # Batch invokes the same function as S3 does: its containers, its concurrency limit.
        engine = LocalBatchOperations(
            s3,
            {spec.function_arn: function_invoke(delivery.function(FUNCTION))},
            concurrency=BACKFILL_CONCURRENCY,
        )
        with engine:
            job_id = engine.client().create_job(**_job_request(world, spec.function_arn))["JobId"]
            say(f"capacity (backfill): job {job_id} started; {LIVE_UPLOADS} live uploads meanwhile")
            started = time.monotonic()
            lists_during: list[float] = []
            reads_during: list[float] = []
            during = _time_to_transcript(
                world, live, LIVE_UPLOADS, LIVE_SPACING_S, lists=lists_during, reads=reads_during
            )
            records = delivery.records
            live_runs = _live_invocations(records[:alone_records]), _live_invocations(records[alone_records:])
            job = engine.wait(job_id, timeout_s=1800)
            job_s = time.monotonic() - started
            _await_transcripts(world, keys, timeout_s=1800)  # deferred tasks: via the retry function
            backfill_s = time.monotonic() - started
    listen = [r for r in world.emulator.requests[before:] if r.path.startswith("/v1/listen")]
    statuses = Counter(str(r.status) for r in listen)
    transcribed = sum(1 for key in keys if _exists(world, world.transcript_key(key)))
    total = objects + LIVE_UPLOADS
    share = max(1, POOL * BACKFILL_PERCENT // 100)
    ideal_s = objects / share * BACKFILL_LATENCY_S
    return [
        Row(
            "capacity",
            f"backfill of {objects} while live uploads arrive: archive objects without a transcript",
            f"{objects - transcribed} (job: {job.succeeded} succeeded, {job.failed} failed)",
            "0",
            None,
            "0 lost",
            transcribed == objects and len(during) == LIVE_UPLOADS,
        ),
        Row(
            "capacity",
            "backfill: Deepgram requests per object, 429s",
            f"{len(listen) / total:.2f}, {statuses.get('429', 0)} x 429",
            "1.00, 0",
            None,
            "1.00",
            len(listen) == total,
        ),
        Row(
            "capacity",
            "backfill: wall for the archive",
            f"{backfill_s:.1f} s (the job itself {job_s:.1f} s)",
            f"{ideal_s:.1f} s (its {share} slots x {BACKFILL_LATENCY_S:.0f} s latency)",
            backfill_s / ideal_s,
        ),
        Row(
            "capacity",
            "live uploads' median time to transcript, during a backfill vs alone",
            f"{median(during):.2f} s",
            f"{median(alone):.2f} s (no backfill)",
            median(during) / median(alone),
            "<= 1.3x",
            median(during) / median(alone) <= 1.3,
        ),
        Row(
            "capacity",
            "  live uploads' invocations (S3 events): cold starts, failed, median handler duration",
            live_runs[1],
            f"{live_runs[0]} (no backfill)",
        ),
        Row(
            "capacity",
            "  live uploads' Deepgram time (emulator: arrival to answer), median",
            f"{median(_deepgram_s(world.emulator.requests[before:])):.2f} s",
            f"{median(_deepgram_s(world.emulator.requests[:before])):.2f} s (no backfill)",
        ),
        Row(
            "capacity",
            "  the local world's AWS latency meanwhile (the bench's own S3 LIST), median",
            f"{median(lists_during) * 1000:.0f} ms",
            f"{median(lists_alone) * 1000:.0f} ms (no backfill)",
            median(lists_during) / median(lists_alone),
        ),
        Row(
            "capacity",
            "  the local world's DynamoDB latency meanwhile (the bench's own capacity-table GetItem), median",
            f"{median(reads_during) * 1000:.0f} ms",
            f"{median(reads_alone) * 1000:.0f} ms (no backfill)",
            median(reads_during) / median(reads_alone),
        ),
    ]


def _deepgram_s(requests: Sequence[Any]) -> list[float]:
    """Seconds from arrival to answer of the live uploads' requests (the presigned URL names the key)."""
    return [
        r.answered_at - r.time
        for r in requests
        if r.path.startswith("/v1/listen") and r.answered_at and "bench/live/" in str(r.json)
    ]


def _live_invocations(records: Sequence[Any]) -> str:
    """The transcribe function's S3-event invocations (Batch tasks are invoked apart): how many
    started cold, how many failed, and their median handler duration."""
    runs = [r.result for r in records if r.function == FUNCTION and r.source == "async"]
    cold = sum(r.cold_start for r in runs)
    failed = sum(not r.ok for r in runs)
    return f"{cold} cold / {len(runs)}, {failed} failed, {median([r.duration_s for r in runs]):.2f} s"


def _await_transcripts(world: LocalWorld, keys: list[str], timeout_s: float) -> None:
    """Until every archive object has its transcript (or the time is up: the row then counts them)."""
    s3 = world.aws.s3()
    wanted = {world.transcript_key(key) for key in keys}
    prefix = f"{world.transcript_prefix}bench/archive/"
    deadline = time.monotonic() + timeout_s
    while wanted - _listed(world, s3, prefix) and time.monotonic() < deadline:
        time.sleep(2)


def _job_request(world: LocalWorld, function_arn: str) -> dict[str, Any]:
    return {
        "AccountId": world.stack.account_id,
        "ConfirmationRequired": False,
        "ClientRequestToken": "bench-backfill",
        "Priority": 10,
        "RoleArn": f"arn:aws:iam::{world.stack.account_id}:role/backfill",
        "Operation": {"LambdaInvoke": {"FunctionArn": function_arn, "InvocationSchemaVersion": "2.0"}},
        "ManifestGenerator": {
            "S3JobManifestGenerator": {
                "SourceBucket": f"arn:aws:s3:::{world.input_bucket}",
                "EnableManifestOutput": False,
                "Filter": {"KeyNameConstraint": {"MatchAnyPrefix": ["bench/archive/"]}},
            }
        },
        "Report": {"Enabled": False},
    }


def _exists(world: LocalWorld, key: str) -> bool:
    s3 = world.aws.s3()
    try:
        s3.head_object(Bucket=world.output_bucket, Key=key)
    except s3.exceptions.ClientError:
        return False
    return True


def run(world: LocalWorld, *, quick: bool = False) -> SectionResult:
    section = SectionResult("capacity")
    python = runtime_python()
    prime_emulator(world, Uploader(world, "bench/prime"))
    world.emulator.max_concurrency = POOL
    world.emulator.latency = LATENCY_S
    rows, _ = _shared_pool_run(world, python, "two stacks, one pool", {"DEEPGRAM_TAG": "stack-b"})
    section.rows += rows
    rows, counters = _shared_pool_run(
        world,
        python,
        "half summarize=v2",
        {"DEEPGRAM_TAG": "stack-b", "DEEPGRAM_EXTRA_OPTIONS": "summarize=v2"},
    )
    section.rows += rows
    most_ai = counters.get(f"max_in_flight_{AI_CEILING}", 0)
    section.rows.append(
        Row(
            "capacity",
            "half summarize=v2: most summarize requests in flight",
            str(most_ai),
            f"{AI_CEILING} (Deepgram's ceiling)",
            None,
            f"<= {AI_CEILING}",
            0 < most_ai <= AI_CEILING,
        )
    )
    label = "mixed models and features"
    rows, _ = _shared_pool_run(
        world,
        python,
        label,
        {"DEEPGRAM_TAG": "stack-b", **MIXED_ENV},
        first_env=MIXED_ENV,
        metadata=MIXED_UPLOADS,
    )
    section.rows += rows
    listen = [r for r in world.emulator.requests if r.path.startswith("/v1/listen")]
    section.rows += _class_rows(label, listen)
    section.rows += _backfill_run(world, python, 200 if quick else BACKFILL_OBJECTS)
    return section


def backfill_only(objects: int) -> list[Row]:
    """The backfill subsection alone, in a world of its own (``python -m bench.capacity``): for
    development, not for the table's figures."""
    from localworld.world import local_world

    with local_world(dynamodb_process=True) as world:
        prime_emulator(world, Uploader(world, "bench/prime"))
        world.emulator.max_concurrency = POOL
        return _backfill_run(world, runtime_python(), objects)


if __name__ == "__main__":
    import sys

    from bench.common import format_text_table, render_table

    print(format_text_table(render_table(backfill_only(int(sys.argv[1]) if sys.argv[1:] else 400))))
