"""A cold start's first object overlaps CPU work with network waits: the completion event's
EventBridge client is made in the background while Deepgram's answer is awaited (10-15 ms of
client set-up no longer between the transcript and the event)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from transcriber.compose import transcriber_from
from transcriber.config import Settings
from transcriber.domain.events import S3ObjectRef
from transcriber.services.completion import EventPublisher

ENV = {"OUTPUT_BUCKET": "out", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t", "INPUT_BUCKET": "in"}


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class _Secrets:
    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        return {"SecretString": "dg_key"}


class _S3:
    def generate_presigned_url(self, *args: Any, **kwargs: Any) -> str:
        return "https://in.s3.amazonaws.com/a.wav?X-Amz-Signature=x"


class _Events:
    """An EventBridge client factory that records which thread made the client, and when."""

    def __init__(self) -> None:
        self.made_in: list[str] = []
        self.made = threading.Event()

    def __call__(self) -> object:
        self.made_in.append(threading.current_thread().name)
        self.made.set()
        return object()


class _Deepgram:
    """Deepgram's request: answers once the events client is made (or gives up waiting)."""

    def __init__(self, events: _Events, patience_s: float) -> None:
        self.events = events
        self.patience_s = patience_s
        self.client_made_before_answer: bool | None = None

    def transcribe_url(self, **kwargs: Any) -> object:
        self.client_made_before_answer = self.events.made.wait(timeout=self.patience_s)
        return object()


@pytest.mark.parametrize(("completion_events", "made"), [("true", True), ("false", False)])
def test_the_event_client_is_made_while_deepgram_answers(completion_events: str, made: bool) -> None:
    events = _Events()
    settings = Settings.from_env({**ENV, "COMPLETION_EVENTS": completion_events})
    transcriber = transcriber_from(
        settings,
        s3=_S3(),  # type: ignore[arg-type]
        dynamodb=object(),  # type: ignore[arg-type]
        secretsmanager=_Secrets(),  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
    )
    deepgram = _Deepgram(events, patience_s=5 if made else 0.2)
    transcriber.call.deepgram = deepgram  # type: ignore[assignment]

    transcriber.call.call(S3ObjectRef("in", "a.wav"), [("model", "nova-3")], _Context())

    assert deepgram.client_made_before_answer is made
    assert [name.startswith("events-client") for name in events.made_in] == ([True] if made else [])
    if made:
        assert transcriber.completion.publisher.client is not None
        assert len(events.made_in) == 1  # the client made in the background is the one used


def test_a_client_the_background_could_not_make_fails_where_it_is_used() -> None:
    def broken() -> object:
        raise RuntimeError("no region")

    publisher = EventPublisher(broken, "default")  # type: ignore[arg-type]
    publisher.prepare()
    with pytest.raises(RuntimeError, match="no region"):
        _ = publisher.client
