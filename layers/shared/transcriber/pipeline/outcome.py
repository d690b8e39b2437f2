"""What one object's work came to (``Outcome``), and what the pipeline needs of Lambda's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def remaining_s(context: LambdaContextLike) -> float:
    return context.get_remaining_time_in_millis() / 1000


@dataclass
class Outcome:
    status: str  # transcribed | skipped | failed | retrying
    bucket: str
    key: str
    version: str | None = None
    output_key: str | None = None
    reason: str | None = None
    request_id: str | None = None
    replayed: bool = False
    delivery: str | None = None  # url | bytes: how the media reached Deepgram
    options: dict[str, str] | None = None  # the Deepgram options in force (transcribed)
    estimated_cost_usd: float | None = None  # transcribed: see transcriber.domain.cost
    outputs: dict[str, str] | None = None  # format -> key in the output bucket (transcriber.domain.formats)
