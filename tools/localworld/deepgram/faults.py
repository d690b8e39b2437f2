"""Fault injection for the Deepgram emulator.

Two sources of faults, checked in this order for every ``POST /v1/listen``:

1. a FIFO queue of deterministic faults (``faults.next(3, status=503)``: the next three
   requests answer 503), so tests are not flaky;
2. random rates (``faults.set({429: 0.1, "drop": 0.05})``) drawn from a seeded RNG, for
   soak and load tests.

Fault kinds: ``status`` (answer that status with a Deepgram-shaped body in the chosen
style), ``drop`` (close the connection without an answer), ``stall`` (hold the request
``stall_seconds`` and then carry on normally, or answer ``status`` if one is given) and
``long_answer`` (transcribe normally, then answer as a long recording would: a valid
Deepgram-shaped 200 of at least ``answer_bytes`` bytes, with words, utterances and paragraphs,
diarized and punctuated; see ``response.long_answer``) and ``crafted_answer`` (transcribe
normally, then answer 200 with what ``rewrite`` makes of the answer: valid JSON of a shape Deepgram
never sends, as a bug, a proxy or a hostile endpoint could; ``faults.next(1, kind="crafted_answer",
rewrite=fn)``).
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from localworld.deepgram.errors import BODY_STYLES, BodyStyle

FaultKind = Literal["status", "drop", "stall", "long_answer", "crafted_answer"]
# The real answer (a JSON object) in, any JSON-serialisable value out.
Rewrite = Callable[[dict[str, Any]], Any]
LONG_ANSWER_BYTES = 64 * 1024 * 1024
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@dataclass(frozen=True)
class Fault:
    """One injected fault."""

    kind: FaultKind = "status"
    status: int | None = None  # required for "status"; optional for "stall"
    style: BodyStyle = "legacy"
    stall_seconds: float = 0.0
    answer_bytes: int = LONG_ANSWER_BYTES  # for "long_answer": the least size of the 200's body
    rewrite: Rewrite | None = None  # for "crafted_answer": what the 200's body becomes

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {FAULT_KINDS}")
        if self.kind == "crafted_answer" and self.rewrite is None:
            raise ValueError("a crafted_answer fault needs a rewrite function")
        if self.kind == "status" and self.status is None:
            raise ValueError("a status fault needs a status code")
        if self.style not in BODY_STYLES:
            raise ValueError(f"unknown body style {self.style!r}; use one of {BODY_STYLES}")


class Faults:
    """Thread-safe fault plan shared by all request threads of one emulator."""

    def __init__(self, seed: int | None = 0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._rates: dict[int | str, float] = {}
        self._style: BodyStyle = "legacy"
        self._stall_seconds = 30.0
        self._rng = random.Random(seed)  # noqa: S311 - reproducible fault draws, not security

    def set(
        self,
        rates: Mapping[int | str, float] | None = None,
        *,
        style: BodyStyle = "legacy",
        stall_seconds: float = 30.0,
        seed: int | None = None,
    ) -> None:
        """Replace the random fault rates.

        ``rates`` maps a status code (int, or its string form) or ``"drop"``/``"stall"`` to
        a probability; their sum must not exceed 1 (one draw picks at most one fault).
        ``style`` is the error body style for status faults; ``stall_seconds`` the hold of
        a random stall. A ``seed`` re-seeds the RNG so a run can be replayed.
        """
        parsed = {_rate_key(k): float(v) for k, v in (rates or {}).items()}
        if any(v < 0 for v in parsed.values()) or sum(parsed.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        if style not in BODY_STYLES:
            raise ValueError(f"unknown body style {style!r}; use one of {BODY_STYLES}")
        with self._lock:
            self._rates = parsed
            self._style = style
            self._stall_seconds = float(stall_seconds)
            if seed is not None:
                self._rng = random.Random(seed)  # noqa: S311 - reproducible fault draws, not security

    def next(
        self,
        count: int = 1,
        *,
        status: int | None = None,
        kind: FaultKind = "status",
        style: BodyStyle = "legacy",
        stall_seconds: float = 0.0,
        answer_bytes: int = LONG_ANSWER_BYTES,
        rewrite: Rewrite | None = None,
    ) -> None:
        """Make the next ``count`` requests (after those already queued) hit this fault."""
        fault = Fault(
            kind=kind,
            status=status,
            style=style,
            stall_seconds=stall_seconds,
            answer_bytes=answer_bytes,
            rewrite=rewrite,
        )
        with self._lock:
            self._queue.extend([fault] * count)

    def push(self, *faults: Fault) -> None:
        """Queue prepared ``Fault`` objects, in order."""
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        """Forget queued faults and rates (the RNG keeps its state)."""
        with self._lock:
            self._queue.clear()
            self._rates = {}

    def pick(self) -> Fault | None:
        """The fault for the request now arriving, if any."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if not self._rates:
                return None
            draw = self._rng.random()
            edge = 0.0
            for key, rate in self._rates.items():
                edge += rate
                if draw < edge:
                    if key == "drop":
                        return Fault(kind="drop", style=self._style)
                    if key == "stall":
                        return Fault(kind="stall", style=self._style, stall_seconds=self._stall_seconds)
                    return Fault(kind="status", status=int(key), style=self._style)
            return None


def _rate_key(key: int | str) -> int | str:
    if key in ("drop", "stall"):
        return key
    try:
        status = int(key)
    except ValueError:
        raise ValueError(f"fault rate key {key!r} is neither a status code nor drop/stall") from None
    if not 100 <= status <= 599:
        raise ValueError(f"fault status {status} is not an HTTP status")
    return status
