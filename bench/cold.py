"""Cold start: a fresh Lambda container (process) imports the handler and processes one object.

Both handlers run in the local world's Docker-free runtime (``LocalFunction``), the same way: a new
worker process with the function's environment, ``import app`` (init), then one S3 event. The figure
compared is the wall time of that first ``invoke`` (process start + interpreter + import + the first
object, with its client set-up and secret read); the emulator answers from its cache. Runs alternate
ours/baseline (who goes first alternates too), after one untimed round each. Also the CPU time
(user + sys) of that container process, from its exit: on a shared machine, wall time is mostly
how long the process waited for a core, and CPU time is what the handler itself cost.

Also: ``python -X importtime`` of our handler, parsed, to say what dominates its import.
"""

from __future__ import annotations

import resource
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass

from bench.common import (
    BASELINE_DIR,
    Row,
    SectionResult,
    Uploader,
    baseline_python,
    bench_spec,
    check,
    median,
    ms,
    new_function,
    prime_emulator,
    product_spec,
    runtime_python,
    say,
    spread,
)
from localworld.lambda_runtime import build_environment
from localworld.template import FunctionSpec
from localworld.world import LocalWorld

GOAL_RATIO = 0.9  # issue 19: <= 0.9x the deepgram-sdk example


@dataclass
class ColdSample:
    wall_s: float
    init_s: float
    first_invoke_s: float
    cpu_s: float


