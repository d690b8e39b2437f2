"""The core tier's ``aws`` fixture: one moto per process, emptied and filled again for each test.

A test must see none of another's objects or event handlers, and the resources the fixture makes
through moto's backends (``fresh_aws``) must answer as those the API makes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import botocore.hooks
import pytest

from tests.core.conftest import (
    API_KEY,
    INPUT_BUCKET,
    OUTPUT_BUCKET,
    SECRET_ID,
    TABLE,
    HandlersOfOneTest,
    fresh_aws,
)

if TYPE_CHECKING:
    from tests.core.conftest import Aws, _Clients


def fresh_aws_by_api(clients: _Clients) -> None:
    """What ``fresh_aws`` stands for: the same resources made by API calls, after the same reset."""
    fresh_aws()
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        clients.admin.s3.delete_bucket(Bucket=bucket)
    clients.admin.dynamodb.delete_table(TableName=TABLE)
    clients.admin.secretsmanager.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        clients.admin.s3.create_bucket(Bucket=bucket)
    clients.admin.s3.put_bucket_versioning(
        Bucket=OUTPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )
    clients.admin.dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    clients.admin.secretsmanager.create_secret(Name=SECRET_ID, SecretString=json.dumps({"api_key": API_KEY}))


def answer(response: Any, *volatile: str) -> Any:
    """An API answer without its request metadata and the fields that differ on every call."""
    return {k: v for k, v in response.items() if k not in {"ResponseMetadata", *volatile}}


def what_aws_says(clients: _Clients) -> dict[str, Any]:
    s3, dynamodb, secrets = clients.admin.s3, clients.admin.dynamodb, clients.admin.secretsmanager
    said: dict[str, Any] = {"buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]]}
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        said[bucket] = {
            "location": answer(s3.get_bucket_location(Bucket=bucket)),
            "versioning": answer(s3.get_bucket_versioning(Bucket=bucket)),
            "head": answer(s3.head_bucket(Bucket=bucket)),
            "acl": answer(s3.get_bucket_acl(Bucket=bucket)),
            "objects": s3.list_object_versions(Bucket=bucket).get("Versions", []),
        }
    said["tables"] = dynamodb.list_tables()["TableNames"]
    table = dynamodb.describe_table(TableName=TABLE)["Table"]
    said["table"] = answer(table, "CreationDateTime", "TableId")
    said["items"] = dynamodb.scan(TableName=TABLE)["Items"]
    secret = secrets.describe_secret(SecretId=SECRET_ID)
    said["secret"] = answer(secret, "ARN", "CreatedDate", "LastChangedDate", "VersionIdsToStages")
    said["secret"]["stages"] = sorted(map(sorted, secret["VersionIdsToStages"].values()))
    said["secret"]["value"] = secrets.get_secret_value(SecretId=SECRET_ID)["SecretString"]
    said["secrets"] = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    return said


@pytest.fixture
def clients(_clients: _Clients, _moto: None) -> _Clients:
    """The session's clients on the process's moto, without the ``aws`` fixture's fresh start."""
    return _clients


def test_the_resources_made_through_motos_backends_answer_as_the_apis(clients: _Clients) -> None:
    fresh_aws()
    made_directly = what_aws_says(clients)

    fresh_aws_by_api(clients)

    assert made_directly == what_aws_says(clients)
    assert made_directly["buckets"] == [INPUT_BUCKET, OUTPUT_BUCKET]
    assert made_directly[OUTPUT_BUCKET]["versioning"] == {"Status": "Enabled"}
    assert made_directly["table"]["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_a_fresh_aws_keeps_nothing_of_what_a_test_made(clients: _Clients) -> None:
    fresh_aws()
    clean = what_aws_says(clients)
    s3 = clients.admin.s3
    s3.put_object(Bucket=INPUT_BUCKET, Key="a.wav", Body=b"RIFF")
    s3.put_object(Bucket=OUTPUT_BUCKET, Key="transcripts/a.json", Body=b"{}")
    s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket="another-bucket")
    clients.dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "a.wav"}})
    clients.admin.secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString="rotated-key-0123456789")
    clients.admin.secretsmanager.create_secret(Name="another/secret", SecretString="x")
    clients.admin.sqs.create_queue(QueueName="core-dlq")
    events = clients.admin.events
    events.put_rule(Name="every-completion", EventPattern=json.dumps({"source": ["transcriber"]}))
    assert what_aws_says(clients) != clean

    fresh_aws()

    assert what_aws_says(clients) == clean
    assert clients.admin.sqs.list_queues().get("QueueUrls", []) == []
    assert events.list_rules()["Rules"] == []


def test_the_handlers_a_test_registers_are_gone_after_it_and_the_clients_own_stay() -> None:
    shared = botocore.hooks.HierarchicalEmitter()
    heard: list[str] = []
    shared.register("before-call.s3", lambda **_: heard.append("client's own"))
    one_test = HandlersOfOneTest(shared)
    one_test.register("before-call.s3", lambda **_: heard.append("plain"))
    one_test.register_first("before-call.s3.GetObject", lambda **_: heard.append("first"))
    one_test.register_last("before-call", lambda **_: heard.append("last"))
    counted = lambda **_: heard.append("counted")  # noqa: E731
    one_test.register("before-call.s3", counted, unique_id="count", unique_id_uses_count=True)
    one_test.register("before-call.s3", counted, unique_id="count", unique_id_uses_count=True)
    taken_off = lambda **_: heard.append("taken off by the test")  # noqa: E731
    one_test.register("after-call.s3.HeadObject", taken_off)
    one_test.unregister("after-call.s3.HeadObject", taken_off)
    one_test.emit("before-call.s3.GetObject")
    one_test.emit("after-call.s3.HeadObject")
    assert sorted(heard) == ["client's own", "counted", "first", "last", "plain"]

    assert one_test.remove() is shared
    heard.clear()
    shared.emit("before-call.s3.GetObject")
    shared.emit("after-call.s3.HeadObject")
    assert heard == ["client's own"]


HEARD_BY_EARLIER_TESTS: list[str] = []


@pytest.mark.parametrize("turn", ["one", "another"])
def test_a_test_sees_none_of_an_earlier_tests_objects_or_handlers(turn: str, aws: Aws) -> None:
    """Run one after the other (in one process), the second fails if the first left anything."""
    heard_before = list(HEARD_BY_EARLIER_TESTS)
    assert aws.admin.s3.list_objects_v2(Bucket=INPUT_BUCKET).get("Contents", []) == []
    assert [b["Name"] for b in aws.admin.s3.list_buckets()["Buckets"]] == [INPUT_BUCKET, OUTPUT_BUCKET]
    assert aws.admin.sqs.list_queues().get("QueueUrls", []) == []
    assert aws.admin.dynamodb.scan(TableName=TABLE)["Items"] == []
    assert heard_before == HEARD_BY_EARLIER_TESTS  # no earlier test's handler heard these calls

    aws.upload(f"{turn}.wav")
    aws.admin.s3.create_bucket(Bucket=f"{turn}-bucket")
    _ = aws.dead_letter_queue_url
    aws.dynamodb.put_item(TableName=TABLE, Item={"id": {"S": turn}})
    aws.s3.meta.events.register("before-call.s3", lambda **_: HEARD_BY_EARLIER_TESTS.append(turn))
    aws.dynamodb.meta.events.register("before-call.dynamodb", lambda **_: HEARD_BY_EARLIER_TESTS.append(turn))
