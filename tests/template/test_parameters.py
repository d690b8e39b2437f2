"""The questions a deployment asks: at most a dozen parameters, each with a safe default, grouped for
the console; everything else in one Settings block that the local world resolves like CloudFormation.

`sam deploy --guided` prompts for every parameter of the template (samcli's guided_context asks for
each one ``get_template_parameters`` returns), so the count of parameters is the count of questions.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from samstack import TemplateError
from tests.template.parsed import load_template, resolve_stack, translate
from transcriber.config import Settings

pytestmark = pytest.mark.template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
MAX_QUESTIONS = 12
FUNCTIONS = ("TranscribeFunction", "RetryFunction")


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translate(TEMPLATE)


def test_every_parameter_of_the_translated_template_has_a_default(translated: dict[str, Any]) -> None:
    without_default = [name for name, spec in translated["Parameters"].items() if "Default" not in spec]
    assert without_default == []


def test_sam_deploy_guided_asks_at_most_a_dozen_questions(translated: dict[str, Any]) -> None:
    """Counted with the function samcli's guided deploy calls, on the source and the translated template."""
    from samcli.commands._utils.template import get_template_parameters

    prompts = get_template_parameters(template_file=str(TEMPLATE))
    assert len(prompts) <= MAX_QUESTIONS, sorted(prompts)
    assert set(prompts) == set(translated["Parameters"])
    print(f"sam deploy --guided prompts: {len(prompts)} ({', '.join(prompts)})")


def test_the_console_groups_and_labels_every_parameter(translated: dict[str, Any]) -> None:
    interface = load_template(TEMPLATE)["Metadata"]["AWS::CloudFormation::Interface"]
    grouped = [name for group in interface["ParameterGroups"] for name in group["Parameters"]]
    assert sorted(grouped) == sorted(translated["Parameters"]), "each parameter in exactly one group"
    assert all(group["Label"]["default"] for group in interface["ParameterGroups"])
    assert set(interface["ParameterLabels"]) == set(translated["Parameters"])


def test_accepting_every_default_deploys_a_stack_that_reads_the_environments_secret() -> None:
    """No parameter needs a value: the secret id follows the environment (where `make secret` puts it)."""
    for environment, expected in (("dev", "deepgram/dev/api-key"), ("prod", "deepgram/prod/api-key")):
        stack = resolve_stack(TEMPLATE, {"EnvironmentName": environment})
        for function_id in FUNCTIONS:
            env = stack.resource(function_id).properties["Environment"]["Variables"]
            assert env["DEEPGRAM_SECRET_ID"] == expected
        assert stack.outputs["DeepgramSecretId"] == expected
        grant = next(
            s
            for s in stack.resource("PerObjectWorkPolicy").properties["PolicyDocument"]["Statement"]
            if s["Sid"] == "ReadDeepgramApiKey"
        )
        assert grant["Resource"] == f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{expected}-??????"


def _samconfig_overrides() -> dict[str, dict[str, str]]:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    return {
        env: dict(
            item.split("=", 1)
            for item in shlex.split(sections["deploy"]["parameters"]["parameter_overrides"])
        )
        for env, sections in config.items()
        if isinstance(sections, dict) and "deploy" in sections
    }


def test_samconfig_environments_name_only_parameters_that_exist() -> None:
    environments = _samconfig_overrides()
    assert environments.keys() >= {"default", "prod"}
    for name, overrides in environments.items():
        stack = resolve_stack(TEMPLATE, overrides)  # refuses undeclared or invalid parameters
        assert stack.parameters["EnvironmentName"] == ("dev" if name == "default" else name)


