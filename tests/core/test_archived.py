"""Archived objects (Glacier Flexible Retrieval, Deep Archive, Intelligent-Tiering's archive tiers):
a permanent ``archived-object`` failure that says how to restore, decided before any Deepgram call
where a HEAD is made; restored copies transcribed unless ``TRANSCRIBE_RESTORED_OBJECTS=false``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import responses

from tests.core.conftest import (
    INPUT_BUCKET,
    LISTEN_URL,
    etag_of,
    failure_key,
    transcript_body,
    transcript_key,
)
from transcriber.domain.events import S3ObjectRef

if TYPE_CHECKING:
    from tests.core.conftest import Aws, FakeLambdaContext, TranscriberFactory

AUDIO = b"RIFF....WAVEfmt "
CANT_FETCH = {
    "err_code": "REMOTE_CONTENT_ERROR",
    "err_msg": "The remote server hosting the media returned a client error: 403 Forbidden",
    "request_id": "req-remote",
}


# The event path's tests turn the per-upload options off: their metadata HEAD (on by default) would
# judge every object before Deepgram, and these tests are about what happens without one.
NO_METADATA_HEAD = {"UPLOAD_OPTIONS": "none"}


def from_event(key: str) -> S3ObjectRef:
    """As an S3 notification names it: size and ETag known, so no HEAD is needed to judge it."""
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key, size=len(AUDIO), etag=etag_of(AUDIO))


def from_batch(key: str) -> S3ObjectRef:
    """As a Batch Operations task names it: bucket and key only, so the function HEADs it."""
    return S3ObjectRef(bucket=INPUT_BUCKET, key=key)


def count_heads(aws: Aws, deepgram: responses.RequestsMock) -> list[tuple[str, int]]:
    """Each HEAD of an input object: its key and how many Deepgram requests were made before it.
    (The ordering rule HEADs the source once more before an outcome is written.)"""
    heads: list[tuple[str, int]] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        if params["Bucket"] == INPUT_BUCKET:
            heads.append((params["Key"], len(deepgram.calls)))

    aws.s3.meta.events.register("provide-client-params.s3.HeadObject", seen)
    return heads


def record(aws: Aws, key: str) -> dict[str, Any]:
    document = aws.output(failure_key(key))
    assert document is not None
    return document


@pytest.mark.parametrize(
    ("storage_class", "hours"), [("GLACIER", "3-5 hours"), ("DEEP_ARCHIVE", "up to 12 hours")]
)
def test_an_archived_object_fails_before_any_deepgram_call_with_how_to_restore(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    storage_class: str,
    hours: str,
) -> None:
    aws.upload("archive/old call.wav", AUDIO, StorageClass=storage_class)

    outcome = make_transcriber().process(from_batch("archive/old call.wav"), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    assert len(deepgram.calls) == 0
    failure = record(aws, "archive/old call.wav")
    assert failure["reason"] == "archived-object"
    assert failure["class"] == "permanent"
    assert failure["storage_class"] == storage_class
    message = failure["message"]
    assert f"is archived in {storage_class}" in message
    assert f"aws s3api restore-object --bucket {INPUT_BUCKET} --key 'archive/old call.wav'" in message
    assert '"Days": 7' in message
    assert hours in message
    assert "then send it again" in message


def test_a_restored_copy_is_transcribed_by_default(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("archive/a.wav", AUDIO, StorageClass="GLACIER")
    aws.admin.s3.restore_object(Bucket=INPUT_BUCKET, Key="archive/a.wav", RestoreRequest={"Days": 1})
    assert (
        'ongoing-request="false"' in aws.s3.head_object(Bucket=INPUT_BUCKET, Key="archive/a.wav")["Restore"]
    )
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    outcome = make_transcriber().process(from_batch("archive/a.wav"), lambda_context)

    assert outcome.status == "transcribed"
    assert aws.output(transcript_key("archive/a.wav")) == transcript_body()


def test_restored_copies_are_refused_when_the_parameter_says_so_even_from_an_event(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """Refusing restored copies needs a HEAD of every object: the event alone can't tell."""
    aws.upload("archive/a.wav", AUDIO, StorageClass="GLACIER")
    aws.admin.s3.restore_object(Bucket=INPUT_BUCKET, Key="archive/a.wav", RestoreRequest={"Days": 1})
    heads = count_heads(aws, deepgram)

    outcome = make_transcriber(TRANSCRIBE_RESTORED_OBJECTS="false", **NO_METADATA_HEAD).process(
        from_event("archive/a.wav"), lambda_context
    )

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    # The HEAD that judges it, then the ordering rule's before the failure record is written.
    assert heads == [("archive/a.wav", 0), ("archive/a.wav", 0)]
    assert len(deepgram.calls) == 0
    message = record(aws, "archive/a.wav")["message"]
    assert "a restored copy can be read" in message
    assert "TRANSCRIBE_RESTORED_OBJECTS" in message


def test_a_standard_object_from_an_event_costs_no_head(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/a.wav", AUDIO)
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())
    heads = count_heads(aws, deepgram)

    outcome = make_transcriber(**NO_METADATA_HEAD).process(from_event("talks/a.wav"), lambda_context)

    assert outcome.status == "transcribed"
    assert heads == [("talks/a.wav", 1)]  # none before Deepgram: only the ordering rule's, after it


