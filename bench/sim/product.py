"""The product's values the simulator runs with, read from the product so they cannot drift: the
template's ``Settings`` mapping and resources (``samstack.load_template``), the layer's defaults
(``transcriber.domain.retry``, ``transcriber.config``), the local world's Batch Operations stand-in."""

from __future__ import annotations

import inspect
from functools import cache
from pathlib import Path
from typing import Any

from localworld.batch_operations import LocalBatchOperations
from samstack import load_template
from transcriber.config import EnvReader, pool_settings
from transcriber.domain.capacity_core import PoolSettings
from transcriber.domain.retry import DeadLetterRetryPolicy, InvocationRetryPolicy

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@cache
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def setting(section: str, name: str) -> Any:
    """One value of the template's ``Settings`` mapping (what ``make deploy`` deploys)."""
    return template()["Mappings"]["Settings"][section][name]


def retry_function_concurrency() -> int:
    """The retry function's ``ScalingConfig.MaximumConcurrency`` on the dead-letter queue."""
    events = template()["Resources"]["RetryFunction"]["Properties"]["Events"]
    return int(events["DeadLetters"]["Properties"]["ScalingConfig"]["MaximumConcurrency"])


def request_policy() -> InvocationRetryPolicy:
    """In-invocation retries of a Deepgram request, with the template's ``DeepgramMaxAttempts``."""
    return InvocationRetryPolicy(max_attempts=int(setting("Deepgram", "DeepgramMaxAttempts")))


def dead_letter_policy() -> DeadLetterRetryPolicy:
    """The retry function's backoff, read by the product from the environment the template sets."""
    failures = template()["Mappings"]["Settings"]["Failures"]
    return DeadLetterRetryPolicy.from_env(
        {
            "DEAD_LETTER_QUEUE_URL": "sim",
            "PARKING_QUEUE_URL": "sim",
            "RETRY_MAX_ATTEMPTS": str(failures["RetryMaxAttempts"]),
            "RETRY_BASE_DELAY_SECONDS": str(failures["RetryBaseDelaySeconds"]),
            "RETRY_MAX_DELAY_SECONDS": str(failures["RetryMaxDelaySeconds"]),
            "BLOCKED_RETRY_DELAY_SECONDS": str(failures["BlockedRetryDelaySeconds"]),
        }
    )


def pool(size: int, ai_ceiling: int) -> PoolSettings:
    """The pool as the product's Lambda reads it (lease term, polls, reserve: the layer's defaults)."""
    settings = pool_settings(
        EnvReader(
            {
                "CAPACITY_TABLE": "sim",
                "CAPACITY_POOL": str(setting("Capacity", "CapacityPoolName")),
                "CAPACITY_POOL_SIZE": str(size),
                "CAPACITY_AI_CEILING": str(ai_ceiling),
                "CAPACITY_BACKFILL_PERCENT": str(setting("Capacity", "BackfillPoolPercent")),
            }
        )
    )
    assert settings is not None
    return settings


def batch_task_attempts() -> int:
    """AWS does not publish how often Batch Operations tries a task again: the local stand-in's."""
    default = inspect.signature(LocalBatchOperations).parameters["temporary_failure_attempts"].default
    return int(default)
