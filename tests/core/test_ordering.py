"""The ordering rule in-process: foreign buckets, superseded versions (by version, ETag or
sequencer), stale replays, the idempotency identity, and metadata S3 always accepts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import responses

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    OUTPUT_BUCKET,
    UPLOAD_ETAG,
    etag_of,
    failure_key,
    transcript_body,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef
from transcriber.observability import metrics
from transcriber.pipeline.workflow import object_identity

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory
    from transcriber.pipeline.workflow import Transcriber

V1, V2 = b"RIFF version one", b"RIFF version two"


def answer(deepgram: responses.RequestsMock, status: int = 200, **kwargs: Any) -> None:
    if status == 200 and "json" not in kwargs:
        kwargs["json"] = transcript_body()
    deepgram.add(responses.POST, LISTEN_URL, status=status, **kwargs)


def ref(key: str = "k.wav", body: bytes = V1, **fields: Any) -> S3ObjectRef:
    values: dict[str, Any] = {"size": len(body), "etag": etag_of(body), **fields}
    return S3ObjectRef(INPUT_BUCKET, key, **values)


def s3_calls(aws: Aws) -> list[str]:
    calls: list[str] = []
    aws.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def no_metadata_head(make_transcriber: TranscriberFactory) -> Transcriber:
    """A transcriber that makes no HEAD before Deepgram for an event with a media extension, size
    and ETag: per-upload options are off (they read the object's metadata with a HEAD first)."""
    return make_transcriber(UPLOAD_OPTIONS="none")


def versioned(aws: Aws) -> None:
    aws.admin.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})


# -- buckets -------------------------------------------------------------------------------


