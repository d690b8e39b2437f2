"""A kept answer is checked before it becomes a transcript (issue 20, item 2), through the real
transcribe and retry handlers in the local world: a staging copy cut short after it was kept is
discarded, and only then is Deepgram paid again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.integration.test_long_answers import answers_of, dead_lettered

if TYPE_CHECKING:
    from localworld.aws_faults import AwsFaultProxy
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

ANSWER_BYTES = 8 * 1024 * 1024  # too long for the idempotency record: kept in the staging prefix


def test_a_staging_copy_cut_short_is_discarded_and_only_then_paid_again(
    world: LocalWorld,
    uploads: Uploads,
    aws_fault_proxy: AwsFaultProxy,
    start_function: FunctionFactory,
    sample_audio: bytes,
    fast_retry_env: dict[str, str],
) -> None:
    event = uploads.put("write-fails/cut.wav", sample_audio)
    transcript = world.transcript_key("write-fails/cut.wav")
    aws_fault_proxy.fail("PUT", transcript, 403, "AccessDenied")
    function = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})
    world.emulator.faults.next(1, kind="long_answer", answer_bytes=ANSWER_BYTES)
    first = function.invoke(event)
    assert first.error is not None
    function.close()
    s3 = world.aws.s3()
    (staged,) = s3.list_objects_v2(Bucket=world.output_bucket, Prefix="kept-answers/")["Contents"]
    whole = s3.get_object(Bucket=world.output_bucket, Key=staged["Key"])["Body"].read()
    s3.put_object(Bucket=world.output_bucket, Key=staged["Key"], Body=whole[: len(whole) // 2])

    aws_fault_proxy.clear()
    retry = start_function("RetryFunction", timeout_s=None, extra_env=None, **fast_retry_env)
    result = retry.invoke(dead_lettered(event, first.request_id))

    assert result.payload == {"batchItemFailures": []}, result.logs
    assert answers_of(world) == 2  # the cut copy was not the paid answer: paid again, once
    head = s3.head_object(Bucket=world.output_bucket, Key=transcript)
    assert head["Metadata"]["deepgram-request-id"] == world.emulator.requests[1].request_id
    assert s3.list_objects_v2(Bucket=world.output_bucket, Prefix="kept-answers/")["KeyCount"] == 0
    assert any("KeptAnswersDiscarded" in line for line in result.logs)
