"""The local world for pytest, and the only way product tests reach it.

Loaded only where tests use the world: the ``conftest.py`` of tests/integration, tests/samlocal,
tools/localworld/tests and bench/tests registers it from ``pytest_configure`` (once, however many ask;
its fixtures are global, so one world per session, per xdist worker, serves them all), and the fast
tiers never import it; ``-p localworld.pytest_plugin`` loads it anywhere. Tests ask for fixtures
and call their methods; they import ``localworld`` only under ``if TYPE_CHECKING:`` for the type
names (``tests/test_boundaries.py`` holds them to that). Fixtures:

* ``world_session`` (session): moto server + the Deepgram emulator + the stack of template.yaml,
  provisioned, with the API key in its secret; ``world``: the same, emptied and re-provisioned for
  the test, with the emulator's faults cleared after it.
* ``sample_audio``: the committed recording's bytes ("the quick brown fox jumps over the lazy dog").
* ``uploads``: ``uploads.put(key, body)`` uploads and returns the S3 event moto itself emitted.
* ``start_function``: ``start_function("TranscribeFunction", timeout_s=..., extra_env=..., **env)``
  starts a function of the template in a fresh Docker-free container (closed after the test).
* ``start_function_with``: ``start_function_with(parameters, "TranscribeFunction", ...)``, the same
  for the stack resolved with more parameter overrides (for example ``{"DeepgramRegion": "EU",
  "Settings.Deepgram.DeepgramApiUrl": ""}``: Deepgram's EU host, reached through the world's proxy).
* ``start_delivery``: ``start_delivery(**options)`` runs ``LocalDelivery`` (S3 notifications,
  async invocation with Lambda's retries, DLQ, SQS event sources) for the world's stack;
  ``duplicate_s3_events=True`` delivers each S3 event twice, ``hold_s3_events=True`` keeps them
  until ``delivery.release_held()`` hands them over newest first (out of order).
* S3 notifications carry ``versionId`` (versioned buckets) and ``sequencer`` as real S3's do
  (``localworld.s3_notifications``).
* ``aws_fault_proxy``: an ``AwsFaultProxy`` in front of the world's moto.
* ``fast_retry_env``: the retry function's settings shortened for tests.
* ``chaos_run``: ``chaos_run(uploads=..., rates=...)`` is ``localworld.chaos.run`` on the world.
* ``backfill``: ``backfill.upload(prefix, count)`` puts an archive in the input bucket;
  ``backfill.run(prefix)`` runs ``scripts/operate.py backfill`` against the local Batch Operations
  stand-in and the real transcribe handler (``localworld.backfill_run``).
* ``completion_events``: the template's sample rule for the completion events, enabled on moto's
  EventBridge; ``completion_events.wait(count)`` returns the events its queue received.
* ``start_webhook``: ``start_webhook(**settings)`` turns the template's webhook on (``Settings.Webhook``
  keys as keyword arguments), pointed at a local HTTPS receiver, provisions what it adds and runs the
  API-destination delivery (``localworld.api_destinations``); the stack is put back after the test.

It also lets other plugins watch the world without importing it: see ``localworld.pytest_hooks``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import pytest

from localworld import backfill_run, chaos, pytest_hooks
from localworld.api_destinations import ApiDestinationDelivery, referenced_secret_ids
from localworld.aws import LocalAws, MotoServer
from localworld.aws_faults import AwsFaultProxy
from localworld.deepgram.server import DeepgramEmulator
from localworld.delivery import LocalDelivery, sqs_event_record
from localworld.lambda_runtime import InvocationResult, LocalFunction
from localworld.template import Stack
from localworld.webhook_receiver import WebhookReceiver
from localworld.world import SAMPLE_AUDIO, LocalWorld, local_world


class FunctionFactory(Protocol):
    def __call__(
        self,
        logical_id: str = "TranscribeFunction",
        *,
        timeout_s: float | None = None,
        extra_env: Mapping[str, str] | None = None,
        **env_overrides: str,
    ) -> LocalFunction: ...


class ParametersFunctionFactory(Protocol):
    def __call__(
        self,
        parameters: Mapping[str, str],
        logical_id: str = "TranscribeFunction",
        *,
        timeout_s: float | None = None,
        extra_env: Mapping[str, str] | None = None,
        **env_overrides: str,
    ) -> LocalFunction: ...


DeliveryFactory = Callable[..., LocalDelivery]
ChaosRun = Callable[..., chaos.Report]


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
    world_session.emulator.unreachable_buckets = set()
    world_session.moto.presign_check.verifier.clock_offset_s = 0.0


@pytest.fixture(scope="session")
def sample_audio() -> bytes:
    """The committed sample recording: flite saying "the quick brown fox jumps over the lazy dog"."""
    return SAMPLE_AUDIO.read_bytes()


@pytest.fixture
def aws_fault_proxy(world: LocalWorld) -> Iterator[AwsFaultProxy]:
    """A fault-injecting proxy in front of the world's moto (``localworld.aws_faults``): point a
    function's ``AWS_ENDPOINT_URL`` at ``proxy.url`` to make AWS answer errors moto cannot."""
    with AwsFaultProxy(world.moto.endpoint_url) as proxy:
        yield proxy


