"""A local run signs its work as the local emulator's, never Deepgram's: the real handler, the
emulator's transcript of the sample, every output format. (A Deepgram answer's captions still say
Deepgram: tests/unit/test_caption_maker.py, tests/unit/test_formats.py.)"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

LOCAL_ENGINE = "local Deepgram emulator (pocketsphinx), not Deepgram"


def test_a_local_run_does_not_name_deepgram_as_its_maker(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    result = start_function().invoke(uploads.put("calls/signed.wav", sample_audio))
    assert result.error is None, result.logs

    s3 = world.aws.s3()
    stem = world.transcript_key("calls/signed.wav").removesuffix(".json")
    files = {
        ext: s3.get_object(Bucket=world.output_bucket, Key=f"{stem}.{ext}")["Body"].read().decode("utf-8")
        for ext in ("json", "txt", "srt", "vtt")
    }
    metadata = json.loads(files["json"])["metadata"]
    assert [info["name"] for info in metadata["model_info"].values()] == [LOCAL_ENGINE]
    assert files["vtt"].startswith(f"WEBVTT\n\nNOTE\nTranscription provided by {LOCAL_ENGINE}\n")
    assert "fox" in files["txt"]  # the words are there; only the signature changed
    for ext, text in files.items():
        assert "provided by Deepgram" not in text, ext
        assert "Deepgram" not in text.replace(LOCAL_ENGINE, ""), ext
