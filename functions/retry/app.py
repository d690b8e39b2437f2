"""Retry function: drains the transcribe function's dead-letter queue (the work lives in the layer)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from transcriber.compose import build_retrier
from transcriber.observability import logger, metrics, tracer
from transcriber.pipeline.dead_letter import DeadLetterRetrier

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

# A batch where every message backs off is normal here, not an error of the invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
retrier: Callable[[], DeadLetterRetrier] = cache(build_retrier)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=retrier().process_record, processor=processor, context=context
    )