class _Functions:
    """The functions a test started, closed after it."""

    def __init__(self, world: LocalWorld) -> None:
        self.world = world
        self.started: list[LocalFunction] = []

    def start(
        self,
        stack: Stack,
        logical_id: str,
        timeout_s: float | None,
        extra_env: Mapping[str, str] | None,
        env_overrides: Mapping[str, str],
    ) -> LocalFunction:
        function = LocalFunction(
            stack.function(logical_id),
            env_overrides=env_overrides,
            extra_env={**self.world.function_env(), **(extra_env or {})},
            timeout_s=timeout_s,
        )
        self.started.append(function)
        return function

    def close(self) -> None:
        for function in self.started:
            function.close()


@pytest.fixture
def start_function(world: LocalWorld) -> Iterator[FunctionFactory]:
    """Start a function of the template in a fresh container. ``**env_overrides`` are declared
    variables (as --env-vars); ``extra_env`` overrides what the world provides (endpoints...)."""
    functions = _Functions(world)

    def start(
        logical_id: str = "TranscribeFunction",
        *,
        timeout_s: float | None = None,
        extra_env: Mapping[str, str] | None = None,
        **env_overrides: str,
    ) -> LocalFunction:
        return functions.start(world.stack, logical_id, timeout_s, extra_env, env_overrides)

    yield start
    functions.close()


@pytest.fixture
def start_function_with(world: LocalWorld) -> Iterator[ParametersFunctionFactory]:
    """``start_function`` on the stack resolved with more parameter overrides (``parameters``)."""
    functions = _Functions(world)

    def start(
        parameters: Mapping[str, str],
        logical_id: str = "TranscribeFunction",
        *,
        timeout_s: float | None = None,
        extra_env: Mapping[str, str] | None = None,
        **env_overrides: str,
    ) -> LocalFunction:
        stack = world.stack_with(**parameters)
        return functions.start(stack, logical_id, timeout_s, extra_env, env_overrides)

    yield start
    functions.close()


@pytest.fixture
def start_delivery(world: LocalWorld) -> Iterator[DeliveryFactory]:
    """Start Lambda's event delivery for the world's stack; options as for ``LocalDelivery``."""
    started: list[LocalDelivery] = []

    def start(**options: Any) -> LocalDelivery:
        delivery = LocalDelivery(world.stack, world.aws, world.function_env(), **options)
        started.append(delivery)
        return delivery.start()

    yield start
    for delivery in started:
        delivery.close()


