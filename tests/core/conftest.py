"""The core, in-process: a ``Transcriber`` built with injected clients.

AWS is moto's in-process mock, Deepgram is ``responses`` on a ``requests.Session``: no server,
no subprocess, so these tests are fast and their coverage of the layer is measured.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import requests
import responses
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from moto import mock_aws
from moto.core.base_backend import BackendDict
from moto.core.model_instances import reset_model_data
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.s3.models import s3_backends
from moto.secretsmanager.models import secretsmanager_backends

from transcriber.compose import transcriber_from
from transcriber.config import Settings
from transcriber.domain.retry import DeadLetterRetryPolicy
from transcriber.pipeline.workflow import Transcriber
from transcriber.services.answers import KeptAnswers
from transcriber.services.clients import AWS_CLIENT_CONFIG, new_session
from transcriber.services.storage import output_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

    from transcriber.domain.events import S3ObjectRef

REGION = "us-east-1"
INPUT_BUCKET = "core-input"
OUTPUT_BUCKET = "core-output"
TABLE = "core-idempotency"
SECRET_ID = "deepgram/test/api-key"
API_KEY = "dg-core-key-0123456789abcdef"
API_URL = "https://api.deepgram.test"
LISTEN_URL = f"{API_URL}/v1/listen"

ENV = {
    "ENVIRONMENT_NAME": "test",
    "OUTPUT_BUCKET": OUTPUT_BUCKET,
    "INPUT_BUCKET": INPUT_BUCKET,
    "DEEPGRAM_SECRET_ID": SECRET_ID,
    "DEEPGRAM_API_URL": API_URL,
    "IDEMPOTENCY_TABLE": TABLE,
    # The workflow's tests look at the transcript JSON alone; tests/core/test_completion.py turns the
    # derived formats and the completion events (both on by default) back on.
    "OUTPUT_FORMATS": "json",
    "COMPLETION_EVENTS": "false",
}


SETTINGS = Settings.from_env(ENV)
UPLOAD_BODY = b"RIFF....WAVEfmt "  # what ``Aws.upload`` puts unless told otherwise


def etag_of(body: bytes) -> str:
    """The ETag S3 gives a single-part upload of ``body`` (as events carry it, unquoted)."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


UPLOAD_ETAG = etag_of(UPLOAD_BODY)


def transcript_key(source_key: str, bucket: str | None = None) -> str:
    """Where the transcript of ``source_key`` (in ``bucket``, default the input bucket) lands."""
    return output_key(SETTINGS.transcript_prefix, source_key, bucket=bucket, home_bucket=INPUT_BUCKET)


def failure_key(source_key: str, bucket: str | None = None) -> str:
    """Where the failure record of ``source_key`` lands."""
    return output_key(SETTINGS.failure_prefix, source_key, bucket=bucket, home_bucket=INPUT_BUCKET)


def transcript_body(text: str = "the quick brown fox", request_id: str = "req-1") -> dict[str, Any]:
    words = [
        {"word": w, "start": i * 0.5, "end": i * 0.5 + 0.4, "confidence": 0.9}
        for i, w in enumerate(text.split())
    ]
    return {
        "metadata": {"request_id": request_id, "duration": 2.5, "channels": 1},
        "results": {
            "channels": [{"alternatives": [{"transcript": text, "confidence": 0.9, "words": words}]}]
        },
    }


def pytest_configure(config: pytest.Config) -> None:
    # moto behaving as AWS where a promise depends on it (the local world's patches, not its servers).
    config.pluginmanager.import_plugin("localworld.moto_plugin")


@dataclass
class FakeLambdaContext:
    """What Powertools and the workflow read from Lambda's context; the clock is settable."""

    remaining_ms: int = 600_000
    function_name: str = "core-transcribe"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:core-transcribe"
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/core-transcribe"
    log_stream_name: str = "2026/11/25/[$LATEST]core"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@contextlib.contextmanager
def mid_request(
    deepgram: responses.RequestsMock, transcriber: Transcriber, obj: S3ObjectRef
) -> Iterator[None]:
    """``transcriber`` processes ``obj`` in another invocation (a thread), held inside Deepgram's
    request for as long as the block runs; then Deepgram answers and that invocation finishes."""
    answering, may_answer = threading.Event(), threading.Event()

    def held_answer(_: object) -> tuple[int, dict[str, str], str]:
        answering.set()
        assert may_answer.wait(timeout=10)
        return 200, {}, json.dumps(transcript_body())

    deepgram.add_callback(responses.POST, LISTEN_URL, callback=held_answer)
    running = threading.Thread(target=transcriber.process, args=(obj, FakeLambdaContext()))
    running.start()
    try:
        assert answering.wait(timeout=10)
        yield
    finally:
        may_answer.set()
        running.join(timeout=10)


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@dataclass(frozen=True)
class Admin:
    """Clients on botocore's whole models, for what a test sets up and inspects (making queues and
    tables, listing, restoring): the layer's own clients have only the operations it calls."""

    s3: S3Client
    dynamodb: DynamoDBClient
    secretsmanager: SecretsManagerClient
    sqs: SQSClient
    events: EventBridgeClient


