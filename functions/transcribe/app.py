"""Transcribe function: S3 uploads in, Deepgram transcripts out (the work lives in the shared layer)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from transcriber.compose import build_transcriber
from transcriber.observability import logger, metrics, tracer
from transcriber.pipeline.adapters import handle_event
from transcriber.pipeline.workflow import Transcriber

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Built on the first invocation, not at import, so a configuration error is reported per event.
transcriber: Callable[[], Transcriber] = cache(build_transcriber)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_event(event, context, transcriber())
