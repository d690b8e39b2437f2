"""Derived formats and completion events end to end: the real handler in a local Lambda container,
the Deepgram emulator's real transcript of the sample, moto's S3 and EventBridge (the template's
sample rule, enabled, delivering to its queue)."""

from __future__ import annotations

import io
import json
import re
import wave
from typing import TYPE_CHECKING, Any

from transcriber.services.completion import EVENT_SOURCE, TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED

if TYPE_CHECKING:
    from localworld.aws_faults import AwsFaultProxy
    from localworld.pytest_plugin import CompletionEvents, FunctionFactory, Uploads
    from localworld.world import LocalWorld

SPOKEN = "the quick brown fox jumps over the lazy dog"
LOCAL_ENGINE = "local Deepgram emulator (pocketsphinx), not Deepgram"  # what the emulator's answers say
SRT_TIMES = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)$")


def get(world: LocalWorld, key: str) -> tuple[dict[str, Any], str]:
    obj = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)
    return dict(obj), obj["Body"].read().decode("utf-8")


def output_keys(world: LocalWorld) -> list[str]:
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def format_key(world: LocalWorld, source_key: str, extension: str) -> str:
    return world.transcript_key(source_key).removesuffix(".json") + f".{extension}"


def seconds(parts: tuple[str, ...]) -> float:
    hours, minutes, whole, millis = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + whole + millis / 1000


def srt_cues(text: str) -> list[tuple[int, float, float, list[str]]]:
    """(number, start, end, text lines) of each SRT cue."""
    cues = []
    for block in text.strip("\n").split("\n\n"):
        number, times, *lines = block.split("\n")
        match = SRT_TIMES.match(times)
        assert match, times
        cues.append((int(number), seconds(match.groups()[:4]), seconds(match.groups()[4:]), lines))
    return cues


def words_of(document: dict[str, Any], channel: int = 0) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = document["results"]["channels"][channel]["alternatives"][0]["words"]
    return words


def stereo(sample: bytes, delay_s: float) -> bytes:
    """The sample on the left; on the right, the same ``delay_s`` later: two channels, two timings."""
    with wave.open(io.BytesIO(sample)) as source:
        rate, frames = source.getframerate(), source.readframes(source.getnframes())
    delay = b"\0\0" * int(rate * delay_s)
    left, right = frames + delay, delay + frames
    out = io.BytesIO()
    with wave.open(out, "wb") as sink:
        sink.setnchannels(2)
        sink.setsampwidth(2)
        sink.setframerate(rate)
        sink.writeframes(b"".join(left[i : i + 2] + right[i : i + 2] for i in range(0, len(left), 2)))
    return out.getvalue()