def test_a_foreign_bucket_is_refused_with_no_call_but_its_failure_record(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    calls = s3_calls(aws)

    outcome = transcriber.process(S3ObjectRef("not-ours", "a.wav", size=5, etag="e"), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "foreign-bucket")
    assert outcome.output_key == failure_key("a.wav", "not-ours") == "failures/_buckets/not-ours/a.wav.json"
    assert calls == ["PutObject"]
    assert len(deepgram.calls) == 0


def test_an_allowed_other_bucket_gets_its_own_output_keys(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.admin.s3.create_bucket(Bucket="archive")
    aws.s3.put_object(Bucket="archive", Key="k.wav", Body=V1)
    answer(deepgram)

    outcome = make_transcriber(ALLOWED_BUCKETS="archive").process(
        S3ObjectRef("archive", "k.wav", size=len(V1), etag=etag_of(V1)), lambda_context
    )

    assert (outcome.status, outcome.output_key) == ("transcribed", transcript_key("k.wav", "archive"))
    assert aws.output_keys() == ["transcripts/_buckets/archive/k.wav.json"]


# -- superseded ------------------------------------------------------------------------------


def test_an_older_etag_pays_but_never_writes_over_the_newer_version(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("k.wav", V1)
    aws.upload("k.wav", V2)
    answer(deepgram)

    # The event is decisive (media extension, size, ETag; no metadata to read): no HEAD before
    # Deepgram, so only the check at write time stands between the older answer and the newer version.
    outcome = no_metadata_head(make_transcriber).process(ref(body=V1), lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert len(deepgram.calls) == 1
    assert aws.output_keys() == []


def test_an_older_version_id_is_superseded_and_its_failure_is_not_recorded(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    versioned(aws)
    old = aws.upload("k.wav", V1)["VersionId"]
    aws.upload("k.wav", V1)  # the same bytes again: a newer version with the same ETag
    answer(deepgram, 400, json={"err_code": "Bad Request", "err_msg": "corrupt or unsupported data"})

    outcome = transcriber.process(ref(version_id=old), lambda_context)

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert aws.output_keys() == []


def test_a_head_that_reads_a_newer_etag_skips_before_paying_deepgram(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("k.wav", V1)
    aws.upload("k.wav", V2)

    outcome = transcriber.process(ref(size=None), lambda_context)  # no size: a HEAD is made anyway

    assert (outcome.status, outcome.reason) == ("skipped", "superseded")
    assert len(deepgram.calls) == 0


@pytest.mark.parametrize(("theirs", "written"), [("00FF", False), ("0001", True)])
def test_a_deleted_source_is_ordered_by_the_sequencer_of_the_existing_output(
    aws: Aws,
    transcriber: Transcriber,
    lambda_context: FakeLambdaContext,
    theirs: str,
    written: bool,
) -> None:
    aws.s3.put_object(
        Bucket=OUTPUT_BUCKET,
        Key=transcript_key("gone.wav"),
        Body=b"{}",
        Metadata={"source-sequencer": theirs},
    )

    outcome = transcriber.process(ref("gone.wav", size=None, sequencer="0010"), lambda_context)

    assert outcome.status == ("failed" if written else "skipped")
    assert (aws.output(failure_key("gone.wav")) is not None) is written


def test_the_latest_versions_failure_removes_an_older_versions_transcript(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("k.wav", V1)
    answer(deepgram)
    assert transcriber.process(ref(body=V1), lambda_context).status == "transcribed"
    aws.upload("k.wav", V2)
    answer(deepgram, 400, json={"err_code": "Bad Request", "err_msg": "corrupt or unsupported data"})

    outcome = transcriber.process(ref(body=V2), lambda_context)

    assert outcome.status == "failed"
    assert aws.output_keys() == [failure_key("k.wav")]


def test_a_source_head_that_fails_falls_back_to_the_sequencer(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("k.wav", V1)
    answer(deepgram)
    refused = {"head": 0}

    def deny_source_heads(params: dict[str, Any], **_: Any) -> None:
        if params.get("Bucket") == INPUT_BUCKET:
            refused["head"] += 1
            raise aws.s3.exceptions.ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "denied"}}, "HeadObject"
            )

    aws.s3.meta.events.register("before-parameter-build.s3.HeadObject", deny_source_heads)

    # No HEAD before Deepgram (see no_metadata_head): the one refused is the check at write time.
    outcome = no_metadata_head(make_transcriber).process(ref(), lambda_context)

    assert outcome.status == "transcribed"
    assert refused["head"] == 1


# -- identity and replays ----------------------------------------------------------------------


def test_the_identity_is_the_same_with_or_without_a_version_id() -> None:
    assert object_identity(ref(version_id="v1")) == object_identity(ref())


def test_a_replay_whose_transcript_was_deleted_transcribes_again(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("k.wav", V1)
    answer(deepgram)
    answer(deepgram, json=transcript_body(request_id="req-2"))
    transcriber.process(ref(), lambda_context)
    aws.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("k.wav"))

    again = transcriber.process(ref(), lambda_context)

    assert (again.status, again.replayed, again.request_id) == ("transcribed", False, "req-2")
    assert aws.output(transcript_key("k.wav")) is not None


def test_a_new_version_of_the_same_bytes_is_not_paid_again_and_the_old_one_replays_it(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    versioned(aws)
    first = aws.upload("k.wav", V1)["VersionId"]
    answer(deepgram)
    transcriber.process(ref(version_id=first), lambda_context)
    second = aws.upload("k.wav", V1)["VersionId"]  # same bytes, same ETag, same options: a copy in place

    again = transcriber.process(ref(version_id=second), lambda_context)
    late = transcriber.process(ref(version_id=first), lambda_context)

    assert (again.status, again.replayed, again.request_id) == ("transcribed", True, "req-1")
    assert (late.status, late.replayed, late.request_id) == ("transcribed", True, "req-1")
    assert len(deepgram.calls) == 1


def test_bytes_uploaded_again_after_another_version_are_the_latest_again(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    transcriber = no_metadata_head(make_transcriber)  # Deepgram is paid, then the answer is superseded
    aws.upload("k.wav", V1)
    aws.upload("k.wav", V2)
    answer(deepgram)
    metrics.clear_metrics()
    assert transcriber.process(ref(body=V1), lambda_context).reason == "superseded"  # stored as such
    assert len(deepgram.calls) == 1
    assert len(metrics.metric_set["EstimatedCostUSD"]["Value"]) == 1  # paid for, so counted
    aws.upload("k.wav", V1)  # V1's bytes again: the latest version, with V1's identity
    answer(deepgram, json=transcript_body(request_id="req-2"))

    outcome = transcriber.process(ref(body=V1), lambda_context)

    assert (outcome.status, outcome.request_id) == ("transcribed", "req-2")
    assert aws.output_keys() == [transcript_key("k.wav")]


def test_a_null_version_from_head_is_no_version(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.admin.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    aws.upload("k.wav", V1)
    answer(deepgram)

    outcome = transcriber.process(S3ObjectRef(INPUT_BUCKET, "k.wav"), lambda_context)

    assert (outcome.status, outcome.version) == ("transcribed", etag_of(V1))
    head = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("k.wav"))
    assert "source-version-id" not in head["Metadata"]


# -- metadata ----------------------------------------------------------------------------------


def test_a_non_ascii_or_huge_request_id_from_deepgram_never_breaks_the_write(
    aws: Aws, deepgram: responses.RequestsMock, transcriber: Transcriber, lambda_context: FakeLambdaContext
) -> None:
    aws.upload("talks/a.wav")
    answer(deepgram, json=transcript_body(request_id="☃" * 3000))

    outcome = transcriber.process(
        S3ObjectRef(INPUT_BUCKET, "talks/a.wav", size=16, etag=UPLOAD_ETAG, sequencer="é" * 500),
        lambda_context,
    )

    assert outcome.status == "transcribed"
    metadata = aws.s3.head_object(Bucket=OUTPUT_BUCKET, Key=transcript_key("talks/a.wav"))["Metadata"]
    assert all(value.isascii() for value in metadata.values())
    assert sum(len(k) + len(v) for k, v in metadata.items()) < 2048
