"""The local world's DynamoDB serialisation (``AtomicDynamoDB``): atomic per table, tables apart."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from localworld.aws import AtomicDynamoDB, LocalAws

WAIT_S = 10.0
HOLD_S = 30.0  # longer than any wait: a request queued behind the holder fails its join


def _environ(body: dict[str, Any]) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    return {
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }


class _HeldApp:
    """A WSGI app that, for table ``held``, waits until released (so the test can hold its lock)."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.entered = threading.Event()
        self.release = threading.Event()
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        self.bodies.append(body)
        if body.get("TableName") == self.held:
            self.entered.set()
            self.release.wait(HOLD_S)
        return [b"{}"]


def _call(app: AtomicDynamoDB, body: dict[str, Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: app(_environ(body), lambda *a: None), daemon=True)
    thread.start()
    return thread


def test_a_request_to_one_table_is_not_queued_behind_another_tables() -> None:
    inner = _HeldApp("capacity")
    app = AtomicDynamoDB(inner)
    holder = _call(app, {"TableName": "capacity"})
    assert inner.entered.wait(WAIT_S)
    other = _call(app, {"TableName": "idempotency"})
    other.join(WAIT_S)
    assert not other.is_alive()  # served while the capacity table's request still runs
    inner.release.set()
    holder.join(WAIT_S)
    assert inner.bodies[1] == {"TableName": "idempotency"}  # the body reached moto intact


def test_requests_to_one_table_wait_for_each_other_and_so_do_transactions_and_table_less_ones() -> None:
    inner = _HeldApp("capacity")
    app = AtomicDynamoDB(inner)
    holder = _call(app, {"TableName": "capacity"})
    assert inner.entered.wait(WAIT_S)
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/capacity"
    transaction = {"TransactItems": [{"Put": {"TableName": "other"}}, {"Delete": {"TableName": "capacity"}}]}
    waiting = [
        _call(app, {"TableName": arn}),
        _call(app, transaction),
        _call(app, {"RequestItems": {"capacity": []}}),
        _call(app, {}),  # ListTables names no table: it waits for every table
    ]
    for thread in waiting:
        thread.join(0.3)
        assert thread.is_alive()
    inner.release.set()
    for thread in [holder, *waiting]:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_concurrent_conditional_writes_to_one_item_let_exactly_one_through(local_aws: LocalAws) -> None:
    dynamodb = local_aws.dynamodb()
    dynamodb.create_table(
        TableName="slots",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def take(racer: int) -> str:
        try:
            dynamodb.put_item(
                TableName="slots",
                Item={"pk": {"S": "slot#1"}, "holder": {"N": str(racer)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "taken"

    with ThreadPoolExecutor(16) as pool:
        outcomes = sorted(pool.map(take, range(16)))
    assert outcomes == ["ConditionalCheckFailedException"] * 15 + ["taken"]
