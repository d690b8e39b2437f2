"""Bytes mode: the transcribe function's memory while it streams a large object to Deepgram, and its
wall time against url mode for the same object on the same emulator.

Objects are generated (a WAV header and silence), never committed: 200 MiB and 1 GiB. Each mode
runs in a fresh container on the runtime venv: one small invocation first (imports, clients, the
first TLS connections), then the worker's peak is reset to its resident set (``clear_refs`` 5) and
that is read from /proc (VmRSS: idle), then the large object, then its high-water mark (VmHWM:
peak). The figure is peak minus idle. Each mode gets its own copy of the object (idempotency would
otherwise answer the second mode from the record).

The emulator is set to hash bodies over 1 MiB as they arrive and answer without recognising them
(an hour of audio per 115 MB would take pocketsphinx hours), in both modes: the wall time is the
transfer and the function's own work, which is what differs between the modes.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    SectionResult,
    Uploader,
    check,
    product_spec,
    runtime_python,
    s3_event,
    say,
)
from localworld.lambda_runtime import LocalFunction
from localworld.world import LocalWorld

MiB = 1024 * 1024
SIZES = (("200 MiB", 200 * MiB), ("1 GiB", 1024 * MiB))
QUICK_SIZES = (("50 MiB", 50 * MiB),)
GOAL_MB = 64
TIMEOUT_S = 900.0


def wav_of_silence(size: int) -> bytes:
    """A 16 kHz 16-bit mono WAV of ``size`` bytes in all."""
    data = size - 44
    header = b"RIFF" + struct.pack("<I", size - 8) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    header += b"data" + struct.pack("<I", data)
    return header + bytes(data)


def proc_status_kb(pid: int, field: str) -> int:
    """A memory figure (kB) of a live process from /proc/<pid>/status: VmRSS now, VmHWM its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


class RssSampler:
    """Reads a process's VmRSS every 10 ms while the block runs; ``peak_kb`` is the largest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def run(world: LocalWorld, quick: bool = False) -> SectionResult:
    section = SectionResult("bytes")
    # Both modes the same on the emulator's side: every large body hashed, none recognised (nor cached).
    world.emulator.recognition_limit_bytes = MiB
    python = runtime_python()
    uploader = Uploader(world, "bench/bytes-warmup")
    for label, size in QUICK_SIZES if quick else SIZES:
        say(f"bytes: generating and uploading {label} twice")
        events = upload_twice(world, label, size)
        figures = {
            mode: measure(world, python, uploader, mode=mode, event=events[mode], label=label)
            for mode in ("bytes", "url")
        }
        add_rows(section, label, size, figures)
    section.notes.append(
        "bytes: peak is the larger of the worker's VmHWM (reset after one small invocation) and its VmRSS "
        "sampled every 10 ms during the large object; idle is its VmRSS after the small invocation; the "
        "emulator hashes the large bodies without recognising them"
    )
    return section


def upload_twice(world: LocalWorld, label: str, size: int) -> dict[str, dict[str, Any]]:
    s3 = world.aws.s3()
    body = wav_of_silence(size)
    events: dict[str, dict[str, Any]] = {}
    for mode in ("bytes", "url"):
        key = f"bench/bytes/{label.replace(' ', '')}-{mode}.wav"
        response = s3.put_object(Bucket=world.input_bucket, Key=key, Body=body, ContentType="audio/wav")
        events[mode] = s3_event(
            world.input_bucket,
            key,
            size=size,
            etag=response["ETag"].strip('"'),
            version_id=response.get("VersionId"),
            region=world.stack.region,
        )
    return events


def measure(
    world: LocalWorld, python: str, uploader: Uploader, *, mode: str, event: dict[str, Any], label: str
) -> dict[str, float]:
    function = LocalFunction(
        product_spec(world),
        env_overrides={"DELIVERY_MODE": mode},
        extra_env=world.function_env(),
        max_concurrency=1,
        python=python,
        timeout_s=TIMEOUT_S,
    )
    try:
        check(function.invoke(uploader.upload()), f"bytes warm-up ({mode})")
        [pid] = function.worker_pids
        # The peak so far is start-up's; from here it is this object's (Linux >= 4.0, our own child).
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        idle_kb = proc_status_kb(pid, "VmRSS")
        with RssSampler(pid) as sampler:
            result = check(function.invoke(event), f"{label} in {mode} mode")
        if result.payload["objects"][0]["delivery"] != mode:
            raise RuntimeError(
                f"{label}: asked for {mode}, delivered {result.payload['objects'][0]['delivery']}"
            )
        # The kernel's high-water mark, and our own samples in case it missed a brief peak.
        peak_kb = max(proc_status_kb(pid, "VmHWM"), sampler.peak_kb)
    finally:
        function.close()
    say(f"bytes: {label} {mode}: {result.duration_s:.1f} s, idle {idle_kb} kB, peak {peak_kb} kB")
    return {"duration_s": result.duration_s, "idle_mb": idle_kb / 1024, "peak_mb": peak_kb / 1024}


def add_rows(section: SectionResult, label: str, size: int, figures: dict[str, dict[str, float]]) -> None:
    ours, url = figures["bytes"], figures["url"]
    above = ours["peak_mb"] - ours["idle_mb"]
    section.rows.append(
        Row(
            "bytes",
            f"peak RSS above idle, {label} object, bytes mode",
            f"+{above:.2f} MB (idle {ours['idle_mb']:.1f}, peak {ours['peak_mb']:.1f})",
            f"+{url['peak_mb'] - url['idle_mb']:.2f} MB (url mode)",
            None,
            f"< {GOAL_MB} MB",
            above < GOAL_MB,
        )
    )
    section.rows.append(
        Row(
            "bytes",
            f"wall time, {label} object (handler duration)",
            f"{ours['duration_s']:.1f} s ({size / MiB / ours['duration_s']:.0f} MiB/s)",
            f"{url['duration_s']:.1f} s (url mode)",
            ours["duration_s"] / url["duration_s"],
        )
    )
