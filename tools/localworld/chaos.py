"""``make chaos``: the nothing-lost run. Hundreds of uploads through the whole local pipeline while
the Deepgram emulator throttles, fails, stalls, drops connections and runs out of credit for a
while; then every upload is accounted for: a transcript, a failure record, or a queued message.

S3 delivers at least once and in no order, and so does this run: the first tenth of the uploads
have each S3 event delivered twice, and some keys are uploaded several times (different bytes)
with their events held back and then delivered newest first. Each such key must end with the
latest version's outcome only (``stale outcomes``: an outcome from an older version).

Halfway through, every idempotency record is dropped (as if each had expired), and once everything
has landed every upload's S3 event is delivered once more: the transcripts in the bucket, not the
records, must say the work is done (``billable beyond 1/version`` stays at what the stalls explain).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
import wave
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from localworld.deepgram.response import long_results
from localworld.delivery import LocalDelivery
from localworld.world import SAMPLE_AUDIO, LocalWorld, local_world

if TYPE_CHECKING:
    from localworld.deepgram import DeepgramEmulator
    from localworld.deepgram.server import LoggedRequest

# The retry function's waits, shortened so a run takes minutes, not days (Lambda's own retry
# delays are shortened by the delivery's time_scale).
FAST_RETRY_FUNCTION = {
    "RETRY_BASE_DELAY_SECONDS": "1",
    "RETRY_MAX_DELAY_SECONDS": "4",
    "BLOCKED_RETRY_DELAY_SECONDS": "3",
}
# A short function timeout, so a stalled Deepgram request times out within the run.
SHORT_TIMEOUT = {"Settings.Functions.FunctionTimeout": "30"}
DEFAULT_RATES: dict[int | str, float] = {
    429: 0.08,
    500: 0.05,
    503: 0.05,
    504: 0.03,
    "drop": 0.03,
    "stall": 0.01,
}
# The first upload gets an answer this long (MiB): a long recording, within the 30 s timeout here.
LONG_ANSWER_MB = 32


@dataclass
class Report:
    uploads: int
    transcripts: int
    failures: Counter[str]
    both: list[str]
    unaccounted: list[str]
    queued: dict[str, int]
    deepgram_requests: int
    deepgram_statuses: Counter[str]
    dlq_sends: int
    elapsed_s: float
    non_audio_failed: int
    non_audio: int
    extra: dict[str, Any] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)  # keys whose outcome is not the latest version's
    reuploaded: int = 0
    versions_per_key: int = 0
    duplicated: int = 0
    records_dropped: int = 0  # idempotency records deleted halfway through the run
    redelivered: int = 0  # S3 events delivered again after everything had landed
    # Billable (200) answers beyond one per object version, and how many of those follow an injected
    # stall: Deepgram finished a request whose client had given up (a client-side timeout), so the
    # retry paid again. In synchronous mode nothing can avoid that; anything else is a bug.
    extra_billable: int = 0
    billed_versions: int = 0  # object versions with at least one billable answer
    billable_after_stall: int = 0

    @property
    def unexplained_billable(self) -> int:
        return max(0, self.extra_billable - self.billable_after_stall)

    @property
    def billable_per_version(self) -> float:
        return (
            (self.billed_versions + self.extra_billable) / self.billed_versions
            if self.billed_versions
            else 0.0
        )

    @property
    def requests_per_object(self) -> float:
        return self.deepgram_requests / self.uploads if self.uploads else 0.0

    def lines(self) -> list[str]:
        return [
            f"uploads                    {self.uploads} ({self.non_audio} of them not audio)",
            f"transcripts                {self.transcripts}",
            f"failure records            {sum(self.failures.values())} {dict(self.failures)}",
            f"non-audio as failures      {self.non_audio_failed} of {self.non_audio}",
            f"both transcript and failure {len(self.both)}",
            f"still in a queue           {sum(self.queued.values())} {self.queued}",
            f"unaccounted for            {len(self.unaccounted)}",
            f"re-uploaded out of order   {self.reuploaded} keys x {self.versions_per_key} versions,"
            f" newest delivered first; {self.duplicated} uploads delivered twice",
            f"stale outcomes             {len(self.stale)} (an older version's outcome)",
            f"records dropped halfway    {self.records_dropped} idempotency records;"
            f" {self.redelivered} S3 events delivered again at the end",
            f"Deepgram requests          {self.deepgram_requests}"
            f" ({self.requests_per_object:.2f} per object)",
            f"Deepgram answers           {dict(sorted(self.deepgram_statuses.items()))}",
            f"billable per version       {self.billable_per_version:.2f}"
            f" ({self.billed_versions + self.extra_billable} answers for {self.billed_versions} versions)",
            f"billable beyond 1/version  {self.extra_billable} ({self.billable_after_stall} answered to"
            f" a client that timed out on an injected stall; unexplained {self.unexplained_billable})",
            f"dead-letter sends          {self.dlq_sends}",
            f"wall time                  {self.elapsed_s:.1f} s",
            *(f"{name:<27}{value}" for name, value in self.extra.items()),
        ]


def run(
    world: LocalWorld,
    *,
    uploads: int = 300,
    non_audio: int = 6,
    rates: dict[int | str, float] | None = None,
    payment_window_s: float = 12.0,
    concurrency: int = 8,
    timeout_s: float = 900.0,
    long_answer_mb: int = LONG_ANSWER_MB,
    reuploads: int = 10,
    versions: int = 3,
    duplicates: int | None = None,
) -> Report:
    """Upload, inject faults, wait until everything has landed (or the timeout), count.

    With ``long_answer_mb``, the first upload's answer is that long (a long recording's), under
    the function's enforced MemorySize. ``reuploads`` keys get ``versions`` versions each,
    delivered newest first; the first ``duplicates`` uploads (default: a tenth) have their S3
    events delivered twice."""
    s3 = world.aws.s3()
    emulator = world.emulator
    fault_rates = DEFAULT_RATES if rates is None else rates
    emulator.faults.set(fault_rates, stall_seconds=25, seed=7)
    keys = [f"chaos/{i:04d}.wav" for i in range(uploads)]
    bad = set(keys[:: max(1, uploads // non_audio)][:non_audio]) if non_audio else set()
    sample = SAMPLE_AUDIO.read_bytes()
    duplicated = uploads // 10 if duplicates is None else duplicates
    reuploaded = [f"chaos/reupload-{i:03d}.wav" for i in range(reuploads)]
    latest: dict[str, str] = {}
    dropped: list[int] = []
    started = time.monotonic()
    with LocalDelivery(
        world.stack,
        world.aws,
        world.function_env(),
        concurrency={"TranscribeFunction": concurrency, "RetryFunction": 2},
        env_overrides={"RetryFunction": FAST_RETRY_FUNCTION},
        time_scale=0.01,
    ) as delivery:
        # A stretch of "out of credit" mid-run: longer than Lambda's own retries, so those events
        # reach the dead-letter queue and the retry function has to bring them back. It opens once
        # Deepgram has seen a tenth of the uploads, not at a fixed time, so a slow or loaded machine
        # still sends requests into it.
        stop_window = threading.Event()
        window = threading.Thread(
            target=_out_of_credit_window,
            args=(emulator, max(1, uploads // 10), payment_window_s, fault_rates, stop_window),
            daemon=True,
        )
        window.start()
        dropper = threading.Thread(
            target=_drop_records_halfway,
            args=(world, keys + reuploaded, dropped, stop_window),
            daemon=True,
        )
        dropper.start()
        long_key = _start_long_answer(world, keys, bad, long_answer_mb)
        latest = _upload_out_of_order(world, delivery, reuploaded, versions, sample)
        for index, key in enumerate(keys):
            delivery.duplicate_s3_events = index < duplicated
            body = b"meeting notes, not audio\n" * 40 if key in bad else sample
            if key != long_key:
                s3.put_object(Bucket=world.input_bucket, Key=key, Body=body)
        _wait_for_events(world, delivery, keys[-1])
        delivery.duplicate_s3_events = False
        keys += reuploaded
        deadline = started + timeout_s
        _wait_for_outcomes(world, delivery, keys, deadline)
        redelivered = _redeliver_uploads(delivery)
        _wait_for_outcomes(world, delivery, keys, deadline)
        stop_window.set()
        window.join()
        dropper.join()
        stats = delivery.stats()
        queued = {
            name: queue.visible + queue.not_visible + queue.delayed
            for name, queue in stats.queues.items()
            if queue.visible + queue.not_visible + queue.delayed
        }
        dlq_sends = stats.dlq_sends
    emulator.faults.clear()
    transcripts, failures = _outputs(world, keys)
    reasons: Counter[str] = Counter()
    for key in failures:
        record = s3.get_object(Bucket=world.output_bucket, Key=world.failure_key(key))["Body"].read()
        reasons[_reason(record)] += 1
    requests = emulator.requests
    extra: dict[str, Any] = {}
    if long_key:
        answers = sum(1 for r in requests if r.status == 200 and long_key in json.dumps(r.json))
        outcome = "transcript" if long_key in transcripts else "failure" if long_key in failures else "none"
        extra["long answer"] = f"{long_answer_mb} MiB, {outcome}, Deepgram 200s for it: {answers}"
    return Report(
        uploads=len(keys),
        transcripts=len(transcripts),
        failures=reasons,
        both=sorted(transcripts & failures),
        unaccounted=sorted(set(keys) - transcripts - failures),
        queued=queued,
        deepgram_requests=len(requests),
        deepgram_statuses=Counter(str(r.status) if r.status else r.outcome for r in requests),
        dlq_sends=dlq_sends,
        elapsed_s=time.monotonic() - started,
        non_audio_failed=len(bad & failures),
        non_audio=len(bad),
        extra=extra,
        stale=_stale(world, latest, transcripts, failures),
        extra_billable=_extra_billable(requests),
        billed_versions=len(_billable_per_version(requests)),
        billable_after_stall=sum(1 for r in requests if r.status == 200 and r.fault == "stall"),
        reuploaded=len(reuploaded),
        versions_per_key=versions,
        duplicated=duplicated,
        records_dropped=sum(dropped),
        redelivered=redelivered,
    )


def _wait_for_outcomes(world: LocalWorld, delivery: LocalDelivery, keys: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        transcripts, failures = _outputs(world, keys)
        if len(transcripts | failures) >= len(keys) and delivery.is_idle():
            return
        time.sleep(1.0)


def _drop_records_halfway(
    world: LocalWorld, keys: list[str], dropped: list[int], stop: threading.Event
) -> None:
    """Once half the keys have an outcome, delete every completed idempotency record, as if it had
    expired. An in-progress record is left: DynamoDB's TTL deletes a record 30 days after it was
    written (``expiration``), never while its invocation runs; deleting one then let a duplicate
    delivery pay Deepgram beside the invocation still retrying (reproduced in 1 of 3 runs of the
    test tier's chaos)."""
    while len(set().union(*_outputs(world, keys))) < len(keys) // 2:
        if stop.wait(0.5):
            return
    table = world.stack.resource("IdempotencyTable").physical_name
    dynamodb = world.aws.dynamodb()
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        ProjectionExpression="id",
        FilterExpression="#status = :completed",
        ExpressionAttributeNames={"#status": "status"},  # Powertools' status attribute
        ExpressionAttributeValues={":completed": {"S": "COMPLETED"}},
    )
    for page in pages:
        for item in page["Items"]:
            dynamodb.delete_item(TableName=table, Key={"id": item["id"]})
            dropped.append(1)


