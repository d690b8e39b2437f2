"""The whole local world in one place: moto server + the Deepgram emulator + the stack's resources.

The handler code talks to it exactly as it would to AWS and Deepgram: boto3 finds moto through
the standard ``AWS_ENDPOINT_URL``, requests trusts the emulator's CA through ``REQUESTS_CA_BUNDLE``,
and the Deepgram key sits in a Secrets Manager secret named like a real deployment's. The stack is
pointed at the emulator's URL (``Settings.Deepgram.DeepgramApiUrl``); a stack without that override
calls Deepgram's own hostnames, which reach the emulator through the ``HTTPS_PROXY`` every function
gets (``localworld.deepgram_proxy``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.data_classes.s3_batch_operation_event import S3BatchOperationEvent

from localworld import api_destinations
from localworld.aws import LocalAws, MotoServer
from localworld.deepgram import DeepgramEmulator
from localworld.deepgram_proxy import DeepgramProxy
from localworld.dynamodb_process import DynamoDBProcess
from localworld.template import FunctionSpec, Stack, load_stack
from transcriber.domain.events import S3ObjectRef, Source, batch_operation_objects, detect_source, parse_event
from transcriber.errors import TranscriptionError
from transcriber.services.storage import output_key

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMPLE_AUDIO = Path(__file__).resolve().parent / "samples" / "sample.wav"
# Every world's emulator shares its recognitions through this folder (localworld.deepgram.asr).
CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
RECOGNITION_STORE = CACHE_HOME / "dg-transcribe" / "recognitions"
LOCAL_SECRET_ID = "deepgram/local/api-key"  # noqa: S105 - a secret name, not a secret
# The existing bucket the sample events (events/eventbridge-*.json) name: the local stack is
# configured for it (ExistingBucketName), as a deployment that receives those events would be.
SAMPLE_EXISTING_BUCKET = "my-existing-archive"


def new_api_key() -> str:
    """A fresh key per world, shaped like Deepgram's (40 hex characters)."""
    return secrets.token_hex(20)


@dataclass
class LocalWorld:
    moto: MotoServer
    aws: LocalAws
    emulator: DeepgramEmulator
    stack: Stack
    api_key: str
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    template: Path = TEMPLATE
    webhook_api_key: str = field(default_factory=new_api_key)
    deepgram_proxy: DeepgramProxy | None = None

    @property
    def secret_id(self) -> str:
        return str(self.stack.parameters["DeepgramSecretId"])

    @property
    def input_bucket(self) -> str:
        return self.stack.resource("InputBucket").physical_name

    @property
    def output_bucket(self) -> str:
        return self.stack.resource("OutputBucket").physical_name

    def function(self, logical_id: str) -> FunctionSpec:
        return self.stack.function(logical_id)

    @property
    def transcript_prefix(self) -> str:
        """The transcribe function's TRANSCRIPT_PREFIX, as template.yaml sets it."""
        return self.function("TranscribeFunction").environment["TRANSCRIPT_PREFIX"]

    @property
    def failure_prefix(self) -> str:
        return self.function("TranscribeFunction").environment["FAILURE_PREFIX"]

    def transcript_key(self, source_key: str, bucket: str | None = None) -> str:
        """Where the stack writes the transcript of ``source_key`` in ``bucket`` (default: the input
        bucket; other buckets under ``_buckets/<bucket>/``; long keys hashed, as the product does)."""
        return output_key(self.transcript_prefix, source_key, bucket=bucket, home_bucket=self.input_bucket)

    def failure_key(self, source_key: str, bucket: str | None = None) -> str:
        """Where the stack writes the failure record of ``source_key`` in ``bucket``."""
        return output_key(self.failure_prefix, source_key, bucket=bucket, home_bucket=self.input_bucket)

    def stack_with(self, **parameter_overrides: str) -> Stack:
        """The same template loaded with more parameter overrides (nothing is provisioned)."""
        overrides = {**self.parameter_overrides, **parameter_overrides}
        return load_stack(self.template, overrides, endpoint_url=self.moto.endpoint_url)

    def aws_via(self, endpoint_url: str) -> LocalAws:
        """Clients of this world's account and region that talk to ``endpoint_url`` (a proxy, say)."""
        return LocalAws(endpoint_url, self.aws.region, self.aws.account_id)

    def seed_objects(self, event: Any) -> list[S3ObjectRef]:
        """Put the sample recording at every object ``event`` names; the objects it named (an event
        the product cannot parse raises its ``TranscriptionError``)."""
        return seed_objects(self.aws, event, strict=True)

    def function_env(self) -> dict[str, str]:
        """What the Lambda service and the network give a function here: endpoints, credentials,
        the CA that signed the emulator's certificate, the proxy by which Deepgram's hostnames reach
        the emulator. Not the function's own settings."""
        network = self.deepgram_proxy.env() if self.deepgram_proxy is not None else {}
        return {**self.aws.env(), "REQUESTS_CA_BUNDLE": str(self.emulator.ca_bundle), **network}

    def reset(self, *, secret_value: str | bytes | None = None) -> None:
        """Empty AWS and re-create the secrets and the stack's resources; clear the emulator."""
        self.aws.reset()
        self.aws.create_secret(self.secret_id, self.api_key if secret_value is None else secret_value)
        # The webhook's key (`make webhook-secret`): CloudFormation reads it when it creates the stack.
        for secret_id in api_destinations.referenced_secret_ids(self.stack):
            self.aws.create_secret(secret_id, self.webhook_api_key)
        self.aws.provision(self.stack)
        self.emulator.reset()
        self.emulator.api_keys = {self.api_key}
        if self.deepgram_proxy is not None:
            self.deepgram_proxy.reset()

    def upload(self, source: Path | bytes, key: str, **extra: Any) -> dict[str, Any]:
        """PutObject into the input bucket: S3 notifies whatever the bucket is wired to."""
        body = source.read_bytes() if isinstance(source, Path) else source
        response = self.aws.s3().put_object(Bucket=self.input_bucket, Key=key, Body=body, **extra)
        return dict(response)


