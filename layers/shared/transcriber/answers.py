"""Deepgram answers that were paid for but could not be written yet, kept in the container's
temporary directory (Lambda's /tmp) by object identity, so that the next attempt in the same
container writes them without a second, billable Deepgram request.

What survives what: a kept answer lives as long as the execution environment ("container") that
received it. Lambda's asynchronous retries and the dead-letter queue's redeliveries usually run
in a warm container of the same function, but nothing guarantees it: a cold container, the other
function (the retry function has its own /tmp), or a container killed (out of memory, timeout)
has no kept answer, and that attempt pays Deepgram again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transcriber.deepgram import Transcript

if TYPE_CHECKING:
    from collections.abc import Mapping

KEPT_FOLDER = "transcriber-kept-answers"
# At most this much of the temporary directory (512 MB on Lambda by default) holds kept answers;
# the oldest go first. An answer on its way (its spool) needs as much again while it is kept.
MAX_KEPT_BYTES = 192 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


class KeptAnswers:
    """Answers kept by identity: ``<sha256 of identity>.json`` (the body, unchanged) and
    ``.meta.json`` beside it (request id, duration, channels, delivery)."""

    def __init__(self, directory: Path | None = None, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self._directory = directory
        self.max_bytes = max_bytes

    @property
    def directory(self) -> Path:
        # Resolved when used, not at import: the temporary directory is the container's.
        return self._directory or Path(tempfile.gettempdir()) / KEPT_FOLDER

    def _paths(self, identity: Mapping[str, Any]) -> tuple[Path, Path]:
        name = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
        return self.directory / f"{name}.json", self.directory / f"{name}.meta.json"

    def keep(self, identity: Mapping[str, Any], transcript: Transcript, delivery: str) -> bool:
        """Copy the answer out of its spool (bounded memory); False when there is no room for it.
        Raises OSError when the temporary directory refuses it."""
        if transcript.size > self.max_bytes:
            return False
        body_path, meta_path = self._paths(identity)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._make_room(transcript.size, body_path)
        meta = {
            "size": transcript.size,
            "request_id": transcript.request_id,
            "duration_s": transcript.duration_s,
            "channels": transcript.channels,
            "latency_s": transcript.latency_s,
            "delivery": delivery,
        }
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
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            body = body_path.open("rb")
        except (OSError, ValueError):
            return None
        transcript = Transcript(
            body=body,
            size=int(meta["size"]),
            request_id=meta.get("request_id"),
            duration_s=meta.get("duration_s"),
            channels=meta.get("channels"),
            latency_s=float(meta.get("latency_s") or 0.0),
        )
        return transcript, str(meta.get("delivery") or "url")

    def forget(self, identity: Mapping[str, Any]) -> None:
        for path in self._paths(identity):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _make_room(self, size: int, replacing: Path) -> None:
        """Drop the oldest kept answers until ``size`` more fits in ``max_bytes``."""
        kept = sorted(
            (
                p
                for p in self.directory.glob("*.json")
                if not p.name.endswith(".meta.json") and p != replacing
            ),
            key=lambda p: p.stat().st_mtime,
        )
        used = sum(p.stat().st_size for p in kept)
        while kept and used + size > self.max_bytes:
            oldest = kept.pop(0)
            used -= oldest.stat().st_size
            for path in (oldest, oldest.with_name(oldest.name.removesuffix(".json") + ".meta.json")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
