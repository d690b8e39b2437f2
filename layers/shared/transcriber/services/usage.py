"""The metrics the dashboard reads beyond the workflow's own counts: estimated cost, failures by
reason, Deepgram's 429s. Names are checked against template.yaml's dashboard by tests/template."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, SchemaValidationError, single_metric

from transcriber.errors import TranscriptionError
from transcriber.observability import logger, metrics

COST_METRIC = "EstimatedCostUSD"
FAILED_BY_REASON_METRIC = "TranscriptionsFailedByReason"
THROTTLED_METRIC = "DeepgramThrottled"
REASON_DIMENSION = "reason"


def record_cost(usd: float) -> None:
    """One transcript's estimated cost (CloudWatch has no currency unit: the name carries it)."""
    metrics.add_metric(name=COST_METRIC, unit=MetricUnit.NoUnit, value=usd)


def record_failure_reason(reason: str) -> None:
    """A permanent failure, with its reason as a dimension (beside the service's), so the dashboard
    can show failures by reason. Reasons are a closed set of short names: few metric streams."""
    try:
        with single_metric(
            name=FAILED_BY_REASON_METRIC,
            unit=MetricUnit.Count,
            value=1,
            namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name=REASON_DIMENSION, value=reason[:250])
    except SchemaValidationError as exc:  # no namespace configured: a metric never fails the work
        logger.warning("Metric not emitted", extra={"metric": FAILED_BY_REASON_METRIC, "error": str(exc)})


def record_deepgram_error(exc: TranscriptionError) -> None:
    """Count Deepgram's 429s (every one, retried or not)."""
    if exc.reason == "deepgram-throttled":
        metrics.add_metric(name=THROTTLED_METRIC, unit=MetricUnit.Count, value=1)
