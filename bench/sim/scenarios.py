"""The standard scenarios and their figures, one line each (``make bench ONLY=sim``).

The workload (which objects, when, how long their audio, which options) is drawn from its own
stream of the seed, so two variants of the governor meet the same objects.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace

from bench.sim import product
from bench.sim.engine import Draws
from bench.sim.world import KILL_POINTS, Function, Settings, Version, World, backfill_lane
from transcriber.domain.capacity_core import BACKFILL_LANE, PoolSettings

SEED = 22
AI_CEILING = 10  # Deepgram's limit for audio-intelligence requests (CapacityAiCeiling 0: the region's)
# Audio durations: log-normal, median 10 minutes (sigma 0.8: a long tail of hour-long recordings);
# Deepgram's time for it: 0.4 s plus the duration at about 45x real time, itself log-normal
# (sigma 0.25). Mean service time about 20 s, the README's planning figure per request.
AUDIO_MEDIAN_S, AUDIO_SIGMA = 600.0, 0.8
SPEEDUP, SPEED_SIGMA, OVERHEAD_S = 45.0, 0.25, 0.4


@dataclass(frozen=True)
class Scenario:
    name: str
    objects: int  # live uploads in a burst, or the archive of a backfill
    cap: int = 100  # the Deepgram project's limit, and the pool's size
    ai_share: float = 0.0  # objects whose options hold them to the audio-intelligence ceiling
    stacks: int = 1  # stacks sharing the pool, each its own function and concurrency
    concurrency: int = 1000  # per stack: Lambda's account default
    burst_s: float = 10.0  # the uploads arrive over this long
    backfill: bool = False
    batch_workers: int = 100
    live_rate: float = 0.0  # live uploads per second while a backfill runs
    live_for_s: float = 0.0
    kill_share: float = 0.0  # invocations killed, at points drawn from world.KILL_POINTS
    storm: tuple[float, float, float] | None = None  # DynamoDB throttling: start, end, share
    seed: int = SEED
    # For comparisons with the local world: a project limit other than the pool's size, one fixed
    # service time (the emulator's latency), invocations made directly (no S3 notification) into
    # containers already started.
    deepgram_cap: int | None = None
    service_s: float | None = None
    direct: bool = False
    warm: bool = False


SCENARIOS = (
    Scenario("burst", 10_000),
    Scenario("burst-ai", 10_000, ai_share=0.25),
    Scenario("two-stacks", 10_000, stacks=2, concurrency=500),
    Scenario("backfill", 100_000, backfill=True, concurrency=300, live_rate=0.5, live_for_s=3600.0),
    Scenario("kills", 10_000, kill_share=0.05),
    Scenario("throttle-storm", 10_000, storm=(60.0, 360.0, 0.5)),
)


@dataclass
class Figures:
    scenario: str
    objects: int
    cap: int
    ratio: float  # 200s per second against the best the caps allow, while work waits for a slot
    throttled_429: int
    billable_per_version: float
    live_slowdown: float | None
    dynamodb_per_object: float
    wall_s: float
    lost: int
    unfinished: int
    virtual_s: float
    whole_run_ratio: float = math.nan  # the same over the whole run (``_whole_run_ratio``)
    details: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        slowdown = "n/a" if self.live_slowdown is None else f"{self.live_slowdown:.2f}"
        return (
            f"sim {self.scenario}: objects {self.objects}, cap {self.cap}, 200s/s ratio {self.ratio:.2f}, "
            f"429s {self.throttled_429}, billable per version {self.billable_per_version:.2f}, "
            f"live slowdown {slowdown}, dynamodb per object {self.dynamodb_per_object:.1f}, "
            f"wall {self.wall_s:.1f} s"
        )


def pool_settings(scenario: Scenario, pool: PoolSettings | None = None) -> PoolSettings:
    """The product's pool at the scenario's size (``pool``: a variant to compare, same lanes)."""
    settings = product.pool(scenario.cap, AI_CEILING)
    if pool is None:
        return settings
    return replace(pool, size=scenario.cap, ai_ceiling=AI_CEILING, lane_shares=settings.lane_shares)


def workload(scenario: Scenario, *, live_only: bool = False) -> tuple[list[Version], list[Version]]:
    """(live uploads, archive objects), with arrival times, service times and classes."""
    draw = Draws(scenario.seed + 2)

    def version(index: int, arrived_at: float) -> Version:
        audio = min(max(draw.lognormal(AUDIO_MEDIAN_S, AUDIO_SIGMA), 5.0), 14_400.0)
        service = scenario.service_s or OVERHEAD_S + audio / SPEEDUP * draw.lognormal(1.0, SPEED_SIGMA)
        ai = draw.chance(scenario.ai_share)
        return Version(index, service, arrived_at, ceiling=AI_CEILING if ai else None)

    if not scenario.backfill:
        live = [version(i, draw.uniform(0.0, scenario.burst_s)) for i in range(scenario.objects)]
        return sorted(live, key=lambda v: v.arrived_at), []
    archive = [backfill_lane(version(i, 0.0)) for i in range(scenario.objects)]
    live, at = [], 0.0
    while True:
        at += draw.rng.expovariate(scenario.live_rate)
        if at > scenario.live_for_s:
            break
        live.append(version(scenario.objects + len(live), at))
    return live, ([] if live_only else archive)


def simulate(scenario: Scenario, pool: PoolSettings | None = None, *, live_only: bool = False) -> World:
    """One run of the scenario to its end (every object transcribed, parked or dropped)."""
    settings = Settings(
        pool=pool_settings(scenario, pool),
        deepgram_cap=scenario.deepgram_cap or scenario.cap,
        ai_cap=AI_CEILING,
        kill_share=scenario.kill_share,
        storm=scenario.storm,
    )
    world = World(settings, scenario.seed)
    live, archive = workload(scenario, live_only=live_only)
    functions = [Function(f"transcribe-{n}", scenario.concurrency) for n in range(scenario.stacks)]
    for function in functions:
        function.idle = function.concurrency if scenario.warm else 0
    for version in live:
        version.stack = version.index % scenario.stacks
        notified = version.arrived_at
        if not scenario.direct:
            notified += world.draw.lognormal(0.3, 0.5)  # S3's event notification
        world.loop.at(notified, world.deliver, (functions[version.stack], version, 0, 0, notified))
    if archive:
        world.batch_job(functions[0], archive, scenario.batch_workers)
    world.versions = live + archive
    world.loop.run()
    return world


def figures(scenario: Scenario, pool: PoolSettings | None = None) -> Figures:
    started = time.perf_counter()
    world = simulate(scenario, pool)
    slowdown = None
    if scenario.backfill:
        alone = simulate(scenario, pool, live_only=True)
        slowdown = _median_to_transcript(world) / _median_to_transcript(alone)
    wall_s = time.perf_counter() - started
    counters, versions = world.counters, world.versions
    objects = len(versions)
    return Figures(
        scenario=scenario.name,
        objects=objects,
        cap=scenario.cap,
        ratio=_ratio(world),
        whole_run_ratio=_whole_run_ratio(world),
        throttled_429=counters.throttled_429,
        billable_per_version=counters.billable / objects,
        live_slowdown=slowdown,
        dynamodb_per_object=counters.ddb_calls / objects,
        wall_s=wall_s,
        lost=sum(1 for v in versions if v.lost),
        unfinished=sum(1 for v in versions if v.done_at < 0 and not v.lost),
        virtual_s=world.loop.now,
        details={
            "whole-run ratio": round(_whole_run_ratio(world), 3),
            "ratio to last start": round(_ratio_to_last_start(world), 3),
            "events": world.loop.events,
            "queries": counters.queries,
            "puts": counters.puts,
            "deletes": counters.deletes,
            "renewals": counters.renewals,
            "ddb_throttled": counters.ddb_throttled,
            "requests": counters.requests,
            "answered": counters.answered,
            "max_in_flight": counters.max_in_flight,
            "max_ai_in_flight": counters.max_ai_in_flight,
            "timeouts": counters.timeouts,
            "kills": counters.kills,
            **{f"kills_{point}": counters.kills_at.get(point, 0) for point in KILL_POINTS},
            "killed_slots": counters.killed_slots,
            "killed_slots_late": counters.killed_slots_late,
            "killed_slot_back_max_s": round(counters.killed_slot_back_max_s, 1),
            "max_slot_leases": counters.max_slot_leases,
            "max_ceiling_leases": counters.max_ceiling_leases,
            "max_backfill_leases": counters.max_backfill_leases,
            "capacity_handbacks": counters.capacity_handbacks,
            "dead_lettered": counters.dead_lettered,
            "parked": counters.parked,
            "lambda_throttles": counters.lambda_throttles,
            "invocations": counters.invocations,
            "cold_starts": counters.cold_starts,
        },
    )


def _ratio(world: World) -> float:
    """200s per second against cap / mean service time, while work waits for a slot: Deepgram's
    busy slot-seconds over the slot-seconds the caps allowed the waiting work (``World._account``)."""
    return world.busy_s / world.usable_s if world.usable_s else math.nan


def _bound_s(world: World) -> float:
    """The least time the caps allow for all the work: Deepgram's service seconds over the pool,
    the audio-intelligence share over its ceiling, the backfill over its lane: whichever binds."""
    pool = world.settings.pool
    total = sum(v.service_s for v in world.versions)
    ai = sum(v.service_s for v in world.versions if v.ceiling is not None)
    backfill = sum(v.service_s for v in world.versions if not v.live)
    slots = max(1, int(pool.size * pool.lane_shares.get(BACKFILL_LANE, 1.0)))
    return max(total / pool.size, ai / world.settings.ai_cap, backfill / slots)


def _whole_run_ratio(world: World) -> float:
    """All 200s / (first request to last 200) / (cap / mean service time), the cap being what the
    class caps that bind let the work use (``_bound_s``): the run's length against the least the
    caps allow, slots idle while work sat in Lambda's retries or the dead-letter queue included."""
    counters = world.counters
    span = counters.last_answer - counters.first_request
    if not world.versions or span <= 0:
        return math.nan
    per_second = len(world.versions) / _bound_s(world)  # cap / mean service, for the caps that bind
    return counters.answered / span / per_second


def _ratio_to_last_start(world: World) -> float:
    """The first measure (before/after figures in docs/capacity-simulation.md): Deepgram's busy
    slot-seconds from the first request to the last one it accepted, over the pool times the
    share of it the caps let the work use on average."""
    accepted = world.accepted
    start, end = accepted[0][0], max(began for began, _ in accepted)
    busy = sum(min(finish, end) - began for began, finish in accepted)
    total = sum(v.service_s for v in world.versions)
    return busy / (total / _bound_s(world) * max(1e-9, end - start))


def _median_to_transcript(world: World) -> float:
    waits = [v.done_at - v.arrived_at for v in world.versions if v.live and v.done_at >= 0]
    return statistics.median(waits) if waits else math.nan
