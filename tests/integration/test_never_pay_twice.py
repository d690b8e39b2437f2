"""Never pay twice, forever (issue 20, item 1), over HTTP in the local world: once the idempotency
records are gone (their 30-day TTL, or an operator emptying the table), a re-delivered object is
answered from the transcript in the bucket, and Deepgram's emulator counts one request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld


def listen(world: LocalWorld) -> list[Any]:
    return [r for r in world.emulator.requests if r.path == "/v1/listen"]


def forget_idempotency_records(world: LocalWorld) -> int:
    table = world.function("TranscribeFunction").environment["IDEMPOTENCY_TABLE"]
    dynamodb = world.aws.dynamodb()
    items = dynamodb.scan(TableName=table)["Items"]
    for item in items:
        dynamodb.delete_item(TableName=table, Key={"id": item["id"]})
    return len(items)


def test_a_redelivery_after_the_records_are_gone_pays_deepgram_no_second_time(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("forever/once.wav", sample_audio)
    function = start_function()
    before = len(listen(world))

    first = function.invoke(event)
    assert first.error is None, first.error
    assert forget_idempotency_records(world) >= 1
    again = function.invoke(event)

    assert again.error is None, again.error
    done, replay = first.payload["objects"][0], again.payload["objects"][0]
    assert (done["replayed"], replay["replayed"]) == (False, True)
    assert replay["request_id"] == done["request_id"]
    assert len(listen(world)) - before == 1
