"""The AWS side of the local world: moto in server mode, provisioned from template.yaml.

Everything talks to moto over real HTTP with plain boto3 clients (the same way the
Lambda code does through `AWS_ENDPOINT_URL`), so nothing here patches botocore.

S3 event routing: S3 cannot invoke a local process, but moto does deliver bucket
notifications to SQS. `route_bucket_notifications` reads a function's S3 events from the
template and points the bucket at a queue; every message body there (apart from the
`s3:TestEvent` S3 sends when a configuration is saved, see `is_s3_test_event`) is
exactly the `{"Records": [...]}` event S3 would have sent to Lambda, so a pump can pass
`json.loads(body)` straight to `LocalFunction.invoke`.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

import boto3
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from localworld import api_destinations, events_unknown_bus, s3_delete_markers, s3_notifications
from localworld.s3_limits import S3CustomerKeys, S3MetadataLimit
from localworld.s3_presign import IssuedCredentials, PresignCheck, PresignVerifier
from localworld.template import Stack
from samstack import DEFAULT_ACCOUNT_ID, DEFAULT_REGION, Resource, TemplateError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

# moto accepts any credentials; the local world checks these on presigned URLs (MotoServer).
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - not a secret
DUMMY_SESSION_TOKEN = "testing"  # noqa: S105 - not a secret
# The one set of credentials the local world issues: presigned URLs must be signed with them.
ISSUED_CREDENTIALS = IssuedCredentials(DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, DUMMY_SESSION_TOKEN)

# CloudFormation AWS::SQS::Queue properties that are plain SQS queue attributes.
_SQS_ATTRIBUTE_PROPERTIES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


class AtomicDynamoDB:
    """WSGI middleware: one DynamoDB request at a time per table. DynamoDB applies a conditional
    write atomically; moto checks the condition and writes in two steps, so two threads could both
    take one capacity slot. Serialising the requests that touch a table gives back DynamoDB's
    guarantee; a request naming several tables (a transaction, a batch) holds all of theirs (taken
    in name order), and one naming none (ListTables...) or whose body can't be read holds every
    table's lock. Tables are independent in DynamoDB, so one table's queue does not hold up another's."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._everything = threading.Lock()  # held by requests that name no table

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self._app(environ, start_response)
        with ExitStack() as held:
            for lock in self._locks_for(_dynamodb_tables(environ)):
                held.enter_context(lock)
            return list(self._app(environ, start_response))

    def _locks_for(self, tables: set[str] | None) -> list[threading.Lock]:
        with self._locks_lock:
            if not tables:  # every table: the catalog's lock, then each table's
                return [self._everything, *(self._locks[name] for name in sorted(self._locks))]
            for name in tables:
                self._locks.setdefault(name, threading.Lock())
            return [self._locks[name] for name in sorted(tables)]


def _dynamodb_tables(environ: dict[str, Any]) -> set[str] | None:
    """The tables a DynamoDB request names (its body is read here and put back for moto); None when
    the body can't be read as JSON."""
    try:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    except (KeyError, ValueError, OSError):
        return None
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    names = [request.get("TableName")]
    names += [op.get("TableName") for item in request.get("TransactItems") or [] for op in item.values()]
    names += list(request.get("RequestItems") or {})
    return {_table_name(str(name)) for name in names if name}


def _table_name(name: str) -> str:
    """A table's name, also when given by its ARN (``arn:aws:dynamodb:...:table/<name>``)."""
    return name.split(":table/", 1)[1].split("/", 1)[0] if ":table/" in name else name


