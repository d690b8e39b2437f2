"""Deepgram's option rules the emulator enforces: keywords on Nova-3, language detection, callback URLs."""

from __future__ import annotations

import pytest
import requests

from localworld.deepgram import DeepgramEmulator
from localworld.deepgram.options import InvalidOption, parse_options

pytestmark = pytest.mark.integration

SPOKEN = "the quick brown fox jumps over the lazy dog"


def listen(emu: DeepgramEmulator, body: bytes, query: str) -> requests.Response:
    return requests.post(
        f"{emu.url}/v1/listen?{query}",
        data=body,
        headers={"Authorization": f"Token {next(iter(emu.api_keys))}", "Content-Type": "audio/wav"},
        verify=str(emu.ca_bundle),
        timeout=60,
    )


@pytest.mark.parametrize("model", ["nova-3", "nova-3-general", "nova-3-medical"])
def test_keywords_with_nova_3_is_refused_as_deepgram_does(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, model: str
) -> None:
    response = listen(deepgram_emulator, sample_wav, f"model={model}&keywords=fox:2")

    assert response.status_code == 400
    assert response.json() == {
        "err_code": "INVALID_QUERY_PARAMETER",
        "err_msg": "Keywords are not supported for Nova-3. Please use `keyterm` instead.",
        "request_id": deepgram_emulator.requests[-1].request_id,
    }


@pytest.mark.parametrize(
    "query", ["model=nova-2&keywords=fox:2&keywords=dog", "model=nova-3&keyterm=brown fox"]
)
def test_keywords_elsewhere_and_keyterm_on_nova_3_are_fine(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, query: str
) -> None:
    response = listen(deepgram_emulator, sample_wav, query)

    assert response.status_code == 200, response.text
    assert response.json()["results"]["channels"][0]["alternatives"][0]["transcript"] == SPOKEN


def test_detect_language_reports_what_was_heard_not_what_was_asked(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    # The request says French; what pocketsphinx recognises is English.
    body = listen(deepgram_emulator, sample_wav, "model=nova-3&language=fr&detect_language=true").json()

    (channel,) = body["results"]["channels"]
    assert channel["detected_language"] == "en"
    assert 0.5 <= channel["language_confidence"] <= 1.0
    assert channel["alternatives"][0]["transcript"] == SPOKEN


def test_detect_language_per_channel_and_among_candidates(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes
) -> None:
    plain = listen(deepgram_emulator, sample_wav, "model=nova-3").json()
    among = listen(deepgram_emulator, sample_wav, "model=nova-3&detect_language=de&detect_language=en").json()
    others = listen(
        deepgram_emulator, sample_wav, "model=nova-3&detect_language=de&detect_language=fr"
    ).json()

    assert "detected_language" not in plain["results"]["channels"][0]
    assert "language_confidence" not in plain["results"]["channels"][0]
    assert among["results"]["channels"][0]["detected_language"] == "en"
    assert others["results"]["channels"][0]["detected_language"] == "de"
    assert others["results"]["channels"][0]["language_confidence"] < 0.1


@pytest.mark.parametrize("value", ["True", "en_US", "english"])
def test_detect_language_values_are_checked(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, value: str
) -> None:
    response = listen(deepgram_emulator, sample_wav, f"model=nova-3&detect_language={value}")

    assert response.status_code == 400
    assert response.json()["err_code"] == "INVALID_QUERY_PARAMETER"


@pytest.mark.parametrize(
    ("callback", "reason"),
    [
        ("not-a-url", "relative URL without a base"),
        ("/hooks/deepgram", "relative URL without a base"),
        ("ftp://127.0.0.1/hook", "unsupported URL scheme `ftp`"),
        ("http://", "empty host"),
        ("http://127.0.0.1:99999/hook", "invalid port number"),
        ("http://127.0.0.1:port/hook", "invalid port number"),
        ("http://127.0.0.1/a hook", "invalid URL"),
        ("", "invalid URL"),
    ],
)
def test_malformed_callback_is_refused_before_any_work(
    deepgram_emulator: DeepgramEmulator, sample_wav: bytes, callback: str, reason: str
) -> None:
    response = listen(
        deepgram_emulator, sample_wav, "model=nova-3&" + requests.compat.urlencode({"callback": callback})
    )

    assert response.status_code == 400
    error = response.json()
    assert error["err_code"] == "INVALID_QUERY_PARAMETER"
    assert reason in error["err_msg"]
    assert "request_id" not in error or error["request_id"] == deepgram_emulator.requests[-1].request_id
    assert deepgram_emulator.callbacks == []
    assert deepgram_emulator.counters.get("status_200", 0) == 0


def test_language_hint_is_a_repeatable_option_and_near_misses_are_refused() -> None:
    """Nova-3 multilingual takes ``language_hint`` (repeated), as Deepgram's 2026 changelog says."""
    options = parse_options([("language", "multi"), ("language_hint", "es"), ("language_hint", "en")])
    assert [v for k, v in options.pairs if k == "language_hint"] == ["es", "en"]
    with pytest.raises(InvalidOption, match="unknown field `language_hints`"):
        parse_options([("language_hints", "es")])