@contextmanager
def services(
    api_key: str, emulator_options: Mapping[str, Any] | None, state_dir: Path | None
) -> Iterator[tuple[MotoServer, DeepgramEmulator]]:
    """moto and the Deepgram emulator, running until the block ends."""
    with ExitStack() as running:
        moto = running.enter_context(MotoServer())
        options = {"recognition_store": RECOGNITION_STORE, **dict(emulator_options or {})}
        emulator = DeepgramEmulator(api_keys={api_key}, state_dir=state_dir, **options)
        running.enter_context(emulator)
        yield moto, emulator


@contextmanager
def local_world(
    *,
    template: Path = TEMPLATE,
    parameter_overrides: Mapping[str, str] | None = None,
    api_key: str | None = None,
    emulator_options: Mapping[str, Any] | None = None,
    state_dir: Path | None = None,
    dynamodb_process: bool = False,
) -> Iterator[LocalWorld]:
    """Start moto, the emulator and the proxy to it, load the stack pointed at them, provision it,
    store the key. ``dynamodb_process``: DynamoDB served by a moto process of its own
    (``localworld.dynamodb_process``), for load runs; AWS fault proxies then see no DynamoDB call."""
    key = api_key or new_api_key()
    with (
        services(key, emulator_options, state_dir) as (moto, emulator),
        DeepgramProxy(("127.0.0.1", emulator.port)) as proxy,
        ExitStack() as apart,
    ):
        dynamodb = apart.enter_context(DynamoDBProcess()).endpoint_url if dynamodb_process else None
        overrides = {
            "DeepgramSecretId": LOCAL_SECRET_ID,
            "Settings.Deepgram.DeepgramApiUrl": emulator.url,
            "EnvironmentName": "local",
            "ExistingBucketName": SAMPLE_EXISTING_BUCKET,
            **dict(parameter_overrides or {}),
        }
        stack = load_stack(template, overrides, endpoint_url=moto.endpoint_url)
        aws = LocalAws(moto.endpoint_url, stack.region, stack.account_id, dynamodb_endpoint_url=dynamodb)
        world = LocalWorld(moto, aws, emulator, stack, key, overrides, template, deepgram_proxy=proxy)
        world.reset()
        yield world


def seed_objects(
    aws: LocalAws, event: Any, audio: Path = SAMPLE_AUDIO, *, strict: bool = False
) -> list[S3ObjectRef]:
    """Put the sample recording wherever the event says an object is, so sample events succeed.
    Events the product cannot parse seed nothing (the handler will say why), or raise if ``strict``."""
    try:
        objects = objects_named_in(event)
    except TranscriptionError:
        if strict:
            raise
        return []
    s3 = aws.s3()
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    seeded = []
    for obj in objects:
        if obj.bucket not in existing:
            s3.create_bucket(Bucket=obj.bucket)
            existing.add(obj.bucket)
        s3.put_object(Bucket=obj.bucket, Key=obj.key, Body=audio.read_bytes(), ContentType="audio/wav")
        seeded.append(obj)
    return seeded


def objects_named_in(event: Any) -> list[S3ObjectRef]:
    """Every object an event of any accepted shape names, Batch Operations tasks included."""
    if detect_source(event) is Source.S3_BATCH:
        return [obj for _, obj in batch_operation_objects(S3BatchOperationEvent(dict(event)))]
    return parse_event(event)
