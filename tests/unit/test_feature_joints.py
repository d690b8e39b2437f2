"""Where two of today's features meet: our own per-upload options and idempotency, names and S3's
metadata limit, names and channels in captions, profiles' redaction and uploads, and our options
given where only Deepgram's belong."""

from __future__ import annotations

from pathlib import Path

import pytest

from transcriber.config import UNSUPPORTED_OPTIONS, DeepgramOptions, Settings
from transcriber.domain import formats, speakers
from transcriber.domain.events import S3ObjectRef
from transcriber.domain.keyterms import estimated_tokens
from transcriber.domain.profiles import Profiles
from transcriber.domain.upload_options import overlay
from transcriber.errors import ConfigurationError
from transcriber.pipeline.workflow import object_identity

ENV = {"OUTPUT_BUCKET": "out", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t", "INPUT_BUCKET": "in"}


def upload(*options: tuple[str, str]) -> S3ObjectRef:
    return S3ObjectRef("in", "calls/a.wav", etag="e1", options=options)


def test_renaming_a_speaker_or_changing_the_captions_is_not_new_work_to_pay_for() -> None:
    plain = object_identity(upload(("language", "fr")))

    assert object_identity(upload(("language", "fr"), ("speakers", "0=Alice"))) == plain
    assert (
        object_identity(upload(("language", "fr"), ("speakers", "0=Alicia"), ("caption_max_lines", "1")))
        == plain
    )
    assert object_identity(upload(("language", "es"))) != plain  # Deepgram's options still count


def test_names_too_long_for_s3s_metadata_stay_out_of_it_and_short_ones_go_in() -> None:
    many = ",".join(f"{n}=名前名前名前名前名前名前名前名前名前名前" for n in range(10))

    assert speakers.speakers_metadata([("speakers", many)]) == {}
    assert speakers.speakers_metadata([("speakers", "0=Alice,1=Bob")]) == {"speakers": "0=Alice,1=Bob"}


def test_a_caption_label_never_reads_as_another_speaker_or_channel() -> None:
    style = formats.CaptionStyle(
        speakers=speakers.parse_speakers("0=Dr. Alexandra Smith,1=Dr. Alexandra Jones")
    )
    labels = {style.label(0, speaker, multichannel=False) for speaker in (0, 1)}
    stereo = {style.label(channel, speaker, multichannel=True) for channel in (0, 1) for speaker in (0, 1)}

    assert len(labels) == 2
    assert all(len(label) <= 14 for label in labels)
    assert len(stereo) == 4
    assert all(len(label) <= 14 for label in stereo)
    assert style.label(1, 0, multichannel=True, cut=False) == "Channel 1 Speaker 0"  # a voice is whole
    assert style.label(0, 0, multichannel=False, cut=False) == "Dr. Alexandra Smith"


def test_an_upload_adds_to_a_folders_redaction_and_never_takes_it_away(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles."medical/"]\nredact = ["phi"]\n', encoding="utf-8")
    folder = Profiles.load(path, DeepgramOptions(), UNSUPPORTED_OPTIONS).options_for(
        "medical/a.wav", DeepgramOptions()
    )

    more = overlay(folder, (("redact", "numbers"),)).query()
    off = overlay(folder, (("redact", "false"),)).query()

    assert ("redact", "phi") in more
    assert ("redact", "numbers") in more
    assert ("redact", "phi") in off
    assert ("redact", "false") not in off


@pytest.mark.parametrize("option", ["speakers=0%3DAlice", "caption_line_length=32"])
def test_our_own_options_in_the_deployments_deepgram_options_fail_at_cold_start(option: str) -> None:
    with pytest.raises(ConfigurationError, match="caption setting"):
        Settings.from_env({**ENV, "DEEPGRAM_OPTIONS": f"model=nova-3&{option}"})


def test_our_own_options_in_a_profile_fail_at_cold_start(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles."es/"]\nlanguage = "es"\ncaption_line_length = 32\n', encoding="utf-8")

    with pytest.raises(ConfigurationError, match="caption setting"):
        Profiles.load(path, DeepgramOptions(), UNSUPPORTED_OPTIONS)


def test_key_terms_in_non_latin_scripts_are_counted_from_above() -> None:
    assert estimated_tokens("心房細動") >= 4  # a BPE tokenizer takes about one token a character
    assert estimated_tokens("tachycardia") == 3