class Backfill:
    """The archive and the operator's backfill command, on the world."""

    def __init__(self, world: LocalWorld) -> None:
        self._world = world

    def upload(self, prefix: str, count: int) -> list[str]:
        return backfill_run.upload_archive(self._world, prefix, count)

    def run(
        self, prefix: str, *, concurrency: int = 4, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return backfill_run.run_backfill(
            self._world, prefix, concurrency=concurrency, extra_env=dict(extra_env or {})
        )


@pytest.fixture
def backfill(world: LocalWorld) -> Backfill:
    return Backfill(world)


@pytest.fixture
def sqs_record(world: LocalWorld) -> Callable[[Any, str], dict[str, Any]]:
    """``sqs_record(message, queue_arn)``: the record Lambda builds from a received SQS message, to
    invoke a queue's function with it by hand."""
    return lambda message, queue_arn: sqs_event_record(message, queue_arn, world.stack.region)


@pytest.fixture
def fast_retry_env() -> dict[str, str]:
    """The retry function's waits shortened, so a DLQ round trip takes seconds, not hours."""
    return dict(chaos.FAST_RETRY_FUNCTION)


@pytest.fixture
def chaos_run(world: LocalWorld) -> ChaosRun:
    """``localworld.chaos.run`` on this test's world: uploads under faults, then an account."""
    return functools.partial(chaos.run, world)


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


COMPLETION_EVENTS_RULE = "CompletionEventsSampleRule"
COMPLETION_EVENTS_QUEUE = "CompletionEventsSampleQueue"


class CompletionEvents:
    """What the template's sample rule (provisioned DISABLED, enabled here) sends to its queue."""

    def __init__(self, world: LocalWorld) -> None:
        self.world = world
        rule = world.stack.resource(COMPLETION_EVENTS_RULE)
        bus = str(rule.properties.get("EventBusName") or "default")
        world.aws.events().enable_rule(Name=rule.physical_name, EventBusName=bus)
        queue = world.stack.resource(COMPLETION_EVENTS_QUEUE)
        self.queue_url = world.aws.sqs().get_queue_url(QueueName=queue.physical_name)["QueueUrl"]

    def wait(self, count: int = 1, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The next ``count`` events (EventBridge's envelope, ``detail`` parsed), oldest first."""
        sqs = self.world.aws.sqs()
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(received) < count and time.monotonic() < deadline:
            messages = sqs.receive_message(
                QueueUrl=self.queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10
            ).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                received.append(json.loads(message["Body"]))
        return sorted(received, key=lambda event: str(event.get("time", "")))

    def drain(self) -> list[dict[str, Any]]:
        """Whatever is queued now (waits at most about a second)."""
        return self.wait(count=10**6, timeout_s=1.0)


@pytest.fixture
def completion_events(world: LocalWorld) -> CompletionEvents:
    return CompletionEvents(world)


WEBHOOK_PATH = "/hooks/transcripts"
WEBHOOK_DEAD_LETTER_QUEUE = "WebhookDeadLetterQueue"


class Webhook:
    """The webhook's receiver, its delivery, and its dead-letter queue."""

    def __init__(
        self, world: LocalWorld, receiver: WebhookReceiver, delivery: ApiDestinationDelivery
    ) -> None:
        self.world = world
        self.receiver = receiver
        self.delivery = delivery
        self.api_key = world.webhook_api_key
        queue = world.stack.resource(WEBHOOK_DEAD_LETTER_QUEUE).physical_name
        self.dead_letter_queue_url = world.aws.sqs().get_queue_url(QueueName=queue)["QueueUrl"]

    def wait_for_requests(self, count: int, timeout_s: float = 20.0) -> bool:
        """Until the receiver has ``count`` requests and nothing is left to deliver."""
        return self.delivery.wait_until(
            lambda: len(self.receiver.received) >= count and self.delivery.idle(), timeout_s
        )

    def dead_letters(self) -> list[dict[str, Any]]:
        """What the dead-letter queue holds now: ``{"body": ..., "attributes": {name: value}}``."""
        messages = (
            self.world.aws.sqs()
            .receive_message(
                QueueUrl=self.dead_letter_queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            )
            .get("Messages", [])
        )
        return [
            {
                "body": json.loads(m["Body"]),
                "attributes": {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()},
            }
            for m in messages
        ]


WebhookFactory = Callable[..., Webhook]


@pytest.fixture
def start_webhook(world: LocalWorld) -> Iterator[WebhookFactory]:
    original = world.stack
    running: list[tuple[WebhookReceiver, ApiDestinationDelivery]] = []

    def start(**settings: str) -> Webhook:
        receiver = WebhookReceiver(world.emulator.ca_bundle.parent).start()
        overrides = {"Settings.Webhook.Url": receiver.url + WEBHOOK_PATH}
        overrides |= {f"Settings.Webhook.{key}": value for key, value in settings.items()}
        # Provision what the webhook adds (its key's secret first, as `make webhook-secret` comes before
        # the deployment), leaving the rest of the test's world as it is.
        stack = world.stack_with(**overrides)
        for secret_id in referenced_secret_ids(stack):
            world.aws.create_secret(secret_id, world.webhook_api_key)
        added = {k: r for k, r in stack.resources.items() if k not in world.stack.resources}
        world.aws.provision(dataclasses.replace(stack, resources=added))
        world.stack = stack
        # Short backoff: EventBridge's own is not published, and a test cannot wait minutes.
        delivery = ApiDestinationDelivery(
            world.aws, world.stack, ca_bundle=world.emulator.ca_bundle, retry_base_delay_s=0.05
        ).start()
        running.append((receiver, delivery))
        return Webhook(world, receiver, delivery)

    yield start
    for receiver, delivery in running:
        delivery.stop()
        receiver.stop()
    world.stack = original  # the next test's world is re-provisioned from it


# --- hooks for watchers (see localworld.pytest_hooks) ---------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(pytest_hooks)


class _Instruments:
    """Wraps the world's classes so that they call the hooks; undone at the end of the session."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self._restore: list[Callable[[], None]] = []

    def _wrap(self, owner: type, name: str, replacement: Any) -> None:
        original = owner.__dict__[name]
        setattr(owner, name, replacement)
        self._restore.append(lambda: setattr(owner, name, original))

    def install(self) -> None:
        hook = self.hook
        create_secret = LocalAws.create_secret

        def create_secret_hooked(self: LocalAws, name: str, value: str | bytes | None) -> str:
            hook.pytest_localworld_secret_stored(name=name, value=value)
            return create_secret(self, name, value)

        api_keys = DeepgramEmulator.__dict__["api_keys"]

        def set_api_keys(self: DeepgramEmulator, keys: Iterable[str]) -> None:
            keys = list(keys)
            hook.pytest_localworld_api_keys_set(keys=keys)
            api_keys.fset(self, keys)

        emulator_start = DeepgramEmulator.start

        def start_hooked(self: DeepgramEmulator) -> DeepgramEmulator:
            hook.pytest_localworld_emulator_started(emulator=self)
            return emulator_start(self)

        emulator_reset = DeepgramEmulator.reset

        def emulator_reset_hooked(self: DeepgramEmulator) -> None:
            hook.pytest_localworld_emulator_resetting(emulator=self)
            emulator_reset(self)

        world_init = LocalWorld.__init__

        def world_init_hooked(self: LocalWorld, *args: Any, **kwargs: Any) -> None:
            world_init(self, *args, **kwargs)
            hook.pytest_localworld_world_created(world=self)

        world_reset = LocalWorld.reset

        def world_reset_hooked(self: LocalWorld, *args: Any, **kwargs: Any) -> None:
            hook.pytest_localworld_world_resetting(world=self)
            world_reset(self, *args, **kwargs)

        moto_stop = MotoServer.stop

        def moto_stop_hooked(self: MotoServer) -> None:
            hook.pytest_localworld_moto_stopping(moto=self)
            moto_stop(self)

        invoke = LocalFunction.invoke

        def invoke_hooked(self: LocalFunction, event: Any, *args: Any, **kwargs: Any) -> InvocationResult:
            result = invoke(self, event, *args, **kwargs)
            hook.pytest_localworld_invoked(function=self, result=result)
            return result

        self._wrap(LocalAws, "create_secret", create_secret_hooked)
        self._wrap(DeepgramEmulator, "api_keys", property(api_keys.fget, set_api_keys, api_keys.fdel))
        self._wrap(DeepgramEmulator, "start", start_hooked)
        self._wrap(DeepgramEmulator, "reset", emulator_reset_hooked)
        self._wrap(LocalWorld, "__init__", world_init_hooked)
        self._wrap(LocalWorld, "reset", world_reset_hooked)
        self._wrap(MotoServer, "stop", moto_stop_hooked)
        self._wrap(LocalFunction, "invoke", invoke_hooked)

    def uninstall(self) -> None:
        while self._restore:
            self._restore.pop()()


_INSTRUMENTS_KEY = pytest.StashKey[_Instruments]()


def pytest_configure(config: pytest.Config) -> None:
    instruments = _Instruments(config.hook)
    instruments.install()
    config.stash[_INSTRUMENTS_KEY] = instruments


def pytest_unconfigure(config: pytest.Config) -> None:
    instruments = config.stash.get(_INSTRUMENTS_KEY, None)
    if instruments is not None:
        instruments.uninstall()
        del config.stash[_INSTRUMENTS_KEY]
