"""Deepgram answers that were paid for but could not be written yet, kept so that the retry
writes them without a second, billable Deepgram request.

Where an answer is kept, most durable first (``AnswerKeeper.keep``):

1. ``record``: gzip-compressed inside the idempotency record (DynamoDB), when it fits. It
   survives any container, and the retry function reads it too; S3 is not needed to keep it.
2. ``s3``: a staging object in the output bucket (``kept-answers/``, expired by a lifecycle
   rule), for a long answer: it survives too, when S3 takes it (the output write may have failed
   on one key, a prefix's throttling or a metadata value, not the whole bucket).
3. ``container``: the container's temporary directory (Lambda's /tmp), when neither took it. It
   lives as long as the execution environment: another container, the retry function, or a
   container killed (out of memory, timeout) has no copy, and that attempt pays Deepgram again.

The idempotency record says where (its result's ``kept``), so every attempt finds the answer,
with the answer's size and SHA-256 digest: a copy is checked when taken, and one that was replaced
or cut short is discarded (logged, ``KeptAnswersDiscarded``) and only then is Deepgram paid again.

Kept answers follow what transcripts follow: the record is in the idempotency table (encrypted with
the data key when one is chosen; gone at the record's TTL), the staging object is in the output
bucket (its default encryption, and a lifecycle rule no longer than the transcripts' retention), and
a /tmp copy lives in the function's own ephemeral storage (Lambda encrypts it at rest and never
shares it between execution environments) for at most ``MAX_KEPT_AGE_S``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from transcriber.errors import TranscriptionError
from transcriber.observability import logger, metrics
from transcriber.services.deepgram import SPOOL_MEMORY_BYTES, Transcript

if TYPE_CHECKING:
    from collections.abc import Mapping

    from transcriber.services.storage import Storage

KEPT_FOLDER = "transcriber-kept-answers"
# At most this much of the temporary directory (512 MB on Lambda by default) holds kept answers;
# the oldest go first. An answer on its way (its spool) needs as much again while it is kept.
MAX_KEPT_BYTES = 192 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024
# An answer kept inside the idempotency record: at most this much, compressed (DynamoDB's items
# are at most 400 KB, and base64 adds a third).
MAX_RECORD_BYTES = 192 * 1024
# A /tmp copy older than this is dropped: a day is the shortest transcript retention there is
# (TranscriptRetentionDays >= 1), and an execution environment rarely lives that long anyway.
MAX_KEPT_AGE_S = 24 * 3600


def identity_name(identity: Mapping[str, Any]) -> str:
    """A file or object name for an identity (bucket, key, ETag, options): its SHA-256."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def digest(body: IO[bytes]) -> tuple[int, str]:
    """(size, SHA-256 hex digest) of a body, read from its start a chunk at a time."""
    body.seek(0)
    hasher = hashlib.sha256()
    size = 0
    while chunk := body.read(_COPY_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    body.seek(0)
    return size, hasher.hexdigest()


def described(transcript: Transcript, delivery: str) -> dict[str, Any]:
    """What a kept answer's body needs beside it to be a Transcript again (JSON-safe), with the
    size and digest its copy is checked against when taken."""
    return {
        "size": transcript.size,
        "sha256": digest(transcript.rewind())[1],
        "request_id": transcript.request_id,
        "duration_s": transcript.duration_s,
        "channels": transcript.channels,
        "latency_s": transcript.latency_s,
        "delivery": delivery,
    }


def described_transcript(body: IO[bytes], meta: Mapping[str, Any]) -> Transcript:
    """The Transcript a kept body and its ``described`` metadata make."""
    return Transcript(
        body=body,
        size=int(meta["size"]),
        request_id=meta.get("request_id"),
        duration_s=meta.get("duration_s"),
        channels=meta.get("channels"),
        latency_s=float(meta.get("latency_s") or 0.0),
    )


class KeptAnswers:
    """Answers kept by identity: ``<sha256 of identity>.json`` (the body, unchanged) and
    ``.meta.json`` beside it (request id, duration, channels, delivery)."""

    def __init__(
        self,
        directory: Path | None = None,
        max_bytes: int = MAX_KEPT_BYTES,
        max_age_s: float = MAX_KEPT_AGE_S,
    ) -> None:
        self._directory = directory
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s

    @property
    def directory(self) -> Path:
        # Resolved when used, not at import: the temporary directory is the container's.
        return self._directory or Path(tempfile.gettempdir()) / KEPT_FOLDER

    def _paths(self, identity: Mapping[str, Any]) -> tuple[Path, Path]:
        name = identity_name(identity)
        return self.directory / f"{name}.json", self.directory / f"{name}.meta.json"

    def keep(self, identity: Mapping[str, Any], transcript: Transcript, delivery: str) -> bool:
        """Copy the answer out of its spool (bounded memory); False when there is no room for it.
        Raises OSError when the temporary directory refuses it."""
        if transcript.size > self.max_bytes:
            return False
        body_path, meta_path = self._paths(identity)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._make_room(transcript.size, body_path)
        meta = described(transcript, delivery)
        handle, part = tempfile.mkstemp(dir=self.directory, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(transcript.rewind(), out, _COPY_CHUNK)
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(part, body_path)  # the body appears whole, or not at all
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        return True

    def take(self, identity: Mapping[str, Any]) -> tuple[Transcript, str] | None:
        """The kept answer for ``identity`` (opened for reading) and how its media was delivered."""
        body_path, meta_path = self._paths(identity)
        try:
            if time.time() - body_path.stat().st_mtime > self.max_age_s:
                self.forget(identity)  # kept no longer than transcripts may be
                return None
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            body = body_path.open("rb")
        except (OSError, ValueError):
            return None
        return described_transcript(body, meta), str(meta.get("delivery") or "url")

    def forget(self, identity: Mapping[str, Any]) -> None:
        for path in self._paths(identity):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _make_room(self, size: int, replacing: Path) -> None:
        """Drop kept answers past ``max_age_s``, then the oldest until ``size`` more fits in
        ``max_bytes``."""
        kept = sorted(
            (
                p
                for p in self.directory.glob("*.json")
                if not p.name.endswith(".meta.json") and p != replacing
            ),
            key=lambda p: p.stat().st_mtime,
        )
        too_old = time.time() - self.max_age_s
        used = sum(p.stat().st_size for p in kept)
        while kept and (used + size > self.max_bytes or kept[0].stat().st_mtime < too_old):
            oldest = kept.pop(0)
            used -= oldest.stat().st_size
            for path in (oldest, oldest.with_name(oldest.name.removesuffix(".json") + ".meta.json")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


class AnswerKeeper:
    """Keeps a paid answer whose write failed where the next attempt, in any container or function,
    finds it (see the module's docstring), and gives it back."""

    def __init__(
        self, storage: Storage, container: KeptAnswers, max_record_bytes: int = MAX_RECORD_BYTES
    ) -> None:
        self.storage = storage
        self.container = container
        self.max_record_bytes = max_record_bytes

    def keep(
        self, identity: Mapping[str, Any], transcript: Transcript, delivery: str
    ) -> dict[str, Any] | None:
        """Where the answer now is (for the idempotency record), or None when nothing took it."""
        meta = described(transcript, delivery)
        compressed = _compressed(transcript, self.max_record_bytes)
        if compressed is not None:
            return meta | {
                "where": "record",
                "gzip_base64": base64.b64encode(compressed).decode("ascii"),
            }
        try:
            key = self.storage.write_kept_answer(identity_name(identity), transcript)
            return meta | {"where": "s3", "key": key}
        except TranscriptionError as exc:
            logger.warning("The output bucket refused the kept answer too", extra={"error": exc.as_record()})
        try:
            if self.container.keep(identity, transcript, delivery):
                return meta | {"where": "container"}
        except OSError as exc:
            logger.warning("Could not keep Deepgram's answer", extra={"error": type(exc).__name__})
        return None

    def take(self, identity: Mapping[str, Any], kept: Mapping[str, Any]) -> Transcript | None:
        """The kept answer, opened for reading; None when its copy is gone (another container's
        temporary directory, an expired staging object). Raises TranscriptionError when S3 can't
        be read now."""
        transcript = self._copy(identity, kept)
        if transcript is None or _intact(transcript, kept):
            return transcript
        transcript.close()
        metrics.add_metric(name="KeptAnswersDiscarded", unit=MetricUnit.Count, value=1)
        logger.warning(
            "The kept answer is not the one paid for (replaced or cut short); discarding it",
            extra={"kept_in": kept.get("where"), "recorded_size": kept.get("size")},
        )
        self.forget(identity, kept)
        return None

    def _copy(self, identity: Mapping[str, Any], kept: Mapping[str, Any]) -> Transcript | None:
        where = kept.get("where")
        if where == "container":
            found = self.container.take(identity)
            return found[0] if found else None
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - handed on in the Transcript
            max_size=SPOOL_MEMORY_BYTES, mode="w+b", prefix="kept-answer-"
        )
        try:
            if where == "record":
                with gzip.GzipFile(fileobj=io.BytesIO(base64.b64decode(kept["gzip_base64"]))) as unzipped:
                    shutil.copyfileobj(unzipped, spool, _COPY_CHUNK)
            elif not (where == "s3" and self.storage.read_kept_answer(str(kept["key"]), spool)):
                spool.close()
                return None
        except BaseException:
            spool.close()
            raise
        return described_transcript(spool, kept)

    def forget(self, identity: Mapping[str, Any], kept: Mapping[str, Any]) -> None:
        """Drop the copy once the answer is written (a staging object left behind expires)."""
        if kept.get("where") == "container":
            self.container.forget(identity)
        elif kept.get("where") == "s3":
            try:
                self.storage.delete_kept_answer(str(kept["key"]))
            except TranscriptionError as exc:
                logger.warning("Could not delete the kept answer", extra={"error": exc.as_record()})


def _intact(transcript: Transcript, kept: Mapping[str, Any]) -> bool:
    """Whether a kept copy has the size and digest recorded when it was kept (a record without
    a digest cannot vouch for its copy)."""
    size, sha256 = digest(transcript.body)
    return size == kept.get("size") and sha256 == kept.get("sha256")


def _compressed(transcript: Transcript, limit: int) -> bytes | None:
    """The answer gzip-compressed, or None as soon as it grows past ``limit`` (memory stays bounded)."""
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as zipper:
        source = transcript.rewind()
        while chunk := source.read(_COPY_CHUNK):
            zipper.write(chunk)
            if packed.tell() > limit:
                return None
    return packed.getvalue() if packed.tell() <= limit else None
