"""The composition root: each container's objects, built once from its environment, and nowhere else.

Handlers cache what these return (``functools.cache``), so settings are validated and clients
created on the first invocation, never at import: a configuration error is reported per event.
Tests build the same objects with ``transcriber_from`` and their own clients.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

from transcriber.config import Settings
from transcriber.domain.retry import DeadLetterRetryPolicy, InvocationRetryPolicy
from transcriber.pipeline.already_done import AlreadyDone
from transcriber.pipeline.deepgram_call import DeepgramCall
from transcriber.pipeline.outputs import AnswerWriter, FailureRecorder
from transcriber.pipeline.preflight import Preflight
from transcriber.pipeline.workflow import Parts, Transcriber, mark_replayed
from transcriber.services.answers import AnswerKeeper, KeptAnswers
from transcriber.services.capacity import CapacityRequeue, Unlimited, build_governor
from transcriber.services.clients import new_client, new_session
from transcriber.services.completion import Completion
from transcriber.services.deepgram import DeepgramClient
from transcriber.services.event_bus import EventBusCheck
from transcriber.services.secrets import ApiKeyProvider
from transcriber.services.source import SourceObjects
from transcriber.services.storage import Storage

if TYPE_CHECKING:
    import boto3
    import requests
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from transcriber.pipeline.dead_letter import DeadLetterRetrier
    from transcriber.services.capacity import Governor


def build_transcriber(session: boto3.session.Session | None = None) -> Transcriber:
    """The transcribe function's Transcriber, with the Deepgram capacity governor its settings ask for."""
    # One session for every client: each session loads the endpoint data and service models
    # again, which is most of a cold start's first-invocation time.
    session = session or new_session()
    settings = Settings.from_env()
    dynamodb = new_client(session, "dynamodb")
    return transcriber_from(
        settings,
        s3=new_client(session, "s3"),
        dynamodb=dynamodb,
        secretsmanager=new_client(session, "secretsmanager"),
        events=lambda: new_client(session, "events"),  # made on first use
        capacity=build_governor(settings, dynamodb),
        capacity_requeue=CapacityRequeue(
            lambda: new_client(session, "sqs"), deferral_queue_url=settings.capacity_deferral_queue_url
        ),
    )


def transcriber_from(
    settings: Settings,
    *,
    s3: S3Client,
    dynamodb: DynamoDBClient,
    secretsmanager: SecretsManagerClient,
    events: Callable[[], EventBridgeClient],
    http: requests.Session | None = None,
    retry: InvocationRetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    capacity: Governor | None = None,
    capacity_requeue: CapacityRequeue | None = None,
    kept_answers: KeptAnswers | None = None,
) -> Transcriber:
    """A Transcriber on the given clients (``events``: a factory, called on the first event)."""
    events = functools.cache(events)  # one EventBridge client for the bus check and the publisher
    # A missing bus swallows every event without an error: asked once per container, before the
    # first Deepgram request, only when completion events are on.
    bus = EventBusCheck(events, settings.event_bus_name) if settings.completion_events else None
    retry = retry or InvocationRetryPolicy(max_attempts=settings.deepgram_max_attempts)
    source = SourceObjects(s3)  # the input object
    storage = Storage(  # the outputs
        s3,
        settings.output_bucket,
        settings.transcript_prefix,
        settings.failure_prefix,
        home_bucket=settings.input_bucket,
        kept_answer_prefix=settings.kept_answer_prefix,
    )
    completion = Completion(settings, storage, events)
    api_keys = ApiKeyProvider(settings.deepgram_secret_id, settings.secret_max_age_s, secretsmanager)
    call = DeepgramCall(
        settings,
        source,
        api_keys=api_keys,
        deepgram=DeepgramClient(settings.deepgram_api_url, http),
        capacity=capacity or Unlimited(),
        retry=retry,
        sleep=sleep,
    )
    keeper = AnswerKeeper(storage, kept_answers or KeptAnswers())
    parts = Parts(
        preflight=Preflight(settings, source, bus),
        done=AlreadyDone(storage),
        call=call,
        writer=AnswerWriter(settings, storage, keeper, retry, sleep),
        failures=FailureRecorder(storage, completion),
        completion=completion,
        storage=storage,
        persistence=DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb),
        idempotency=IdempotencyConfig(
            expires_after_seconds=settings.idempotency_ttl_s, response_hook=mark_replayed
        ),
        retry=retry,
        capacity_requeue=capacity_requeue,
    )
    return Transcriber(settings, parts)


def build_retrier() -> DeadLetterRetrier:
    """The retry function's retrier: both settings objects validated, one session for all clients
    (each session loads the service models again, which is most of a cold start)."""
    from transcriber.pipeline.dead_letter import DeadLetterRetrier  # noqa: PLC0415 - the retry function's alone

    session = new_session()
    return DeadLetterRetrier(
        build_transcriber(session), DeadLetterRetryPolicy.from_env(), new_client(session, "sqs")
    )
