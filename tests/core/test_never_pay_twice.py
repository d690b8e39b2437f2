"""At most one billable Deepgram request per object version, with no time limit: the transcript in
the bucket (its source version, ETag and options) says whether the work is done, so an expired or
lost idempotency record never pays again, nor does a copy in place (issue 20, items 1 and 3).
The formats of a fresh answer are made from the answer in hand, not read back (issue 19)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import responses

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    TABLE,
    UPLOAD_ETAG,
    transcript_body,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory
    from transcriber.pipeline.workflow import Transcriber


def obj(key: str = "talks/a.wav", **values: Any) -> S3ObjectRef:
    return S3ObjectRef(INPUT_BUCKET, key, **{"size": 16, "etag": UPLOAD_ETAG, **values})


def answers(deepgram: responses.RequestsMock, *request_ids: str) -> None:
    for request_id in request_ids:
        deepgram.add(responses.POST, LISTEN_URL, json=transcript_body(request_id=request_id))


def forget_every_record(aws: Aws) -> None:
    """What 30 days do to the idempotency store (its TTL), or an operator emptying it."""
    items = aws.admin.dynamodb.scan(TableName=TABLE)["Items"]
    assert items, "the first run must have left a record to forget"
    for item in items:
        aws.dynamodb.delete_item(TableName=TABLE, Key={"id": item["id"]})


def s3_calls(aws: Aws) -> list[str]:
    calls: list[str] = []
    aws.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def test_an_expired_record_does_not_pay_again_the_transcript_says_it_is_done(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answers(deepgram, "req-1")
    first = transcriber.process(obj(), lambda_context)
    forget_every_record(aws)

    again = transcriber.process(obj(), lambda_context)

    assert len(deepgram.calls) == 1
    assert (again.status, again.replayed, again.output_key) == ("transcribed", True, first.output_key)
    assert (again.request_id, again.options) == ("req-1", first.options)
    assert again.estimated_cost_usd == first.estimated_cost_usd


def test_a_versioned_object_whose_record_expired_is_not_paid_again(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.admin.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    version = aws.upload("talks/a.wav")["VersionId"]
    answers(deepgram, "req-1")
    transcriber.process(obj(version_id=version), lambda_context)
    forget_every_record(aws)

    again = transcriber.process(obj(version_id=version), lambda_context)

    assert (again.status, again.replayed, again.request_id) == ("transcribed", True, "req-1")
    assert len(deepgram.calls) == 1


def test_a_copy_in_place_with_the_same_options_is_not_paid_again(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.admin.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = aws.upload("talks/a.wav", Metadata={"dg-language": "fr"})["VersionId"]
    answers(deepgram, "req-1")
    transcriber.process(obj(version_id=first), lambda_context)
    forget_every_record(aws)
    copied = aws.admin.s3.copy_object(
        Bucket=INPUT_BUCKET,
        Key="talks/a.wav",
        CopySource={"Bucket": INPUT_BUCKET, "Key": "talks/a.wav"},
        Metadata={"dg-language": "fr", "owner": "ops"},  # a metadata edit: a new version, same bytes
        MetadataDirective="REPLACE",
    )

    again = transcriber.process(obj(version_id=copied["VersionId"]), lambda_context)

    assert (again.status, again.replayed, again.request_id) == ("transcribed", True, "req-1")
    assert again.options is not None
    assert again.options["language"] == "fr"
    assert len(deepgram.calls) == 1


def test_a_copy_in_place_with_other_options_is_new_work_and_paid_once(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.admin.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = aws.upload("talks/a.wav", Metadata={"dg-language": "fr"})["VersionId"]
    answers(deepgram, "req-1", "req-2")
    transcriber.process(obj(version_id=first), lambda_context)
    copied = aws.admin.s3.copy_object(
        Bucket=INPUT_BUCKET,
        Key="talks/a.wav",
        CopySource={"Bucket": INPUT_BUCKET, "Key": "talks/a.wav"},
        Metadata={"dg-language": "de"},
        MetadataDirective="REPLACE",
    )

    again = transcriber.process(obj(version_id=copied["VersionId"]), lambda_context)

    assert (again.status, again.replayed, again.request_id) == ("transcribed", False, "req-2")
    assert again.options is not None
    assert again.options["language"] == "de"
    assert len(deepgram.calls) == 2


def test_a_replay_reports_the_options_and_request_id_of_the_transcript_in_the_bucket(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answers(deepgram, "req-fr", "req-de")
    french = obj(options=(("language", "fr"),))
    transcriber.process(french, lambda_context)
    # The same version asked for with other options is new work: it pays, and its transcript
    # replaces the French one at the same key.
    german = transcriber.process(obj(options=(("language", "de"),)), lambda_context)

    replay = transcriber.process(french, lambda_context)  # the French record still exists

    assert (german.replayed, replay.replayed) == (False, True)
    assert replay.request_id == "req-de"
    assert replay.options is not None
    assert replay.options["language"] == "de"
    stored = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("talks/a.wav"))["Metadata"]
    assert stored["deepgram-request-id"] == "req-de"
    assert len(deepgram.calls) == 2


def test_the_formats_are_made_from_the_answer_in_hand_not_read_back(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    transcriber = make_transcriber(OUTPUT_FORMATS="json,txt,srt,vtt")
    aws.upload("talks/a.wav")
    answers(deepgram, "req-1")
    calls = s3_calls(aws)

    outcome = transcriber.process(obj(), lambda_context)

    assert outcome.outputs is not None
    assert set(outcome.outputs) == {"json", "txt", "srt", "vtt"}
    assert "GetObject" not in calls
    text = aws.s3.get_object(Bucket=OUTPUT_BUCKET, Key=outcome.outputs["txt"])["Body"].read()
    assert b"quick brown fox" in text