def silence(seconds_long: float = 1.5, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(2)
        sink.setframerate(rate)
        sink.writeframes(b"\0\0" * int(rate * seconds_long))
    return out.getvalue()


def test_every_format_lands_beside_the_json_and_a_created_event_names_them(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("calls/hello.wav", sample_audio)

    result = start_function(CAPTION_WORDS_PER_CUE="4").invoke(event)

    assert result.error is None, result.logs
    assert len(world.emulator.requests) == 1
    keys = {ext: format_key(world, "calls/hello.wav", ext) for ext in ("json", "txt", "srt", "vtt")}
    assert output_keys(world) == sorted(keys.values())
    _, body = get(world, keys["json"])
    document = json.loads(body)
    words = words_of(document)
    assert " ".join(w["word"] for w in words) == SPOKEN

    txt_obj, text = get(world, keys["txt"])
    assert txt_obj["ContentType"] == "text/plain; charset=utf-8"
    assert text == " ".join(w["punctuated_word"] for w in words) + "\n"
    assert txt_obj["Metadata"]["source-key"] == "calls/hello.wav"
    assert txt_obj["Metadata"]["deepgram-request-id"] == document["metadata"]["request_id"]

    srt_obj, srt = get(world, keys["srt"])
    assert srt_obj["ContentType"] == "application/x-subrip; charset=utf-8"
    cues = srt_cues(srt)
    assert [number for number, *_ in cues] == list(range(1, len(cues) + 1))  # numbered from 1
    groups = [words[i : i + 4] for i in range(0, len(words), 4)]  # CAPTION_WORDS_PER_CUE=4
    assert len(cues) == len(groups) == 3
    for (_, start, end, lines), group in zip(cues, groups, strict=True):
        assert start == round(group[0]["start"], 3)
        assert end == round(group[-1]["end"], 3)
        assert lines == [" ".join(w["punctuated_word"] for w in group)]

    vtt_obj, vtt = get(world, keys["vtt"])
    assert vtt_obj["ContentType"] == "text/vtt; charset=utf-8"
    assert vtt.startswith(f"WEBVTT\n\nNOTE\nTranscription provided by {LOCAL_ENGINE}\n")
    assert f"Request Id: {document['metadata']['request_id']}" in vtt
    assert vtt.count(" --> ") == 3
    assert srt.split("\n")[1].replace(",", ".") in vtt

    [created] = completion_events.wait(1)
    assert (created["source"], created["detail-type"]) == (EVENT_SOURCE, TRANSCRIPT_CREATED)
    detail = created["detail"]
    s3_record = event["Records"][0]["s3"]
    assert detail["source"]["bucket"] == world.input_bucket
    assert detail["source"]["key"] == "calls/hello.wav"
    assert detail["source"]["etag"] == s3_record["object"]["eTag"]
    assert detail["outputs"] == {"bucket": world.output_bucket, "keys": keys}
    assert detail["audio"]["duration_s"] == document["metadata"]["duration"]
    assert detail["audio"]["channels"] == 1
    assert detail["audio"]["words"] == len(words)
    assert detail["deepgram"]["request_id"] == document["metadata"]["request_id"]
    assert detail["deepgram"]["model"] == "nova-3"
    assert detail["deepgram"]["model_names"] == [LOCAL_ENGINE]
    assert detail["replayed"] is False
    assert detail["environment"] == world.stack.parameters["EnvironmentName"]
    timings = detail["timings"]
    assert timings["started_at"] <= timings["transcribed_at"] <= timings["completed_at"]
    assert timings["deepgram_latency_s"] > 0


def test_diarized_paragraphs_give_speaker_turns_and_labelled_cues(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("calls/diarized.wav", sample_audio)

    result = start_function(
        DEEPGRAM_DIARIZE="true", DEEPGRAM_PARAGRAPHS="true", DEEPGRAM_EXTRA_OPTIONS="detect_language=true"
    ).invoke(event)

    assert result.error is None, result.logs
    [request] = world.emulator.requests
    assert ("diarize", "true") in request.query
    _, body = get(world, format_key(world, "calls/diarized.wav", "json"))
    document = json.loads(body)
    channel = document["results"]["channels"][0]
    paragraphs = channel["alternatives"][0]["paragraphs"]["paragraphs"]
    assert {w["speaker"] for w in words_of(document)} == {0}
    _, text = get(world, format_key(world, "calls/diarized.wav", "txt"))
    expected = [f"Speaker 0: {' '.join(s['text'] for s in p['sentences'])}" for p in paragraphs]
    assert text == "\n\n".join(expected) + "\n"
    assert text.lower().startswith("speaker 0: the quick brown fox")
    _, srt = get(world, format_key(world, "calls/diarized.wav", "srt"))
    cues = srt_cues(srt)
    assert all(lines[0].startswith("Speaker 0: ") for _, _, _, lines in cues)  # every cue says who
    _, vtt = get(world, format_key(world, "calls/diarized.wav", "vtt"))
    assert vtt.count("<v Speaker 0>") == len(cues)


def test_multichannel_gives_a_section_per_channel_and_cues_merged_in_time(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("calls/stereo.wav", stereo(sample_audio, delay_s=1.0))

    result = start_function(DEEPGRAM_EXTRA_OPTIONS="multichannel=true").invoke(event)

    assert result.error is None, result.logs
    _, body = get(world, format_key(world, "calls/stereo.wav", "json"))
    document = json.loads(body)
    assert document["metadata"]["channels"] == 2
    left, right = words_of(document, 0), words_of(document, 1)
    assert left
    assert right
    _, text = get(world, format_key(world, "calls/stereo.wav", "txt"))
    assert text == (
        "[Channel 0]\n"
        + " ".join(w["punctuated_word"] for w in left)
        + "\n\n[Channel 1]\n"
        + " ".join(w["punctuated_word"] for w in right)
        + "\n"
    )
    _, srt = get(world, format_key(world, "calls/stereo.wav", "srt"))
    cues = srt_cues(srt)
    assert [n for n, *_ in cues] == list(range(1, len(cues) + 1))
    starts = [start for _, start, _, _ in cues]
    assert starts == sorted(starts)  # the two channels' cues, merged by start time
    labels = {lines[0].split(":")[0] for _, _, _, lines in cues}  # every cue says its channel
    assert labels == {"Channel 0", "Channel 1"}
    _, vtt = get(world, format_key(world, "calls/stereo.wav", "vtt"))
    assert "<v Channel 0>" in vtt
    assert "<v Channel 1>" in vtt
    [created] = completion_events.wait(1)
    assert created["detail"]["audio"]["channels"] == 2
    assert created["detail"]["audio"]["words"] == len(left) + len(right)


def test_an_empty_transcript_gives_an_empty_text_file_and_no_captions(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("calls/silence.wav", silence())

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    assert result.payload["transcribed"] == 1
    _, body = get(world, format_key(world, "calls/silence.wav", "json"))
    assert words_of(json.loads(body)) == []
    obj, text = get(world, format_key(world, "calls/silence.wav", "txt"))
    assert text == ""
    assert obj["ContentLength"] == 0
    assert output_keys(world) == sorted(format_key(world, "calls/silence.wav", e) for e in ("json", "txt"))
    logs = "\n".join(result.logs)
    assert "No srt file: empty-transcript" in logs
    assert "No vtt file: empty-transcript" in logs
    [created] = completion_events.wait(1)
    assert set(created["detail"]["outputs"]["keys"]) == {"json", "txt"}
    assert created["detail"]["audio"]["words"] == 0


def test_a_failed_caption_write_is_completed_by_the_retry_without_a_second_request(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    aws_fault_proxy: AwsFaultProxy,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("calls/partial.wav", sample_audio)
    function = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url})
    aws_fault_proxy.fail("PUT", "calls/partial.wav.srt", 503, "SlowDown")

    failed = function.invoke(event)

    assert failed.error is not None
    assert failed.error["errorType"] == "RetryableError"
    assert "s3-throttled" in failed.error["errorMessage"]
    present = output_keys(world)
    assert format_key(world, "calls/partial.wav", "json") in present
    assert format_key(world, "calls/partial.wav", "srt") not in present
    assert completion_events.drain() == []  # no event before every output is written

    aws_fault_proxy.clear()
    retried = function.invoke(event)

    assert retried.error is None, retried.logs
    assert len(world.emulator.requests) == 1  # the retry read the stored JSON, not Deepgram
    assert output_keys(world) == sorted(
        format_key(world, "calls/partial.wav", e) for e in ("json", "txt", "srt", "vtt")
    )
    [created] = completion_events.wait(1)
    assert created["detail"]["replayed"] is True
    assert created["detail"]["deepgram"]["request_id"] == world.emulator.requests[0].request_id


def test_a_permanent_failure_publishes_transcription_failed(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    completion_events: CompletionEvents,
) -> None:
    event = uploads.put("calls/not-audio.wav", b"this is not audio at all" * 40)

    result = start_function().invoke(event)

    assert result.error is None, result.logs
    [failed] = completion_events.wait(1)
    assert (failed["source"], failed["detail-type"]) == (EVENT_SOURCE, TRANSCRIPTION_FAILED)
    detail = failed["detail"]
    assert detail["source"]["key"] == "calls/not-audio.wav"
    assert detail["error"]["reason"] == "deepgram-unsupported-audio"
    assert detail["error"]["http_status"] == 400
    assert detail["outputs"]["keys"] == {"failure": world.failure_key("calls/not-audio.wav")}
    assert detail["timings"]["started_at"] <= detail["timings"]["failed_at"]
