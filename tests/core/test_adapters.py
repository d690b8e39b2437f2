"""Each way in answered as its caller expects: summaries, SQS partial failures, Batch Operations codes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import responses

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    failure_key,
    s3_event,
    transcript_body,
    transcript_key,
)
from tests.shapes import sqs_event
from transcriber.domain.events import S3ObjectRef
from transcriber.errors import PermanentError, RetryableError
from transcriber.pipeline.adapters import handle_event

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext
    from transcriber.pipeline.workflow import Transcriber


def outage(deepgram: responses.RequestsMock, times: int) -> None:
    for _ in range(times):
        deepgram.add(responses.POST, LISTEN_URL, status=503, body="Please try again later")


def ok(deepgram: responses.RequestsMock) -> None:
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())


def batch_event(*keys: str) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": "1.0",
        "invocationId": "inv-1",
        "job": {"id": "job-1"},
        "tasks": [
            {
                "taskId": f"t{i}",
                "s3Key": key,
                "s3VersionId": None,
                "s3BucketArn": f"arn:aws:s3:::{INPUT_BUCKET}",
            }
            for i, key in enumerate(keys)
        ],
    }


def test_an_s3_event_runs_every_object_and_summarises(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("a b.wav")
    aws.upload("c.wav")
    ok(deepgram)
    ok(deepgram)

    summary = handle_event(s3_event("a b.wav", "c.wav", "folder/"), lambda_context, transcriber)

    assert (summary["transcribed"], summary["skipped"], summary["failed"], summary["retrying"]) == (
        2,
        1,
        0,
        0,
    )
    assert [o["key"] for o in summary["objects"]] == ["a b.wav", "c.wav", "folder/"]


def test_a_retryable_object_is_raised_after_the_others_finished(
    aws: Aws, deepgram: responses.RequestsMock, make_transcriber: Any, lambda_context: FakeLambdaContext
) -> None:
    transcriber = make_transcriber(DEEPGRAM_MAX_ATTEMPTS="1")
    aws.upload("first.wav")
    aws.upload("second.wav")
    outage(deepgram, 1)
    ok(deepgram)

    with pytest.raises(RetryableError) as raised:
        handle_event(s3_event("first.wav", "second.wav"), lambda_context, transcriber)

    assert raised.value.reason == "deepgram-unavailable"
    assert aws.output_keys() == [transcript_key("second.wav")]


def test_an_unrecognised_event_is_a_permanent_error(
    transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    with pytest.raises(PermanentError) as raised:
        handle_event({"hello": "world"}, lambda_context, transcriber)

    assert raised.value.reason == "unrecognised-event"


def test_sqs_reports_only_the_messages_that_must_come_back(
    aws: Aws, deepgram: responses.RequestsMock, make_transcriber: Any, lambda_context: FakeLambdaContext
) -> None:
    transcriber = make_transcriber(DEEPGRAM_MAX_ATTEMPTS="1")
    aws.upload("ok.wav")
    aws.upload("busy.wav")
    ok(deepgram)
    outage(deepgram, 1)
    event = sqs_event(
        json.dumps(s3_event("ok.wav")),
        json.dumps(s3_event("busy.wav")),
        "not json at all",
        json.dumps({"Event": "s3:TestEvent", "Bucket": INPUT_BUCKET}),
    )

    response = handle_event(event, lambda_context, transcriber)

    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-1"}, {"itemIdentifier": "msg-2"}]}
    assert aws.output_keys() == [transcript_key("ok.wav")]


@pytest.mark.parametrize(
    ("key", "deepgram_status", "expected"),
    [
        ("good.wav", 200, ("Succeeded", transcript_key("good.wav"))),
        ("busy.wav", 503, ("TemporaryFailure", "deepgram-unavailable: Please try again later")),
        ("bad.wav", 400, ("PermanentFailure", f"deepgram-unsupported-audio: see {failure_key('bad.wav')}")),
        ("dir/", None, ("Succeeded", "skipped: folder-placeholder")),
    ],
)
def test_batch_operations_get_the_result_code_of_their_task(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: Any,
    lambda_context: FakeLambdaContext,
    key: str,
    deepgram_status: int | None,
    expected: tuple[str, str],
) -> None:
    transcriber = make_transcriber(DEEPGRAM_MAX_ATTEMPTS="1")
    aws.upload(key)
    if deepgram_status == 200:
        ok(deepgram)
    elif deepgram_status == 503:
        outage(deepgram, 1)
    elif deepgram_status == 400:
        deepgram.add(
            responses.POST, LISTEN_URL, status=400, json={"err_code": "Bad Request", "err_msg": "corrupt"}
        )

    response = handle_event(batch_event(key), lambda_context, transcriber)

    # S3 Batch Operations sends one task per invocation and expects exactly one result.
    [result] = response["results"]
    assert (result["taskId"], result["resultCode"], result["resultString"]) == ("t0", *expected)
    assert (response["invocationId"], response["treatMissingKeysAs"]) == ("inv-1", "PermanentFailure")


def test_a_backfill_task_answered_temporary_failure_leaves_a_record_until_a_retry_succeeds(
    aws: Aws, deepgram: responses.RequestsMock, make_transcriber: Any, lambda_context: FakeLambdaContext
) -> None:
    """The invocation never says which attempt is the task's last: every TemporaryFailure leaves
    a failure record, so a task whose last attempt fails has a visible outcome."""
    transcriber = make_transcriber(DEEPGRAM_MAX_ATTEMPTS="1")
    aws.upload("busy.wav")
    outage(deepgram, 1)

    [result] = handle_event(batch_event("busy.wav"), lambda_context, transcriber)["results"]

    assert result["resultCode"] == "TemporaryFailure"
    record = aws.output(failure_key("busy.wav"))
    assert record is not None
    assert (record["class"], record["reason"]) == ("retryable", "deepgram-unavailable")
    assert record["backfill"] == {"job_id": "job-1", "task_id": "t0"}
    ok(deepgram)

    [result] = handle_event(batch_event("busy.wav"), lambda_context, transcriber)["results"]

    assert result["resultCode"] == "Succeeded"
    assert aws.output_keys() == [transcript_key("busy.wav")]  # the retry's success removed it


def test_a_replayed_backfill_success_removes_an_earlier_attempts_record(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("late.wav")
    ok(deepgram)
    handle_event(batch_event("late.wav"), lambda_context, transcriber)
    # An attempt that failed after the transcript was written (its formats, its event) left one.
    transcriber.storage.write_failure(
        transcriber.preflight.look(S3ObjectRef(bucket=INPUT_BUCKET, key="late.wav"))[0],
        {"class": "retryable", "reason": "event-publish-failed", "message": "x"},
    )

    [result] = handle_event(batch_event("late.wav"), lambda_context, transcriber)["results"]

    assert result["resultCode"] == "Succeeded"
    assert len(deepgram.calls) == 1
    assert aws.output_keys() == [transcript_key("late.wav")]
