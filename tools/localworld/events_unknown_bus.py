"""EventBridge ``PutEvents`` to a bus that does not exist, as AWS answers it: the entry is accepted
(an ``EventId``, ``FailedEntryCount`` 0) and the event is dropped. moto raises
``ResourceNotFoundException`` for the whole call instead, which is kinder than AWS: a product that
counts on that error to find a missing bus would look fine here and lose every event there.

AWS's behaviour is reported, and stands, in public SDK issues: aws/aws-sdk#186 ("Putting an event
on an nonexistent EventBridge event bus returns a success", 2022; the same in aws-sdk-ruby#2657,
aws-sdk-java-v2#3173) and aws/aws-cli#9186 (2025). ``DescribeEventBus`` still says the bus is
missing; only ``PutEvents`` is changed.
"""

from __future__ import annotations

import uuid
from typing import Any

from moto.events.exceptions import ResourceNotFoundException
from moto.events.models import EventsBackend

_MAX_ENTRIES = 10  # moto's own check of the call, left to it


def install() -> None:
    """Patch moto's events backend (once per process): each entry is put on its own, and one whose
    bus does not exist gets an ``EventId`` and goes nowhere."""
    original = EventsBackend.put_events
    if getattr(original, "_localworld", False):
        return

    def put_events(self: EventsBackend, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(events) > _MAX_ENTRIES:
            return original(self, events)
        entries: list[dict[str, Any]] = []
        for event in events:
            try:
                entries += original(self, [event])
            except ResourceNotFoundException:
                entries.append({"EventId": str(uuid.uuid4())})  # accepted and dropped, as AWS does
        return entries

    put_events._localworld = True  # type: ignore[attr-defined]
    EventsBackend.put_events = put_events  # type: ignore[method-assign]
