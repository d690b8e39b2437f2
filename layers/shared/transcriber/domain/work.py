"""The typed facts of one object's work: its ``Order`` (is this version superseded?), carried with
the object, and its result, as the idempotency record keeps it.

The steps of ``transcriber.pipeline`` pass a ``WorkResult`` between them; Powertools stores a dict,
so ``to_record``/``from_record`` convert at that boundary only (a record written by an earlier
release, with the same keys, reads back the same)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any


class Order(Enum):
    """The one answer to "is this version of the key superseded?" (``transcriber.domain.ordering``
    gives it; ``S3ObjectRef.order`` carries it so later steps don't ask again)."""

    CURRENT = "current"  # the key's current object is this version: its outcome is written
    SUPERSEDED = "superseded"  # a newer upload holds the key: nothing of ours is written
    UNKNOWN = "unknown"  # nothing tells them apart: the newest event is the one that writes last


@dataclass(frozen=True, slots=True)
class WorkResult:
    key: str | None = None  # the transcript's key in the output bucket
    request_id: str | None = None  # Deepgram's
    duration_s: float | None = None
    delivery: str | None = None  # url | bytes
    options: dict[str, str] | None = None  # the Deepgram options in force
    estimated_cost_usd: float | None = None
    deepgram_latency_s: float | None = None
    transcribed_at: str | None = None
    replayed: bool = False  # answered without a Deepgram request (the record, or the bucket)
    superseded: bool = False  # a newer version of the key exists: nothing of ours is written
    kept: dict[str, Any] | None = None  # paid, not yet written: where the answer is kept (answers.py)
    write_error: dict[str, Any] | None = None  # why the write failed, when ``kept``

    def to_record(self) -> dict[str, Any]:
        """The dict Powertools stores: the fields that are set (a record stays small)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None and value is not False}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WorkResult:
        names = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in record.items() if name in names})

    def as_replay(self) -> WorkResult:
        return replace(self, replayed=True)
