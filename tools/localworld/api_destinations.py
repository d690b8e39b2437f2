"""EventBridge API destinations in the local world: what moto stores but never delivers.

moto keeps connections, API destinations and rules, and matches events against a rule's pattern, but
it does not call an API destination the way EventBridge does (the event as the body, the connection's
key, retries, a dead-letter queue). So:

* Provisioning (``LocalAws``) creates the template's connections, their ``{{resolve:secretsmanager:..}}``
  references resolved when the stack is created, as CloudFormation does (a missing secret fails it),
  and API destinations in moto. Each rule target that is an API destination also gets a *tap*: an SQS
  target on the same rule, so moto's own pattern matching puts every event the rule matches (the full
  EventBridge envelope, after the target's InputTransformer) on a queue.
* ``ApiDestinationDelivery`` drains the taps and calls each destination as EventBridge does: its URL and
  HTTP method, the event JSON as the body, the connection's API-key header (read from the secret the
  connection keeps, as EventBridge reads it), a 5-second timeout, at most InvocationRateLimitPerSecond
  calls a second. 401, 407, 409, 429, 5xx and network failures are retried (exponential backoff with
  jitter) within the target's RetryPolicy; any other non-2xx answer is not. A failed event goes to the
  target's dead-letter queue with EventBridge's message attributes, if the queue's policy lets this rule
  send; otherwise it is dropped and counted, as EventBridge drops it.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import requests

from samstack import Resource, TemplateError

if TYPE_CHECKING:
    from localworld.aws import LocalAws
    from localworld.template import Stack

logger = logging.getLogger(__name__)

# EventBridge's documented behaviour for API destinations.
RETRIED_STATUSES = frozenset({401, 407, 409, 429})
TIMEOUT_S = 5.0
USER_AGENT = "Amazon/EventBridge/ApiDestinations"
CONTENT_TYPE = "application/json; charset=utf-8"
DEFAULT_RETRY_ATTEMPTS = 185
DEFAULT_EVENT_AGE_S = 86400
# The ERROR_CODE EventBridge writes for an endpoint that failed (unverified: its docs list codes, not
# which one an HTTP error gets).
ERROR_CODE = "SDK_CLIENT_ERROR"
_DYNAMIC_SECRET = re.compile(r"\{\{resolve:secretsmanager:([^}]*)\}\}")
_TAP_PREFIX = "localworld-tap-"
# The whole event, as EventBridge sends it to a target without an input transformation. moto's own
# default leaves out "account"; this is its default with it put back, in EventBridge's order.
_ENVELOPE_FIELDS = ("id", "detail-type", "source", "account", "time", "region", "resources", "detail")
_WHOLE_EVENT = {
    "InputPathsMap": {name: f"$.{name}" for name in _ENVELOPE_FIELDS},
    "InputTemplate": '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
    '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
    '"detail": <detail>}',
}


# --- provisioning -------------------------------------------------------------------------------


def is_api_destination(arn: str) -> bool:
    parts = arn.split(":")
    return parts[2:3] == ["events"] and len(parts) > 5 and parts[5].startswith("api-destination/")


def referenced_secret_ids(stack: Stack) -> list[str]:
    """The secrets the stack's connections read through dynamic references (they must exist first)."""
    found = []
    for connection in stack.of_type("AWS::Events::Connection"):
        for match in _DYNAMIC_SECRET.finditer(json.dumps(connection.properties)):
            found.append(_secret_reference(match.group(1))[0])
    return found


def _secret_reference(text: str) -> tuple[str, str | None]:
    """(secret id, JSON key or None) of ``secret-id[:SecretString[:json-key[:stage[:version]]]]``."""
    parts = text.split(":")
    split = 7 if parts[0] == "arn" else 1  # an ARN has six colons of its own
    secret_id, rest = ":".join(parts[:split]), parts[split:]
    json_key = rest[1] if len(rest) > 1 and rest[1] else None
    return secret_id, json_key


