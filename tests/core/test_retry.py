"""The backoff formula, both policies' settings, and the AWS clients' time budget."""

from __future__ import annotations

import random

import pytest

from transcriber.domain.retry import DeadLetterRetryPolicy, InvocationRetryPolicy, backoff
from transcriber.errors import ConfigurationError
from transcriber.services.clients import (
    AWS_CLIENT_CONFIG,
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    worst_case_call_s,
)

QUEUES = {"DEAD_LETTER_QUEUE_URL": "https://sqs/dlq", "PARKING_QUEUE_URL": "https://sqs/parking"}


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 20])
def test_full_jitter_spans_zero_to_the_capped_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)  # noqa: S311 - seeded jitter, not cryptography
    ceiling = min(30.0, 2.0 ** (attempt - 1))
    delays = [backoff(attempt, base_s=1, cap_s=30, jitter="full", rng=rng) for _ in range(200)]

    assert all(0 <= d <= ceiling for d in delays)
    assert min(delays) < ceiling / 4  # really spread down towards zero


@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_equal_jitter_never_waits_less_than_half_the_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)  # noqa: S311 - seeded jitter, not cryptography
    ceiling = min(3600.0, 60.0 * 2 ** (attempt - 1))
    delays = [backoff(attempt, base_s=60, cap_s=3600, jitter="equal", rng=rng) for _ in range(200)]

    assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_retry_after_wins_over_backoff_but_is_capped() -> None:
    policy = InvocationRetryPolicy(max_delay_s=30)

    assert policy.delay(1, retry_after_s=4) == 4
    assert policy.delay(1, retry_after_s=500) == 30


@pytest.mark.parametrize("retry_after", [0.0, 0.2, -3.0])
def test_retry_after_has_a_floor_so_retries_are_never_back_to_back(retry_after: float) -> None:
    assert InvocationRetryPolicy(min_retry_after_s=1.0).delay(1, retry_after_s=retry_after) == 1.0


def test_dead_letter_policy_reads_its_variables_and_defaults() -> None:
    policy = DeadLetterRetryPolicy.from_env(QUEUES)

    assert (policy.max_attempts, policy.base_delay_s, policy.max_delay_s, policy.blocked_delay_s) == (
        8,
        60,
        3600,
        3600,
    )
    assert 30 <= policy.delay(1) <= 60


@pytest.mark.parametrize("name", ["RETRY_MAX_DELAY_SECONDS", "BLOCKED_RETRY_DELAY_SECONDS"])
def test_delays_longer_than_sqs_allows_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        DeadLetterRetryPolicy.from_env({**QUEUES, name: "43201"})


def test_the_output_reserve_covers_one_aws_calls_worst_case() -> None:
    assert (AWS_CLIENT_CONFIG.connect_timeout, AWS_CLIENT_CONFIG.read_timeout) == (  # type: ignore[attr-defined]
        CONNECT_TIMEOUT_S,
        READ_TIMEOUT_S,
    )
    assert worst_case_call_s() <= InvocationRetryPolicy().reserve_s
