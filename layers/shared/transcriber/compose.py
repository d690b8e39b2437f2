"""The composition root: each container's objects, built once from its environment.

Handlers cache what these return (``functools.cache``), so settings are validated and clients
created on the first invocation, never at import: a configuration error is reported per event.
"""

from __future__ import annotations

import boto3

from transcriber.config import Settings
from transcriber.domain.retry import DeadLetterRetryPolicy
from transcriber.pipeline.dead_letter import DeadLetterRetrier
from transcriber.pipeline.workflow import Transcriber
from transcriber.services.capacity import CapacityRequeue, build_governor
from transcriber.services.clients import new_client


def build_transcriber(session: boto3.session.Session | None = None) -> Transcriber:
    """The transcribe function's Transcriber, with the Deepgram capacity governor its settings ask for."""
    session = session or boto3.session.Session()
    settings = Settings.from_env()
    dynamodb = new_client(session, "dynamodb")
    transcriber = Transcriber(
        settings, session=session, dynamodb=dynamodb, capacity=build_governor(settings, dynamodb)
    )
    transcriber.capacity_requeue = CapacityRequeue(lambda: new_client(session, "sqs"))
    return transcriber


def build_retrier() -> DeadLetterRetrier:
    """The retry function's retrier: both settings objects validated, one session for all clients
    (each session loads the service models again, which is most of a cold start)."""
    session = boto3.session.Session()
    return DeadLetterRetrier(
        build_transcriber(session), DeadLetterRetryPolicy.from_env(), new_client(session, "sqs")
    )
