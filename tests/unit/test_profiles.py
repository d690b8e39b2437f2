"""Profiles per folder and Deepgram's key-term bounds, as pure functions: which profile a key takes,
how the stack's, the profile's and the upload's options combine, and what a bad file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from transcriber.config import UNSUPPORTED_OPTIONS, DeepgramOptions, EnvReader, Settings
from transcriber.domain import keyterms
from transcriber.domain.cost import Pricing, estimate_usd
from transcriber.domain.keyterms import KeytermCount, estimated_tokens
from transcriber.domain.profiles import PROFILES_VARIABLE, SHIPPED_FILE, Profiles
from transcriber.domain.upload_options import UploadOptionPolicy, overlay
from transcriber.errors import ConfigurationError, PermanentError

ENV = {"OUTPUT_BUCKET": "out", "DEEPGRAM_SECRET_ID": "s", "IDEMPOTENCY_TABLE": "t", "INPUT_BUCKET": "in"}
STACK = DeepgramOptions(tag=("dev",))
TEAMS = """
[profiles."medical/"]
model = "nova-3-medical"
keyterm = ["metformin", "tachycardia"]
redact = ["phi"]
tag = ["team-medical"]

[profiles."medical/cardio/"]
keyterm = ["echocardiogram"]
diarize = true

