"""The webhook block of template.yaml (Settings.Webhook, docs/webhooks.md): off unless a URL is set,
the key never in the template, the rule scoped to this stack's events, a role that may call this one
destination only, and every failed delivery kept (retry policy, dead-letter queue, alarm).
cfn-lint and sam validate lint it in test_template.py's "on" mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from samstack import ResolvedStack
from tests.template.parsed import load_template, resolve_stack
from tests.template.setting_rules import SETTING_RULES, satisfies
from transcriber.services.completion import EVENT_SOURCE, TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED

pytestmark = pytest.mark.template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
URL = "https://hooks.example.com/transcripts"
ON = {"DeepgramSecretId": "deepgram/dev/api-key", "Settings.Webhook.Url": URL}
WEBHOOK_RESOURCES = {
    "WebhookConnection",
    "WebhookApiDestination",
    "WebhookRule",
    "WebhookRole",
    "WebhookDeadLetterQueue",
    "WebhookDeadLetterQueuePolicy",
    "WebhookDeadLetterQueueDepthAlarm",
}


def stack(**overrides: str) -> ResolvedStack:
    return resolve_stack(TEMPLATE, ON | overrides)


def webhook_resources(resolved: ResolvedStack) -> set[str]:
    return {logical_id for logical_id in resolved.resources if logical_id.startswith("Webhook")}


@pytest.mark.parametrize(
    "overrides",
    [{"Settings.Webhook.Url": ""}, {"Settings.Outputs.CompletionEvents": "false"}],
    ids=["no-url", "no-completion-events"],
)
def test_the_webhook_is_off_without_a_url_or_without_completion_events(overrides: dict[str, str]) -> None:
    resolved = stack(**overrides)
    assert webhook_resources(resolved) == set()
    assert "WebhookDeadLetterQueueUrl" not in resolved.outputs


def test_the_webhook_is_off_by_default() -> None:
    settings = load_template(TEMPLATE)["Mappings"]["Settings"]["Webhook"]
    assert settings["Url"] == ""


def test_with_a_url_every_part_exists_and_the_dead_letter_queue_is_an_output() -> None:
    resolved = stack()
    assert webhook_resources(resolved) == WEBHOOK_RESOURCES
    assert resolved.outputs["WebhookDeadLetterQueueUrl"] == resolved.resource("WebhookDeadLetterQueue").ref


@pytest.mark.parametrize(
    ("setting", "secret"),
    [("", "webhook/dev/api-key"), ("team/hooks-key", "team/hooks-key")],
    ids=["default", "named"],
)
def test_the_api_key_is_read_from_a_secret_at_deploy_time_never_written_in_the_template(
    setting: str, secret: str
) -> None:
    connection = stack(**{"Settings.Webhook.ApiKeySecret": setting}).resource("WebhookConnection").properties
    assert connection["AuthorizationType"] == "API_KEY"
    auth = connection["AuthParameters"]["ApiKeyAuthParameters"]
    assert auth == {"ApiKeyName": "x-api-key", "ApiKeyValue": f"{{{{resolve:secretsmanager:{secret}}}}}"}


def test_the_destination_posts_to_the_url_through_the_connection_with_a_rate_limit() -> None:
    resolved = stack(**{"Settings.Webhook.HttpMethod": "PUT", "Settings.Webhook.RateLimitPerSecond": "5"})
    destination = resolved.resource("WebhookApiDestination").properties
    assert destination["InvocationEndpoint"] == URL
    assert destination["HttpMethod"] == "PUT"
    assert destination["ConnectionArn"] == resolved.resource("WebhookConnection").arn
    assert int(destination["InvocationRateLimitPerSecond"]) == 5


def test_the_rule_matches_only_this_stacks_completion_events_on_its_bus() -> None:
    resolved = stack(**{"Settings.Outputs.EventBusName": "transcripts"})
    rule = resolved.resource("WebhookRule").properties
    env = resolved.resource("TranscribeFunction").properties["Environment"]["Variables"]
    assert rule["State"] == "ENABLED"
    assert rule["EventBusName"] == env["EVENT_BUS_NAME"] == "transcripts"
    assert rule["EventPattern"] == {
        "source": [EVENT_SOURCE],
        "account": [resolved.account_id],
        "detail-type": [TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED],
        "detail": {"environment": [env["ENVIRONMENT_NAME"]], "outputs": {"bucket": [env["OUTPUT_BUCKET"]]}},
    }


def test_every_failed_delivery_is_retried_then_kept_and_alarmed() -> None:
    resolved = stack(
        **{"Settings.Webhook.MaximumRetryAttempts": "3", "Settings.Webhook.MaximumEventAgeSeconds": "600"}
    )
    (target,) = resolved.resource("WebhookRule").properties["Targets"]
    dlq = resolved.resource("WebhookDeadLetterQueue")
    assert target["Arn"] == resolved.resource("WebhookApiDestination").arn
    retry = {key: int(value) for key, value in target["RetryPolicy"].items()}
    assert retry == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}
    assert target["DeadLetterConfig"] == {"Arn": dlq.arn}
    # Only this rule may write to the dead-letter queue.
    (policy,) = [p for p in resolved.of_type("AWS::SQS::QueuePolicy") if dlq.ref in p.properties["Queues"]]
    (allow,) = [s for s in policy.properties["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": resolved.resource("WebhookRule").arn}}
    alarm = resolved.resource("WebhookDeadLetterQueueDepthAlarm").properties
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": dlq.physical_name}]
    assert alarm["AlarmActions"] == [resolved.resource("AlarmTopic").ref]


def test_eventbridge_may_only_invoke_this_destination() -> None:
    resolved = stack()
    (target,) = resolved.resource("WebhookRule").properties["Targets"]
    role = resolved.resource("WebhookRole")
    assert target["RoleArn"] == role.arn
    trust = role.properties["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": resolved.account_id}},
        }
    ]
    statements: list[dict[str, Any]] = [
        s for p in role.properties["Policies"] for s in p["PolicyDocument"]["Statement"]
    ]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": "events:InvokeApiDestination",
            "Resource": resolved.resource("WebhookApiDestination").arn,
        }
    ]
    assert "ManagedPolicyArns" not in role.properties


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("Webhook.Url", ["", URL], ["http://hooks.example.com/x", "hooks.example.com", "https://a b"]),
        ("Webhook.HttpMethod", ["POST", "PUT", "PATCH"], ["GET", "DELETE", "post"]),
        ("Webhook.ApiKeyHeader", ["x-api-key", "Authorization"], ["", "x api key", "x-key:"]),
        ("Webhook.RateLimitPerSecond", [1, 300], [0, 301]),
        ("Webhook.MaximumRetryAttempts", [0, 185], [-1, 186]),
        ("Webhook.MaximumEventAgeSeconds", [60, 86400], [59, 86401]),
    ],
)
def test_the_webhook_settings_rules_keep_eventbridges_limits(
    name: str, good: list[Any], bad: list[Any]
) -> None:
    assert all(satisfies(SETTING_RULES[name], value) for value in good)
    assert not any(satisfies(SETTING_RULES[name], value) for value in bad)
