"""Finding a missing event bus: EventBridge does not tell.

``PutEvents`` to a bus that does not exist is accepted (an ``EventId``, ``FailedEntryCount`` 0) and
the event is dropped: reported in public SDK issues since 2022 (aws/aws-sdk#186, aws/aws-cli#9186)
and still so. ``EventPublisher`` (services/completion.py) therefore never sees a missing bus, and
every completion event would be lost without a trace. ``EventBusCheck`` asks ``DescribeEventBus``
once per container, before the first object: a missing bus is a deployment fault that holds the
work back (``BlockedError``, reason ``event-bus-missing``), as a missing secret does, until it is
created or ``EVENT_BUS_NAME`` fixed. A role without ``events:DescribeEventBus`` or a failed call
leaves the bus unchecked (logged as a warning): the check never stops work that could be done.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.errors import BlockedError, ErrorDetails
from transcriber.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_BUS_MISSING = "event-bus-missing"
DEFAULT_BUS = "default"  # every account and region has it
_MISSING = "ResourceNotFoundException"


class BusState(StrEnum):
    FOUND = "found"
    DEFAULT = "default"  # not asked: it always exists
    UNCHECKED = "unchecked"  # could not ask (no permission, a failed call): see the logs


class EventBusCheck:
    """``check()`` once per container (it remembers a bus found); raises ``BlockedError`` while the
    bus is missing, so every attempt asks again and the work resumes once it exists."""

    def __init__(self, client: Callable[[], EventBridgeClient], bus_name: str) -> None:
        self._client = client
        self.bus_name = bus_name
        self.state: BusState | None = None

    def check(self) -> BusState:
        if self.state is None:
            self.state = self._ask()
        return self.state

    def _ask(self) -> BusState:
        if self.bus_name in ("", DEFAULT_BUS):
            return BusState.DEFAULT
        try:
            self._client().describe_event_bus(Name=self.bus_name)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == _MISSING:
                raise BlockedError(
                    ErrorDetails(
                        reason=EVENT_BUS_MISSING,
                        message=f"event bus {self.bus_name} does not exist: EventBridge would accept "
                        "and drop every completion event; create it or fix EVENT_BUS_NAME",
                    )
                ) from exc
            return self._unchecked(code)
        except BotoCoreError as exc:
            return self._unchecked(type(exc).__name__)
        return BusState.FOUND

    def _unchecked(self, why: str) -> BusState:
        logger.warning(
            "Could not check that the event bus exists; a missing bus drops events silently",
            extra={"event_bus": self.bus_name, "error": why},
        )
        return BusState.UNCHECKED