class MotoServer:
    """moto's server on 127.0.0.1 (port 0 picks a free port), threaded like moto's
    ``ThreadedMotoServer``, with S3's check of presigned URLs in front (``localworld.s3_presign``):
    a presigned request is refused as S3 refuses it unless it is signed with the credentials the
    local world issues (``client_env``) and has not expired. ``presign_check`` is the checker
    (its ``verifier.clock_offset_s`` moves S3's clock; ``refusals`` lists what it refused)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> None:
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint_url: str | None = None
        self._quiet = quiet
        # S3's user-metadata limit and SSE-C refusals, which moto lacks (localworld.s3_limits).
        self.metadata_limit = S3MetadataLimit(
            S3CustomerKeys(AtomicDynamoDB(DomainDispatcherApplication(create_backend_app)))
        )
        self.presign_check = PresignCheck(self.metadata_limit, PresignVerifier([ISSUED_CREDENTIALS]))

    def start(self) -> str:
        s3_notifications.install()  # versionId and sequencer, as real S3 sends them
        events_unknown_bus.install()  # PutEvents to a missing bus: accepted and dropped, as on AWS
        s3_delete_markers.install()  # a DELETE of a missing key still adds a delete marker, as on AWS
        if self._quiet:
            # werkzeug logs every request line, presigned URLs' credentials and signatures included,
            # and sets its own logger to INFO the first time any werkzeug server logs in this
            # process: quiet means WARNING whatever ran first.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server(
            self._host, self._port, self.presign_check, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()
        self._endpoint_url = f"http://{self._host}:{self._server.server_port}"
        return self._endpoint_url

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("moto server is not started")
        return self._endpoint_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._endpoint_url = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def client_env(
    endpoint_url: str, region: str = DEFAULT_REGION, dynamodb_endpoint_url: str | None = None
) -> dict[str, str]:
    """Environment that points boto3 (in any process) at moto with dummy credentials (DynamoDB at
    its own endpoint when it has one: the SDKs' service-specific ``AWS_ENDPOINT_URL_DYNAMODB``)."""
    own = {"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint_url} if dynamodb_endpoint_url else {}
    return {
        **own,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": DUMMY_SESSION_TOKEN,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }


def is_s3_test_event(message_body: str) -> bool:
    """True for the `s3:TestEvent` S3 sends to a queue when a notification is configured."""
    try:
        body = json.loads(message_body)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("Event") == "s3:TestEvent"


@dataclass
class ProvisionResult:
    """What `provision` created (logical id -> name, queue URL or ARN) and what it left out."""

    created: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> reason


class LocalAws:
    """boto3 clients for one moto endpoint (and DynamoDB's own, if it has one: see
    ``localworld.dynamodb_process``) plus the operations the local world needs."""

    def __init__(
        self,
        endpoint_url: str,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        *,
        dynamodb_endpoint_url: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.dynamodb_endpoint_url = dynamodb_endpoint_url.rstrip("/") if dynamodb_endpoint_url else None
        self.region = region
        self.account_id = account_id
        self._session = boto3.session.Session(
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            aws_session_token=DUMMY_SESSION_TOKEN,
            region_name=region,
        )
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    def _client(self, service: str) -> Any:
        # Clients are thread-safe and slow to build: one per service.
        with self._clients_lock:
            if service not in self._clients:
                own = self.dynamodb_endpoint_url if service == "dynamodb" else None
                self._clients[service] = self._session.client(
                    service,  # type: ignore[call-overload]
                    endpoint_url=own or self.endpoint_url,
                )
            return self._clients[service]

    def s3(self) -> S3Client:
        return cast("S3Client", self._client("s3"))

    def sqs(self) -> SQSClient:
        return cast("SQSClient", self._client("sqs"))

    def dynamodb(self) -> DynamoDBClient:
        return cast("DynamoDBClient", self._client("dynamodb"))

    def sns(self) -> SNSClient:
        return cast("SNSClient", self._client("sns"))

    def secretsmanager(self) -> SecretsManagerClient:
        return cast("SecretsManagerClient", self._client("secretsmanager"))

    def events(self) -> EventBridgeClient:
        return cast("EventBridgeClient", self._client("events"))

    def logs(self) -> Any:  # no mypy-boto3-logs stubs in the lock
        return self._client("logs")

    def env(self) -> dict[str, str]:
        return client_env(self.endpoint_url, self.region, self.dynamodb_endpoint_url)

    def reset(self) -> None:
        """Clear all moto state (every service, every account, in every moto process)."""
        for endpoint in filter(None, (self.endpoint_url, self.dynamodb_endpoint_url)):
            request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

    # --- secrets --------------------------------------------------------------------------

    def create_secret(self, name: str, value: str | bytes | None) -> str:
        """Create (or give a new current version to) a secret; None leaves it without a value."""
        client = self.secretsmanager()
        kwargs: dict[str, Any] = {}
        if isinstance(value, str):
            kwargs["SecretString"] = value
        elif isinstance(value, bytes):
            kwargs["SecretBinary"] = value
        try:
            return client.create_secret(Name=name, **kwargs)["ARN"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceExistsException" or value is None:
                raise
        return client.put_secret_value(SecretId=name, **kwargs)["ARN"]

    # --- provisioning ---------------------------------------------------------------------

    def provision(self, stack: Stack) -> ProvisionResult:
        """Create the template's data-plane resources in moto, dependencies first."""
        creators: dict[str, Callable[[Resource], str]] = {
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::SQS::QueuePolicy": self._apply_queue_policy,
            "AWS::SNS::Topic": self._create_topic,
            "AWS::SNS::Subscription": self._create_subscription,
            "AWS::Logs::LogGroup": self._create_log_group,
            "AWS::Events::Rule": self._create_rule,
            "AWS::Events::Connection": lambda spec: api_destinations.create_connection(self, spec),
            "AWS::Events::ApiDestination": lambda spec: api_destinations.create_api_destination(self, spec),
        }
        result = ProvisionResult()
        for spec in _dependency_order(stack.resources.values()):
            creator = creators.get(spec.type)
            if creator is None:
                # Functions run in LocalFunction; IAM, alarms, layers, mappings have no local effect.
                result.skipped[spec.logical_id] = f"{spec.type} is not provisioned locally"
                continue
            result.created[spec.logical_id] = creator(spec)
        return result

    def _create_bucket(self, spec: Resource) -> str:
        client, props, name = self.s3(), spec.properties, spec.physical_name
        if self.region == "us-east-1":
            client.create_bucket(Bucket=name)
        else:
            client.create_bucket(
                Bucket=name,
                CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
            )
        versioning = (props.get("VersioningConfiguration") or {}).get("Status")
        if versioning:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
        if props.get("Tags"):
            client.put_bucket_tagging(Bucket=name, Tagging={"TagSet": props["Tags"]})
        if props.get("PublicAccessBlockConfiguration"):
            client.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        return name

    def _create_table(self, spec: Resource) -> str:
        props = spec.properties
        kwargs: dict[str, Any] = {
            "TableName": spec.physical_name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
        }
        billing = props.get("BillingMode") or (
            "PROVISIONED" if "ProvisionedThroughput" in props else "PAY_PER_REQUEST"
        )
        kwargs["BillingMode"] = billing
        if billing == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = _throughput(props.get("ProvisionedThroughput"))
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if props.get(key):
                kwargs[key] = props[key]
        stream = props.get("StreamSpecification")
        if stream:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **stream}
        if props.get("Tags"):
            kwargs["Tags"] = props["Tags"]
        client = self.dynamodb()
        client.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true"):
            client.update_time_to_live(
                TableName=spec.physical_name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        return spec.physical_name

    def _create_queue(self, spec: Resource) -> str:
        props = spec.properties
        attributes = {key: _attribute_text(props[key]) for key in _SQS_ATTRIBUTE_PROPERTIES if key in props}
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in props:
                value = props[key]
                attributes[key] = value if isinstance(value, str) else json.dumps(value)
        kwargs: dict[str, Any] = {"QueueName": spec.physical_name, "Attributes": attributes}
        if props.get("Tags"):
            kwargs["tags"] = {tag["Key"]: str(tag["Value"]) for tag in props["Tags"]}
        return self.sqs().create_queue(**kwargs)["QueueUrl"]

    def _apply_queue_policy(self, spec: Resource) -> str:
        client = self.sqs()
        policy = json.dumps(spec.properties["PolicyDocument"])
        for queue_url in spec.properties.get("Queues", []):
            client.set_queue_attributes(QueueUrl=str(queue_url), Attributes={"Policy": policy})
        return spec.physical_name

    def _create_topic(self, spec: Resource) -> str:
        props = spec.properties
        attributes: dict[str, str] = {
            key: _attribute_text(props[key])
            for key in ("DisplayName", "FifoTopic", "ContentBasedDeduplication", "KmsMasterKeyId")
            if key in props
        }
        arn = self.sns().create_topic(Name=spec.physical_name, Attributes=attributes)["TopicArn"]
        for subscription in props.get("Subscription", []):
            self._subscribe(arn, str(subscription["Protocol"]), str(subscription["Endpoint"]), {})
        return arn

    def _create_subscription(self, spec: Resource) -> str:
        props = spec.properties
        attributes: dict[str, str] = {
            key: props[key] if isinstance(props[key], str) else json.dumps(props[key])
            for key in ("FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy")
            if key in props
        }
        if "RawMessageDelivery" in attributes:
            attributes["RawMessageDelivery"] = _attribute_text(props["RawMessageDelivery"])
        return self._subscribe(
            str(props["TopicArn"]), str(props["Protocol"]), str(props["Endpoint"]), attributes
        )

    def _subscribe(self, topic_arn: str, protocol: str, endpoint: str, attributes: dict[str, str]) -> str:
        if protocol == "lambda":
            # moto would try to run the function itself (it needs Docker); the local pump owns that.
            return f"{topic_arn}:lambda-subscription-not-created"
        response = self.sns().subscribe(
            TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint, Attributes=attributes
        )
        return response["SubscriptionArn"]

    def _create_rule(self, spec: Resource) -> str:
        """An EventBridge rule, in its template state, with its SQS targets and a tap per API destination
        (``localworld.api_destinations``). Lambda targets are not created: moto would need Docker."""
        props = spec.properties
        bus = str(props.get("EventBusName") or "default")
        if bus != "default":
            try:
                self.events().create_event_bus(Name=bus)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise
        kwargs: dict[str, Any] = {
            "Name": spec.physical_name,
            "EventBusName": bus,
            "State": str(props.get("State", "ENABLED")),
        }
        if "EventPattern" in props:
            pattern = props["EventPattern"]
            kwargs["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
        arn = self.events().put_rule(**kwargs)["RuleArn"]
        targets = [
            {"Id": str(t["Id"]), "Arn": str(t["Arn"])}
            for t in props.get("Targets", [])
            if str(t["Arn"]).split(":")[2:3] == ["sqs"]
        ]
        # API destinations: moto matches, a tap queue receives, localworld.api_destinations calls.
        targets += [
            api_destinations.tap_target(self, spec.physical_name, t)
            for t in props.get("Targets", [])
            if api_destinations.is_api_destination(str(t["Arn"]))
        ]
        if targets:
            self.events().put_targets(Rule=spec.physical_name, EventBusName=bus, Targets=targets)  # type: ignore[arg-type]
        return arn

    def _create_log_group(self, spec: Resource) -> str:
        client = self.logs()
        client.create_log_group(logGroupName=spec.physical_name)
        if "RetentionInDays" in spec.properties:
            client.put_retention_policy(
                logGroupName=spec.physical_name, retentionInDays=int(spec.properties["RetentionInDays"])
            )
        return spec.physical_name

    # --- S3 -> SQS routing ----------------------------------------------------------------

    def route_bucket_notifications(self, stack: Stack, function_logical_id: str) -> str:
        """Send the S3 events a function subscribes to (per the template) to a new SQS queue.

        Returns the queue URL. The `s3:TestEvent` moto sends when the configuration is
        saved is removed from the queue, but a pump should still skip such messages
        (`is_s3_test_event`), as real S3 may send them again.
        """
        function = stack.function(function_logical_id)
        s3_events = s3_subscriptions(stack, function_logical_id)
        if not s3_events:
            raise TemplateError(f"{function_logical_id} has no S3 events in the template")
        sqs = self.sqs()
        queue_name = f"{stack.name}-{function_logical_id}-s3-events"[:80]
        # Long enough that a message being pumped is not redelivered while the function runs.
        visibility = str(max(30, function.timeout * 6))
        queue_url = sqs.create_queue(QueueName=queue_name, Attributes={"VisibilityTimeout": visibility})[
            "QueueUrl"
        ]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

        by_bucket: dict[str, list[dict[str, Any]]] = {}
        for event_name, props in s3_events.items():
            bucket = str(props["Bucket"])
            events = props.get("Events", [])
            config: dict[str, Any] = {
                "Id": f"{function_logical_id}-{event_name}",
                "QueueArn": queue_arn,
                "Events": [events] if isinstance(events, str) else list(events),
            }
            rules = ((props.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            if rules:
                config["Filter"] = {
                    "Key": {"FilterRules": [{"Name": r["Name"], "Value": str(r["Value"])} for r in rules]}
                }
            by_bucket.setdefault(bucket, []).append(config)

        s3 = self.s3()
        for bucket, configs in by_bucket.items():
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
            current.pop("ResponseMetadata", None)  # type: ignore[misc]
            ours = {config["Id"] for config in configs}
            kept = [c for c in current.get("QueueConfigurations", []) if c.get("Id") not in ours]
            notification: dict[str, Any] = {
                key: value for key, value in current.items() if key != "QueueConfigurations"
            }
            notification["QueueConfigurations"] = kept + configs
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notification)  # type: ignore[arg-type]
        self._drop_test_events(queue_url)
        return queue_url

    def _drop_test_events(self, queue_url: str) -> None:
        sqs = self.sqs()
        while True:
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0
            ).get("Messages", [])
            tests = [m for m in messages if is_s3_test_event(m.get("Body", ""))]
            for message in tests:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if len(tests) < len(messages) or not messages:
                return


def s3_subscriptions(stack: Stack, function_logical_id: str) -> dict[str, dict[str, Any]]:
    """The S3 notifications that invoke a function, as SAM S3 event properties (Bucket, Events,
    Filter). After the SAM transform every S3 event is a bucket's ``LambdaConfigurations`` entry,
    the same form a template writes itself when the notification must be conditional."""
    events = stack.function(function_logical_id).events
    return {name: dict(event["Properties"]) for name, event in events.items() if event["Type"] == "S3"}


def _throughput(value: Any) -> dict[str, int]:
    value = value or {}
    return {
        "ReadCapacityUnits": int(value.get("ReadCapacityUnits", 5)),
        "WriteCapacityUnits": int(value.get("WriteCapacityUnits", 5)),
    }


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dependency_order(specs: Iterable[Resource]) -> list[Resource]:
    """Resources ordered so that each comes after what it references (DLQ before its queue)."""
    pending = {spec.logical_id: spec for spec in specs}
    ordered: list[Resource] = []
    done: set[str] = set()
    while pending:
        ready = [
            spec
            for spec in pending.values()
            if all(dep in done or dep not in pending for dep in spec.depends_on)
        ]
        if not ready:
            raise TemplateError(f"circular dependency among {', '.join(sorted(pending))}")
        for spec in ready:
            ordered.append(spec)
            done.add(spec.logical_id)
            del pending[spec.logical_id]
    return ordered
