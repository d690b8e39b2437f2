"""Deepgram's error statuses, in each body shape it answers with, through the workflow in-process.

The table moved down from tests/integration/test_error_taxonomy.py, which keeps one case per error
class over real HTTP against the emulator (a retried outage, a blocking deployment fault, a
nonsense Retry-After): here every status runs in milliseconds instead of a function process each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import responses

from tests.core.conftest import INPUT_BUCKET, LISTEN_URL, UPLOAD_ETAG, transcript_body, transcript_key
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import BlockedError, RetryableError

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, Sleeps, TranscriberFactory


def obj(key: str) -> S3ObjectRef:
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=16, etag=UPLOAD_ETAG)


def styled(style: str, status: int) -> dict[str, Any]:
    """The error body in one of the shapes Deepgram (and its gateway in front) answers with."""
    if style == "legacy":
        return {"json": {"err_code": f"E{status}", "err_msg": "failed", "request_id": "req-err"}}
    if style == "modern":
        return {"json": {"category": f"E{status}", "message": "failed", "details": "", "request_id": "r"}}
    if style == "string":
        return {"json": "Please try again later"}
    if style == "html":
        return {"body": f"<html><body><h1>{status}</h1></body></html>", "content_type": "text/html"}
    return {"body": f"{status} from upstream", "content_type": "text/plain"}


def fault(deepgram: responses.RequestsMock, status: int, style: str, **headers: str) -> None:
    if 300 <= status < 400:
        headers["Location"] = "https://elsewhere.deepgram.test/v1/listen"
    deepgram.add(responses.POST, LISTEN_URL, status=status, headers=headers, **styled(style, status))


TRANSIENT = [
    (408, "legacy", "deepgram-request-timeout"),
    (429, "legacy", "deepgram-throttled"),
    (500, "string", "deepgram-unavailable"),
    (502, "html", "deepgram-unavailable"),
    (503, "modern", "deepgram-unavailable"),
    (504, "text", "deepgram-processing-timeout"),
]


@pytest.mark.parametrize(("status", "style", "reason"), TRANSIENT)
def test_transient_statuses_are_retried_within_the_invocation(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
    status: int,
    style: str,
    reason: str,
) -> None:
    aws.upload("transient/a.wav")
    fault(deepgram, status, style)
    fault(deepgram, status, style)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    outcome = make_transcriber().process(obj("transient/a.wav"), lambda_context)

    assert outcome.status == "transcribed"
    assert len(deepgram.calls) == 3  # two faults, then the answer
    assert len(sleeps.delays) == 2
    assert aws.output(transcript_key("transient/a.wav")) is not None

    aws.upload("transient/b.wav")  # the same fault with no attempt left: handed back, classified
    fault(deepgram, status, style)
    with pytest.raises(RetryableError) as raised:
        make_transcriber(DEEPGRAM_MAX_ATTEMPTS="1").process(obj("transient/b.wav"), lambda_context)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("status", "style", "reason"),
    [
        (301, "html", "deepgram-redirected"),
        (302, "text", "deepgram-redirected"),
        (307, "legacy", "deepgram-redirected"),
        (308, "modern", "deepgram-redirected"),
        (403, "modern", "deepgram-insufficient-permissions"),
        (404, "legacy", "deepgram-endpoint-not-found"),
        (405, "html", "deepgram-method-not-allowed"),
    ],
)
def test_deployment_faults_keep_the_work_waiting(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    status: int,
    style: str,
    reason: str,
) -> None:
    """Blocked (Lambda's retries, then the dead-letter queue's long backoff): no tight retry loop,
    no failure record that would consume the event."""
    aws.upload("deployment/a.wav")
    fault(deepgram, status, style)

    with pytest.raises(BlockedError) as raised:
        make_transcriber().process(obj("deployment/a.wav"), lambda_context)

    assert raised.value.reason == reason
    assert len(deepgram.calls) == 1
    assert aws.output_keys() == []


@pytest.mark.parametrize("retry_after", ["0", "-5", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_retry_after_of_zero_or_nonsense_never_makes_back_to_back_requests(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    sleeps: Sleeps,
    retry_after: str,
) -> None:
    aws.upload("throttled/zero.wav")
    fault(deepgram, 429, "legacy", **{"Retry-After": retry_after})
    fault(deepgram, 429, "legacy", **{"Retry-After": retry_after})
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    outcome = make_transcriber().process(obj("throttled/zero.wav"), lambda_context)

    assert outcome.status == "transcribed"
    assert len(sleeps.delays) == 2
    assert min(sleeps.delays) >= 1.0
