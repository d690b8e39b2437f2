"""Lambda-event adapters: each way in, answered the way its caller expects.

The handler calls ``handle_event`` with the container's ``Transcriber``; this module finds the
objects in the event, runs each through the per-object workflow and shapes the answer: a summary
(S3, EventBridge, SNS, direct), SQS partial batch failures, or S3 Batch Operations result codes.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from transcriber.domain.events import (
    Source,
    batch_operation_objects,
    detect_source,
    parse_event,
    parse_message_body,
)
from transcriber.errors import BlockedError, PermanentError, RetryableError, TranscriptionError
from transcriber.observability import logger
from transcriber.pipeline.workflow import IN_PROGRESS_REASON, Outcome
from transcriber.services.capacity import BACKFILL_LANE, CAPACITY_REASON
from transcriber.services.storage import utc_now

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from transcriber.domain.events import S3ObjectRef
    from transcriber.pipeline.workflow import LambdaContextLike, Transcriber

OUTCOME_STATUSES = ("transcribed", "skipped", "failed", "retrying")


@cache
def sqs_processor() -> BatchProcessor:
    """Powertools' batch processor, imported and made on the first SQS event (an S3 upload's cold
    start does not load it). A message that fails is reported back to SQS alone; a batch where all
    fail is not an error of the invocation (the messages come back after their visibility
    timeout, then dead-letter)."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType  # noqa: PLC0415 - SQS only

    return BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_event(event: Any, context: LambdaContextLike, transcriber: Transcriber) -> dict[str, Any]:
    """Answer in the shape the caller expects. Unrecognised events are permanent errors."""
    source = detect_source(event)
    logger.append_keys(event_source=str(source))
    if source is Source.SQS:
        return answer_sqs(event, context, transcriber)
    if source is Source.S3_BATCH:
        return answer_batch_operation(event, context, transcriber)
    return process_all(parse_event(event), context, transcriber)


def process_all(
    objects: list[S3ObjectRef], context: LambdaContextLike, transcriber: Transcriber
) -> dict[str, Any]:
    """Process every object; the first retryable failure is raised after the others ran, so
    Lambda retries the event (finished objects are then answered by idempotency, for free)."""
    outcomes: list[Outcome] = []
    deferred: list[RetryableError] = []
    for obj in objects:
        try:
            outcomes.append(transcriber.process(obj, context))
        except RetryableError as exc:
            deferred.append(exc)
            outcomes.append(Outcome("retrying", obj.bucket, obj.key, obj.version_id, reason=exc.reason))
    summary: dict[str, Any] = {"objects": [asdict(o) for o in outcomes]}
    for status in OUTCOME_STATUSES:
        summary[status] = sum(o.status == status for o in outcomes)
    if deferred:
        logger.warning("Some objects must be retried", extra={"summary": summary})
        raise deferred[0]
    return summary


def answer_sqs(event: Any, context: LambdaContextLike, transcriber: Transcriber) -> dict[str, Any]:
    """Each message on its own: one that fails (or can't be read) is reported back to SQS and goes
    to the queue's dead-letter queue after its receives run out; the others finish."""

    def record_handler(record: SQSRecord) -> dict[str, Any]:
        try:
            objects = parse_message_body(record.body)
        except PermanentError as exc:
            logger.error(
                "Unreadable message left for the queue's dead-letter queue",
                extra={"message_id": record.message_id, "error": exc.as_record()},
            )
            raise
        try:
            return process_all(objects, context, transcriber)
        except RetryableError as exc:
            # Waiting for capacity is no failure of the message: send it again rather than use a receive.
            requeue = transcriber.capacity_requeue
            if exc.reason == CAPACITY_REASON and requeue is not None and requeue.requeue(record):
                return {"deferred": CAPACITY_REASON}
            raise

    from aws_lambda_powertools.utilities.batch import process_partial_response  # noqa: PLC0415 - SQS only

    response = process_partial_response(
        event=event,
        record_handler=record_handler,
        processor=sqs_processor(),
        context=context,  # type: ignore[arg-type]
    )
    return dict(response)


ResultCode = Literal["Succeeded", "TemporaryFailure", "PermanentFailure"]


