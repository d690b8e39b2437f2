"""template.yaml's trust boundaries (issue 20, items 13-18 and the shared capacity table of item 10):
who may send to the dead-letter queue, whose events the rules match, which partition of a shared
capacity table a stack may touch, what of an existing bucket the functions read, which key covers
transcript text, and what survives an update or a deleted stack. Checked on the resolved stack
(``samstack.resolve_stack``), with the conditions of each deployment mode evaluated."""

from __future__ import annotations

from typing import Any

import pytest

from samstack import ResolvedStack
from tests.template.parsed import resolve_stack
from tests.template.test_template import DATA_KMS_KEY, REQUIRED_PARAMETERS, TEMPLATE, _role_statements
from transcriber.services.completion import EVENT_SOURCE

pytestmark = pytest.mark.template

DEFAULTS: dict[str, str] = {}
EXISTING = {"ExistingBucketName": "my-archive", "ExistingBucketPrefix": "calls/"}
KEYED = {"DataKmsKeyArn": DATA_KMS_KEY}
BACKFILL = {"Settings.Capacity.EnableBackfill": "true"}
SHARED_TABLE = {"Settings.Capacity.CapacityTableName": "other-stack-capacity"}
EVERYTHING = (
    EXISTING
    | KEYED
    | BACKFILL
    | {"BufferedMode": "true", "Settings.Webhook.Url": "https://hooks.example.com/t"}
)


def _stack(overrides: dict[str, str]) -> ResolvedStack:
    return resolve_stack(TEMPLATE, REQUIRED_PARAMETERS | overrides)


def _statements(stack: ResolvedStack, logical_id: str) -> list[dict[str, Any]]:
    return list(stack.resource(logical_id).properties["PolicyDocument"]["Statement"])


def _by_sid(statements: list[dict[str, Any]], sid: str) -> dict[str, Any]:
    found = [s for s in statements if s.get("Sid") == sid]
    assert found, f"no statement {sid!r}"
    return found[0]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------ 13: who sends to the dead-letter queue


def _may_send_to_dead_letter_queue(stack: ResolvedStack, request: dict[str, Any]) -> bool:
    """Whether the queue policy's denies let a SendMessage with this request context through (the
    caller's own Allow, from its role, is assumed): a small evaluator of the operators used here."""
    queue_arn = stack.resource("TranscribeDeadLetterQueue").arn
    for statement in _statements(stack, "FailureQueuesPolicy"):
        if statement["Effect"] != "Deny" or queue_arn not in _list(statement["Resource"]):
            continue
        if "sqs:SendMessage" not in _list(statement["Action"]) and statement["Action"] != "sqs:*":
            continue
        if all(
            _holds(op, key, value, request)
            for op, test in statement["Condition"].items()
            for key, value in test.items()
        ):
            return False
    return True


