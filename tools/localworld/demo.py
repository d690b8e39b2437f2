"""``make demo``: real transcriptions, end to end, on the local world.

Starts moto (AWS) and the Deepgram emulator, provisions template.yaml's resources, uploads a
recording (or every recording of a folder) to the input bucket, lets S3's notification invoke the
real transcribe handler in a local Lambda container, prints the transcript it wrote to the output
bucket, and copies every output (``.json``, ``.txt``, ``.srt``, ``.vtt``, or the failure record) to
a local folder (``demo-output/``, ignored by git) before the local world shuts down.

By default it uploads the committed two-voice recording (``samples/two_voices.wav``) with
``x-amz-meta-dg-diarize: true`` and ``x-amz-meta-dg-speakers: 0=Alice,1=Bob``: the emulator tells
the voices apart by pitch, and the text and captions (42 characters a line, two lines, 7 s at most)
name the speakers. ``--speakers`` names the speakers of any recording (``none``: no names).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localworld.chaos import FAST_RETRY_FUNCTION
from localworld.delivery import LocalDelivery
from localworld.world import ROOT, LocalWorld, local_world
from transcriber.config import DEFAULT_EXTENSIONS

TIMEOUT_S = 300.0  # per recording
OUTPUT_DIR = ROOT / "demo-output"
KEY_PREFIX = "uploads/"
MEDIA_EXTENSIONS = DEFAULT_EXTENSIONS.split(",")  # what the function transcribes; others it skips
TWO_VOICES = ROOT / "tools" / "localworld" / "samples" / "two_voices.wav"
TWO_VOICES_SPEAKERS = "0=Alice,1=Bob"  # who speaks first in it, and who second
CAPTION_CUES = 4  # the first cues of the SRT, printed


@dataclass(frozen=True)
class Upload:
    audio: Path
    key: str
    metadata: dict[str, str]  # x-amz-meta-*: the upload's own options


@dataclass(frozen=True)
class Outcome:
    kind: str  # transcript | failure
    key: str  # in the output bucket
    body: bytes  # as stored

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="a recording, or a folder: every recording in it (default: the two-voice sample)",
    )
    parser.add_argument(
        "--speakers",
        default=None,
        help=f"name the speakers (diarized), e.g. {TWO_VOICES_SPEAKERS!r} (the default for the two-voice "
        "sample); none: no names",
    )
    parser.add_argument(
        "--key", default=None, help="object key of a single recording (default: uploads/<name>)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=OUTPUT_DIR,
        help="where the outputs are kept (default: demo-output/)",
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="Deepgram answers 402 (out of credit) this long first: watch the dead-letter queue recover it",
    )
    args = parser.parse_args(argv)
    try:
        uploads = planned_uploads(args.audio or TWO_VOICES, args.key, speakers_of(args.audio, args.speakers))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

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
            for upload in uploads:
                world.upload(upload.audio, upload.key, Metadata=upload.metadata)
                say(f"Uploaded {upload.audio.name} to s3://{world.input_bucket}/{upload.key}")
                for name, value in upload.metadata.items():
                    say(f"  x-amz-meta-{name}: {value}")
            deadline = started + TIMEOUT_S * len(uploads)
            outcomes = [wait_for_output(world, upload.key, deadline) for upload in uploads]
            # The JSON comes first; the derived formats and the completion event follow it.
            delivery.wait_until_idle(timeout_s=60.0)
            stats = delivery.stats().functions
        if args.outage:
            say(
                f"Transcribe function: {stats['TranscribeFunction'].invocations} invocations, "
                f"{stats['TranscribeFunction'].dlq_sends} sent to the dead-letter queue; "
                f"retry function: {stats['RetryFunction'].invocations} invocations"
            )
        failed = 0
        for upload, outcome in zip(uploads, outcomes, strict=True):
            failed += report(world, upload, outcome, args.output_dir)
        say(f"Done in {time.monotonic() - started:.1f} s; the outputs are in {shown(args.output_dir)}/")
        say("The local world is shut down.")
        return 1 if failed else 0


def speakers_of(audio: Path | None, speakers: str | None) -> dict[str, str]:
    """The metadata that names the speakers: asked for, or the two-voice sample's by default."""
    names = speakers if speakers is not None else (TWO_VOICES_SPEAKERS if audio is None else "none")
    if names.strip().lower() == "none":
        return {}
    return {"dg-diarize": "true", "dg-speakers": names}


