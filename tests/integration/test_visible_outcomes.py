"""Every way in leaves a visible outcome (issue 20, item 9), through the real handlers in the local
world: formats a malformed answer cannot make are named in ``Transcript Created`` with their reason,
and an object the retry function parks emits ``Transcription Failed``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.integration.test_deployment_faults_wait import dead_letter

if TYPE_CHECKING:
    from localworld.pytest_plugin import CompletionEvents, FunctionFactory, Uploads
    from localworld.world import LocalWorld


def no_valid_word(answer: dict[str, Any]) -> dict[str, Any]:
    for word in answer["results"]["channels"][0]["alternatives"][0]["words"]:
        word["punctuated_word"] = word["word"] = "  "
    return answer


def test_formats_not_made_are_named_in_the_created_event(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("malformed/blank.wav", sample_audio)
    world.emulator.faults.next(1, kind="crafted_answer", rewrite=no_valid_word)

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [created] = completion_events.wait(1)
    assert created["detail-type"] == "Transcript Created"
    assert created["detail"]["outputs"]["not_made"] == {"srt": "empty-transcript", "vtt": "empty-transcript"}
    assert any('"AnswerRepaired"' in line for line in result.logs)


def test_a_parked_object_emits_transcription_failed(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("outage/parked.wav", sample_audio)
    world.emulator.faults.next(10, status=503)
    retry = start_function("RetryFunction", timeout_s=None, extra_env={"DEEPGRAM_MAX_ATTEMPTS": "1"})

    result = retry.invoke(dead_letter(event, "8"))  # the last attempt

    assert result.payload == {"batchItemFailures": [{"itemIdentifier": "m-blocked"}]}, result.logs
    [failed] = completion_events.wait(1)
    assert failed["detail-type"] == "Transcription Failed"
    assert failed["detail"]["source"]["key"] == "outage/parked.wav"
    assert failed["detail"]["error"]["reason"] == "deepgram-unavailable"