def test_samconfig_comments_name_parameters_that_exist() -> None:
    """The commented Key=Value examples in samconfig.toml go into parameter_overrides: each Key must be
    a parameter of the template (a setting there would fail the deploy)."""
    text = (REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8")
    comments = [line.lstrip("# ") for line in text.splitlines() if line.startswith("#")]
    named = {
        word.split("=", 1)[0].strip("[(")
        for line in comments
        for word in line.split()
        if re.match(r"\[?[A-Z][a-z][A-Za-z]*=", word)
    }
    assert len(named) >= 4, "the prod comments show parameter examples"
    assert named <= set(translate(TEMPLATE)["Parameters"]), named


def test_a_setting_edit_is_checked_like_a_template_edit() -> None:
    stack = resolve_stack(TEMPLATE, {"Settings.Functions.FunctionTimeout": "30"})
    assert stack.resource("TranscribeFunction").properties["Timeout"] == "30"
    with pytest.raises(TemplateError, match="no such entry"):
        resolve_stack(TEMPLATE, {"Settings.Functions.FunctionTimout": "30"})
    with pytest.raises(TemplateError, match="undeclared parameters: FunctionTimeout"):
        resolve_stack(TEMPLATE, {"FunctionTimeout": "30"})


# What the functions ran with before the settings moved out of the parameters (61 of them): the stack
# must give them the same, now through Fn::FindInMap. samstack is the local world's reading of the
# template (localworld.template builds each function's runtime from these resolved properties).
BEFORE: dict[str, dict[str, int | None]] = {
    "TranscribeFunction": {"timeout": 900, "memory_mb": 256, "reserved_concurrency": 45},
    "RetryFunction": {"timeout": 900, "memory_mb": 256, "reserved_concurrency": None},
}
DEFAULT_QUERY = [
    ("model", "nova-3"),
    ("language", "en"),
    ("smart_format", "true"),
    ("punctuate", "true"),
    ("diarize", "false"),
    ("utterances", "false"),
    ("paragraphs", "false"),
    ("tag", "dev"),
]


def test_the_functions_run_as_before_in_the_resolved_stack() -> None:
    stack = resolve_stack(TEMPLATE, {"DeepgramSecretId": "deepgram/dev/api-key"})
    for function_id, expected in BEFORE.items():
        props = stack.resource(function_id).properties
        assert int(props["Timeout"]) == expected["timeout"], function_id
        assert int(props["MemorySize"]) == expected["memory_mb"], function_id
        reserved = props.get("ReservedConcurrentExecutions")
        assert (None if reserved is None else int(reserved)) == expected["reserved_concurrency"], function_id
        env = {name: str(value) for name, value in props["Environment"]["Variables"].items()}
        settings = Settings.from_env(env)
        assert settings.deepgram.query() == DEFAULT_QUERY
        assert (settings.secret_max_age_s, settings.presign_expiry_s, settings.deepgram_max_attempts) == (
            300,
            900,  # presigned URLs: no longer than the longest invocation (docs/security.md)
            4,
        )
        assert settings.output_formats == ("json", "txt", "srt", "vtt")
        assert settings.capacity is not None
        assert (settings.capacity.size, settings.capacity.ai_ceiling) == (45, 10)
    (config,) = stack.of_type("AWS::Lambda::EventInvokeConfig")
    retries = {key: int(value) for key, value in config.properties.items() if key.startswith("Maximum")}
    assert retries == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 21600}


# Deepgram's regional base URLs (its docs and /work/shared/notes: api, api.eu, api.au, api.in).
REGION_ENDPOINTS = {
    "US": "https://api.deepgram.com",
    "EU": "https://api.eu.deepgram.com",
    "AU": "https://api.au.deepgram.com",
    "IN": "https://api.in.deepgram.com",
}


def _settings(overrides: dict[str, str]) -> list[Settings]:
    stack = resolve_stack(TEMPLATE, overrides)
    return [
        Settings.from_env(
            {
                name: str(value)
                for name, value in stack.resource(f).properties["Environment"]["Variables"].items()
            }
        )
        for f in FUNCTIONS
    ]


@pytest.mark.parametrize("region", sorted(REGION_ENDPOINTS))
def test_deepgram_region_picks_the_endpoint_and_the_capacity_defaults(region: str) -> None:
    regions = load_template(TEMPLATE)["Mappings"]["DeepgramRegions"]
    assert set(regions) == set(REGION_ENDPOINTS)
    for settings in _settings({"DeepgramRegion": region}):
        assert settings.deepgram_api_url == REGION_ENDPOINTS[region]
        assert settings.capacity is not None
        assert settings.capacity.size == int(regions[region]["PoolSize"])
        assert settings.capacity.ai_ceiling == int(regions[region]["AiCeiling"])
        # Below Deepgram's lowest published pay-as-you-go limits: 50 pre-recorded, 10 audio intelligence.
        assert settings.capacity.ai_ceiling <= min(10, settings.capacity.size)
        assert settings.capacity.size < 50


def test_a_chosen_pool_size_ai_ceiling_or_endpoint_wins_over_the_regions() -> None:
    overrides = {
        "DeepgramRegion": "EU",
        "CapacityPoolSize": "7",
        "Settings.Capacity.CapacityAiCeiling": "3",
        "Settings.Deepgram.DeepgramApiUrl": "https://deepgram.internal.example.com",
    }
    for settings in _settings(overrides):
        assert settings.deepgram_api_url == "https://deepgram.internal.example.com"
        assert settings.capacity is not None
        assert (settings.capacity.size, settings.capacity.ai_ceiling) == (7, 3)


def test_the_old_deepgram_api_url_parameter_is_a_setting_now() -> None:
    with pytest.raises(TemplateError, match="undeclared parameters: DeepgramApiUrl"):
        resolve_stack(TEMPLATE, {"DeepgramApiUrl": "https://api.eu.deepgram.com"})
    with pytest.raises(TemplateError, match="not in AllowedValues"):
        resolve_stack(TEMPLATE, {"DeepgramRegion": "eu"})