def _holds(operator: str, key: str, expected: Any, request: dict[str, Any]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in request:
        return if_exists or base.endswith("NotEquals")  # IAM: negated operators hold for a missing key
    actual = str(request[key])
    values = [str(v) for v in _list(expected)]
    if base in ("Bool", "StringEquals", "ArnEquals"):
        return actual.lower() in [v.lower() for v in values] if base == "Bool" else actual in values
    if base in ("StringNotEquals", "ArnNotEquals"):
        return actual not in values
    raise AssertionError(f"evaluator does not know {operator}")


@pytest.mark.parametrize("overrides", [DEFAULTS, EXISTING], ids=["default", "existing-bucket"])
def test_only_the_functions_the_rule_and_the_operator_send_to_the_dead_letter_queue(
    overrides: dict[str, str],
) -> None:
    stack = _stack(overrides)
    role = {r.logical_id: r.arn for r in stack.of_type("AWS::IAM::Role")}
    account = f"arn:aws:iam::{stack.account_id}"
    iam: dict[str, Any] = {"aws:PrincipalIsAWSService": "false"}
    allowed: list[dict[str, Any]] = [
        iam | {"aws:PrincipalArn": role["TranscribeFunctionRole"]},
        iam | {"aws:PrincipalArn": role["RetryFunctionRole"]},
        iam
        | {"aws:PrincipalArn": f"{account}:role/ops", "aws:PrincipalTag/transcriber-operator": stack.name},
    ]
    refused: list[dict[str, Any]] = [
        iam | {"aws:PrincipalArn": f"{account}:role/some-other-function"},
        iam
        | {
            "aws:PrincipalArn": f"{account}:role/ops",
            "aws:PrincipalTag/transcriber-operator": "another-stack",
        },
        {
            "aws:PrincipalIsAWSService": "true",
            "aws:SourceArn": f"arn:aws:events:us-east-1:{stack.account_id}:rule/x",
        },
        {
            "aws:PrincipalIsAWSService": "true",
            "aws:SourceArn": f"arn:aws:sns:us-east-1:{stack.account_id}:topic",
        },
        {"aws:PrincipalIsAWSService": "true"},
    ]
    if "ExistingBucketRule" in stack.resources:
        allowed.append(
            {"aws:PrincipalIsAWSService": "true", "aws:SourceArn": stack.resource("ExistingBucketRule").arn}
        )
    assert [_may_send_to_dead_letter_queue(stack, r) for r in allowed] == [True] * len(allowed)
    assert [_may_send_to_dead_letter_queue(stack, r) for r in refused] == [False] * len(refused)


def test_no_other_queue_may_name_the_dead_letter_queue_as_its_dead_letter_target() -> None:
    queue = _stack(DEFAULTS).resource("TranscribeDeadLetterQueue").properties
    assert queue["RedriveAllowPolicy"] == {"redrivePermission": "denyAll"}


# ------------------------------------------------------------------ 14: completion events not forgeable


@pytest.mark.parametrize("rule_id", ["CompletionEventsSampleRule", "ExistingBucketRule"])
def test_rules_match_only_this_accounts_events(rule_id: str) -> None:
    stack = _stack(EXISTING)
    assert stack.resource(rule_id).properties["EventPattern"]["account"] == [stack.account_id]


def test_put_events_is_only_for_the_transcribers_source() -> None:
    stack = _stack(DEFAULTS)
    statement = _by_sid(_role_statements(stack, "TranscribeFunction"), "PublishCompletionEvents")
    assert statement["Condition"] == {"StringEquals": {"events:source": EVENT_SOURCE}}


def test_cloudwatch_may_use_the_alarm_key_only_for_this_accounts_alarms() -> None:
    stack = _stack(DEFAULTS)
    policy = stack.resource("AlarmTopicKey").properties["KeyPolicy"]
    statement = _by_sid(policy["Statement"], "CloudWatchAlarmsPublishToTheTopic")
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": stack.account_id}
    assert statement["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:cloudwatch:{stack.region}:{stack.account_id}:alarm:*"
    }


# ------------------------------------------------------------------ 15: one partition per stack's pool


@pytest.mark.parametrize("overrides", [DEFAULTS, SHARED_TABLE], ids=["own-table", "shared-table"])
def test_capacity_grant_covers_only_this_stacks_pool_partitions(overrides: dict[str, str]) -> None:
    stack = _stack(overrides)
    pool = stack.resource("TranscribeFunction").properties["Environment"]["Variables"]["CAPACITY_POOL"]
    for function_id in ("TranscribeFunction", "RetryFunction"):
        statement = _by_sid(_role_statements(stack, function_id), "DeepgramCapacityLeases")
        assert statement["Condition"] == {
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [pool, f"{pool}#*"]}
        }, "the pool's own partition ('<pool>') and its slot partitions ('<pool>#<class>#<n>') only"


# ------------------------------------------------------------------ 16: existing bucket reads


def test_existing_bucket_reads_only_the_prefix_of_this_accounts_bucket() -> None:
    stack = _stack(EXISTING)
    (statement,) = _statements(stack, "ExistingBucketReadPolicy")
    assert statement["Resource"] == "arn:aws:s3:::my-archive/calls/*"
    assert statement["Condition"] == {"StringEquals": {"s3:ResourceAccount": stack.account_id}}


# ------------------------------------------------------------------ 17: the chosen key covers every store


def test_a_chosen_key_encrypts_the_idempotency_table_and_the_functions_may_use_it_through_dynamodb() -> None:
    stack = _stack(KEYED)
    assert stack.resource("IdempotencyTable").properties["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": DATA_KMS_KEY,
    }
    for function_id in ("TranscribeFunction", "RetryFunction"):
        statement = _by_sid(_role_statements(stack, function_id), "UseDataKeyThroughDynamoDB")
        assert statement["Resource"] == DATA_KMS_KEY
        assert statement["Condition"] == {
            "StringEquals": {"kms:ViaService": f"dynamodb.{stack.region}.amazonaws.com"}
        }