def resolve_dynamic_references(aws: LocalAws, value: Any) -> Any:
    """``value`` with each Secrets Manager dynamic reference replaced by the secret, as CloudFormation
    does when it creates the resource (a missing secret or key fails the deployment)."""
    if isinstance(value, dict):
        return {key: resolve_dynamic_references(aws, item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_dynamic_references(aws, item) for item in value]
    if not isinstance(value, str):
        return value

    def secret(match: re.Match[str]) -> str:
        secret_id, json_key = _secret_reference(match.group(1))
        try:
            text = aws.secretsmanager().get_secret_value(SecretId=secret_id)["SecretString"]
        except aws.secretsmanager().exceptions.ResourceNotFoundException:
            raise TemplateError(f"dynamic reference to secret {secret_id}, which does not exist") from None
        if json_key is None:
            return text
        try:
            return str(json.loads(text)[json_key])
        except (ValueError, KeyError, TypeError):
            raise TemplateError(f"secret {secret_id} has no JSON key {json_key}") from None

    return _DYNAMIC_SECRET.sub(secret, value)


def create_connection(aws: LocalAws, spec: Resource) -> str:
    props = resolve_dynamic_references(aws, spec.properties)
    response = aws.events().create_connection(
        Name=spec.physical_name,
        Description=str(props.get("Description", "")),
        AuthorizationType=props["AuthorizationType"],
        AuthParameters=props["AuthParameters"],
    )
    return response["ConnectionArn"]


def create_api_destination(aws: LocalAws, spec: Resource) -> str:
    props = spec.properties
    if not str(props["InvocationEndpoint"]).startswith("https://"):
        # EventBridge refuses the destination (moto would store it).
        raise TemplateError(f"{spec.logical_id}: an API destination's endpoint must be an https:// URL")
    response = aws.events().create_api_destination(
        Name=spec.physical_name,
        ConnectionArn=str(props["ConnectionArn"]),
        InvocationEndpoint=str(props["InvocationEndpoint"]),
        HttpMethod=str(props["HttpMethod"]),  # type: ignore[arg-type]
        InvocationRateLimitPerSecond=int(props.get("InvocationRateLimitPerSecond", 300)),
    )
    return response["ApiDestinationArn"]


def tap_queue_name(rule_name: str, target_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{_TAP_PREFIX}{rule_name}-{target_id}")[:80]


def tap_target(aws: LocalAws, rule_name: str, target: dict[str, Any]) -> dict[str, Any]:
    """An SQS target that receives what ``target`` (an API destination) would be called with."""
    if "Input" in target or "InputPath" in target:
        raise TemplateError(f"{rule_name}: Input / InputPath on an API destination target is not local yet")
    sqs = aws.sqs()
    url = sqs.create_queue(QueueName=tap_queue_name(rule_name, str(target["Id"])))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    tap: dict[str, Any] = {"Id": f"{_TAP_PREFIX}{target['Id']}"[:64], "Arn": arn}
    tap["InputTransformer"] = target.get("InputTransformer") or _WHOLE_EVENT
    return tap


# --- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One API-destination target of one rule, as the template declares it."""

    rule_arn: str
    rule_name: str
    target_id: str
    arn: str
    destination_name: str
    max_retries: int
    max_age_s: float
    dead_letter_arn: str | None
    headers: dict[str, str]
    query: dict[str, str]


@dataclass(frozen=True)
class Attempt:
    event_id: str
    status: int | None  # None: no answer (timeout, refused, TLS)
    error: str | None
    sent_at: float = 0.0  # time.monotonic() when the call went out (the rate limit spaces these)


@dataclass
class TargetStats:
    attempts: list[Attempt] = field(default_factory=list)
    delivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # failed, and the dead-letter queue missing or refusing this rule


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    event_id: str = field(compare=False)
    body: str = field(compare=False)
    received: float = field(compare=False)
    retries: int = field(compare=False, default=0)


def targets_of(stack: Stack) -> list[Target]:
    found = []
    for rule in stack.of_type("AWS::Events::Rule"):
        for target in rule.properties.get("Targets", []):
            arn = str(target["Arn"])
            if not is_api_destination(arn):
                continue
            policy = target.get("RetryPolicy") or {}
            params = target.get("HttpParameters") or {}
            found.append(
                Target(
                    rule_arn=str(rule.arn),
                    rule_name=rule.physical_name,
                    target_id=str(target["Id"]),
                    arn=arn,
                    destination_name=arn.split(":", 5)[5].split("/")[1],
                    max_retries=int(policy.get("MaximumRetryAttempts", DEFAULT_RETRY_ATTEMPTS)),
                    max_age_s=float(policy.get("MaximumEventAgeInSeconds", DEFAULT_EVENT_AGE_S)),
                    dead_letter_arn=(target.get("DeadLetterConfig") or {}).get("Arn"),
                    headers={str(k): str(v) for k, v in (params.get("HeaderParameters") or {}).items()},
                    query={str(k): str(v) for k, v in (params.get("QueryStringParameters") or {}).items()},
                )
            )
    return found


class ApiDestinationDelivery:
    """Calls the stack's API destinations with what their rules matched, as EventBridge does (see the
    module's docstring). ``retry_base_delay_s`` is the first backoff (EventBridge's is not published);
    ``ca_bundle`` is what this "EventBridge" trusts (the local world's CA)."""

    def __init__(
        self,
        aws: LocalAws,
        stack: Stack,
        *,
        ca_bundle: Path | str | bool = True,
        retry_base_delay_s: float = 1.0,
        retry_max_delay_s: float = 300.0,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.aws = aws
        self.targets = targets_of(stack)
        self.stats = {t.target_id: TargetStats() for t in self.targets}
        self._verify = str(ca_bundle) if isinstance(ca_bundle, Path) else ca_bundle
        self._base = retry_base_delay_s
        self._cap = retry_max_delay_s
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {t.target_id: 0 for t in self.targets}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.failures: list[str] = []  # targets whose delivery stopped on an error (logged)

    def start(self) -> Self:
        for target in self.targets:
            thread = threading.Thread(
                target=self._run, args=(target,), name=f"api-destination-{target.target_id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_until(self, done: Any, timeout_s: float = 30.0) -> bool:
        """Poll ``done()`` until true or ``timeout_s`` passes; raise if a delivery thread stopped."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.failures:
                raise RuntimeError(f"API destination delivery stopped for {self.failures} (see the log)")
            if done():
                return True
            time.sleep(0.05)
        return bool(done())

    # --- one thread per target ------------------------------------------------------------------

    def _run(self, target: Target) -> None:
        try:
            self._deliver(target)
        except Exception:
            # A broken local setup must show, not leave events silently undelivered.
            self.failures.append(target.target_id)
            logger.exception("API destination delivery for %s stopped", target.rule_name)

    def _deliver(self, target: Target) -> None:
        sqs = self.aws.sqs()
        tap_url = sqs.get_queue_url(QueueName=tap_queue_name(target.rule_name, target.target_id))["QueueUrl"]
        destination = self.aws.events().describe_api_destination(Name=target.destination_name)
        auth = dict([self._api_key(str(destination["ConnectionArn"]))])
        interval = 1.0 / max(1, int(destination.get("InvocationRateLimitPerSecond") or 300))
        heap: list[_Pending] = []  # events to call, by when they are due (retries wait here)
        seq = itertools.count()
        last_call = 0.0
        with requests.Session() as session:
            while not self._stop.is_set():
                # Long-poll the tap only when no retry is waiting.
                for message in sqs.receive_message(
                    QueueUrl=tap_url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if heap else 1
                ).get("Messages", []):
                    sqs.delete_message(QueueUrl=tap_url, ReceiptHandle=message["ReceiptHandle"])
                    now = time.monotonic()
                    heapq.heappush(
                        heap, _Pending(now, next(seq), _event_id(message["Body"]), message["Body"], now)
                    )
                    self._count_pending(target, 1)
                if heap and heap[0].due > time.monotonic():
                    time.sleep(min(0.05, heap[0].due - time.monotonic()))
                while heap and heap[0].due <= time.monotonic() and not self._stop.is_set():
                    item = heapq.heappop(heap)
                    time.sleep(max(0.0, last_call + interval - time.monotonic()))  # the rate limit
                    last_call = time.monotonic()
                    if self._settle(target, item, self._call(session, target, destination, auth, item)):
                        self._count_pending(target, -1)
                        continue
                    item.retries += 1
                    backoff = min(self._cap, self._base * 2 ** (item.retries - 1))
                    item.due = time.monotonic() + random.uniform(0, backoff)  # noqa: S311 - jitter
                    heapq.heappush(heap, item)

    def _count_pending(self, target: Target, change: int) -> None:
        with self._lock:
            self._pending[target.target_id] += change

    def idle(self) -> bool:
        """Nothing received and not yet delivered or dead-lettered."""
        with self._lock:
            return not any(self._pending.values())

    def _api_key(self, connection_arn: str) -> tuple[str, str]:
        """The header and key, from the secret the connection keeps (as EventBridge reads it)."""
        name = connection_arn.split(":", 5)[5].split("/")[1]
        connection = self.aws.events().describe_connection(Name=name)
        if connection["AuthorizationType"] != "API_KEY":
            raise TemplateError(f"connection {name}: only API_KEY authorization is local")
        stored = json.loads(
            self.aws.secretsmanager().get_secret_value(SecretId=connection["SecretArn"])["SecretString"]
        )
        return str(stored["api_key_name"]), str(stored["api_key_value"])

    def _call(
        self,
        session: requests.Session,
        target: Target,
        destination: Any,
        auth: dict[str, str],
        item: _Pending,
    ) -> Attempt:
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT, **target.headers, **auth}
        sent_at = time.monotonic()
        try:
            response = session.request(
                str(destination["HttpMethod"]),
                str(destination["InvocationEndpoint"]),
                params=target.query or None,
                data=item.body.encode("utf-8"),
                headers=headers,
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            attempt = Attempt(item.event_id, None, f"{type(exc).__name__}", sent_at)
        else:
            response.close()
            attempt = Attempt(item.event_id, response.status_code, None, sent_at)
        self.stats[target.target_id].attempts.append(attempt)
        return attempt

    def _settle(self, target: Target, item: _Pending, attempt: Attempt) -> bool:
        """True when the event is done with (delivered, dead-lettered or dropped); False: retry it."""
        stats = self.stats[target.target_id]
        status = attempt.status
        if status is not None and 200 <= status < 300:
            stats.delivered += 1
            return True
        retryable = status is None or status in RETRIED_STATUSES or status >= 500
        exhausted = None
        if retryable:
            if item.retries >= target.max_retries:
                exhausted = "MaximumRetryAttempts"
            elif time.monotonic() - item.received >= target.max_age_s:
                exhausted = "MaximumEventAgeInSeconds"
            else:
                return False
        if status is None:
            message = f"Unable to invoke ApiDestination endpoint: {attempt.error}"
        else:
            message = f"Unable to invoke ApiDestination endpoint: the endpoint answered HTTP {status}"
        self._dead_letter(target, item, message, exhausted)
        return True

    def _dead_letter(self, target: Target, item: _Pending, message: str, exhausted: str | None) -> None:
        stats = self.stats[target.target_id]
        url = self._dead_letter_url(target)
        if url is None:
            stats.dropped += 1
            logger.warning("%s: event %s dropped: %s", target.rule_name, item.event_id, message)
            return
        attributes = {
            "RULE_ARN": target.rule_arn,
            "TARGET_ARN": target.arn,
            "ERROR_CODE": ERROR_CODE,
            "ERROR_MESSAGE": message,
            "RETRY_ATTEMPTS": str(item.retries),
            **({"EXHAUSTED_RETRY_CONDITION": exhausted} if exhausted else {}),
        }
        self.aws.sqs().send_message(
            QueueUrl=url,
            MessageBody=item.body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
        stats.dead_lettered += 1

    def _dead_letter_url(self, target: Target) -> str | None:
        """The dead-letter queue, if it exists and its policy lets EventBridge send for this rule."""
        if not target.dead_letter_arn:
            return None
        sqs = self.aws.sqs()
        try:
            url = sqs.get_queue_url(QueueName=target.dead_letter_arn.rsplit(":", 1)[-1])["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            return None
        policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
        return url if _lets_rule_send(policy.get("Policy"), target) else None


def _lets_rule_send(policy_text: str | None, target: Target) -> bool:
    """Whether the dead-letter queue's policy lets this rule send, as SQS judges it: an explicit
    Deny wins; an Allow counts only for this queue (or ``*``) and with conditions this check can
    read and that hold (``ArnEquals``/``ArnLike`` on ``aws:SourceArn``); anything else fails closed."""
    matching = [
        statement
        for statement in json.loads(policy_text or "{}").get("Statement", [])
        if _for_events_sending(statement, target.dead_letter_arn)
    ]
    if any(s.get("Effect") == "Deny" and _conditions_hold(s, target.rule_arn) for s in matching):
        return False
    return any(s.get("Effect") == "Allow" and _conditions_hold(s, target.rule_arn) for s in matching)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _for_events_sending(statement: dict[str, Any], queue_arn: str | None) -> bool:
    principal = statement.get("Principal")
    services = _listed(principal.get("Service")) if isinstance(principal, dict) else []
    everyone = principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*")
    actions = set(_listed(statement.get("Action")))
    resources = _listed(statement.get("Resource")) or ["*"]
    return (
        (everyone or "events.amazonaws.com" in services)
        and bool({"sqs:SendMessage", "sqs:*", "*"} & actions)
        and any(resource in ("*", queue_arn) for resource in resources)
    )


def _conditions_hold(statement: dict[str, Any], rule_arn: str) -> bool:
    for operator, keys in (statement.get("Condition") or {}).items():
        if operator not in ("ArnEquals", "ArnLike") or set(keys) != {"aws:SourceArn"}:
            return False  # not read here: fail closed, never kinder than SQS
        wanted = _listed(keys["aws:SourceArn"])
        if operator == "ArnEquals" and rule_arn not in wanted:
            return False
        if operator == "ArnLike" and not any(fnmatch.fnmatchcase(rule_arn, arn) for arn in wanted):
            return False
    return True


def _event_id(body: str) -> str:
    try:
        return str(json.loads(body).get("id", ""))
    except (ValueError, AttributeError):
        return ""
