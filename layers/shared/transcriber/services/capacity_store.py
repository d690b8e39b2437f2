"""The capacity pool's partition in DynamoDB: the reads and conditional writes that
``transcriber.services.capacity.CapacityGovernor`` makes to carry out the core's commands
(``transcriber.domain.capacity_core``), and how the store's errors are classed.

One item per held slot (``slot#NNN``, ``intelligence#NNN``, ``lane-backfill#NNN``, ...) and the
``limit`` item (the shared AIMD state), all under ``pk`` = the pool's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.domain import capacity_core as core
from transcriber.domain.capacity_core import LIVE_LANE, Lease, Limit, PoolSettings, PoolState
from transcriber.errors import BlockedError, ErrorDetails, RetryableError
from transcriber.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["PoolStore"]

_CONFLICTS = (
    "ConditionalCheckFailedException",
    "TransactionCanceledException",
    "TransactionConflictException",
)
_TRANSIENT = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class PoolStore:
    """One pool's items: read the partition, write a lease's slots, delete or extend them, lower
    the ``limit`` item. Conditional writes that lose a race answer False, not an error."""

    def __init__(self, pool: PoolSettings, dynamodb: DynamoDBClient, clock: Callable[[], float]) -> None:
        self.pool = pool
        self._ddb = dynamodb
        self._clock = clock

    def _key(self, sort_key: str) -> dict[str, Any]:
        return {"pk": {"S": self.pool.name}, "sk": {"S": sort_key}}

    def read(self) -> PoolState:
        """One strongly consistent query of the pool's partition."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.pool.table,
            "KeyConditionExpression": "pk = :pool",
            "ExpressionAttributeValues": {":pool": {"S": self.pool.name}},
            "ConsistentRead": True,
        }
        try:
            while True:
                page = self._ddb.query(**kwargs)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc) from exc
        return _state(items, self._clock())

    def write_lease(self, lease: Lease) -> bool:
        """The lease's slots, each by a conditional put, with a check that the ``limit`` item is
        the one the read saw, in one transaction: False when another function took a slot first
        or the pool was lowered since the read."""
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.pool.table,
                    "Item": {
                        **self._key(key),
                        "holder": {"S": lease.holder},
                        "lane": {"S": lease.lane},
                        "taken_at": {"N": _number(lease.taken_at)},
                        "expires_at": {"N": _number(lease.expires_at)},
                    },
                    "ConditionExpression": "attribute_not_exists(sk) OR expires_at < :now",
                    "ExpressionAttributeValues": {":now": {"N": _number(lease.taken_at)}},
                }
            }
            for key in lease.keys
        ]
        items.append({"ConditionCheck": self._limit_unchanged(lease.seen)})
        try:
            self._ddb.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _CONFLICTS:
                return False
            raise _store_error(exc) from exc
        except BotoCoreError as exc:
            raise _store_error(exc) from exc
        return True

    def _limit_unchanged(self, seen: PoolState) -> dict[str, Any]:
        check: dict[str, Any] = {
            "TableName": self.pool.table,
            "Key": self._key("limit"),
            "ConditionExpression": "attribute_not_exists(decreased_at)",
        }
        if seen.reduced_to is not None:
            check["ConditionExpression"] = "decreased_at = :seen"
            check["ExpressionAttributeValues"] = {":seen": {"N": _number(seen.decreased_at)}}
        return check

    def delete(self, delete: core.Delete) -> bool:
        """Free one slot if ``delete.holder`` still holds it; False when the store failed the
        delete (the caller tries again), True also when the slot is no longer ours."""
        try:
            self._ddb.delete_item(
                TableName=self.pool.table,
                Key=self._key(delete.key),
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": delete.holder}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _CONFLICTS:
                return True  # not ours any more: nothing to free
            _release_failed(delete.key, exc)
            return False
        except BotoCoreError as exc:
            _release_failed(delete.key, exc)
            return False
        return True

    def extend(self, steps: Sequence[core.Hold], failure: str) -> None:
        """Each slot's expiry moved later (never earlier); a failure is logged with ``failure``."""
        for step in steps:
            try:
                self._ddb.update_item(
                    TableName=self.pool.table,
                    Key=self._key(step.key),
                    UpdateExpression="SET expires_at = :until",
                    # Never shorter: a renewal that lands after a hold must not cut the hold short.
                    ConditionExpression="holder = :holder AND expires_at < :until",
                    ExpressionAttributeValues={
                        ":until": {"N": _number(step.until)},
                        ":holder": {"S": step.holder},
                    },
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    continue  # released, taken over after expiry, or already held longer: nothing to do
                logger.warning(failure, extra={"slot": step.key, "error": str(exc)})
            except BotoCoreError as exc:
                logger.warning(failure, extra={"slot": step.key, "error": str(exc)})

    def lower(self, step: core.Decrease) -> bool:
        """Write the decrease unless the last one's hold ends at or after the lease's ``taken_at``
        (one per congestion episode); False when not written (a failure is logged)."""
        try:
            self._ddb.update_item(
                TableName=self.pool.table,
                Key=self._key("limit"),
                UpdateExpression="SET reduced_to = :reduced, hold_until = :until, decreased_at = :now",
                ConditionExpression="attribute_not_exists(hold_until) OR hold_until < :taken",
                ExpressionAttributeValues={
                    ":reduced": {"N": str(step.limit.reduced_to)},
                    ":until": {"N": _number(step.limit.hold_until)},
                    ":now": {"N": _number(step.limit.decreased_at)},
                    ":taken": {"N": _number(step.taken_at)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _CONFLICTS:
                logger.warning("Could not lower the capacity pool", extra={"error": str(exc)})
            return False
        except BotoCoreError as exc:
            logger.warning("Could not lower the capacity pool", extra={"error": str(exc)})
            return False
        return True


def _state(items: list[dict[str, Any]], now: float) -> PoolState:
    leases: list[tuple[str, str, float]] = []
    limit: Limit | None = None
    for item in items:
        key = item["sk"]["S"]
        if key == "limit":
            limit = Limit(
                reduced_to=int(item["reduced_to"]["N"]),
                hold_until=float(item["hold_until"]["N"]),
                decreased_at=float(item["decreased_at"]["N"]),
            )
        else:
            lane = item.get("lane", {}).get("S", LIVE_LANE)
            leases.append((key, lane, float(item["expires_at"]["N"])))
    return core.pool_state(now, leases, limit)


def _release_failed(key: str, exc: Exception) -> None:
    logger.warning("Could not release a capacity slot", extra={"slot": key, "error": str(exc)})


def _number(value: float) -> str:
    return str(Decimal(str(round(value, 3))))


# The table is missing or the role may not use it (or its key): every object alike, until a
# person fixes the deployment. Blocked, so the work waits and no failure record is written.
_DEPLOYMENT_FAULTS = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSNotFoundException",
        "KMSInvalidStateException",
    }
)


def _deployment_fault(exc: Exception) -> BlockedError | None:
    """A capacity table that is missing or denied: a deployment fault (item 10), not the object's."""
    if not isinstance(exc, ClientError):
        return None
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code not in _DEPLOYMENT_FAULTS:
        return None
    return BlockedError(
        ErrorDetails(
            reason="capacity-store-error",
            message=f"capacity table: {code}; check CapacityTable and the function's role",
            extra={"transient": False, "deployment_fault": True},
        )
    )


def _store_error(exc: Exception) -> RetryableError:
    """capacity-store-error; ``transient`` when waiting may help (throttled, a server error, the
    network) rather than a fault of configuration (no grant, no table: blocked)."""
    blocked = _deployment_fault(exc)
    if blocked is not None:
        return blocked
    transient = isinstance(exc, BotoCoreError) or (
        isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _TRANSIENT
    )
    return RetryableError(
        ErrorDetails(
            reason="capacity-store-error", message=type(exc).__name__, extra={"transient": transient}
        )
    )
