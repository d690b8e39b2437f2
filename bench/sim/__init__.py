"""Deterministic simulation of the capacity governor at Deepgram's real limits (``make bench ONLY=sim``).

The governor's real decisions (``transcriber.domain.capacity_core``, imported, not modelled) against a
simulated DynamoDB, Deepgram and Lambda in virtual time, from one seed: see
``docs/capacity-simulation.md``. ``run`` returns the bench section, whose ``lines`` (one per
scenario) ``python -m bench`` prints last.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench.common import Row, SectionResult, say


@dataclass
class SimResult(SectionResult):
    lines: list[str] = field(default_factory=list)


def run(quick: bool = False) -> SimResult:
    from bench.sim.scenarios import SCENARIOS, figures

    result = SimResult("sim")
    for standard in SCENARIOS:
        scenario = standard
        if quick:  # a smoke run: a tenth of the objects
            scenario = replace(scenario, objects=scenario.objects // 10, live_for_s=scenario.live_for_s / 10)
        say(f"sim {scenario.name}: {scenario.objects} objects")
        found = figures(scenario)
        result.lines.append(found.line())
        result.rows += [
            Row(
                "sim",
                f"{scenario.name}: 200s/s against cap / mean service, while work waits",
                f"{found.ratio:.2f}",
                "",
                None,
                ">= 0.95",
                found.ratio >= 0.95,
            ),
            Row(
                "sim",
                f"{scenario.name}: whole run, all 200s/s against cap / mean service",
                f"{found.whole_run_ratio:.2f}",
                "",
                None,
                ">= 0.95",
                found.whole_run_ratio >= 0.95,
            ),
            Row(
                "sim",
                f"{scenario.name}: 429s, billable per version",
                f"{found.throttled_429}, {found.billable_per_version:.2f}",
                "0, 1.00",
                None,
                "0, 1.00",
                found.throttled_429 == 0 and round(found.billable_per_version, 2) == 1.0,
            ),
            Row(
                "sim",
                f"{scenario.name}: objects lost, unfinished",
                f"{found.lost}, {found.unfinished}",
                "0, 0",
                None,
                "0",
                found.lost == found.unfinished == 0,
            ),
        ]
        if found.live_slowdown is not None:
            result.rows.append(
                Row(
                    "sim",
                    f"{scenario.name}: live median time to transcript, during / alone",
                    f"{found.live_slowdown:.2f}x",
                    "",
                    None,
                    "<= 1.3x",
                    found.live_slowdown <= 1.3,
                )
            )
        result.notes.append(
            f"sim {scenario.name}: {found.virtual_s:.0f} s virtual; "
            + ", ".join(
                f"{key} {value:.0f}" if value == int(value) else f"{key} {value:g}"
                for key, value in found.details.items()
            )
        )
    return result
