"""localworld.api_destinations on its own: the template's webhook provisioned in moto, called at a
local HTTPS receiver, with events put on the bus directly (tests/integration/test_webhooks.py runs the
real handler). What EventBridge does and the local world must not soften: a missing key secret fails
the deployment, the rate limit spaces calls, an untrusted certificate is a failed call, and a
dead-letter queue that does not let the rule send loses the event."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trustme

from localworld import api_destinations
from localworld.api_destinations import ApiDestinationDelivery, _secret_reference, resolve_dynamic_references
from localworld.aws import LocalAws
from localworld.template import Stack, load_stack
from localworld.webhook_receiver import WebhookReceiver
from samstack import TemplateError

KEY = "webhook-test-key-0123456789"
SECRET = "webhook/dev/api-key"
SOURCE = "deepgram-s3-transcriber"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(tmp_path / "ca") as running:
        yield running


def webhook_stack(aws: LocalAws, real_template: Path, url: str, **settings: str) -> Stack:
    overrides = {"Settings.Webhook.Url": url} | {f"Settings.Webhook.{k}": v for k, v in settings.items()}
    return load_stack(real_template, overrides, endpoint_url=aws.endpoint_url)


def publish(aws: LocalAws, stack: Stack, count: int = 1) -> None:
    detail = {"environment": "dev", "outputs": {"bucket": stack.resource("OutputBucket").physical_name}}
    for n in range(count):
        entry: Any = {
            "Source": SOURCE,
            "DetailType": "Transcript Created",
            "Detail": json.dumps(detail | {"n": n}),
        }
        assert aws.events().put_events(Entries=[entry])["FailedEntryCount"] == 0


def test_a_missing_key_secret_fails_the_deployment_as_cloudformation_does(
    local_aws: LocalAws, real_template: Path
) -> None:
    stack = webhook_stack(local_aws, real_template, "https://hooks.example.com/x")
    with pytest.raises(TemplateError, match=f"secret {SECRET}, which does not exist"):
        local_aws.provision(stack)


def test_an_http_endpoint_is_refused_as_eventbridge_refuses_it(
    local_aws: LocalAws, real_template: Path
) -> None:
    local_aws.create_secret(SECRET, KEY)
    stack = webhook_stack(local_aws, real_template, "http://hooks.example.com/x")
    with pytest.raises(TemplateError, match="must be an https:// URL"):
        local_aws.provision(stack)


def test_dynamic_references_read_the_secret_a_json_key_or_an_arn(local_aws: LocalAws) -> None:
    arn = local_aws.create_secret("team/hooks", json.dumps({"token": KEY}))
    assert resolve_dynamic_references(
        local_aws, {"v": ["{{resolve:secretsmanager:team/hooks:SecretString:token}}"]}
    ) == {"v": [KEY]}
    assert _secret_reference(f"{arn}:SecretString:token") == (arn, "token")
    with pytest.raises(TemplateError, match="no JSON key other"):
        resolve_dynamic_references(local_aws, "{{resolve:secretsmanager:team/hooks:SecretString:other}}")


def test_calls_are_spaced_by_the_rate_limit(
    local_aws: LocalAws, real_template: Path, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    local_aws.create_secret(SECRET, KEY)
    stack = webhook_stack(local_aws, real_template, receiver.url, RateLimitPerSecond="4")
    local_aws.provision(stack)
    with ApiDestinationDelivery(
        local_aws, stack, ca_bundle=tmp_path / "ca" / "deepgram-emulator-ca.pem"
    ) as delivery:
        publish(local_aws, stack, 3)
        assert delivery.wait_until(lambda: len(receiver.received) == 3 and delivery.idle())
    # Spaced as they leave (arrival times carry the machine's scheduling noise).
    times = [a.sent_at for a in delivery.stats[next(iter(delivery.stats))].attempts]
    assert len(times) == 3
    assert all(later - earlier >= 0.249 for earlier, later in itertools.pairwise(times)), times
    assert {r.headers["x-api-key"] for r in receiver.received} == {KEY}


def test_an_untrusted_certificate_is_a_failed_call(
    local_aws: LocalAws, real_template: Path, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    local_aws.create_secret(SECRET, KEY)
    stack = webhook_stack(local_aws, real_template, receiver.url, MaximumRetryAttempts="1")
    local_aws.provision(stack)
    with ApiDestinationDelivery(local_aws, stack, ca_bundle=other_ca, retry_base_delay_s=0.01) as delivery:
        publish(local_aws, stack)
        (stats,) = delivery.stats.values()
        assert delivery.wait_until(lambda: stats.dead_lettered == 1 and delivery.idle())
    assert receiver.received == []  # the handshake failed: nothing reached the receiver
    assert [a.error for a in stats.attempts] == ["SSLError", "SSLError"]


def test_a_dead_letter_queue_that_refuses_the_rule_loses_the_event(
    local_aws: LocalAws, real_template: Path, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    local_aws.create_secret(SECRET, KEY)
    stack = webhook_stack(local_aws, real_template, receiver.url, MaximumRetryAttempts="0")
    local_aws.provision(stack)
    dlq = local_aws.sqs().get_queue_url(QueueName=stack.resource("WebhookDeadLetterQueue").physical_name)
    local_aws.sqs().set_queue_attributes(
        QueueUrl=dlq["QueueUrl"], Attributes={"Policy": json.dumps({"Statement": []})}
    )
    receiver.answer(503)
    ca = tmp_path / "ca" / "deepgram-emulator-ca.pem"
    with ApiDestinationDelivery(local_aws, stack, ca_bundle=ca) as delivery:
        publish(local_aws, stack)
        (stats,) = delivery.stats.values()
        assert delivery.wait_until(lambda: stats.dropped == 1 and delivery.idle())
    assert stats.dead_lettered == 0
    assert [r.status for r in receiver.received] == [503]


def test_an_answer_slower_than_the_timeout_is_a_failed_call_and_retried(
    local_aws: LocalAws, real_template: Path, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    local_aws.create_secret(SECRET, KEY)
    stack = webhook_stack(local_aws, real_template, receiver.url, MaximumRetryAttempts="1")
    local_aws.provision(stack)
    receiver.delay_s = 0.5
    ca = tmp_path / "ca" / "deepgram-emulator-ca.pem"
    # EventBridge waits 5 s; a tenth of it here, against an endpoint slower than that.
    with ApiDestinationDelivery(
        local_aws, stack, ca_bundle=ca, timeout_s=0.2, retry_base_delay_s=0.01
    ) as delivery:
        publish(local_aws, stack)
        (stats,) = delivery.stats.values()
        assert delivery.wait_until(lambda: stats.dead_lettered == 1 and delivery.idle())
    assert [(a.status, a.error) for a in stats.attempts] == [(None, "ReadTimeout")] * 2
    assert len(receiver.received) == 2  # it did arrive, twice: the caller gave up waiting


RULE = "arn:aws:events:us-east-1:123456789012:rule/stack-WebhookRule"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:stack-WebhookDeadLetterQueue"


def _statement(**fields: object) -> dict[str, object]:
    return {
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
    } | fields


@pytest.mark.parametrize(
    ("statements", "lets"),
    [
        ([_statement(Resource=QUEUE, Condition={"ArnEquals": {"aws:SourceArn": RULE}})], True),
        ([_statement(Resource=QUEUE, Condition={"ArnLike": {"aws:SourceArn": RULE[:-6] + "*"}})], True),
        ([_statement(Resource=QUEUE.replace("Webhook", "Other"))], False),  # another queue's grant
        ([_statement(Resource=QUEUE, Condition={"ArnLike": {"aws:SourceArn": "arn:*:rule/other-*"}})], False),
        ([_statement(Resource="*"), _statement(Effect="Deny", Resource=QUEUE)], False),  # a Deny wins
        ([_statement(Resource=QUEUE, Condition={"StringEquals": {"aws:SourceAccount": "1"}})], False),
    ],
)
def test_the_dead_letter_queues_policy_is_judged_as_sqs_judges_it(
    statements: list[object], lets: bool
) -> None:
    policy = json.dumps({"Statement": statements})
    target = SimpleNamespace(rule_arn=RULE, dead_letter_arn=QUEUE)

    assert api_destinations._lets_rule_send(policy, target) is lets  # type: ignore[arg-type]
