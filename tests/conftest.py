"""Shared fixtures: one local world (moto server + Deepgram emulator) per test session.

Handlers run in Docker-free Lambda containers (``localworld.lambda_runtime``) with the exact
environment ``template.yaml`` declares, talking to the world over real HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localworld.aws_faults import AwsFaultProxy
from localworld.lambda_runtime import LocalFunction
from localworld.world import LocalWorld, local_world

pytest_plugins = ["tests.hygiene"]  # no API key or presigned-URL secret in anything written


@pytest.fixture(scope="session")
def world_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorld]:
    with local_world(state_dir=tmp_path_factory.mktemp("deepgram-emulator")) as world:
        yield world


@pytest.fixture
def world(world_session: LocalWorld) -> Iterator[LocalWorld]:
    """The session's world, emptied and re-provisioned for this test."""
    world_session.reset()
    yield world_session
    world_session.emulator.faults.clear()


@pytest.fixture
def aws_fault_proxy(world: LocalWorld) -> Iterator[AwsFaultProxy]:
    """A fault-injecting proxy in front of the world's moto (``localworld.aws_faults``): point a
    function's ``AWS_ENDPOINT_URL`` at ``proxy.url`` to make AWS answer errors moto cannot."""
    with AwsFaultProxy(world.moto.endpoint_url) as proxy:
        yield proxy


FunctionFactory = Callable[..., LocalFunction]


@pytest.fixture
def start_function(world: LocalWorld) -> Iterator[FunctionFactory]:
    """Start a function of the template in a fresh container; env overrides as in --env-vars."""
    started: list[LocalFunction] = []

    def start(logical_id: str = "TranscribeFunction", **env_overrides: str) -> LocalFunction:
        function = LocalFunction(
            world.function(logical_id), env_overrides=env_overrides, extra_env=world.function_env()
        )
        started.append(function)
        return function

    yield start
    for function in started:
        function.close()


class Uploads:
    """Uploads objects and returns the S3 event that S3 itself (moto) emitted for each."""

    def __init__(self, world: LocalWorld) -> None:
        self.world = world
        self.queue_url = world.aws.route_bucket_notifications(world.stack, "TranscribeFunction")

    def put(self, key: str, body: bytes, **extra: Any) -> dict[str, Any]:
        self.world.aws.s3().put_object(Bucket=self.world.input_bucket, Key=key, Body=body, **extra)
        return self.next_event()

    def next_event(self, timeout_s: float = 5.0) -> dict[str, Any]:
        sqs = self.world.aws.sqs()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=self.queue_url, WaitTimeSeconds=1).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                event: dict[str, Any] = json.loads(message["Body"])
                if "Records" in event:
                    return event
        raise AssertionError("S3 sent no event for the upload")


@pytest.fixture
def uploads(world: LocalWorld) -> Uploads:
    return Uploads(world)
