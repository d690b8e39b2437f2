"""The missing-event-bus check in the workflow: a bus that does not exist blocks the object before
any Deepgram request (EventBridge would accept and drop its completion event), and a bus found is
asked for once per container, not per object."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests
import responses
from botocore.stub import Stubber

from tests.core.conftest import (
    ENV,
    INPUT_BUCKET,
    LISTEN_URL,
    UPLOAD_ETAG,
    Aws,
    FakeLambdaContext,
    transcript_body,
)
from transcriber.compose import transcriber_from
from transcriber.config import Settings
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import BlockedError
from transcriber.services.clients import AWS_CLIENT_CONFIG
from transcriber.services.event_bus import EVENT_BUS_MISSING, BusState, EventBusCheck

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

    from transcriber.pipeline.workflow import Transcriber

BUS = "core-completion-bus"


class Described:
    """An EventBridge client that counts its DescribeEventBus calls."""

    def __init__(self, aws: Aws) -> None:
        self.client: EventBridgeClient = aws.session.client("events", config=AWS_CLIENT_CONFIG)
        self.calls = 0
        self.client.meta.events.register("before-call.eventbridge.DescribeEventBus", self._count)

    def _count(self, **_: Any) -> None:
        self.calls += 1


def with_bus(aws: Aws, described: Described, **env: str) -> Transcriber:
    settings = Settings.from_env({**ENV, "COMPLETION_EVENTS": "true", "EVENT_BUS_NAME": BUS, **env})
    return transcriber_from(
        settings,
        s3=aws.s3,
        dynamodb=aws.dynamodb,
        secretsmanager=aws.secretsmanager,
        events=lambda: described.client,
        http=requests.Session(),
    )


def obj(key: str) -> S3ObjectRef:
    return S3ObjectRef(INPUT_BUCKET, key, size=16, etag=UPLOAD_ETAG)


def test_a_missing_bus_blocks_the_object_before_any_deepgram_request(
    aws: Aws, deepgram: responses.RequestsMock, lambda_context: FakeLambdaContext
) -> None:
    described = Described(aws)
    transcriber = with_bus(aws, described)
    aws.upload("a.wav")

    for _ in range(2):  # still missing: every attempt asks again
        with pytest.raises(BlockedError) as blocked:
            transcriber.process(obj("a.wav"), lambda_context)
        assert blocked.value.reason == EVENT_BUS_MISSING

    assert len(deepgram.calls) == 0
    assert aws.output_keys() == []
    assert described.calls == 2


def test_a_bus_found_is_asked_for_once_per_container(
    aws: Aws, deepgram: responses.RequestsMock, lambda_context: FakeLambdaContext
) -> None:
    described = Described(aws)
    aws.admin.events.create_event_bus(Name=BUS)
    transcriber = with_bus(aws, described)
    for key in ("a.wav", "b.wav", "c.wav"):
        aws.upload(key)
        deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    outcomes = [transcriber.process(obj(key), lambda_context) for key in ("a.wav", "b.wav", "c.wav")]

    assert [o.status for o in outcomes] == ["transcribed"] * 3
    assert described.calls == 1


def test_no_completion_events_no_bus_check(
    aws: Aws, deepgram: responses.RequestsMock, lambda_context: FakeLambdaContext
) -> None:
    described = Described(aws)
    transcriber = with_bus(aws, described, COMPLETION_EVENTS="false")
    aws.upload("a.wav")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    assert transcriber.process(obj("a.wav"), lambda_context).status == "transcribed"
    assert described.calls == 0


def test_a_role_that_may_not_describe_the_bus_leaves_it_unchecked_once_per_container(
    aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    described = Described(aws)
    check = EventBusCheck(lambda: described.client, BUS)  # moto has no such bus

    with Stubber(described.client) as stub:
        stub.add_client_error("describe_event_bus", "AccessDeniedException", http_status_code=400)
        state = check.check()

    assert state is BusState.UNCHECKED  # the work goes on, with a warning
    assert "a missing bus drops events silently" in caplog.text
    assert check.check() is BusState.UNCHECKED  # not asked again: moto would say the bus is missing