def _put_denied(stack: ResolvedStack, bucket_id: str, headers: dict[str, str]) -> bool:
    """Whether the bucket policy's denies refuse a PutObject (over TLS) with these request keys."""
    request = {"aws:SecureTransport": "true", **headers}
    for statement in _statements(stack, f"{bucket_id}Policy"):
        if statement["Effect"] != "Deny" or not {"s3:PutObject", "s3:*"} & set(_list(statement["Action"])):
            continue
        if all(
            _s3_holds(op, key, value, request)
            for op, test in statement["Condition"].items()
            for key, value in test.items()
        ):
            return True
    return False


def _s3_holds(operator: str, key: str, expected: Any, request: dict[str, Any]) -> bool:
    if operator == "Null":
        return (key not in request) == (str(expected).lower() == "true")
    return _holds(operator, key, expected, request)


SSE = "s3:x-amz-server-side-encryption"
KEY_ID = "s3:x-amz-server-side-encryption-aws-kms-key-id"
SSE_C = "s3:x-amz-server-side-encryption-customer-algorithm"


@pytest.mark.parametrize("bucket_id", ["InputBucket", "OutputBucket"])
def test_with_a_chosen_key_buckets_refuse_sse_c_and_other_keys(bucket_id: str) -> None:
    stack = _stack(KEYED)
    other_key = DATA_KMS_KEY.replace("5678abcd", "9999abcd")
    assert not _put_denied(stack, bucket_id, {}), "the bucket's default encryption (the chosen key)"
    assert not _put_denied(stack, bucket_id, {SSE: "aws:kms", KEY_ID: DATA_KMS_KEY})
    assert _put_denied(stack, bucket_id, {SSE_C: "AES256"})
    assert _put_denied(stack, bucket_id, {SSE: "aws:kms", KEY_ID: other_key})
    assert _put_denied(stack, bucket_id, {SSE: "aws:kms"}), "the AWS managed aws/s3 key"
    assert _put_denied(stack, bucket_id, {SSE: "AES256"})
    assert not _put_denied(_stack(DEFAULTS), bucket_id, {SSE: "AES256"}), (
        "no key chosen: SSE-S3 is the default"
    )


def test_presigned_url_lives_no_longer_than_the_longest_invocation() -> None:
    """The URL is signed just before each Deepgram request, which ends with the invocation (Lambda's
    900 s at most): a URL that outlives it serves only a fetch nobody waits for."""
    variables = _stack(DEFAULTS).resource("TranscribeFunction").properties["Environment"]["Variables"]
    assert int(variables["PRESIGN_EXPIRY_SECONDS"]) == 900


# ------------------------------------------------------------------ 18 and 10: what survives


RETAINED = (
    ("TranscribeDeadLetterQueue", DEFAULTS),
    ("ParkingQueue", DEFAULTS),
    ("UploadBufferDeadLetterQueue", {"BufferedMode": "true"}),
    ("WebhookDeadLetterQueue", {"Settings.Webhook.Url": "https://hooks.example.com/t"}),
    ("CapacityTable", DEFAULTS),
)


@pytest.mark.parametrize(("logical_id", "overrides"), RETAINED, ids=[r[0] for r in RETAINED])
def test_what_holds_waiting_work_or_a_shared_pool_survives_replacement_and_deletion(
    logical_id: str, overrides: dict[str, str]
) -> None:
    declared = _stack(overrides).template["Resources"][logical_id]
    assert (declared.get("DeletionPolicy"), declared.get("UpdateReplacePolicy")) == ("Retain", "Retain")


def test_backfill_role_trusts_only_this_accounts_batch_jobs_and_can_write_an_encrypted_report() -> None:
    stack = _stack(BACKFILL | KEYED)
    role = stack.resource("BackfillRole").properties
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": stack.account_id}
    assert trust["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:s3:{stack.region}:{stack.account_id}:job/*"
    }
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    kms = _by_sid(statements, "EncryptCompletionReportThroughS3")
    assert kms["Resource"] == DATA_KMS_KEY
    assert "kms:GenerateDataKey" in kms["Action"]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}}


def test_everything_on_still_resolves() -> None:
    assert "FailureQueuesPolicy" in _stack(EVERYTHING).resources