def planned_uploads(audio: Path, key: str | None, metadata: dict[str, str] | None = None) -> list[Upload]:
    """One recording, or every recording of a folder (by extension, as the function judges them)."""
    metadata = metadata or {}
    if audio.is_file():
        return [Upload(audio, key or f"{KEY_PREFIX}{audio.name}", metadata)]
    if not audio.is_dir():
        raise ValueError(f"no such file or folder: {audio}")
    if key:
        raise ValueError("--key names one recording's object: give a file, not a folder")
    extensions = {f".{ext}" for ext in MEDIA_EXTENSIONS}
    files = sorted(p for p in audio.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise ValueError(f"no recording ({', '.join(MEDIA_EXTENSIONS)}) in {audio}")
    return [Upload(path, f"{KEY_PREFIX}{path.name}", metadata) for path in files]


def say(message: str) -> None:
    print(message, flush=True)


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the clone when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def wait_for_output(world: LocalWorld, key: str, deadline: float) -> Outcome | None:
    """Poll the output bucket the way a user would, for the transcript or the failure record."""
    s3 = world.aws.s3()
    candidates = [("transcript", world.transcript_key(key)), ("failure", world.failure_key(key))]
    while time.monotonic() < deadline:
        for kind, output_key in candidates:
            try:
                body = s3.get_object(Bucket=world.output_bucket, Key=output_key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            return Outcome(kind, output_key, body)
        time.sleep(0.2)
    return None


def report(world: LocalWorld, upload: Upload, outcome: Outcome | None, output_dir: Path) -> int:
    """Print what became of one recording and keep its outputs; 1 if it did not become a transcript."""
    say("")
    if outcome is None:
        say(f"{upload.audio.name}: nothing written after {TIMEOUT_S:.0f} s: something is stuck.")
        return 1
    location = f"s3://{world.output_bucket}/{outcome.key}"
    document = outcome.document
    if outcome.kind == "failure":
        say(f"Transcription failed ({document.get('reason')}): {document.get('message')}")
        say(f"Failure record: {location}")
        kept = keep(output_dir, f"{upload.audio.name}.failure.json", outcome.body)
        say(f"  kept as          {kept}")
        return 1
    alternative = document["results"]["channels"][0]["alternatives"][0]
    metadata = document["metadata"]
    say(f"Transcript: {alternative['transcript']}")
    say("")
    say(
        f"  confidence {alternative.get('confidence', 0):.2f}, {len(alternative.get('words', []))} words, "
        f"{metadata.get('duration', 0):.2f} s of audio, Deepgram request {metadata.get('request_id')}"
    )
    say(f"  JSON written to {location}")
    kept = keep(output_dir, f"{upload.audio.name}.json", outcome.body)
    say(f"  kept as          {kept}")
    show_formats(world, outcome.key, upload, output_dir)
    return 0


FORMATS = (("txt", "plain text"), ("srt", "SRT captions"), ("vtt", "WebVTT captions"))
TEXT_LINES = 5


def show_formats(world: LocalWorld, json_key: str, upload: Upload, output_dir: Path) -> None:
    """Where each derived format landed (beside the JSON), a copy of each in ``output_dir``, and
    the first lines of the text."""
    s3 = world.aws.s3()
    stem = json_key.removesuffix(".json")
    for extension, label in FORMATS:
        key = f"{stem}.{extension}"
        try:
            obj = s3.get_object(Bucket=world.output_bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            say(f"  {label:<16} not written (see OutputFormats, or the transcript is empty)")
            continue
        body = obj["Body"].read()
        size = f"{obj['ContentType']}, {obj['ContentLength']} bytes"
        say(f"  {label:<16} s3://{world.output_bucket}/{key} ({size})")
        say(f"  {'kept as':<16} {keep(output_dir, f'{upload.audio.name}.{extension}', body)}")
        if extension == "txt":
            for line in body.decode("utf-8").splitlines()[:TEXT_LINES]:
                say(f"      | {line}")
        elif extension == "srt":
            for line in "\n\n".join(body.decode("utf-8").split("\n\n")[:CAPTION_CUES]).splitlines():
                say(f"      | {line}")


def keep(output_dir: Path, name: str, body: bytes) -> str:
    """Write one output into the local folder; the path as shown to the user."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / name
    path.write_bytes(body)
    return shown(path)


if __name__ == "__main__":
    sys.exit(main())