def answer_batch_operation(
    event: Any, context: LambdaContextLike, transcriber: Transcriber
) -> dict[str, Any]:
    """S3 Batch Operations: answer each task with the result code the job expects."""
    from aws_lambda_powertools.utilities.data_classes.s3_batch_operation_event import (  # noqa: PLC0415 - Batch only
        S3BatchOperationEvent,
        S3BatchOperationResponse,
        S3BatchOperationResponseRecord,
    )

    batch = S3BatchOperationEvent(dict(event))
    response = S3BatchOperationResponse(
        batch.invocation_schema_version, batch.invocation_id, "PermanentFailure"
    )
    job = event.get("job") if isinstance(event.get("job"), dict) else {}
    for task_id, task_obj in batch_operation_objects(batch):
        obj = replace(task_obj, lane=BACKFILL_LANE)  # bulk work: at most its share of the pool
        task = {"job_id": job.get("id"), "task_id": task_id}
        code, text = _task_result(obj, task, context, transcriber)
        response.add_result(S3BatchOperationResponseRecord(task_id, code, text))
    return response.asdict()


def _task_result(
    obj: S3ObjectRef, task: dict[str, Any], context: LambdaContextLike, transcriber: Transcriber
) -> tuple[ResultCode, str]:
    try:
        outcome = transcriber.process(obj, context)
    except RetryableError as exc:
        waiting_in = _defer(obj, exc, transcriber)
        if waiting_in:
            # No transcript yet, and the job report says so: the object waits in the queue named.
            return "Succeeded", f"deferred ({exc.reason}): no transcript yet; waiting in {waiting_in}"
        _record_temporary_failure(obj, exc, task, transcriber)
        return "TemporaryFailure", f"{exc.reason}: {exc.details.message}"
    if outcome.status == "failed":
        return "PermanentFailure", f"{outcome.reason}: see {outcome.output_key}"
    if outcome.status == "transcribed" and outcome.replayed:
        _forget_temporary_failure(obj, transcriber)  # a fresh write removes it itself
    return "Succeeded", outcome.output_key or f"skipped: {outcome.reason}"


def _defer(obj: S3ObjectRef, exc: RetryableError, transcriber: Transcriber) -> str | None:
    """A task that would only wait hands its object to the dead-letter queue (the retry function
    transcribes it later, within its own concurrency) instead of waiting inside the function or
    spending Batch's few attempts: its lane stayed full through its short wait, or another
    invocation is transcribing the object. The queue's name, or None to answer ``TemporaryFailure``."""
    requeue = transcriber.capacity_requeue
    if requeue is None or isinstance(exc, BlockedError):
        return None
    if exc.reason == CAPACITY_REASON:
        return requeue.defer(obj)
    if exc.reason == IN_PROGRESS_REASON:
        return requeue.defer_in_progress(obj)
    return None


def _record_temporary_failure(
    obj: S3ObjectRef, exc: RetryableError, task: dict[str, Any], transcriber: Transcriber
) -> None:
    """Leave a failure record for a task answered ``TemporaryFailure``. The invocation (schema 1.0
    or 2.0) does not say which attempt of the task it is, nor how many S3 makes (AWS does not
    publish it), so every such answer leaves one: if no retry succeeds it is the object's visible
    outcome; a retry that transcribes the object removes it (see docs/backfill.md)."""
    record = {
        **exc.as_record(),
        "message": (
            "S3 Batch Operations was answered TemporaryFailure and retries the task; if no retry "
            f"succeeds, this is the object's outcome (last error: {exc.details.message})"
        ),
        "backfill": task,
        "failed_at": utc_now(),
    }
    try:
        transcriber.storage.write_failure(obj, record)
    except TranscriptionError as exc_write:
        logger.warning("Could not record the backfill task's failure", extra={"error": exc_write.as_record()})


def _forget_temporary_failure(obj: S3ObjectRef, transcriber: Transcriber) -> None:
    try:
        transcriber.storage.delete_failure(obj)
    except TranscriptionError as exc:
        logger.warning(
            "Could not delete an earlier backfill failure record", extra={"error": exc.as_record()}
        )
