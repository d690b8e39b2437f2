"""``redact=`` in the emulator: what each value hides, and that the whole answer (words, transcript,
utterances, paragraphs) is built from the redacted words, as Deepgram's answer is."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from localworld.deepgram import DeepgramEmulator
from localworld.deepgram.asr import Word
from localworld.deepgram.redaction import redact_words

PRIVATE_CALL = Path(__file__).resolve().parents[1] / "samples" / "private-call.wav"
SAID = "my name is john and my account number is four five six seven eight and i have asthma"


def heard(text: str) -> tuple[Word, ...]:
    return tuple(Word(w, n * 0.5, n * 0.5 + 0.4, 0.9) for n, w in enumerate(text.split()))


def spoken(words: tuple[Word, ...]) -> str:
    return " ".join(word.word for word in words)


@pytest.mark.parametrize(
    ("redact", "expected"),
    [
        ([], SAID),
        (["false"], SAID),
        (["numbers"], "my name is john and my account number is [NUMBER_1] and i have asthma"),
        (["true"], "my name is john and my account number is [NUMBER_1] and i have asthma"),
        (["pci"], "my name is john and my account number is [NUMBER_1] and i have asthma"),
        (["pii"], "my name is [NAME_1] and my account number is [NUMBER_1] and i have asthma"),
        (
            ["phi"],
            "my name is john and my account number is four five six seven eight and i have [CONDITION_1]",
        ),
        (["pii", "phi"], "my name is [NAME_1] and my account number is [NUMBER_1] and i have [CONDITION_1]"),
    ],
)
def test_each_redact_value_hides_its_kind(redact: list[str], expected: str) -> None:
    assert spoken(redact_words(heard(SAID), redact)) == expected


def test_short_numbers_stay_unless_aggressive_and_a_placeholder_spans_its_run() -> None:
    words = heard("room two and then one two three four")
    assert spoken(redact_words(words, ["numbers"])) == "room two and then [NUMBER_1]"
    assert spoken(redact_words(words, ["aggressive_numbers"])) == "room [NUMBER_1] and then [NUMBER_2]"
    placeholder = redact_words(words, ["numbers"])[-1]
    assert (placeholder.start, placeholder.end) == (words[4].start, words[-1].end)


@pytest.mark.integration
def test_the_emulators_answer_is_redacted_everywhere(deepgram_emulator: DeepgramEmulator) -> None:
    response = requests.post(
        f"{deepgram_emulator.url}/v1/listen?model=nova-3&smart_format=true&utterances=true&paragraphs=true"
        "&redact=pii&redact=numbers",
        data=PRIVATE_CALL.read_bytes(),
        headers={
            "Authorization": f"Token {next(iter(deepgram_emulator.api_keys))}",
            "Content-Type": "audio/wav",
        },
        verify=str(deepgram_emulator.ca_bundle),
        timeout=60,
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    alternative = results["channels"][0]["alternatives"][0]
    texts = [
        alternative["transcript"],
        alternative["paragraphs"]["transcript"],
        " ".join(u["transcript"] for u in results["utterances"]),
        " ".join(w["punctuated_word"] for w in alternative["words"]),
    ]
    for text in texts:
        assert {"[NAME_1]", "[NUMBER_1]"} <= set(text.replace(".", " ").split()), text
        assert not {"john", "four", "eight"} & set(text.lower().replace(".", " ").split()), text
