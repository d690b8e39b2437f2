"""Warm overhead: per-object handler time of our warm container vs the floor's.

The floor (bench/floor/app.py) does only presign + Deepgram POST + output PUT, with the same kind of
clients (a boto3 S3 client, one requests session). Both run in one warm LocalFunction container
each, on the same runtime venv, answering from the emulator's cache; objects alternate ours/floor
(who goes first alternates too). The figure is the handler's own duration as the runtime measures
it (Lambda's "Duration"), median over the objects. Ours runs with idempotency on (it always does).
"""

from __future__ import annotations

from bench.common import (
    FLOOR_DIR,
    Row,
    SectionResult,
    Uploader,
    bench_spec,
    check,
    median,
    new_function,
    prime_emulator,
    product_spec,
    runtime_python,
    say,
    spread,
)
from localworld.world import LocalWorld

GOAL_RATIO = 1.15
WARMUP = 3


def run(world: LocalWorld, objects: int = 50) -> SectionResult:
    section = SectionResult("warm")
    python = runtime_python()
    uploader = Uploader(world, "bench/warm")
    prime_emulator(world, uploader)
    env = world.function_env()
    ours = new_function(product_spec(world), env, python=python)
    floor = new_function(bench_spec(world, FLOOR_DIR, "Floor"), env, python=python)
    durations: dict[str, list[float]] = {"ours": [], "floor": []}
    try:
        contenders = [("ours", ours), ("floor", floor)]
        for index in range(WARMUP + objects):
            order = contenders if index % 2 == 0 else contenders[::-1]
            for name, function in order:
                result = check(function.invoke(uploader.upload()), f"warm invoke ({name})")
                if index >= WARMUP:
                    if result.cold_start:
                        raise RuntimeError(f"{name}: unexpected cold start in the warm loop")
                    durations[name].append(result.duration_s)
            if index >= WARMUP and (index + 1 - WARMUP) % 10 == 0:
                say(f"warm: {index + 1 - WARMUP}/{objects} objects each")
    finally:
        ours.close()
        floor.close()
    ours_ms = median(durations["ours"])
    floor_ms = median(durations["floor"])
    ratio = ours_ms / floor_ms
    section.rows.append(
        Row(
            "warm",
            f"per-object handler time, warm (median of {objects})",
            f"{ours_ms * 1000:.1f} ms",
            f"{floor_ms * 1000:.1f} ms (floor)",
            ratio,
            f"<= {GOAL_RATIO}x",
            ratio <= GOAL_RATIO,
        )
    )
    section.rows.append(
        Row("warm", "  overhead per object (ours - floor)", f"{(ours_ms - floor_ms) * 1000:.1f} ms")
    )
    section.notes.append(f"warm spread: ours {spread(durations['ours'])}, floor {spread(durations['floor'])}")
    return section
