from dataclasses import fields

import pytest

from transcriber.config import DeepgramOptions, Settings
from transcriber.errors import ConfigurationError

BASE = {
    "OUTPUT_BUCKET": "out",
    "INPUT_BUCKET": "in",
    "DEEPGRAM_SECRET_ID": "deepgram/dev/api-key",
    "IDEMPOTENCY_TABLE": "idem",
}


def test_defaults_send_an_explicit_model_and_the_environment_as_tag() -> None:
    settings = Settings.from_env({**BASE, "ENVIRONMENT_NAME": "staging"})

    assert settings.deepgram_api_url == "https://api.deepgram.com"
    query = settings.deepgram.query()
    assert query[:2] == [("model", "nova-3"), ("language", "en")]
    booleans = {f.name: f.default for f in fields(DeepgramOptions) if isinstance(f.default, bool)}
    assert {name: value for name, value in query if name in booleans} == {
        name: "true" if default else "false" for name, default in booleans.items()
    }
    assert {"smart_format": "true", "punctuate": "true", "diarize": "false"}.items() <= dict(query).items()
    assert [value for name, value in query if name == "tag"] == ["staging"]


def test_options_encode_lowercase_booleans_repeated_tags_and_extra_options() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "DEEPGRAM_MODEL": "nova-2-phonecall",
            "DEEPGRAM_DIARIZE": "TRUE",
            "DEEPGRAM_SMART_FORMAT": "false",
            "DEEPGRAM_TAG": "prod, team-a",
            "DEEPGRAM_EXTRA_OPTIONS": "keyterm=acme&keyterm=widget&redact=pii",
        }
    )

    query = settings.deepgram.query()
    assert ("model", "nova-2-phonecall") in query
    assert ("diarize", "true") in query
    assert ("smart_format", "false") in query
    assert [v for k, v in query if k == "tag"] == ["prod", "team-a"]
    assert query[-3:] == [("keyterm", "acme"), ("keyterm", "widget"), ("redact", "pii")]


@pytest.mark.parametrize("missing", ["OUTPUT_BUCKET", "DEEPGRAM_SECRET_ID", "IDEMPOTENCY_TABLE"])
def test_a_missing_variable_is_named(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}

    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize("url", ["http://api.deepgram.com", "ftp://x", "api.deepgram.com", "https://"])
def test_a_non_https_api_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="DEEPGRAM_API_URL must be an https:// URL"):
        Settings.from_env({**BASE, "DEEPGRAM_API_URL": url})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEEPGRAM_PUNCTUATE", "maybe", "DEEPGRAM_PUNCTUATE must be true or false"),
        ("PRESIGN_EXPIRY_SECONDS", "soon", "PRESIGN_EXPIRY_SECONDS must be an integer"),
        ("PRESIGN_EXPIRY_SECONDS", "5", "PRESIGN_EXPIRY_SECONDS must be at least 60"),
        ("DEEPGRAM_EXTRA_OPTIONS", "model=base", "use its own variable"),
        ("DEEPGRAM_EXTRA_OPTIONS", "callback=https://x", "does not support"),
        ("DEEPGRAM_EXTRA_OPTIONS", "no-equals-sign", "must be a query string"),
    ],
)
def test_invalid_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({**BASE, name: value})


def test_extensions_are_normalised() -> None:
    settings = Settings.from_env({**BASE, "ALLOWED_EXTENSIONS": ".WAV, mp3"})

    assert settings.allowed_extensions == frozenset({"wav", "mp3"})


def test_an_output_bucket_equal_to_the_input_bucket_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="INPUT_BUCKET and OUTPUT_BUCKET must differ"):
        Settings.from_env({**BASE, "INPUT_BUCKET": "out"})

    assert Settings.from_env({**BASE, "INPUT_BUCKET": "in"}).input_bucket == "in"


def test_the_allowed_buckets_are_the_input_bucket_and_allowed_buckets() -> None:
    settings = Settings.from_env({**BASE, "ALLOWED_BUCKETS": "archive, backfill-2019"})

    assert settings.allowed_buckets == frozenset({"in", "archive", "backfill-2019"})
    assert Settings.from_env(BASE).allowed_buckets == frozenset({"in"})


def test_a_function_that_knows_no_bucket_or_would_loop_is_refused() -> None:
    without_input = {k: v for k, v in BASE.items() if k != "INPUT_BUCKET"}
    with pytest.raises(ConfigurationError, match="INPUT_BUCKET"):
        Settings.from_env(without_input)
    assert Settings.from_env({**without_input, "ALLOWED_BUCKETS": "a"}).allowed_buckets == {"a"}
    with pytest.raises(ConfigurationError, match="ALLOWED_BUCKETS must not name OUTPUT_BUCKET"):
        Settings.from_env({**BASE, "ALLOWED_BUCKETS": "out"})
