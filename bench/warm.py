"""Warm overhead: per-object handler time of our warm container vs the floor's.

The floor (bench/floor/app.py) does only presign + Deepgram POST + output PUT, with the same kind of
clients (a boto3 S3 client, one requests session). Both run in one warm LocalFunction container
each, on the same runtime venv, answering from the emulator's cache; objects alternate ours/floor
(who goes first alternates too). The figure is the handler's own duration as the runtime measures
it (Lambda's "Duration"), median over the objects. Ours runs with idempotency on (it always does).

Two more of ours, interleaved with them, say where the overhead goes: JSON only and no completion
events (no derived formats, no PutEvents), and the same with the capacity governor off (no
``CAPACITY_TABLE``): the difference between those two is the governor's cost per object.
"""

from __future__ import annotations

from bench.burst import LEAN_OUTPUTS
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
UNGOVERNED = {**LEAN_OUTPUTS, "CAPACITY_TABLE": ""}


def run(world: LocalWorld, objects: int = 50) -> SectionResult:
    section = SectionResult("warm")
    python = runtime_python()
    uploader = Uploader(world, "bench/warm")
    prime_emulator(world, uploader)
    env = world.function_env()
    ours = new_function(product_spec(world), env, python=python)
    lean = new_function(product_spec(world), env, python=python, env_overrides=LEAN_OUTPUTS)
    ungoverned = new_function(product_spec(world), env, python=python, env_overrides=UNGOVERNED)
    floor = new_function(bench_spec(world, FLOOR_DIR, "Floor"), env, python=python)
    contenders = [("ours", ours), ("lean", lean), ("ungoverned", ungoverned), ("floor", floor)]
    durations: dict[str, list[float]] = {name: [] for name, _ in contenders}
    try:
        for index in range(WARMUP + objects):
            order = contenders[index % 4 :] + contenders[: index % 4]  # who goes first rotates
            for name, function in order:
                result = check(function.invoke(uploader.upload()), f"warm invoke ({name})")
                if index >= WARMUP:
                    if result.cold_start:
                        raise RuntimeError(f"{name}: unexpected cold start in the warm loop")
                    durations[name].append(result.duration_s)
            if index >= WARMUP and (index + 1 - WARMUP) % 10 == 0:
                say(f"warm: {index + 1 - WARMUP}/{objects} objects each")
    finally:
        for _, function in contenders:
            function.close()
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
    lean_ms, ungoverned_ms = median(durations["lean"]), median(durations["ungoverned"])
    section.rows += [
        Row(
            "warm",
            "  JSON only, no completion events",
            f"{lean_ms * 1000:.1f} ms",
            "floor",
            lean_ms / floor_ms,
        ),
        Row(
            "warm",
            "  the same, capacity governor off",
            f"{ungoverned_ms * 1000:.1f} ms",
            "floor",
            ungoverned_ms / floor_ms,
        ),
        Row("warm", "  the governor's cost per object", f"{(lean_ms - ungoverned_ms) * 1000:.1f} ms"),
    ]
    section.notes.append(
        "warm spread: " + ", ".join(f"{name} {spread(values)}" for name, values in durations.items())
    )
    return section
