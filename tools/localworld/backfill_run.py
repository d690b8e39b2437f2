"""``make backfill`` without ``STACK``: a backfill of an archive, end to end, on the local world.

Uploads ``--objects`` recordings under a prefix of the input bucket (nothing delivers their S3
notifications: they stand for an archive that predates the stack), then runs the operator command
itself, ``scripts/operate.py backfill``, in a subprocess with plain boto3. Its S3 Control calls reach
``localworld.batch_operations`` (moto has no Batch Operations jobs), which lists the prefix and
invokes the real transcribe handler once per object in the Docker-free Lambda runtime; the report
is read back from the output bucket. Prints the command's output and Deepgram requests per object.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from localworld.batch_operations import LocalBatchOperations
from localworld.lambda_runtime import LocalFunction
from localworld.world import ROOT, SAMPLE_AUDIO, LocalWorld, local_world

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_PREFIX = "archive/"
# The template's setting that creates BackfillRole (Mappings: Settings:), edited as a deploy would.
BACKFILL_ON = {"Settings.Capacity.EnableBackfill": "true"}


def upload_archive(world: LocalWorld, prefix: str, count: int) -> list[str]:
    """``count`` recordings under ``prefix`` of the input bucket; their keys."""
    body = SAMPLE_AUDIO.read_bytes()
    keys = [f"{prefix}{i:05d}.wav" for i in range(count)]
    s3 = world.aws.s3()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=world.input_bucket, Key=key, Body=body), keys))
    return keys


def function_invoke(function: LocalFunction) -> Any:
    """Lambda's synchronous Invoke, as S3 Batch Operations calls it: (payload, error)."""

    def invoke(event: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
        result = function.invoke(event)
        return result.payload, result.error

    return invoke


def backfill_role_arn(world: LocalWorld) -> str:
    """The stack's BackfillRole (the world may have been loaded without the EnableBackfill setting)."""
    stack = world.stack if "BackfillRole" in world.stack.resources else world.stack_with(**BACKFILL_ON)
    return str(stack.resource("BackfillRole").arn)


def backfill_command(world: LocalWorld, prefix: str, *, poll_s: float = 1.0) -> list[str]:
    """The operator command line, with everything the stack's outputs would give it."""
    transcribe = world.function("TranscribeFunction")
    return [
        sys.executable,
        str(ROOT / "scripts" / "operate.py"),
        "backfill",
        "--bucket",
        world.input_bucket,
        "--prefix",
        prefix,
        "--function-arn",
        transcribe.function_arn,
        "--role-arn",
        backfill_role_arn(world),
        "--report-bucket",
        world.output_bucket,
        "--poll",
        str(poll_s),
    ]


def run_backfill(
    world: LocalWorld, prefix: str, *, concurrency: int, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/operate.py backfill`` over ``prefix`` against the world; its completed process."""
    spec = world.function("TranscribeFunction")
    with LocalFunction(spec, extra_env={**world.function_env(), **(extra_env or {})}) as function:
        engine = LocalBatchOperations(
            world.aws.s3(), {spec.function_arn: function_invoke(function)}, concurrency=concurrency
        )
        with engine:
            env = {**os.environ, **world.aws.env(), **engine.client_env()}
            return subprocess.run(
                backfill_command(world, prefix), env=env, capture_output=True, text=True, check=False
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make backfill", description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=200, help="recordings in the archive")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="archive prefix (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="tasks S3 runs at once locally")
    args = parser.parse_args(argv)
    with local_world(parameter_overrides=BACKFILL_ON) as world:
        keys = upload_archive(world, args.prefix, args.objects)
        print(f"archive: {len(keys)} recordings under s3://{world.input_bucket}/{args.prefix}")
        started = time.monotonic()
        process = run_backfill(world, args.prefix, concurrency=args.concurrency)
        elapsed = time.monotonic() - started
        print(process.stdout, end="")
        print(process.stderr, end="", file=sys.stderr)
        answered = sum(1 for r in world.emulator.requests if r.status == 200)
        per_object = answered / max(len(keys), 1)
        print(f"Deepgram 200 answers: {answered} for {len(keys)} objects ({per_object:.2f} per object)")
        print(f"backfill took {elapsed:.1f} s")
        return process.returncode


if __name__ == "__main__":
    sys.exit(main())
