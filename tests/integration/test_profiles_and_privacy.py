"""Profiles per folder, key-term bounds, mip_opt_out and redaction end to end: the real handler in a
local Lambda container, moto, and the Deepgram emulator over HTTPS. The function reads a profiles
file the test writes (``DEEPGRAM_PROFILES_FILE``, declared in the template), as it reads the one the
layer carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

# flite saying "my name is john and my account number is four five six seven eight and i have asthma"
PRIVATE_CALL = Path(__file__).resolve().parents[2] / "tools" / "localworld" / "samples" / "private-call.wav"
TEAMS = """
[profiles."medical/"]
model = "nova-3-medical"
keyterm = ["metformin", "tachycardia"]
tag = ["team-medical"]

[profiles."medical/cardio/"]
keyterm = ["echocardiogram"]

[profiles."es/"]
language = "es"

[profiles."support/"]
redact = ["pii", "phi", "numbers"]
mip_opt_out = true
paragraphs = true  # the txt is made from Deepgram's paragraphs, the captions from its words

[profiles."payments/"]
redact = ["pci"]
"""


def profiles_file(tmp_path: Path, text: str = TEAMS) -> str:
    path = tmp_path / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def values(query: tuple[tuple[str, str], ...] | list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in query if key == name]


def read(world: LocalWorld, key: str) -> tuple[dict[str, str], str]:
    obj = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)
    return obj["Metadata"], obj["Body"].read().decode("utf-8")


def format_key(world: LocalWorld, source_key: str, extension: str) -> str:
    return world.transcript_key(source_key).removesuffix(".json") + f".{extension}"


def test_each_folder_gets_its_profile_and_the_upload_still_has_the_last_word(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes, tmp_path: Path
) -> None:
    function = start_function(DEEPGRAM_PROFILES_FILE=profiles_file(tmp_path))
    keys = ["medical/ward-3/round.wav", "medical/cardio/echo.wav", "es/llamada.wav", "calls/plain.wav"]
    for key in keys:
        metadata = {"dg-language": "fr"} if key.startswith("medical/ward") else {}
        result = function.invoke(uploads.put(key, sample_audio, Metadata=metadata))
        assert result.error is None, result.logs
        assert [o["status"] for o in result.payload["objects"]] == ["transcribed"]

    sent = [request.query for request in world.emulator.requests]  # one per upload, in order
    assert len(sent) == len(keys)
    ward, cardio, spanish, plain = sent
    assert values(ward, "model") == ["nova-3-medical"]  # the profile's, over the stack's nova-3
    assert values(ward, "keyterm") == ["metformin", "tachycardia"]
    assert values(ward, "language") == ["fr"]  # the upload's, over everything
    assert values(ward, "tag") == ["local", "team-medical"]  # the stack's tag, and the team's
    assert values(cardio, "model") == ["nova-3"]  # the longest prefix alone: no blend with medical/
    assert values(cardio, "keyterm") == ["echocardiogram"]
    assert values(spanish, "language") == ["es"]
    assert values(spanish, "keyterm") == []
    assert values(plain, "model") == ["nova-3"]
    assert values(plain, "language") == ["en"]
    # The options in force are recorded with the transcript, as for the stack's and the upload's.
    metadata, body = read(world, world.transcript_key("medical/ward-3/round.wav"))
    assert "model=nova-3-medical" in metadata["deepgram-options"]
    assert "keyterm=metformin&keyterm=tachycardia" in metadata["deepgram-options"]
    assert json.loads(body)["metadata"]["tags"] == ["local", "team-medical"]


def test_key_terms_over_deepgrams_bound_are_a_failure_record_and_reach_no_deepgram(
    world: LocalWorld, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.aws.s3().put_object(Bucket=world.input_bucket, Key="direct/long.wav", Body=sample_audio)
    terms = [f"interdisciplinary collaboration {n}" for n in range(60)]  # 60 terms, about 660 tokens

    result = start_function().invoke(
        {"bucket": world.input_bucket, "key": "direct/long.wav", "options": {"keyterm": terms}}
    )

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert (outcome["status"], outcome["reason"]) == ("failed", "keyterm-limit")
    assert world.emulator.requests == []
    _, text = read(world, world.failure_key("direct/long.wav"))
    record: dict[str, Any] = json.loads(text)
    assert record["reason"] == "keyterm-limit"
    assert record["class"] == "permanent"
    assert "Deepgram takes at most 500" in record["message"]
    assert record["keyterms"] == 60
    assert record["keyterm_tokens_estimate"] > 500


def test_a_bad_profiles_file_stops_the_cold_start_naming_the_setting(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes, tmp_path: Path
) -> None:
    terms = ", ".join(f'"term{n}"' for n in range(101))
    bad = profiles_file(tmp_path, f'[profiles."big/"]\nkeyterm = [{terms}]\n')

    result = start_function(DEEPGRAM_PROFILES_FILE=bad).invoke(uploads.put("big/a.wav", sample_audio))

    assert result.error is not None
    message = result.error["errorMessage"]
    assert "DEEPGRAM_PROFILES_FILE (profiles.toml): profile 'big/': 101 key terms" in message
    assert world.emulator.requests == []


def test_redaction_passes_through_and_every_format_carries_the_redacted_text(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, tmp_path: Path
) -> None:
    function = start_function(DEEPGRAM_PROFILES_FILE=profiles_file(tmp_path))

    result = function.invoke(uploads.put("support/call.wav", PRIVATE_CALL.read_bytes()))

    assert result.error is None, result.logs
    [outcome] = result.payload["objects"]
    assert outcome["status"] == "transcribed"
    [request] = world.emulator.requests
    assert values(request.query, "redact") == ["pii", "phi", "numbers"]
    assert values(request.query, "mip_opt_out") == ["true"]
    said = ("john", "four", "five", "six", "seven", "eight", "asthma")
    _, document = read(world, world.transcript_key("support/call.wav"))
    transcript = json.loads(document)["results"]["channels"][0]["alternatives"][0]["transcript"]
    assert {"[NAME_1]", "[NUMBER_1]", "[CONDITION_1]"} <= set(transcript.replace(".", " ").split())
    for extension in ("txt", "srt", "vtt"):
        _, text = read(world, format_key(world, "support/call.wav", extension))
        words = set(text.lower().replace(".", " ").split())
        assert {"[name_1]", "[number_1]", "[condition_1]"} <= words, (extension, text)
        assert not words & set(said), (extension, text)
        assert {"account", "number", "have"} <= words  # the rest of the call is still there


def test_pci_redaction_hides_the_account_number_in_every_format_and_nothing_else(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, tmp_path: Path
) -> None:
    function = start_function(DEEPGRAM_PROFILES_FILE=profiles_file(tmp_path))

    result = function.invoke(uploads.put("payments/call.wav", PRIVATE_CALL.read_bytes()))

    assert result.error is None, result.logs
    assert [o["status"] for o in result.payload["objects"]] == ["transcribed"]
    [request] = world.emulator.requests
    assert values(request.query, "redact") == ["pci"]
    digits = {"four", "five", "six", "seven", "eight"}
    _, document = read(world, world.transcript_key("payments/call.wav"))
    alternative = json.loads(document)["results"]["channels"][0]["alternatives"][0]
    assert "[NUMBER_1]" in alternative["transcript"].replace(".", " ").split()
    assert not digits & {w["word"] for w in alternative["words"]}  # the words the captions use, too
    for extension in ("txt", "srt", "vtt"):
        _, text = read(world, format_key(world, "payments/call.wav", extension))
        words = set(text.lower().replace(".", " ").split())
        assert "[number_1]" in words, (extension, text)
        assert not words & digits, (extension, text)
        # pci is card and account numbers only: the name and the condition are still said.
        assert {"john", "asthma", "account"} <= words, (extension, text)
        assert not {"[name_1]", "[condition_1]"} & words, (extension, text)


def test_the_unredacted_call_says_what_redaction_hides(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory
) -> None:
    """The control: without redact, the same recording's txt holds the name, the number and the condition."""
    result = start_function().invoke(uploads.put("calls/call.wav", PRIVATE_CALL.read_bytes()))

    assert result.error is None, result.logs
    _, text = read(world, format_key(world, "calls/call.wav", "txt"))
    assert {"john", "four", "eight", "asthma"} <= set(text.lower().replace(".", " ").split())


def test_mip_opt_out_per_upload_only_when_the_allow_list_lets_uploaders_set_it(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("calls/private.wav", sample_audio, Metadata={"dg-mip-opt-out": "true"})

    refused = start_function().invoke(event)
    allowed = start_function(UPLOAD_OPTIONS="language,mip_opt_out").invoke(event)

    assert [o["reason"] for o in refused.payload["objects"]] == ["option-refused"]
    assert [o["status"] for o in allowed.payload["objects"]] == ["transcribed"]
    [request] = world.emulator.requests
    assert values(request.query, "mip_opt_out") == ["true"]
