"""A missing event bus, against the local world's EventBridge (moto over HTTP, made to answer as
AWS does: ``PutEvents`` to a missing bus is accepted and dropped). The publisher cannot see it;
``EventBusCheck`` (``DescribeEventBus``) does, and makes it a deployment fault."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from botocore.stub import Stubber

from transcriber.errors import BlockedError
from transcriber.services.completion import TRANSCRIPT_CREATED, EventPublisher
from transcriber.services.event_bus import EVENT_BUS_MISSING, BusState, EventBusCheck

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


def test_a_missing_bus_is_invisible_to_the_publisher_and_blocks_at_the_check(world: LocalWorld) -> None:
    events = world.aws.events()

    EventPublisher(lambda: events, "no-such-bus").publish(TRANSCRIPT_CREATED, {"n": 1})  # accepted, dropped

    check = EventBusCheck(lambda: events, "no-such-bus")
    with pytest.raises(BlockedError) as blocked:
        check.check()
    assert blocked.value.reason == EVENT_BUS_MISSING
    assert "EVENT_BUS_NAME" in str(blocked.value)
    with pytest.raises(BlockedError):
        check.check()  # still missing: every attempt asks again

    events.create_event_bus(Name="no-such-bus")
    assert check.check() is BusState.FOUND  # created: the work resumes
    events.delete_event_bus(Name="no-such-bus")
    assert check.check() is BusState.FOUND  # asked once per container once found


def test_the_default_bus_is_not_asked_for(world: LocalWorld) -> None:
    def no_client() -> None:
        raise AssertionError("the default bus always exists: no call")

    assert EventBusCheck(no_client, "default").check() is BusState.DEFAULT  # type: ignore[arg-type]


def test_a_role_that_may_not_describe_the_bus_leaves_it_unchecked_with_a_warning(
    world: LocalWorld, caplog: pytest.LogCaptureFixture
) -> None:
    events = world.aws.events()
    with Stubber(events) as stub:
        stub.add_client_error("describe_event_bus", "AccessDeniedException", http_status_code=400)
        state = EventBusCheck(lambda: events, "stack-bus").check()

    assert state is BusState.UNCHECKED
    assert "a missing bus drops events silently" in caplog.text


def test_through_the_handler_a_missing_bus_blocks_before_deepgram_is_paid(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("bus/a.wav", sample_audio)
    before = sum(1 for r in world.emulator.requests if r.path.startswith("/v1/listen"))
    function = start_function(COMPLETION_EVENTS="true", EVENT_BUS_NAME="no-such-bus")

    result = function.invoke(event)

    assert result.error is not None, result.logs  # held back: Lambda retries it, then the DLQ
    assert EVENT_BUS_MISSING in "\n".join(result.logs)
    assert sum(1 for r in world.emulator.requests if r.path.startswith("/v1/listen")) == before
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("Contents", [])
    assert listing == []
