"""Per-upload options and the cost estimate, as pure functions: reading, validating, laying over the
stack's options, and what they cost."""

from __future__ import annotations

import math

import pytest
from aws_lambda_powertools.utilities.data_classes.s3_batch_operation_event import S3BatchOperationEvent

from transcriber.config import DeepgramOptions, EnvReader, Settings
from transcriber.domain.cost import (
    DEFAULT_ADDON_PRICES,
    Pricing,
    billable_minutes,
    estimate_transcript_usd,
    estimate_usd,
)
from transcriber.domain.events import batch_operation_objects, parse_event
from transcriber.domain.speakers import OUTPUT_OPTIONS
from transcriber.domain.upload_options import (
    DEFAULT_ALLOWED,
    MAX_METADATA_CHARS,
    UploadOptionPolicy,
    from_event,
    from_metadata,
    identity_part,
    in_force,
    metadata,
    overlay,
)
from transcriber.errors import ConfigurationError, PermanentError

ENV = {"OUTPUT_BUCKET": "out", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t", "INPUT_BUCKET": "in"}
POLICY = UploadOptionPolicy()


def refusal(pairs: list[tuple[str, str]], policy: UploadOptionPolicy = POLICY) -> str:
    with pytest.raises(PermanentError) as caught:
        policy.validate(pairs)
    assert caught.value.reason == "option-refused"
    return str(caught.value)


# -- reading ---------------------------------------------------------------------------------


def test_metadata_options_are_the_dg_names_with_dashes_as_underscores() -> None:
    pairs = from_metadata(
        {
            "dg-language": "es",
            "dg-diarize-model": "latest",
            "dg-keyterm": "Acme Widget, Zorblax",
            "owner": "me",  # not an option: ignored
        }
    )

    assert pairs == (
        ("diarize_model", "latest"),
        ("keyterm", "Acme Widget"),
        ("keyterm", "Zorblax"),
        ("language", "es"),
    )


def test_non_ascii_metadata_arrives_as_encoded_words_and_is_decoded() -> None:
    assert from_metadata({"dg-keyterm": "=?UTF-8?B?Q2Fmw6kgTcO8bmNoZW4=?="}) == (("keyterm", "Café München"),)
    assert from_metadata({"dg-keyterm": "=?bogus-charset?Q?x?="}) == (("keyterm", "=?bogus-charset?Q?x?="),)


def test_event_options_take_objects_lists_booleans_and_query_strings() -> None:
    assert from_event({"language": "es", "keyterm": ["a b", "c"], "diarize": True, "multichannel": 1}) == (
        ("language", "es"),
        ("keyterm", "a b"),
        ("keyterm", "c"),
        ("diarize", "true"),
        ("multichannel", "1"),
    )
    assert from_event("language=es&diarize-model=v2&redact=pci,ssn") == (
        ("language", "es"),
        ("diarize_model", "v2"),
        ("redact", "pci"),
        ("redact", "ssn"),
    )
    assert from_event("") == ()


@pytest.mark.parametrize("bad", [["language=es"], {"language": {"nested": 1}}, "a&&b=", 7])
def test_a_malformed_options_field_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="options"):
        from_event(bad)


# -- validating ------------------------------------------------------------------------------


def test_allowed_options_are_normalised_and_ordered() -> None:
    accepted = POLICY.validate([("multichannel", "TRUE"), ("language", "es"), ("keyterm", "Acme")])

    assert accepted == (("keyterm", "Acme"), ("language", "es"), ("multichannel", "true"))


@pytest.mark.parametrize("option", ["callback", "callback_method", "tag", "extra"])
def test_options_that_are_never_allowed_are_refused_even_when_listed(option: str) -> None:
    policy = UploadOptionPolicy(frozenset({option, "language"}))

    assert repr(option) in refusal([(option, "x")], policy)


def test_an_option_off_the_list_is_refused_by_name() -> None:
    message = refusal([("language", "es"), ("summarize", "v2")])

    assert "'summarize'" in message
    assert "allow-list" in message
    long = refusal([("x" * 300, "1")])
    assert "x" * 64 in long
    assert "x" * 65 not in long


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("language", "spanish please"),
        ("language", ""),
        ("model", "nova 3"),
        ("model", "../../etc"),
        ("diarize", "yes"),
        ("multichannel", "2"),
        ("detect_language", "maybe?"),
        ("keyterm", " padded"),
        ("keyterm", "x" * 101),
        ("keyterm", "bell\x07"),
        ("redact", "pci&callback=http://evil"),
    ],
)
def test_a_badly_formed_value_is_refused(option: str, value: str) -> None:
    assert repr(option) in refusal([(option, value)])


def test_a_single_valued_option_given_twice_and_too_many_key_terms_are_refused() -> None:
    assert "'language'" in refusal([("language", "es"), ("language", "de")])
    assert "'keyterm'" in refusal([("keyterm", f"term{i}") for i in range(101)])
    assert len(POLICY.validate([("keyterm", f"term{i}") for i in range(100)])) == 100


def test_the_allow_list_comes_from_upload_options() -> None:
    assert Settings.from_env(ENV).upload_options.allowed == frozenset(DEFAULT_ALLOWED) | OUTPUT_OPTIONS
    policy = UploadOptionPolicy.from_env(EnvReader({"UPLOAD_OPTIONS": "language, diarize-model"}))
    assert policy.allowed == {"language", "diarize_model"} | OUTPUT_OPTIONS
    off = UploadOptionPolicy.from_env(EnvReader({"UPLOAD_OPTIONS": "none"}))
    assert not off.enabled
    assert not off.reads_metadata(None)
    assert POLICY.reads_metadata(None)
    assert not POLICY.reads_metadata(())  # the event carried options: no HEAD for metadata
    with pytest.raises(ConfigurationError, match="callback"):
        UploadOptionPolicy.from_env(EnvReader({"UPLOAD_OPTIONS": "language,callback"}))


# -- laying over the stack's options -----------------------------------------------------------


def test_upload_options_replace_the_stacks_fields_and_extra_options() -> None:
    stack = DeepgramOptions(tag=("prod",), extra=(("keyterm", "stack-term"), ("numerals", "true")))
    upload = POLICY.validate([("language", "es"), ("diarize", "true"), ("keyterm", "Acme")])

    query = overlay(stack, upload).query()

    assert ("language", "es") in query
    assert ("diarize", "true") in query
    assert ("model", "nova-3") in query
    assert ("tag", "prod") in query
    assert ("numerals", "true") in query
    assert [v for k, v in query if k == "keyterm"] == ["Acme"]
    assert overlay(stack, ()) is stack


def test_options_in_force_identity_and_metadata() -> None:
    query = [("model", "nova-3"), ("keyterm", "a"), ("keyterm", "b c")]

    assert in_force(query) == {"model": "nova-3", "keyterm": "a,b c"}
    assert identity_part(()) == {}
    assert identity_part((("language", "es"),)) == {"options": "language=es"}
    assert metadata(query) == {"deepgram-options": "model=nova-3&keyterm=a&keyterm=b+c"}
    long = metadata([("keyterm", "ü" * 60)] * 10)
    assert list(long) == ["deepgram-options-sha256"]
    assert len(metadata([("keyterm", "x")] * 10)["deepgram-options"]) <= MAX_METADATA_CHARS
    assert all(value.isascii() for value in metadata([("keyterm", "Café")]).values())


# -- cost --------------------------------------------------------------------------------------


def test_the_estimate_is_minutes_times_base_price_plus_add_ons() -> None:
    pricing = Pricing.from_env(EnvReader({}))
    assert pricing == Pricing() == Settings.from_env(ENV).pricing

    plain = [("model", "nova-3"), ("diarize", "false")]
    assert estimate_usd(pricing, 600, 1, plain) == pytest.approx(10 * 0.0043)
    diarized = [("model", "nova-3"), ("diarize", "true"), ("keyterm", "a"), ("keyterm", "b")]
    assert estimate_usd(pricing, 600, 1, diarized) == pytest.approx(10 * (0.0043 + 0.002 + 0.0013))
    assert estimate_usd(pricing, 60, 1, [("diarize_model", "latest")]) == pytest.approx(0.0043 + 0.002)
    assert estimate_usd(pricing, 60, 1, [("language", "multi")]) == pytest.approx(0.0043 + 0.0009)
    assert estimate_usd(pricing, 60, 1, [("language", "es")]) == pytest.approx(0.0043)
    assert estimate_usd(pricing, None, None, plain) == 0.0


def test_multichannel_audio_is_billed_per_channel() -> None:
    assert billable_minutes(120, 2, {"multichannel": "true"}) == 4
    assert billable_minutes(120, 2, {"multichannel": "false"}) == 2
    document = {"metadata": {"duration": 60.0, "channels": 2}}
    assert estimate_transcript_usd(Pricing(0.01, ()), document, [("multichannel", "true")]) == 0.02
    assert estimate_transcript_usd(Pricing(0.01, ()), {"metadata": "odd"}, []) == 0.0


def test_prices_are_read_and_checked() -> None:
    pricing = Pricing.from_env(
        EnvReader({"DEEPGRAM_PRICE_PER_MINUTE_USD": "0.01", "DEEPGRAM_ADDON_PRICES_USD": "redact:pci=0.5"})
    )
    assert pricing == Pricing(0.01, (("redact:pci", 0.5),))
    assert pricing.per_minute_for({"redact": "ssn,pci"}) == pytest.approx(0.51)
    assert pricing.per_minute_for({"redact": "ssn"}) == pytest.approx(0.01)
    assert "diarize=0.002" in DEFAULT_ADDON_PRICES
    for variable, value in [
        ("DEEPGRAM_PRICE_PER_MINUTE_USD", "-1"),
        ("DEEPGRAM_PRICE_PER_MINUTE_USD", "nan"),
        ("DEEPGRAM_PRICE_PER_MINUTE_USD", "cheap"),
        ("DEEPGRAM_ADDON_PRICES_USD", "diarize"),
        ("DEEPGRAM_ADDON_PRICES_USD", "=0.1"),
    ]:
        with pytest.raises(ConfigurationError, match=variable):
            Pricing.from_env(EnvReader({variable: value}))
    assert not math.isnan(Pricing().per_minute)


# -- the events that carry options ------------------------------------------------------------


def test_direct_payloads_and_batch_jobs_carry_their_options() -> None:
    [direct] = parse_event({"bucket": "b1b", "key": "k.wav", "options": {"language": "es"}})
    assert direct.options == (("language", "es"),)
    [plain] = parse_event({"bucket": "b1b", "key": "k.wav"})
    assert plain.options is None  # not given: the metadata decides
    task = {"taskId": "t", "s3Bucket": "b1b", "s3Key": "k.wav", "s3VersionId": None}
    job = {"id": "j", "userArguments": {"options": "language=es&keyterm=a"}}
    batch = {"invocationSchemaVersion": "2.0", "invocationId": "i", "job": job, "tasks": [task]}
    [(_, obj)] = batch_operation_objects(S3BatchOperationEvent(batch))
    assert obj.options == (("language", "es"), ("keyterm", "a"))
    no_job = {"invocationSchemaVersion": "2.0", "invocationId": "i", "tasks": [task]}
    [(_, obj)] = batch_operation_objects(S3BatchOperationEvent(no_job))
    assert obj.options is None


def test_a_malformed_options_field_makes_the_event_unrecognised() -> None:
    with pytest.raises(PermanentError) as caught:
        parse_event({"bucket": "b1b", "key": "k.wav", "options": ["language=es"]})
    assert caught.value.reason == "unrecognised-event"
    assert "options" in str(caught.value)