def test_from_an_event_the_per_upload_options_head_tells_it_before_deepgram(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """With per-upload options on (the default), their metadata HEAD is also the archive check."""
    aws.upload("archive/h.wav", AUDIO, StorageClass="GLACIER")
    heads = count_heads(aws, deepgram)

    outcome = make_transcriber(DELIVERY_MODE="url").process(from_event("archive/h.wav"), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    assert len(deepgram.calls) == 0
    assert heads == [("archive/h.wav", 0), ("archive/h.wav", 0)]  # the metadata HEAD, the ordering rule's
    assert "restore-object" in record(aws, "archive/h.wav")["message"]


def test_from_an_event_in_bytes_mode_s3s_refusal_to_read_tells_it_before_deepgram(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("archive/b.wav", AUDIO, StorageClass="DEEP_ARCHIVE")

    outcome = make_transcriber(DELIVERY_MODE="bytes", **NO_METADATA_HEAD).process(
        from_event("archive/b.wav"), lambda_context
    )

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    assert len(deepgram.calls) == 0
    assert "is archived in DEEP_ARCHIVE" in record(aws, "archive/b.wav")["message"]


def test_from_an_event_in_url_mode_deepgrams_failed_fetch_is_explained_by_one_head(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    """Deepgram could not fetch the URL (refused before any transcription): one HEAD says why."""
    aws.upload("archive/c.wav", AUDIO, StorageClass="GLACIER")
    deepgram.add(responses.POST, LISTEN_URL, status=400, json=CANT_FETCH)
    heads = count_heads(aws, deepgram)

    outcome = make_transcriber(DELIVERY_MODE="url", **NO_METADATA_HEAD).process(
        from_event("archive/c.wav"), lambda_context
    )

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    # After Deepgram's refused fetch: the HEAD that explains it, then the ordering rule's.
    assert heads == [("archive/c.wav", 1), ("archive/c.wav", 1)]
    failure = record(aws, "archive/c.wav")
    assert "restore-object" in failure["message"]
    assert (failure["attempts"], failure["delivery"]) == (1, "url")


def test_from_an_event_in_auto_mode_the_fallback_read_tells_it(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("archive/d.wav", AUDIO, StorageClass="GLACIER")
    deepgram.add(responses.POST, LISTEN_URL, status=400, json=CANT_FETCH)

    outcome = make_transcriber(DELIVERY_MODE="auto", **NO_METADATA_HEAD).process(
        from_event("archive/d.wav"), lambda_context
    )

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    assert len(deepgram.calls) == 1  # the URL only: the bytes could not be read


def test_a_failed_fetch_of_a_readable_object_keeps_its_reason(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("talks/e.wav", AUDIO)
    deepgram.add(responses.POST, LISTEN_URL, status=400, json=CANT_FETCH)

    outcome = make_transcriber(DELIVERY_MODE="url", **NO_METADATA_HEAD).process(
        from_event("talks/e.wav"), lambda_context
    )

    assert (outcome.status, outcome.reason) == ("failed", "deepgram-remote-content")


def test_a_failed_fetch_of_a_deleted_object_keeps_its_reason(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    deepgram.add(responses.POST, LISTEN_URL, status=400, json=CANT_FETCH)

    outcome = make_transcriber(DELIVERY_MODE="url", **NO_METADATA_HEAD).process(
        from_event("gone/e.wav"), lambda_context
    )

    assert (outcome.status, outcome.reason) == ("failed", "deepgram-remote-content")


@pytest.mark.parametrize(
    ("archive_status", "hours"),
    [
        ("ARCHIVE_ACCESS", "3-5 hours from Archive Access"),
        ("DEEP_ARCHIVE_ACCESS", "up to 12 from Deep Archive"),
    ],
)
def test_intelligent_tiering_archive_tiers_are_archived(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
    archive_status: str,
    hours: str,
) -> None:
    """moto has no archive tiers: S3's answer (``x-amz-archive-status``) is added to moto's HEAD."""
    aws.upload("tiered/f.wav", AUDIO, StorageClass="INTELLIGENT_TIERING")

    def archive_tier(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ArchiveStatus"] = archive_status

    aws.s3.meta.events.register("after-call.s3.HeadObject", archive_tier)

    outcome = make_transcriber().process(from_batch("tiered/f.wav"), lambda_context)

    assert (outcome.status, outcome.reason) == ("failed", "archived-object")
    assert len(deepgram.calls) == 0
    message = record(aws, "tiered/f.wav")["message"]
    assert f"is archived in INTELLIGENT_TIERING {archive_status}" in message
    assert "--restore-request '{}'" in message
    assert hours in message


def test_glacier_instant_retrieval_reads_like_standard(
    aws: Aws,
    deepgram: responses.RequestsMock,
    make_transcriber: TranscriberFactory,
    lambda_context: FakeLambdaContext,
) -> None:
    aws.upload("instant/g.wav", AUDIO, StorageClass="GLACIER_IR")
    deepgram.add(responses.POST, LISTEN_URL, json=transcript_body())

    assert make_transcriber().process(from_batch("instant/g.wav"), lambda_context).status == "transcribed"