@dataclass
class Aws:
    """The clients a Transcriber is given (the container's own, on the layer's cut of botocore's
    data: tests inject faults through their events) and ``admin``'s for everything else."""

    s3: S3Client
    dynamodb: DynamoDBClient
    secretsmanager: SecretsManagerClient
    sqs: SQSClient
    session: boto3.session.Session
    admin: Admin

    # The queues are made when a test first asks for them: most tests never do.
    @functools.cached_property
    def dead_letter_queue_url(self) -> str:
        return self.admin.sqs.create_queue(QueueName="core-dlq")["QueueUrl"]

    @functools.cached_property
    def parking_queue_url(self) -> str:
        return self.admin.sqs.create_queue(QueueName="core-parking")["QueueUrl"]

    def events(self) -> EventBridgeClient:
        """An EventBridge client, made when a transcriber first publishes (as in a container)."""
        client: EventBridgeClient = _client(self.session, "events")
        return client

    def upload(self, key: str, body: bytes = UPLOAD_BODY, **extra: Any) -> dict[str, Any]:
        return dict(self.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body, **extra))

    def output(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=OUTPUT_BUCKET, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        document: dict[str, Any] = json.loads(body)
        return document

    def output_keys(self) -> list[str]:
        listing = self.admin.s3.list_objects_v2(Bucket=OUTPUT_BUCKET)
        return sorted(item["Key"] for item in listing.get("Contents", []))


class HandlersOfOneTest:
    """A client's event emitter for one test: the shared one, with the handlers the test registers
    taken off again after it (``remove``). Copying the emitter instead costs more than the rest of
    a set-up, and a Transcriber registers one (Powertools' idempotency feature on the DynamoDB
    client) each time it is built."""

    _REGISTERS = frozenset({"register", "register_first", "register_last"})

    def __init__(self, shared: Any) -> None:
        self._emitter = shared
        self._registered: list[tuple[str, Any, Any, bool]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._emitter, name)
        if name not in self._REGISTERS:
            return method

        def register(
            event_name: str, handler: Any, unique_id: Any = None, unique_id_uses_count: bool = False
        ) -> None:
            method(event_name, handler, unique_id, unique_id_uses_count)
            self._registered.append((event_name, handler, unique_id, unique_id_uses_count))

        return register

    def __copy__(self) -> Any:
        return copy.copy(self._emitter)

    def remove(self) -> Any:
        """Unregister what the test registered (latest first); returns the shared emitter."""
        for event_name, handler, unique_id, uses_count in reversed(self._registered):
            # ValueError: the test unregistered it already and its event's node went with it.
            with contextlib.suppress(ValueError):
                self._emitter.unregister(event_name, handler, unique_id, uses_count)
        return self._emitter


@dataclass(frozen=True)
class _Clients:
    s3: S3Client
    dynamodb: DynamoDBClient
    secretsmanager: SecretsManagerClient
    sqs: SQSClient
    session: boto3.session.Session
    admin: Admin


def _client(session: boto3.session.Session, service: str) -> Any:
    return session.client(  # type: ignore[call-overload]
        service,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AWS_CLIENT_CONFIG,
    )


@pytest.fixture(scope="session")
def _clients() -> _Clients:
    """One boto3 Session and its clients for the whole run: building them is most of a test's
    set-up. It is the container's own (``new_session``: the layer's cut of botocore's data), so
    every call the core makes goes through the models a function loads; ``admin``'s session is
    botocore's own. moto intercepts every botocore client once imported, so they reach the
    process's mock."""
    session = new_session()
    whole = boto3.session.Session()
    return _Clients(
        s3=_client(session, "s3"),
        dynamodb=_client(session, "dynamodb"),
        secretsmanager=_client(session, "secretsmanager"),
        sqs=_client(session, "sqs"),
        session=session,
        admin=Admin(
            *(_client(whole, name) for name in ("s3", "dynamodb", "secretsmanager", "sqs", "events"))
        ),
    )


@pytest.fixture(scope="package")
def _moto(moto_as_aws: None) -> Iterator[None]:
    """moto's in-process mock, started once for the core tests a process runs in a row (a start
    registers some 1,300 URL patterns with ``responses``, the cost of a whole test's set-up), and
    stopped before any other tier's test: those start their own mocks and servers, and a nested
    ``mock_aws`` would neither empty moto on starting nor on stopping. Each test empties it (``fresh_aws``).
    The credentials stay the ones ``aws`` sets (moto's own would outlive the test in the environment);
    boto3's default session (tests build a few clients of their own) stays between tests too."""
    with mock_aws(config={"core": {"mock_credentials": False, "reset_boto3_session": False}}):
        yield


TABLE_SCHEMA = [{"AttributeName": "id", "KeyType": "HASH"}]
TABLE_ATTRIBUTES = [{"AttributeName": "id", "AttributeType": "S"}]
SECRET_STRING = json.dumps({"api_key": API_KEY})


def fresh_aws() -> None:
    """Empty moto as ``mock_aws`` does when it stops (every service, account and region), then make
    what the stack has before any upload: the buckets, the table, the secret. Made through moto's
    backends, with what its handlers pass them for these requests: the same objects at a fortieth of
    the cost of five API calls (``test_fixture_isolation.py`` compares them with the API's)."""
    BackendDict.reset()
    reset_model_data()
    s3 = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        s3.create_bucket(bucket, REGION)
    # As the template makes it: a failure record's marker is a delete marker (storage.TranscriptSlot).
    s3.put_bucket_versioning(OUTPUT_BUCKET, "Enabled")
    dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].create_table(
        TABLE,
        schema=TABLE_SCHEMA,
        attr=TABLE_ATTRIBUTES,
        throughput=None,
        global_indexes=[],
        indexes=[],
        streams=None,
        billing_mode="PAY_PER_REQUEST",
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )
    secretsmanager_backends[DEFAULT_ACCOUNT_ID][REGION].create_secret(
        name=SECRET_ID,
        secret_string=SECRET_STRING,
        secret_binary=None,
        description="",
        tags=[],
        kms_key_id=None,
        client_request_token=str(uuid.uuid4()),  # botocore fills in this idempotency token
        replica_regions=[],
        force_overwrite=False,
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, _clients: _Clients, _moto: None) -> Iterator[Aws]:
    """A fresh moto per test (emptied, then the stack's resources made anew), on the session's clients."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clients = (_clients.s3, _clients.dynamodb, _clients.secretsmanager, _clients.sqs)
    # Tests (and each Transcriber built) register event handlers on the clients: removed after.
    emitters = [(client.meta, HandlersOfOneTest(client.meta.events)) for client in clients]
    for meta, events in emitters:
        meta.events = events  # type: ignore[assignment]  # an emitter in all but name
    fresh_aws()
    yield Aws(*clients, session=_clients.session, admin=_clients.admin)
    for meta, events in emitters:
        meta.events = events.remove()
    # Nothing of the test's outlives it (a later test empties moto anyway; this frees its objects).
    BackendDict.reset()
    reset_model_data()


@pytest.fixture
def deepgram() -> Iterator[responses.RequestsMock]:
    """Deepgram's listen endpoint; tests add the answers in the order it gives them."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@dataclass
