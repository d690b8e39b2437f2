"""``python -m bench``: the benchmarks, against the local world, in one run, as one table.

    python -m bench                      # every section (under 10 minutes on 2 cores)
    python -m bench --only cold,warm     # some sections (see SECTIONS)
    python -m bench --quick              # fewer repetitions, a smaller burst (a smoke run)
    python -m bench --only sim           # the governor in deterministic simulation (no local world)

Prints the table and writes it, with the machine's details, to bench/results.md (--output).
Ratios compare only figures measured side by side in this run; the machine is noisy, so each
figure is a median of repeated, interleaved measurements.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench.common import (
    BENCH,
    Row,
    SectionResult,
    format_markdown_table,
    format_text_table,
    machine_info,
    render_table,
    say,
)
from bench.sim import SimResult

SECTIONS = ("cold", "warm", "calls", "burst", "capacity", "size", "bytes", "answer", "sim")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run, not for figures)")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md", help="Markdown results file")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    quick: bool = args.quick
    info = machine_info()
    started = time.monotonic()
    results: list[SectionResult] = []
    for name in SECTIONS:
        if name not in chosen:
            continue
        say(f"section {name}")
        section_started = time.monotonic()
        try:
            result = RUNNERS[name](quick)
        except Exception as exc:  # one broken section must not hide the others' figures
            say(f"section {name} failed: {exc}")
            result = SectionResult(name, [Row(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:200]}")])
        result.elapsed_s = time.monotonic() - section_started
        say(f"section {name} took {result.elapsed_s:.0f} s")
        results.append(result)
    total_s = time.monotonic() - started
    table = render_table(row for result in results for row in result.rows)
    print(format_text_table(table))
    notes = [note for result in results for note in result.notes]
    if notes:
        print()
        print("\n".join(f"- {note}" for note in notes))
    print(f"\n(total {total_s:.0f} s; " + ", ".join(f"{r.name} {r.elapsed_s:.0f} s" for r in results) + ")")
    for line in _summary_lines(results):  # last, one per scenario, to compare across runs
        print(line)
    args.output.write_text(markdown(info, table, notes, results, total_s))
    say(f"wrote {args.output}")
    failed = any(row.metric == "FAILED" for result in results for row in result.rows)
    return 1 if failed else 0


def markdown(
    info: dict[str, str],
    table: list[list[str]],
    notes: list[str],
    results: list[SectionResult],
    total_s: float,
) -> str:
    lines = ["# Benchmark results (`python -m bench`)", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    timings = ", ".join(f"{r.name} {r.elapsed_s:.0f} s" for r in results)
    lines += [f"- run time: {total_s:.0f} s ({timings})", "", format_markdown_table(table), ""]
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    summary = _summary_lines(results)
    if summary:
        lines += ["## Simulation", "", "```", *summary, "```", ""]
    lines += [
        "Ratios are ours / reference, measured side by side in this run (medians of interleaved",
        "repetitions). Absolute figures are from a noisy 2-core machine: compare across runs with care.",
        "",
    ]
    return "\n".join(lines)


def _summary_lines(results: list[SectionResult]) -> list[str]:
    return [line for result in results if isinstance(result, SimResult) for line in result.lines]


def _in_world(body: Callable[..., SectionResult], **world_options: object) -> SectionResult:
    from localworld.world import local_world

    with ExitStack() as stack:
        world = stack.enter_context(local_world(**world_options))  # type: ignore[arg-type]
        return body(world)


def run_cold(quick: bool) -> SectionResult:
    from bench import cold

    return _in_world(lambda world: cold.run(world, runs=3 if quick else 7))


def run_warm(quick: bool) -> SectionResult:
    from bench import warm

    return _in_world(lambda world: warm.run(world, objects=10 if quick else 50))


def run_calls(quick: bool) -> SectionResult:
    from bench import calls

    return _in_world(lambda world: calls.run(world, objects=20 if quick else 100))


def run_burst(quick: bool) -> SectionResult:
    from bench import burst

    return _in_world(lambda world: burst.run(world, uploads=60 if quick else 300))


def run_bytes(quick: bool) -> SectionResult:
    from bench import bytes as bytes_section

    return _in_world(lambda world: bytes_section.run(world, quick=quick))


def run_capacity(quick: bool) -> SectionResult:
    from bench import capacity

    return _in_world(lambda world: capacity.run(world, quick=quick), dynamodb_process=True)


def run_answer(quick: bool) -> SectionResult:
    from bench import answer

    return _in_world(lambda world: answer.run(world, quick=quick))


def run_sim(quick: bool) -> SectionResult:
    from bench import sim

    return sim.run(quick)


def run_size(quick: bool) -> SectionResult:
    from bench import size

    return size.run()


RUNNERS: dict[str, Callable[[bool], SectionResult]] = {
    "cold": run_cold,
    "warm": run_warm,
    "calls": run_calls,
    "burst": run_burst,
    "size": run_size,
    "bytes": run_bytes,
    "capacity": run_capacity,
    "answer": run_answer,
    "sim": run_sim,
}

if __name__ == "__main__":
    sys.exit(main())
