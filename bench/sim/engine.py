"""The simulator's machinery: virtual time (a heap of events), processes (generators that yield
commands and are sent their answers), and the distributions it draws from a seeded ``Random``.

No threads, no wall clock: a run is a function of its seed. A process is resumed by an event; a
process that is killed is closed, and any event still scheduled for it finds it dead and does
nothing (``Proc.alive``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Generator
from typing import Any


class Loop:
    """Virtual time: ``at(t, fn, arg)`` runs ``fn(arg)`` at ``t``; ties run in scheduling order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0

    def at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, arg))

    def after(self, delay: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self.at(self.now + delay, fn, arg)

    def run(self, until: float = math.inf) -> None:
        heap, pop = self._heap, heapq.heappop
        count = 0
        while heap and heap[0][0] <= until:
            when, _, fn, arg = pop(heap)
            self.now = when
            fn(arg)
            count += 1
        self.events += count


class Proc:
    """One running generator (an invocation); ``alive`` turns False when it ends or is killed."""

    __slots__ = ("alive", "data", "gen")

    def __init__(self, gen: Generator[Any, Any, Any], data: Any) -> None:
        self.gen = gen
        self.data = data
        self.alive = True


class Draws:
    """The distributions, from one seeded ``random.Random``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a simulation's reproducible draws

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability
