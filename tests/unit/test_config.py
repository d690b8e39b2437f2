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
        ("DEEPGRAM_EXTRA_OPTIONS", "model=base", "use DEEPGRAM_OPTIONS or its own variable .DEEPGRAM_MODEL."),
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


# --- DEEPGRAM_OPTIONS: the template's one options string (its DeepgramOptions parameter)

TEMPLATE_DEFAULT_OPTIONS = "model=nova-3&language=en&smart_format=true&punctuate=true"


def test_the_template_default_options_string_sends_what_the_field_defaults_send() -> None:
    """The string the template passes by default changes nothing: same query, same order."""
    with_string = Settings.from_env({**BASE, "DEEPGRAM_OPTIONS": TEMPLATE_DEFAULT_OPTIONS})

    assert with_string.deepgram == Settings.from_env(BASE).deepgram


def test_the_options_string_fills_the_typed_fields_and_keeps_other_options_in_order() -> None:
    options = Settings.from_env(
        {
            **BASE,
            "ENVIRONMENT_NAME": "prod",
            "DEEPGRAM_OPTIONS": "model=nova-2&diarize=TRUE&punctuate=0&keyterm=acme&tag=a&redact=pii&tag=b",
        }
    ).deepgram

    assert (options.model, options.diarize, options.punctuate, options.language) == (
        "nova-2",
        True,
        False,
        "en",
    )
    assert options.tag == ("a", "b")
    assert options.extra == (("keyterm", "acme"), ("redact", "pii"))
    query = options.query()
    assert ("diarize", "true") in query
    assert ("punctuate", "false") in query
    assert query[-2:] == [("keyterm", "acme"), ("redact", "pii")]


def test_a_dedicated_variable_overrides_its_option_in_the_string_and_extra_options_add() -> None:
    options = Settings.from_env(
        {
            **BASE,
            "DEEPGRAM_OPTIONS": "model=nova-3&diarize=true&tag=team&keyterm=acme",
            "DEEPGRAM_MODEL": "nova-2",
            "DEEPGRAM_DIARIZE": "false",
            "DEEPGRAM_TAG": "batch",
            "DEEPGRAM_EXTRA_OPTIONS": "numerals=true",
            # Declared but empty, as the template declares them: the string decides.
            "DEEPGRAM_LANGUAGE": "",
        }
    ).deepgram

    assert (options.model, options.diarize, options.tag, options.language) == (
        "nova-2",
        False,
        ("batch",),
        "en",
    )
    assert options.extra == (("keyterm", "acme"), ("numerals", "true"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("diarize=maybe", "DEEPGRAM_OPTIONS's diarize must be true or false"),
        ("model=nova-3&model=nova-2", "DEEPGRAM_OPTIONS sets 'model' more than once"),
        ("callback=https://example.com/hook", "does not support"),
        ("model", "must be a query string"),
    ],
)
def test_a_bad_options_string_is_refused_with_the_variable_named(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({**BASE, "DEEPGRAM_OPTIONS": value})
