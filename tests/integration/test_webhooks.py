"""The webhook (Settings.Webhook, docs/webhooks.md) end to end: the real transcribe handler in a local
Lambda container publishes its completion events to moto's EventBridge over HTTP; the template's rule
matches them and the local world calls the template's API destination as EventBridge does
(``localworld.api_destinations``) at a local HTTPS receiver, with the connection's API-key header."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from transcriber.services.completion import EVENT_SOURCE, TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads, WebhookFactory
    from localworld.webhook_receiver import ReceivedRequest
    from localworld.world import LocalWorld

NOT_AUDIO = b"this is not audio at all" * 40
ENVELOPE = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")
QUIET_S = 0.5  # after the expected requests: long enough for a duplicate or a retry to show


def event_of(request: ReceivedRequest) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.body)
    return body


def test_each_outcome_is_posted_once_with_the_key_and_the_event(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    start_webhook: WebhookFactory,
    sample_audio: bytes,
) -> None:
    webhook = start_webhook()
    function = start_function()

    created = function.invoke(uploads.put("calls/hello.wav", sample_audio))
    failed = function.invoke(uploads.put("calls/not-audio.wav", NOT_AUDIO))

    assert created.error is None, created.logs
    assert failed.error is None, failed.logs
    assert webhook.wait_for_requests(2)
    time.sleep(QUIET_S)
    requests = webhook.receiver.received
    assert len(requests) == 2, requests
    events = {event_of(r)["detail-type"]: (r, event_of(r)) for r in requests}
    assert events.keys() == {TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED}
    for request, event in events.values():
        assert request.method == "POST"
        assert request.path == "/hooks/transcripts"
        assert request.headers["x-api-key"] == webhook.api_key
        assert request.headers["content-type"].startswith("application/json")
        # The whole EventBridge event, as the rule matched it.
        assert list(event) == [*ENVELOPE]
        assert event["version"] == "0"
        assert event["time"].endswith("Z")
        assert event["source"] == EVENT_SOURCE
        assert event["account"] == world.stack.account_id
        assert event["detail"]["environment"] == "local"
        assert event["detail"]["outputs"]["bucket"] == world.output_bucket
    _, created_event = events[TRANSCRIPT_CREATED]
    assert created_event["detail"]["source"]["key"] == "calls/hello.wav"
    assert created_event["detail"]["outputs"]["keys"]["json"] == world.transcript_key("calls/hello.wav")
    _, failed_event = events[TRANSCRIPTION_FAILED]
    assert failed_event["detail"]["source"]["key"] == "calls/not-audio.wav"
    assert failed_event["detail"]["error"]["reason"] == "deepgram-unsupported-audio"
    assert webhook.dead_letters() == []


def test_only_this_stacks_events_reach_the_webhook(world: LocalWorld, start_webhook: WebhookFactory) -> None:
    """Same source, detail-type and environment, but another stack's output bucket: not posted."""
    webhook = start_webhook()
    bus = str(world.stack.resource("WebhookRule").properties["EventBusName"])
    detail = {"version": "1", "environment": "local", "outputs": {"bucket": "another-stacks-output"}}

    def put(detail: dict[str, Any]) -> None:
        response = world.aws.events().put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": TRANSCRIPT_CREATED,
                    "Detail": json.dumps(detail),
                    "EventBusName": bus,
                }
            ]
        )
        assert response["FailedEntryCount"] == 0

    put(detail)
    put({**detail, "outputs": {"bucket": world.output_bucket}})  # ours: the one that must arrive

    assert webhook.wait_for_requests(1)
    time.sleep(QUIET_S)
    assert [event_of(r)["detail"]["outputs"]["bucket"] for r in webhook.receiver.received] == [
        world.output_bucket
    ]


def test_a_receiver_answering_500_gets_retries_then_the_event_is_dead_lettered(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, start_webhook: WebhookFactory
) -> None:
    webhook = start_webhook(MaximumRetryAttempts="2", HttpMethod="PUT")
    webhook.receiver.answer(500)

    result = start_function().invoke(uploads.put("calls/not-audio.wav", NOT_AUDIO))

    assert result.error is None, result.logs
    assert webhook.wait_for_requests(3)
    time.sleep(QUIET_S)
    requests = webhook.receiver.received
    assert [(r.method, r.status) for r in requests] == [("PUT", 500)] * 3  # the first call, 2 retries
    assert len({r.body for r in requests}) == 1
    (dead,) = webhook.dead_letters()
    assert dead["body"] == event_of(requests[0])
    assert dead["body"]["detail-type"] == TRANSCRIPTION_FAILED
    rule = world.stack.resource("WebhookRule")
    assert dead["attributes"] == {
        "RULE_ARN": rule.arn,
        "TARGET_ARN": rule.properties["Targets"][0]["Arn"],
        "ERROR_CODE": "SDK_CLIENT_ERROR",
        "ERROR_MESSAGE": "Unable to invoke ApiDestination endpoint: the endpoint answered HTTP 500",
        "RETRY_ATTEMPTS": "2",
        "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
    }


def test_an_answer_eventbridge_does_not_retry_goes_to_the_dead_letter_queue_at_once(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, start_webhook: WebhookFactory
) -> None:
    webhook = start_webhook()
    webhook.receiver.answer(400, 200)

    result = start_function().invoke(uploads.put("calls/not-audio.wav", NOT_AUDIO))

    assert result.error is None, result.logs
    assert webhook.wait_for_requests(1)
    time.sleep(QUIET_S)
    assert [r.status for r in webhook.receiver.received] == [400]  # 4xx but 401/407/409/429: no retry
    (dead,) = webhook.dead_letters()
    assert dead["attributes"]["RETRY_ATTEMPTS"] == "0"
    assert "EXHAUSTED_RETRY_CONDITION" not in dead["attributes"]
