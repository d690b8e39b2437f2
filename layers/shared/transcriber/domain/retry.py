"""Both retry policies side by side, and the one backoff formula they share.

Two places retry, at different scales:

- inside one invocation (``InvocationRetryPolicy``): a 429 or 5xx from Deepgram is retried after
  seconds, while the function still has time; the delay uses *full* jitter (anywhere from zero to
  the ceiling) because many concurrent invocations hit the same limit at once, and spreading them
  widely matters more than waiting a minimum;
- on the dead-letter queue (``DeadLetterRetryPolicy``): the retry function hides a message for
  minutes to hours; the delay uses *equal* jitter (between half the ceiling and the ceiling) so
  the waits keep growing and the last attempt is hours after the first, which is what lets an
  outage or an empty account recover before the event is parked.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from transcriber.domain.env import EnvReader
from transcriber.errors import configuration_error

# SQS caps a message's visibility timeout at 12 hours.
MAX_VISIBILITY_S = 43200


def backoff(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: Literal["full", "equal"],
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff for ``attempt`` (1 = the first retry): ``base * 2^(attempt-1)`` capped at
    ``cap``, then jittered (full: 0..ceiling; equal: ceiling/2..ceiling)."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    floor = 0.0 if jitter == "full" else ceiling / 2
    return (rng or _rng).uniform(floor, ceiling)


_rng = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True)
class InvocationRetryPolicy:
    """Retries of the Deepgram call inside one invocation, before Lambda's own retries."""

    max_attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    # Kept back for writing the outputs after Deepgram answers: one AWS call's worst case with the
    # clients' botocore configuration (see ``transcriber.compose.AWS_CLIENT_CONFIG``) fits in it.
    reserve_s: float = 15.0
    min_request_s: float = 5.0  # below this a billable request would likely be cut off
    max_connect_timeout_s: float = 5.0
    # A Retry-After of 0, in the past or unreadable must not make back-to-back billable requests.
    min_retry_after_s: float = 1.0

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """The server's ``Retry-After`` (between ``min_retry_after_s`` and ``max_delay_s``) when it
        sent one, else exponential backoff with full jitter."""
        if retry_after_s is not None:
            return min(max(retry_after_s, self.min_retry_after_s), self.max_delay_s)
        return backoff(attempt, base_s=self.base_delay_s, cap_s=self.max_delay_s, jitter="full")


@dataclass(frozen=True)
class DeadLetterRetryPolicy:
    """The retry function's settings: how it backs off on the dead-letter queue."""

    dead_letter_queue_url: str
    parking_queue_url: str
    max_attempts: int
    base_delay_s: int
    max_delay_s: int
    blocked_delay_s: int

    def delay(self, attempt: int) -> int:
        """Seconds to hide a message after its ``attempt``-th receive failed again."""
        return int(backoff(attempt, base_s=self.base_delay_s, cap_s=self.max_delay_s, jitter="equal"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeadLetterRetryPolicy:
        reader = EnvReader(os.environ if env is None else env)
        policy = cls(
            dead_letter_queue_url=reader.required("DEAD_LETTER_QUEUE_URL"),
            parking_queue_url=reader.required("PARKING_QUEUE_URL"),
            max_attempts=reader.integer("RETRY_MAX_ATTEMPTS", default=8, minimum=1),
            base_delay_s=reader.integer("RETRY_BASE_DELAY_SECONDS", default=60, minimum=0),
            max_delay_s=reader.integer("RETRY_MAX_DELAY_SECONDS", default=3600, minimum=0),
            blocked_delay_s=reader.integer("BLOCKED_RETRY_DELAY_SECONDS", default=3600, minimum=0),
        )
        for name, value in (
            ("RETRY_MAX_DELAY_SECONDS", policy.max_delay_s),
            ("BLOCKED_RETRY_DELAY_SECONDS", policy.blocked_delay_s),
        ):
            if value > MAX_VISIBILITY_S:
                raise configuration_error(
                    "invalid-configuration", f"{name} must be at most {MAX_VISIBILITY_S}"
                )
        return policy
