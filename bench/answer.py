"""Long answers: the transcribe function's peak memory and time for Deepgram answers of growing
size (a long recording's words, utterances and paragraphs), against the function's MemorySize.

Each size runs in a fresh container on the runtime venv with MemorySize *not* enforced, so the
figure is how far the handler would go (the REPORT line's Max Memory Used: the worker's VmHWM,
start-up included); the emulator's ``long_answer`` fault makes the answer. The largest answer the
default memory handles is the largest size whose peak stays under the default MemorySize.
"""

from __future__ import annotations

from bench.common import Row, SectionResult, Uploader, check, product_spec, runtime_python, say
from localworld.lambda_runtime import LocalFunction
from localworld.world import LocalWorld

MiB = 1024 * 1024
SIZES_MIB = (16, 64, 128, 256)
QUICK_SIZES_MIB = (16,)
TIMEOUT_S = 900.0


def run(world: LocalWorld, quick: bool = False) -> SectionResult:
    section = SectionResult("answer")
    python = runtime_python()
    uploader = Uploader(world, "bench/answer")
    memory_mb = product_spec(world).memory_mb
    for size_mib in QUICK_SIZES_MIB if quick else SIZES_MIB:
        say(f"answer: {size_mib} MiB")
        try:
            peak_mb, duration_s = measure(world, python, uploader, size_mib)
        except RuntimeError as exc:  # one size failing must not hide the others' figures
            reason = str(exc).splitlines()[0][:160]
            section.rows.append(Row("answer", f"{size_mib} MiB answer", f"failed: {reason}"))
            continue
        section.rows.append(
            Row(
                "answer",
                f"peak memory (Max Memory Used), {size_mib} MiB answer",
                f"{peak_mb} MB ({duration_s:.1f} s)",
                f"MemorySize {memory_mb} MB",
                None,
                f"<= {memory_mb} MB",
                peak_mb <= memory_mb,
            )
        )
    section.notes.append(
        "answer: each size in a fresh container, MemorySize not enforced; Max Memory Used is the "
        "worker's VmHWM including start-up; the emulator's long_answer fault makes the answer"
    )
    return section


def measure(world: LocalWorld, python: str, uploader: Uploader, size_mib: int) -> tuple[int, float]:
    function = LocalFunction(
        product_spec(world),
        extra_env=world.function_env(),
        max_concurrency=1,
        python=python,
        timeout_s=TIMEOUT_S,
        enforce_memory=False,
    )
    try:
        event = uploader.upload()
        world.emulator.faults.next(1, kind="long_answer", answer_bytes=size_mib * MiB)
        result = check(function.invoke(event), f"a {size_mib} MiB answer")
    finally:
        function.close()
    if result.max_memory_mb is None:
        raise RuntimeError("no Max Memory Used in the REPORT line")
    say(f"answer: {size_mib} MiB: peak {result.max_memory_mb} MB in {result.duration_s:.1f} s")
    return result.max_memory_mb, result.duration_s
