"""DynamoDB served by a moto process of its own (``localworld.dynamodb_process``), for load runs."""

from __future__ import annotations

import os
from unittest import mock

import boto3

from localworld.aws import LocalAws
from localworld.dynamodb_process import DynamoDBProcess


def _create(aws: LocalAws, name: str) -> None:
    aws.dynamodb().create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_dynamodb_calls_go_to_its_process_through_the_standard_endpoint_variable(moto_endpoint: str) -> None:
    with DynamoDBProcess() as dynamodb:
        aws = LocalAws(moto_endpoint, dynamodb_endpoint_url=dynamodb.endpoint_url)
        aws.reset()
        _create(aws, "apart")
        env = aws.env()
        assert env["AWS_ENDPOINT_URL_DYNAMODB"] == dynamodb.endpoint_url
        assert env["AWS_ENDPOINT_URL"] == moto_endpoint
        with mock.patch.dict(os.environ, env):  # what a function's boto3 finds
            assert boto3.client("dynamodb").list_tables()["TableNames"] == ["apart"]
        # The main server has no such table: DynamoDB lives only in its process.
        assert LocalAws(moto_endpoint).dynamodb().list_tables()["TableNames"] == []
        aws.reset()
        assert aws.dynamodb().list_tables()["TableNames"] == []
        process = dynamodb._process
    assert process is not None
    assert process.poll() is not None  # stopped with the block