def _redeliver_uploads(delivery: LocalDelivery) -> int:
    """Deliver every S3 event the function has seen once more (S3 delivers at least once, and a
    late duplicate can come after the idempotency record is gone)."""
    seen: dict[str, Any] = {}
    for record in delivery.records:
        if record.function == "TranscribeFunction" and record.source == "async":
            seen.setdefault(json.dumps(record.event, sort_keys=True), record.event)
    for event in seen.values():
        delivery.invoke_async("TranscribeFunction", event)
    return len(seen)


def _start_long_answer(world: LocalWorld, keys: list[str], bad: set[str], mb: int) -> str | None:
    """Upload the first audio key alone with a long answer queued for the next request (so that
    answer is that object's), and wait until it has its transcript (or a minute) before the others
    come: on 2 shared cores, the moto server, the emulator and eight handlers at once can make the
    function's 30 s here too short for a 32 MiB answer, and its client timeout would pay again."""
    key = next((k for k in keys if k not in bad), None)
    if not mb or key is None:
        return None
    # Built before the run (seconds on a loaded machine), so the emulator answers it at once: a
    # client timeout would make the retry pay again, which this run counts.
    long_results(mb * 1024 * 1024)
    world.emulator.faults.next(1, kind="long_answer", answer_bytes=mb * 1024 * 1024)
    world.aws.s3().put_object(Bucket=world.input_bucket, Key=key, Body=SAMPLE_AUDIO.read_bytes())
    deadline = time.monotonic() + 60
    while key not in _outputs(world, [key])[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    return key


def _extra_billable(requests: list[LoggedRequest]) -> int:
    """200s beyond the first for one object version (named by the presigned URL's path and
    versionId; a bytes request by its body's hash)."""
    return sum(count - 1 for count in _billable_per_version(requests).values())


def _billable_per_version(requests: list[LoggedRequest]) -> Counter[tuple[str, str]]:
    """Billable (200) answers per object version."""
    answered: Counter[tuple[str, str]] = Counter()
    for request in requests:
        if request.status != 200:
            continue
        body = request.json if isinstance(request.json, dict) else {}
        url = urlsplit(str(body.get("url", "")))
        if url.path:
            version = dict(parse_qsl(url.query)).get("versionId", "")
            answered[(unquote(url.path), version)] += 1
        else:
            answered[("bytes", request.body_sha256)] += 1
    return answered


def _variant(audio: bytes, index: int) -> bytes:
    """The recording with ``index`` tenths of a second of silence after it: other bytes, same speech."""
    with wave.open(io.BytesIO(audio)) as source:
        params = source.getparams()
        frames = source.readframes(source.getnframes())
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setparams(params)
        target.writeframes(
            frames + b"\0" * (params.framerate // 10) * index * params.sampwidth * params.nchannels
        )
    return out.getvalue()


def _upload_out_of_order(
    world: LocalWorld, delivery: LocalDelivery, keys: list[str], versions: int, sample: bytes
) -> dict[str, str]:
    """Upload ``versions`` versions of each key with their S3 events held, then deliver them newest
    first. Returns each key's latest version id."""
    if not keys:
        return {}
    s3 = world.aws.s3()
    delivery.hold()
    latest = {}
    for key in keys:
        for index in range(versions):
            latest[key] = s3.put_object(Bucket=world.input_bucket, Key=key, Body=_variant(sample, index))[
                "VersionId"
            ]
    deadline = time.monotonic() + 60
    while delivery.held() < len(keys) * versions and time.monotonic() < deadline:
        time.sleep(0.1)
    delivery.release_held(reverse=True)
    return latest


def _wait_for_events(world: LocalWorld, delivery: LocalDelivery, key: str, timeout_s: float = 60) -> None:
    """Until S3's events for the uploads so far have left the routing queue (so the duplicate
    setting applied to them); best effort."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = {
            name: q.visible + q.delayed for name, q in delivery.stats().queues.items() if "s3-events" in name
        }
        if not any(queued.values()):
            return
        time.sleep(0.2)


def _stale(world: LocalWorld, latest: dict[str, str], transcripts: set[str], failures: set[str]) -> list[str]:
    """Keys re-uploaded out of order whose outcome was not made from their latest version."""
    s3 = world.aws.s3()
    stale = []
    for key, version in latest.items():
        outputs = [world.transcript_key(key)] if key in transcripts else []
        outputs += [world.failure_key(key)] if key in failures else []
        for output in outputs:
            metadata = s3.head_object(Bucket=world.output_bucket, Key=output)["Metadata"]
            if metadata.get("source-version-id") != version:
                stale.append(key)
    return sorted(set(stale))


def _reason(record: bytes) -> str:
    return str(json.loads(record).get("reason"))


def _outputs(world: LocalWorld, keys: list[str]) -> tuple[set[str], set[str]]:
    """Of the source keys, those that have a transcript, and those that have a failure record."""
    paginator = world.aws.s3().get_paginator("list_objects_v2")
    written = {
        item["Key"]
        for page in paginator.paginate(Bucket=world.output_bucket)
        for item in page.get("Contents", [])
    }
    transcribed = {key for key in keys if world.transcript_key(key) in written}
    failed = {key for key in keys if world.failure_key(key) in written}
    return transcribed, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--non-audio", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--long-answer-mb", type=int, default=LONG_ANSWER_MB)
    args = parser.parse_args(argv)
    print(f"Uploading {args.uploads} files into a faulty world (this takes a few minutes)...", flush=True)
    with local_world(parameter_overrides=SHORT_TIMEOUT, emulator_options={"preload_asr": True}) as world:
        report = run(
            world,
            uploads=args.uploads,
            non_audio=args.non_audio,
            concurrency=args.concurrency,
            long_answer_mb=args.long_answer_mb,
        )
    print("\n".join(report.lines()))
    lost = len(report.unaccounted) - sum(report.queued.values())
    ok = (
        not report.both
        and not report.stale
        and lost <= 0
        and report.non_audio_failed == report.non_audio
        and report.unexplained_billable == 0
    )
    print("NOTHING LOST" if ok else "SOMETHING IS WRONG")
    return 0 if ok else 1


def _out_of_credit_window(
    emulator: DeepgramEmulator,
    after_requests: int,
    seconds: float,
    fault_rates: Mapping[int | str, float],
    stop: threading.Event,
) -> None:
    """Every answer 402 for ``seconds``, from when Deepgram has seen ``after_requests`` requests;
    then the run's usual fault rates."""
    while len(emulator.requests) < after_requests:
        if stop.wait(0.05):
            return
    emulator.faults.set({402: 1.0}, stall_seconds=25)
    stop.wait(seconds)
    emulator.faults.set(fault_rates, stall_seconds=25)


if __name__ == "__main__":
    sys.exit(main())