[profiles."es/"]
language = "es"
"""


def load(tmp_path: Path, text: str, stack: DeepgramOptions = STACK) -> Profiles:
    path = tmp_path / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return Profiles.load(path, stack, UNSUPPORTED_OPTIONS)


def values(query: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in query if key == name]


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_the_longest_prefix_wins_and_other_keys_keep_the_stacks_options(tmp_path: Path) -> None:
    profiles = load(tmp_path, TEAMS)

    assert profiles.for_key("medical/cardio/echo.wav").prefix == "medical/cardio/"  # type: ignore[union-attr]
    assert profiles.for_key("medical/ward-3/round.wav").prefix == "medical/"  # type: ignore[union-attr]
    assert profiles.for_key("es/llamada.wav").prefix == "es/"  # type: ignore[union-attr]
    assert profiles.for_key("espresso/a.wav") is None  # "es/" is a folder, not "es"
    assert profiles.options_for("calls/a.wav", STACK) == STACK


def test_a_profile_replaces_the_stacks_options_and_adds_its_tags(tmp_path: Path) -> None:
    query = load(tmp_path, TEAMS).options_for("medical/ward-3/round.wav", STACK).query()

    assert values(query, "model") == ["nova-3-medical"]
    assert values(query, "language") == ["en"]  # not in the profile: the stack's
    assert values(query, "keyterm") == ["metformin", "tachycardia"]
    assert values(query, "redact") == ["phi"]
    assert values(query, "tag") == ["dev", "team-medical"]  # usage splits per stack and per team


def test_one_profile_applies_never_a_blend_of_nested_ones(tmp_path: Path) -> None:
    query = load(tmp_path, TEAMS).options_for("medical/cardio/echo.wav", STACK).query()

    assert values(query, "model") == ["nova-3"]  # the nested profile does not inherit medical/
    assert values(query, "keyterm") == ["echocardiogram"]
    assert values(query, "diarize") == ["true"]


def test_precedence_stack_then_profile_then_upload(tmp_path: Path) -> None:
    stack = DeepgramOptions(language="en", tag=("dev",), extra=(("keyterm", "stack-term"),))
    folder = load(tmp_path, TEAMS, stack).options_for("medical/a.wav", stack)
    upload = UploadOptionPolicy().validate([("keyterm", "Dr. Okafor"), ("language", "fr")])

    query = overlay(folder, upload).query()

    assert values(query, "model") == ["nova-3-medical"]  # profile over stack
    assert values(query, "language") == ["fr"]  # upload over stack
    assert values(query, "keyterm") == ["Dr. Okafor"]  # upload's list replaces the profile's
    assert values(query, "redact") == ["phi"]  # the profile's, the upload said nothing


def test_the_stacks_keyterms_are_replaced_by_a_profiles(tmp_path: Path) -> None:
    stack = DeepgramOptions(tag=("dev",), extra=(("keyterm", "acme"), ("keyterm", "widget")))
    query = load(tmp_path, TEAMS, stack).options_for("medical/a.wav", stack).query()
    assert values(query, "keyterm") == ["metformin", "tachycardia"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[profiles."a/"]\ncallback = "https://example.com"', "'a/' sets 'callback'"),
        ('[profiles."a/"]\nlanguage = "english please"', "language = 'english please' is not a valid value"),
        ('[profiles."a/"]\ndiarize = "yes"', "diarize = 'yes' is not a valid value"),
        ('[profiles."a/"]\nmodel = "Nova 3"', "model = 'Nova 3'"),
        ('[profiles."a/"]\nkeyterm = []', "keyterm is an empty list"),
        ('[profiles."a/"]\nkeyterm = [{ term = "x" }]', "keyterm = "),
        ('[profiles."a/"]', "must be a table of Deepgram options"),
        ('[profiles.""]\nlanguage = "es"', "a prefix is the start of an object key"),
        ('[profiles."/abs/"]\nlanguage = "es"', "a prefix is the start of an object key"),
        ('[profile."a/"]\nlanguage = "es"', "unknown top-level entries profile"),
        ('[profiles."a/"\nlanguage = "es"', "is not valid TOML"),
        ('[profiles."a/"]\nlanguage = "es"\n[profiles."a/"]\nlanguage = "de"', "is not valid TOML"),
    ],
)
def test_a_bad_profile_file_names_the_setting_the_profile_and_the_option(
    tmp_path: Path, text: str, named: str
) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(f"invalid-configuration: {PROFILES_VARIABLE} (profiles.toml)")
    assert named in message


def test_a_profile_over_deepgrams_keyterm_bounds_fails_at_cold_start(tmp_path: Path) -> None:
    terms = ", ".join(f'"term{n}"' for n in range(101))
    assert "101 key terms; Deepgram takes at most 100" in refused(
        tmp_path, f'[profiles."big/"]\nkeyterm = [{terms}]'
    )
    long_terms = ", ".join(f'"{"pneumonoultramicroscopic " * 3}{n}"' for n in range(30))
    message = refused(tmp_path, f'[profiles."long/"]\nkeyterm = [{long_terms}]')
    assert "profile 'long/': key terms of about" in message
    assert "Deepgram takes at most 500" in message


def test_a_cold_start_reads_the_file_the_variable_names_and_refuses_one_that_is_missing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "teams.toml"
    path.write_text(TEAMS, encoding="utf-8")
    settings = Settings.from_env({**ENV, PROFILES_VARIABLE: str(path)})
    assert [p.prefix for p in settings.profiles.profiles] == ["medical/cardio/", "medical/", "es/"]

    with pytest.raises(ConfigurationError, match=f"{PROFILES_VARIABLE} \\(absent.toml\\) can't be read"):
        Settings.from_env({**ENV, PROFILES_VARIABLE: str(tmp_path / "absent.toml")})


def test_the_shipped_file_parses_and_holds_no_profile_so_a_default_stack_is_unchanged() -> None:
    assert SHIPPED_FILE.is_file()
    settings = Settings.from_env(ENV)
    assert settings.profiles.source == str(SHIPPED_FILE)
    assert settings.profiles.profiles == ()


def test_the_stacks_own_options_over_the_bounds_fail_at_cold_start() -> None:
    extra = "&".join(f"keyterm=t{n}" for n in range(101))
    with pytest.raises(ConfigurationError, match="DEEPGRAM_OPTIONS: 101 key terms"):
        Settings.from_env({**ENV, "DEEPGRAM_OPTIONS": f"model=nova-3&{extra}"})


def test_key_term_tokens_are_estimated_from_above() -> None:
    assert estimated_tokens("acme") == 1
    assert estimated_tokens("Dr. Okafor") == 4  # "Dr", ".", and two for the six letters of "Okafor"
    assert estimated_tokens("pneumonoultramicroscopic") == 6
    assert KeytermCount.of([("keyterm", "a b"), ("model", "nova-3"), ("keyterm", "c")]) == KeytermCount(2, 3)


def test_at_the_bounds_passes_and_one_over_is_a_permanent_keyterm_limit() -> None:
    keyterms.refuse_over_limit([("keyterm", f"t{n}") for n in range(100)])
    keyterms.refuse_over_limit([("keyterm", "abcd " * 5)] * 100)  # 500 tokens exactly

    with pytest.raises(PermanentError) as caught:
        keyterms.refuse_over_limit([("keyterm", "abcd " * 5)] * 99 + [("keyterm", "abcd " * 6)])
    assert caught.value.reason == "keyterm-limit"
    assert caught.value.details.extra == {"keyterms": 100, "keyterm_tokens_estimate": 501}
    with pytest.raises(PermanentError, match="101 key terms"):
        keyterms.refuse_over_limit([("keyterm", f"t{n}") for n in range(101)])


def test_the_cost_estimate_counts_a_mip_opt_out_price_only_when_it_is_on() -> None:
    """docs/profiles-and-regions.md: the opt-out's extra price goes in DeepgramAddOnPricesUsd."""
    pricing = Pricing.from_env(EnvReader({"DEEPGRAM_ADDON_PRICES_USD": "mip_opt_out=0.001"}))
    on = estimate_usd(pricing, 60.0, 1, [("model", "nova-3"), ("mip_opt_out", "true")])
    off = estimate_usd(pricing, 60.0, 1, [("model", "nova-3"), ("mip_opt_out", "false")])
    assert (on, off) == (0.0053, 0.0043)
