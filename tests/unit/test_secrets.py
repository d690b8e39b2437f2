import pytest

from transcriber.errors import ConfigurationError
from transcriber.services.secrets import parse_secret

KEY = "dg_0123456789abcdef"


@pytest.mark.parametrize(
    "raw",
    [
        KEY,
        f"  {KEY}\n",
        f'{{"api_key": "{KEY}"}}',
        f'{{"deepgram_api_key": "{KEY}", "note": "x"}}',
        KEY.encode(),
    ],
)
def test_plain_and_json_secrets_give_the_key(raw: str | bytes) -> None:
    assert parse_secret("deepgram/dev", raw) == KEY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (None, "is empty"),
        (b"\xff\xfe\x00", "is binary"),
        ('{"api_key": ', "does not parse"),
        ('{"key": "dg_secretvalue"}', "without a non-empty api_key or deepgram_api_key"),
        ('{"api_key": ""}', "without a non-empty"),
        ("two words", "does not hold a valid API key"),
    ],
)
def test_bad_secrets_are_named_but_never_echoed(raw: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_secret("deepgram/dev", raw)

    assert "deepgram/dev" in str(caught.value)
    assert "dg_secretvalue" not in str(caught.value)
    if isinstance(raw, str) and raw.strip():
        assert raw not in str(caught.value)