class Sleeps:
    """Stands in for ``time.sleep``: records the delays and advances the fake Lambda clock."""

    context: FakeLambdaContext
    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.context.remaining_ms -= int(seconds * 1000)


@pytest.fixture
def sleeps(lambda_context: FakeLambdaContext) -> Sleeps:
    return Sleeps(lambda_context)


TranscriberFactory = Callable[..., Transcriber]


@pytest.fixture
def make_transcriber(aws: Aws, sleeps: Sleeps, tmp_path: Path) -> TranscriberFactory:
    """A Transcriber on the injected clients; keyword arguments override environment variables."""

    def make(**env: str) -> Transcriber:
        settings = Settings.from_env({**ENV, **env})
        return transcriber_from(
            settings,
            s3=aws.s3,
            dynamodb=aws.dynamodb,
            secretsmanager=aws.secretsmanager,
            events=aws.events,
            http=requests.Session(),
            sleep=sleeps,
            # The container's /tmp: one per test, as each test is a new container.
            kept_answers=KeptAnswers(tmp_path / "kept-answers"),
        )

    return make


@pytest.fixture
def transcriber(make_transcriber: TranscriberFactory) -> Transcriber:
    return make_transcriber()


@pytest.fixture
def dead_letter_policy(aws: Aws) -> DeadLetterRetryPolicy:
    return DeadLetterRetryPolicy.from_env(
        {
            "DEAD_LETTER_QUEUE_URL": aws.dead_letter_queue_url,
            "PARKING_QUEUE_URL": aws.parking_queue_url,
            "RETRY_MAX_ATTEMPTS": "3",
            "RETRY_BASE_DELAY_SECONDS": "60",
            "RETRY_MAX_DELAY_SECONDS": "600",
            "BLOCKED_RETRY_DELAY_SECONDS": "3600",
        }
    )


def s3_event(
    *keys: str, bucket: str = INPUT_BUCKET, size: int = 16, etag: str = UPLOAD_ETAG
) -> dict[str, Any]:
    """An S3 notification as S3 sends it (keys URL-encoded)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2026-11-25T12:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key),
                        "size": size,
                        "eTag": etag,
                        "sequencer": f"{i:016X}",
                    },
                },
            }
            for i, key in enumerate(keys)
        ]
    }


def sqs_record(message: Any) -> SQSRecord:
    """A message from ReceiveMessage as Lambda's SQS event carries it to the handler."""
    return SQSRecord(
        {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message["Attributes"],
            "messageAttributes": {
                name: {"stringValue": value["StringValue"], "dataType": value["DataType"]}
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "eventSource": "aws:sqs",
        }
    )
