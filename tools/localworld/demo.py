"""``make demo``: one real transcription, end to end, on the local world.

Starts moto (AWS) and the Deepgram emulator, provisions template.yaml's resources, uploads a
recording to the input bucket, lets S3's notification invoke the real transcribe handler in a
local Lambda container, and prints the transcript it wrote to the output bucket.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from localworld.chaos import FAST_RETRY_FUNCTION
from localworld.delivery import LocalDelivery
from localworld.world import SAMPLE_AUDIO, LocalWorld, local_world

TIMEOUT_S = 300.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--audio", type=Path, default=SAMPLE_AUDIO, help="recording to upload (default: sample)"
    )
    parser.add_argument("--key", default=None, help="object key (default: uploads/<file name>)")
    parser.add_argument(
        "--outage",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="Deepgram answers 402 (out of credit) this long first: watch the dead-letter queue recover it",
    )
    args = parser.parse_args(argv)
    audio: Path = args.audio
    if not audio.is_file():
        print(f"error: no such file: {audio}", file=sys.stderr)
        return 2
    key = args.key or f"uploads/{audio.name}"

    started = time.monotonic()
    say("Starting the local world: moto server (AWS) and the Deepgram emulator (HTTPS, pocketsphinx)")
    with local_world(emulator_options={"preload_asr": True}) as world:
        say(f"  AWS endpoint      {world.moto.endpoint_url}")
        say(f"  Deepgram API      {world.emulator.url}/v1/listen")
        say(f"  Deepgram key in   Secrets Manager secret {world.secret_id!r}")
        if args.outage:
            world.emulator.faults.set({402: 1.0})
            threading.Timer(args.outage, world.emulator.faults.clear).start()
            say(f"Deepgram is out of credit (402) for the next {args.outage:.0f} s")
        with LocalDelivery(
            world.stack,
            world.aws,
            world.function_env(),
            env_overrides={"RetryFunction": FAST_RETRY_FUNCTION},
        ) as delivery:
            world.upload(audio, key)
            say(f"Uploaded {audio.name} to s3://{world.input_bucket}/{key}")
            outcome = wait_for_output(world, key, started + TIMEOUT_S)
            # The JSON comes first; the derived formats and the completion event follow it.
            delivery.wait_until_idle(timeout_s=60.0)
            stats = delivery.stats().functions
        if args.outage:
            say(
                f"Transcribe function: {stats['TranscribeFunction'].invocations} invocations, "
                f"{stats['TranscribeFunction'].dlq_sends} sent to the dead-letter queue; "
                f"retry function: {stats['RetryFunction'].invocations} invocations"
            )
        elapsed = time.monotonic() - started
        return report(world, outcome, elapsed)


def say(message: str) -> None:
    print(message, flush=True)


def wait_for_output(world: LocalWorld, key: str, deadline: float) -> tuple[str, dict[str, Any]] | None:
    """Poll the output bucket the way a user would, for the transcript or the failure record."""
    s3 = world.aws.s3()
    candidates = [("transcript", world.transcript_key(key)), ("failure", world.failure_key(key))]
    while time.monotonic() < deadline:
        for kind, output_key in candidates:
            try:
                body = s3.get_object(Bucket=world.output_bucket, Key=output_key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            return kind, {"key": output_key, "document": json.loads(body)}
        time.sleep(0.2)
    return None


def report(world: LocalWorld, outcome: tuple[str, dict[str, Any]] | None, elapsed: float) -> int:
    if outcome is None:
        say(f"No transcript or failure record after {TIMEOUT_S:.0f} s: something is stuck.")
        return 1
    kind, found = outcome
    location = f"s3://{world.output_bucket}/{found['key']}"
    document = found["document"]
    if kind == "failure":
        say(f"Transcription failed ({document.get('reason')}): {document.get('message')}")
        say(f"Failure record: {location}")
        return 1
    alternative = document["results"]["channels"][0]["alternatives"][0]
    metadata = document["metadata"]
    say("")
    say(f"Transcript: {alternative['transcript']}")
    say("")
    say(
        f"  confidence {alternative.get('confidence', 0):.2f}, {len(alternative.get('words', []))} words, "
        f"{metadata.get('duration', 0):.2f} s of audio, Deepgram request {metadata.get('request_id')}"
    )
    say(f"  JSON written to {location}")
    show_formats(world, found["key"])
    say(f"Done in {elapsed:.1f} s; the local world is shut down.")
    return 0


FORMATS = (("txt", "plain text"), ("srt", "SRT captions"), ("vtt", "WebVTT captions"))
TEXT_LINES = 5


def show_formats(world: LocalWorld, json_key: str) -> None:
    """Where each derived format landed (beside the JSON), and the first lines of the text."""
    s3 = world.aws.s3()
    stem = json_key.removesuffix(".json")
    for extension, label in FORMATS:
        key = f"{stem}.{extension}"
        try:
            head = s3.head_object(Bucket=world.output_bucket, Key=key)
        except s3.exceptions.ClientError:
            say(f"  {label:<16} not written (see OutputFormats, or the transcript is empty)")
            continue
        size = f"{head['ContentType']}, {head['ContentLength']} bytes"
        say(f"  {label:<16} s3://{world.output_bucket}/{key} ({size})")
        if extension == "txt":
            text = s3.get_object(Bucket=world.output_bucket, Key=key)["Body"].read().decode("utf-8")
            for line in text.splitlines()[:TEXT_LINES]:
                say(f"      | {line}")


if __name__ == "__main__":
    sys.exit(main())