def _exited_children_cpu_s() -> float:
    """CPU time of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_invoke(
    world: LocalWorld, spec: FunctionSpec, python: str, uploader: Uploader, what: str
) -> ColdSample:
    event = uploader.upload()
    cpu_before = _exited_children_cpu_s()
    function = new_function(spec, world.function_env(), python=python)
    try:
        started = time.perf_counter()
        result = function.invoke(event)
        wall = time.perf_counter() - started
    finally:
        function.close()  # waits for the container process, so its CPU time is counted
    cpu = _exited_children_cpu_s() - cpu_before
    check(result, what)
    if not result.cold_start or result.init_duration_s is None:
        raise RuntimeError(f"{what}: expected a cold start")
    return ColdSample(wall, result.init_duration_s, result.duration_s, cpu)


@dataclass
class ImportLine:
    self_us: int
    cumulative_us: int
    depth: int
    module: str


def parse_importtime(stderr: str) -> list[ImportLine]:
    lines = []
    for raw in stderr.splitlines():
        if not raw.startswith("import time:") or "self [us]" in raw:
            continue
        self_part, cumulative_part, name_part = raw[len("import time:") :].split("|")
        indent = len(name_part) - len(name_part.lstrip(" ")) - 1
        lines.append(ImportLine(int(self_part), int(cumulative_part), indent // 2, name_part.strip()))
    return lines


def importtime_profile(
    world: LocalWorld, spec: FunctionSpec, python: str, runs: int = 3
) -> dict[str, object]:
    """Median, over ``runs`` fresh processes, of ``import app`` broken down by package (sum of
    the modules' own times, so nothing is counted twice) and the X-Ray SDK's share."""
    env = build_environment(spec, {}, world.function_env(), log_stream_name="bench", python=python)
    path = [str(spec.code_uri), *(str(layer) for layer in spec.layers)]
    code = f"import sys; sys.path[:0] = {path!r}; import app"
    by_package: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    xray: list[float] = []
    xray_importers: set[str] = set()
    for _ in range(runs):
        result = subprocess.run(
            [python, "-I", "-X", "importtime", "-c", code],
            env=env,
            cwd=spec.code_uri,
            capture_output=True,
            text=True,
            check=True,
        )
        lines = parse_importtime(result.stderr)
        app = next(line for line in lines if line.module == "app" and line.depth == 0)
        totals.append(app.cumulative_us / 1e6)
        packages: dict[str, float] = defaultdict(float)
        for line in lines:
            packages[line.module.split(".")[0]] += line.self_us / 1e6
        for name, seconds in packages.items():
            by_package[name].append(seconds)
        # Each module's importer: the next line one level shallower (importtime prints post-order).
        xray_total = 0.0
        for index, line in enumerate(lines):
            if line.module.split(".")[0] == "aws_xray_sdk" and not any(
                other.module.split(".")[0] == "aws_xray_sdk" for other in _ancestors(lines, index)
            ):
                xray_total += line.cumulative_us / 1e6
                parents = _ancestors(lines, index)
                xray_importers.add(" <- ".join(p.module for p in parents[:3]))
        xray.append(xray_total)
    ranked = sorted(by_package.items(), key=lambda item: -median(item[1]))
    return {
        "total_s": median(totals),
        "packages": [(name, median(values)) for name, values in ranked],
        "xray_s": median(xray),
        "xray_importers": sorted(xray_importers),
    }


def _ancestors(lines: list[ImportLine], index: int) -> list[ImportLine]:
    found = []
    depth = lines[index].depth
    for line in lines[index + 1 :]:
        if line.depth < depth:
            found.append(line)
            depth = line.depth
            if depth == 0:
                break
    return found


def run(world: LocalWorld, runs: int = 7) -> SectionResult:
    section = SectionResult("cold")
    ours_spec = product_spec(world)
    base_spec = bench_spec(world, BASELINE_DIR, "Baseline")
    base_python = baseline_python()
    ours_python = runtime_python()
    uploader = Uploader(world, "bench/cold")
    prime_emulator(world, uploader)
    contenders = [
        ("ours", ours_spec, ours_python),
        ("baseline", base_spec, base_python),
    ]
    samples: dict[str, list[ColdSample]] = {"ours": [], "baseline": []}
    for round_number in range(runs + 1):
        order = contenders if round_number % 2 == 0 else contenders[::-1]
        for name, spec, python in order:
            sample = cold_invoke(world, spec, python, uploader, f"cold start ({name})")
            if round_number > 0:  # round 0 warms the page cache and writes .pyc files
                samples[name].append(sample)
        if round_number:
            say(
                f"cold round {round_number}/{runs}: ours {ms(samples['ours'][-1].wall_s)}, "
                f"baseline {ms(samples['baseline'][-1].wall_s)}"
            )
    ours = samples["ours"]
    base = samples["baseline"]
    ours_wall = median([s.wall_s for s in ours])
    base_wall = median([s.wall_s for s in base])
    ratio = ours_wall / base_wall
    section.rows += [
        Row(
            "cold",
            f"fresh process: import + 1 object (median of {runs})",
            ms(ours_wall),
            f"{ms(base_wall)} (deepgram-sdk)",
            ratio,
            f"<= {GOAL_RATIO}x",
            ratio <= GOAL_RATIO,
        ),
        Row(
            "cold",
            "  of which init (import app)",
            ms(median([s.init_s for s in ours])),
            ms(median([s.init_s for s in base])),
            median([s.init_s for s in ours]) / median([s.init_s for s in base]),
        ),
        Row(
            "cold",
            "  of which first invocation",
            ms(median([s.first_invoke_s for s in ours])),
            ms(median([s.first_invoke_s for s in base])),
            median([s.first_invoke_s for s in ours]) / median([s.first_invoke_s for s in base]),
        ),
        Row(
            "cold",
            "  CPU time of the container (user + sys, to its exit)",
            ms(median([s.cpu_s for s in ours])),
            ms(median([s.cpu_s for s in base])),
            median([s.cpu_s for s in ours]) / median([s.cpu_s for s in base]),
        ),
    ]
    section.notes.append(
        f"cold wall spread: ours {spread([s.wall_s for s in ours])}, "
        f"baseline {spread([s.wall_s for s in base])}"
    )

    say("cold: python -X importtime of our handler (3 processes)")
    profile = importtime_profile(world, ours_spec, ours_python)
    packages = profile["packages"]
    assert isinstance(packages, list)
    top = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in packages[:6])
    xray_s = float(profile["xray_s"])  # type: ignore[arg-type]
    section.rows += [
        Row("cold", "import app (-X importtime, median of 3)", ms(float(profile["total_s"]))),  # type: ignore[arg-type]
        Row("cold", "  top packages by own import time (ms)", top),
        Row(
            "cold",
            "  X-Ray SDK import on the cold path",
            f"yes: {ms(xray_s)} cumulative" if xray_s else "no",
        ),
    ]
    importers = profile["xray_importers"]
    assert isinstance(importers, list)
    if importers:
        section.notes.append("aws_xray_sdk is imported by: " + "; ".join(importers))
    section.notes.append(
        "own import time by package (ms): "
        + ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in packages[:12])
    )
    return section
