"""The dashboard shows only metrics the code emits, in the namespace and dimensions it emits them
with; the privacy profile's parameters (customer-managed key, retention) do what they say."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from samstack import ResolvedStack
from tests.template.parsed import resolve_stack
from tests.template.setting_rules import SETTING_RULES
from transcriber.services import usage

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
LAYER = REPO_ROOT / "layers" / "shared" / "transcriber"
REQUIRED = {"DeepgramSecretId": "deepgram/dev/api-key"}
PRIVACY = "Settings.Privacy"  # the Settings group of the retention and access-log settings
DATA_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
_LITERAL_METRIC = re.compile(r"add_metric\(\s*name=\"(\w+)\"")
_SEARCH_SCHEMA = re.compile(r"\{([^}]*)\}")


def _resolve(**overrides: str) -> ResolvedStack:
    return resolve_stack(TEMPLATE, REQUIRED | overrides)


@pytest.fixture(scope="module")
def stack() -> ResolvedStack:
    return _resolve()


def emitted_metrics() -> set[str]:
    """Every metric name the layer emits: the literal ``add_metric(name="...")`` calls and the
    named metrics of ``transcriber.services.usage``."""
    names = {name for path in LAYER.rglob("*.py") for name in _LITERAL_METRIC.findall(path.read_text())}
    return names | {usage.COST_METRIC, usage.FAILED_BY_REASON_METRIC, usage.THROTTLED_METRIC}


Drawn = tuple[str, str, dict[str, str]]  # namespace, metric name, dimensions ("*": any value)


def _searched(expression: str) -> list[Drawn]:
    """The metrics a ``SEARCH('{Namespace,dim,...} MetricName="X" dim="v"', ...)`` draws."""
    pinned = dict(re.findall(r"(\w+)=\"(\w+)\"", expression))
    name = pinned.pop("MetricName")
    [schema] = _SEARCH_SCHEMA.findall(expression)
    namespace, *dimension_names = schema.split(",")
    return [(namespace, name, dict.fromkeys(dimension_names, "*") | pinned)]


def _spelled_out(row: list[Any]) -> Drawn:
    values = [item for item in row if not isinstance(item, dict)]
    assert "..." not in values, "spell every metric out, so it can be checked"
    namespace, name, *pairs = values
    return namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))


def dashboard_metrics(stack: ResolvedStack) -> list[Drawn]:
    """Every metric the dashboard draws, SEARCH expressions included (other expressions are math
    over metrics listed on their own rows)."""
    body = json.loads(stack.resource("Dashboard").properties["DashboardBody"])
    found: list[Drawn] = []
    for widget in body["widgets"]:
        for row in widget["properties"]["metrics"]:
            if not isinstance(row[0], dict):
                found.append(_spelled_out(row))
            elif "SEARCH(" in row[0]["expression"]:
                found.extend(_searched(row[0]["expression"]))
    return found


def test_every_metric_on_the_dashboard_is_one_the_code_emits(stack: ResolvedStack) -> None:
    env = stack.resource("TranscribeFunction").properties["Environment"]["Variables"]
    namespace, service = env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]
    ours = [(n, m, d) for n, m, d in dashboard_metrics(stack) if not n.startswith("AWS/")]
    assert ours
    emitted = emitted_metrics()
    for metric_namespace, name, dimensions in ours:
        assert metric_namespace == namespace, name
        assert name in emitted, f"the dashboard shows {name}, which the code never emits"
        assert dimensions.get("service") == service, name
        extra = set(dimensions) - {"service"}
        assert extra == ({usage.REASON_DIMENSION} if name == usage.FAILED_BY_REASON_METRIC else set()), name
    shown = {name for _, name, _ in ours}
    for wanted in (
        "TranscriptionsSucceeded",
        "TranscriptionsFailed",
        "TranscriptionsSkipped",
        usage.FAILED_BY_REASON_METRIC,
        "AudioSeconds",
        usage.COST_METRIC,
        "DeepgramLatency",
        usage.THROTTLED_METRIC,
    ):
        assert wanted in shown, wanted


def test_the_dashboard_watches_this_stacks_dead_letter_and_parking_queues(stack: ResolvedStack) -> None:
    queues = {stack.resource(q).physical_name for q in ("TranscribeDeadLetterQueue", "ParkingQueue")}
    sqs = [(name, d["QueueName"]) for n, name, d in dashboard_metrics(stack) if n == "AWS/SQS"]
    assert {queue for _, queue in sqs} == queues
    assert {name for name, _ in sqs} >= {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    }
    body = json.loads(stack.resource("Dashboard").properties["DashboardBody"])
    latency = [w for w in body["widgets"] if "latency" in w["properties"]["title"].lower()]
    stats = {row[-1]["stat"] for w in latency for row in w["properties"]["metrics"]}
    assert stats == {"p50", "p99"}


def _encryption(stack: ResolvedStack, bucket: str) -> dict[str, Any]:
    [rule] = stack.resource(bucket).properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    result: dict[str, Any] = rule
    return result


def test_without_a_data_key_buckets_use_sse_s3_and_no_role_gets_a_key(stack: ResolvedStack) -> None:
    for bucket in ("InputBucket", "OutputBucket"):
        assert _encryption(stack, bucket) == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    assert "DataKmsKeyPolicy" not in stack.resources


def test_a_data_key_encrypts_both_buckets_and_both_roles_use_it_through_s3_only() -> None:
    stack = _resolve(DataKmsKeyArn=DATA_KEY)
    for bucket in ("InputBucket", "OutputBucket"):
        assert _encryption(stack, bucket) == {
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": DATA_KEY},
            "BucketKeyEnabled": True,
        }
    policy = stack.resource("DataKmsKeyPolicy").properties
    assert len(policy["Roles"]) == 2
    # Through S3 (the buckets) and DynamoDB (the idempotency table, which can hold a paid answer) only.
    statements = policy["PolicyDocument"]["Statement"]
    assert [s["Condition"] for s in statements] == [
        {"StringEquals": {"kms:ViaService": f"{service}.us-east-1.amazonaws.com"}}
        for service in ("s3", "dynamodb")
    ]
    for statement in statements:
        assert statement["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert statement["Resource"] == DATA_KEY
    # The access log bucket stays SSE-S3: S3 server access logging cannot write with SSE-KMS.
    logs = _resolve(DataKmsKeyArn=DATA_KEY, **{f"{PRIVACY}.InputAccessLogBucket": "new"})
    assert _encryption(logs, "AccessLogBucket")["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def _expirations(stack: ResolvedStack, bucket: str) -> dict[str, tuple[str | None, int]]:
    rules = stack.resource(bucket).properties["LifecycleConfiguration"]["Rules"]
    return {r["Id"]: (r.get("Prefix"), int(r["ExpirationInDays"])) for r in rules if "ExpirationInDays" in r}


def test_retention_is_off_by_default_and_each_parameter_expires_its_own_objects(stack: ResolvedStack) -> None:
    assert _expirations(stack, "InputBucket") == {}
    variables = stack.resource("TranscribeFunction").properties["Environment"]["Variables"]
    kept = {"ExpireKeptAnswers": (variables["KEPT_ANSWER_PREFIX"], 30)}
    assert _expirations(stack, "OutputBucket") == kept  # paid answers waiting for a retry: always
    tuned = _resolve(
        **{
            f"{PRIVACY}.InputRetentionDays": "7",
            f"{PRIVACY}.TranscriptRetentionDays": "365",
            f"{PRIVACY}.FailureRetentionDays": "90",
        }
    )
    assert _expirations(tuned, "InputBucket") == {"ExpireUploadedMedia": (None, 7)}
    env = tuned.resource("TranscribeFunction").properties["Environment"]["Variables"]
    assert _expirations(tuned, "OutputBucket") == kept | {
        # Answers kept for a retry never outlive the transcripts (S3 applies the earlier expiration).
        "ExpireKeptAnswersWithTranscripts": (env["KEPT_ANSWER_PREFIX"], 365),
        "ExpireTranscripts": (env["TRANSCRIPT_PREFIX"], 365),
        "ExpireFailureRecords": (env["FAILURE_PREFIX"], 90),
    }
    only = _resolve(**{f"{PRIVACY}.FailureRetentionDays": "30"})
    assert _expirations(only, "OutputBucket") == kept | {"ExpireFailureRecords": (env["FAILURE_PREFIX"], 30)}


def test_the_upload_allow_list_setting_refuses_what_uploaders_may_never_set() -> None:
    pattern = str(SETTING_RULES["Uploads.UploadOptions"])
    assert re.fullmatch(pattern, "none")
    assert re.fullmatch(pattern, "language,model")
    for bad in ("", "language,", "lang uage", "callback=x"):
        assert not re.fullmatch(pattern, bad), bad


def test_every_alarm_on_our_own_metrics_watches_one_the_code_emits(stack: ResolvedStack) -> None:
    env = stack.resource("TranscribeFunction").properties["Environment"]["Variables"]
    namespace, service = env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]
    ours = {
        logical_id: resource.properties
        for logical_id, resource in stack.resources.items()
        if resource.type == "AWS::CloudWatch::Alarm" and resource.properties.get("Namespace") == namespace
    }
    # A blocked dead letter is requeued young each time: only its own metric can raise the alarm.
    assert ours["DeadLetterBlockedAlarm"]["MetricName"] == "DeadLetterBlockedWaits"
    for logical_id, properties in ours.items():
        assert properties["MetricName"] in emitted_metrics(), logical_id
        assert properties["Dimensions"] == [{"Name": "service", "Value": service}], logical_id
