"""template.yaml: cfn-lint (SAM source and translated CloudFormation), sam validate, sam build,
and the security, wiring and failure-handling ("nothing lost") properties other code relies on.

Deployment modes are checked on ``samstack.resolve_stack``: AWS's own SAM transform (samtranslator),
then the one resolver the local world uses too, for the mode's parameter values. These tests once kept
a private evaluator so they would not trust the local world's reading of the template; that reading now
lives outside the local world, in ``samstack``, and is built on AWS's translator, so the argument for a
second evaluator is gone: one resolver, checked here and exercised by the local world.

The CLI tools run from the interpreter's own environment (``sys.executable``), never from PATH.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from samstack import ResolvedStack, TemplateError, split_overrides, with_mapping_values
from tests.template.parsed import load_template, resolve_stack, translate
from tests.template.setting_rules import SETTING_RULES, satisfies
from transcriber.config import DeepgramOptions, Settings, option_variable
from transcriber.domain.retry import DeadLetterRetryPolicy
from transcriber.services.completion import EVENT_SOURCE, TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED

pytestmark = pytest.mark.template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
BIN_DIR = Path(sys.executable).parent
CFN_LINT = [str(BIN_DIR / "cfn-lint"), "--append-rules", "cfn_lint_serverless.rules", "--"]
SAM = [sys.executable, "-m", "samcli"]
# sam build's dependency cache lives outside the clone so every checkout and CI run reuses it.
SAM_CACHE_ROOT = Path(
    os.environ.get("SAM_BUILD_CACHE_ROOT")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dg-transcribe" / "sam-build"
)

FUNCTION = "TranscribeFunction"
RETRY_FUNCTION = "RetryFunction"
FUNCTIONS = (FUNCTION, RETRY_FUNCTION)
BUCKETS = ("InputBucket", "OutputBucket", "AccessLogBucket")
DEAD_LETTER_QUEUE = "TranscribeDeadLetterQueue"
PARKING_QUEUE = "ParkingQueue"
QUEUES = (DEAD_LETTER_QUEUE, PARKING_QUEUE)
ALARM_TOPIC = "AlarmTopic"
UPLOAD_BUFFER_QUEUE = "UploadBufferQueue"
UPLOAD_BUFFER_DLQ = "UploadBufferDeadLetterQueue"
COMPLETION_EVENTS_QUEUE = "CompletionEventsSampleQueue"
COMPLETION_EVENTS_RULE = "CompletionEventsSampleRule"
WEBHOOK_DLQ = "WebhookDeadLetterQueue"
WEBHOOK_RULE = "WebhookRule"
DEFAULT_EVENT_BUS = "arn:aws:events:us-east-1:123456789012:event-bus/default"
EXISTING_BUCKET_RULE = "ExistingBucketRule"
# Roles by function (TranscribeFunctionRole is SAM's; RetryFunctionRole is declared in the template).
FUNCTION_ROLES = {FUNCTION: "TranscribeFunctionRole", RETRY_FUNCTION: "RetryFunctionRole"}
FOURTEEN_DAYS = 14 * 24 * 3600

# Deployment modes, as parameter overrides and Settings edits ("Settings.<Group>.<Key>", as editing the
# template's Mappings would do). "off" and "on" are linted (cfn-lint, sam validate); every mode is
# checked structurally on the translated template with its conditions evaluated.
INPUT_KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DATA_KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/5678abcd-12ab-34cd-56ef-1234567890ab"
OPTIONS_ON = {
    "ExistingBucketName": "my-archive",
    "ExistingBucketPrefix": "calls/",
    "BufferedMode": "true",
    "Settings.Privacy.InputAccessLogBucket": "new",
    "Settings.Uploads.InputKmsKeyArn": INPUT_KMS_KEY,
    "Settings.Capacity.EnableBackfill": "true",
    # The privacy profile (tests/template/test_dashboard_and_privacy.py): its own key, retention.
    "DataKmsKeyArn": DATA_KMS_KEY,
    "Settings.Privacy.InputRetentionDays": "30",
    "Settings.Privacy.TranscriptRetentionDays": "365",
    "Settings.Privacy.FailureRetentionDays": "90",
    # The webhook (tests/template/test_webhook_template.py).
    "Settings.Webhook.Url": "https://hooks.example.com/transcripts",
}
EXISTING_SUFFIX = "Settings.Uploads.ExistingBucketSuffix"
MODES: dict[str, dict[str, str]] = {
    "off": {},
    "on": OPTIONS_ON,
    "buffered": {"BufferedMode": "true"},
    "existing-direct": {"ExistingBucketName": "my-archive", EXISTING_SUFFIX: ".wav"},
    "existing-both-filters": {
        "ExistingBucketName": "my-archive",
        "ExistingBucketPrefix": "calls/",
        EXISTING_SUFFIX: ".wav",
    },
    "access-logs-to-an-existing-bucket": {
        "Settings.Privacy.InputAccessLogBucket": "my-log-bucket",
        "Settings.Privacy.InputAccessLogPrefix": "s3/",
    },
}
LINTED_MODES = ("off", "on")
# The tests name the secret; with none, the template derives deepgram/<EnvironmentName>/api-key.
REQUIRED_PARAMETERS = {"DeepgramSecretId": "deepgram/dev/api-key"}
MIN_RETENTION_SECONDS = 4 * 24 * 3600  # survives a long weekend
SQS_MAX_VISIBILITY_SECONDS = 43200

# Every action the functions' per-object work may grant (both run it). Adding one is a reviewed change.
ALLOWED_ACTIONS = {
    "s3:ListBucket",  # input and output buckets: a deleted object or output reads as 404, not 403
    "kms:Decrypt",  # only the named InputKmsKeyArn or DataKmsKeyArn, only through S3
    "kms:GenerateDataKey",  # only the named DataKmsKeyArn (writes to the buckets it encrypts), through S3
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "secretsmanager:GetSecretValue",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",  # the capacity pool's partition only
    "events:PutEvents",  # only the named bus, only when CompletionEvents is on
    "events:DescribeEventBus",  # the same bus: the missing-bus check (services/event_bus.py)
}
# SQS grants per function, as (action, queue logical id) pairs: nothing on other queues, nothing on "*".
SQS_GRANTS = {
    # SAM's DeadLetterQueue policy: Lambda sends failed async events with the function's role.
    # In buffered mode the upload buffer's event source mapping polls with the function's role.
    FUNCTION: {
        ("sqs:SendMessage", DEAD_LETTER_QUEUE),
        ("sqs:ReceiveMessage", UPLOAD_BUFFER_QUEUE),
        ("sqs:DeleteMessage", UPLOAD_BUFFER_QUEUE),
        ("sqs:GetQueueAttributes", UPLOAD_BUFFER_QUEUE),
        # A capacity wait goes back as a new message, so it uses none of the message's receives.
        ("sqs:SendMessage", UPLOAD_BUFFER_QUEUE),
    },
    RETRY_FUNCTION: {
        # The SQS event source mapping polls with the function's role.
        ("sqs:ReceiveMessage", DEAD_LETTER_QUEUE),
        ("sqs:DeleteMessage", DEAD_LETTER_QUEUE),
        ("sqs:GetQueueAttributes", DEAD_LETTER_QUEUE),
        # Backoff: the function delays a failed message's next receive.
        ("sqs:ChangeMessageVisibility", DEAD_LETTER_QUEUE),
        # Failures no retry can fix may be parked at once.
        ("sqs:SendMessage", PARKING_QUEUE),
        # A capacity wait goes back as a new message, so it uses none of the event's attempts.
        ("sqs:SendMessage", DEAD_LETTER_QUEUE),
    },
}
BUFFER_CONSUME_GRANTS = {grant for grant in SQS_GRANTS[FUNCTION] if grant[1] == UPLOAD_BUFFER_QUEUE}
# Grants a function cannot work without (buffered mode adds BUFFER_CONSUME_GRANTS to FUNCTION's).
REQUIRED_SQS_GRANTS = {
    FUNCTION: SQS_GRANTS[FUNCTION] - BUFFER_CONSUME_GRANTS,
    RETRY_FUNCTION: SQS_GRANTS[RETRY_FUNCTION] - {("sqs:SendMessage", PARKING_QUEUE)},
}
EXISTING_BUCKET = "my-archive"


def _existing_bucket_objects(stack: ResolvedStack) -> str:
    """What the functions may read of the existing bucket: the objects under ExistingBucketPrefix."""
    return f"arn:aws:s3:::{EXISTING_BUCKET}/{stack.parameters['ExistingBucketPrefix']}*"


# Actions whose API has no resource-level permissions, so "Resource": "*" is the only form.
WILDCARD_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "cloudwatch:PutMetricData",
}
# AWS managed policies SAM attaches: logs to the function's log groups, and X-Ray for Tracing: Active.
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
}

# Variables whose values are this stack's own (resources, the secret): the code has no defaults for
# them. Every other variable's template default must be the code's default (see the environment tests).
STACK_SPECIFIC_ENV = {
    "Settings": {
        "OUTPUT_BUCKET",
        "INPUT_BUCKET",
        "ALLOWED_BUCKETS",
        "IDEMPOTENCY_TABLE",
        "DEEPGRAM_SECRET_ID",
        "CAPACITY_TABLE",
        "CAPACITY_DEFERRAL_QUEUE_URL",
    },
    "DeadLetterRetryPolicy": {"DEAD_LETTER_QUEUE_URL", "PARKING_QUEUE_URL"},
}
# Parameter values and Settings other than their defaults: each must change what the functions' code reads.
TUNED_PARAMETERS = {
    "EnvironmentName": "prod",
    "DeepgramRegion": "EU",
    "Settings.Deepgram.DeepgramApiUrl": "https://deepgram.example.com",
    "DeepgramOptions": "model=nova-2&language=de&diarize=true&tag=team-a&keyterm=acme",
    "Settings.Uploads.MediaExtensions": "wav",
    "Settings.Deepgram.SecretMaxAgeSeconds": "5",
    "Settings.Deepgram.PresignExpirySeconds": "600",
    "Settings.Deepgram.IdempotencyTtlSeconds": "600",
    "Settings.Deepgram.DeepgramMaxAttempts": "2",
    "Settings.Deepgram.DeliveryMode": "url",
    "Settings.Uploads.TranscribeRestoredObjects": "false",
    "LogLevel": "DEBUG",
    "Settings.Failures.RetryMaxAttempts": "3",
    "Settings.Failures.RetryBaseDelaySeconds": "1",
    "Settings.Failures.RetryMaxDelaySeconds": "2",
    "Settings.Failures.BlockedRetryDelaySeconds": "3",
    "CapacityPoolSize": "12",
    "Settings.Capacity.CapacityAiCeiling": "4",
    "Settings.Capacity.CapacityPoolName": "project-b",
    "Settings.Capacity.CapacityTableName": "other-stack-capacity",
    "Settings.Capacity.BackfillPoolPercent": "30",
    "Settings.Uploads.UploadOptions": "language",
    "Settings.Outputs.DeepgramPricePerMinuteUsd": "0.01",
    "Settings.Outputs.DeepgramAddOnPricesUsd": "diarize=0.5",
    "Settings.Outputs.OutputFormats": "json,txt",
    "Settings.Outputs.CaptionWordsPerCue": "5",
    "Settings.Outputs.CaptionLineLength": "32",
    "Settings.Outputs.CaptionMaxLines": "1",
    "Settings.Outputs.CaptionMaxCueSeconds": "5",
    "Settings.Outputs.CaptionStartIndex": "0",
    "Settings.Outputs.UploadOutputOptions": "speakers",
    "Settings.Outputs.CompletionEvents": "false",
    "Settings.Outputs.EventBusName": "transcripts",
}
PER_OBJECT_POLICY = "PerObjectWorkPolicy"


def setting(group: str, key: str) -> dict[str, Any]:
    """How the translated template reads one entry of ``Mappings: Settings:``."""
    return {"Fn::FindInMap": ["Settings", group, key]}


_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")
PSEUDO_PARAMETERS = {"AWS::AccountId", "AWS::Partition", "AWS::Region", "AWS::StackName", "AWS::URLSuffix"}


def _run(args: list[str], *, cwd: Path = REPO_ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # sam build must find this interpreter (python3.13) before any other python on PATH.
        "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    """The SAM template as written."""
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    """The translated (plain CloudFormation) template, intrinsics as written."""
    return translate(TEMPLATE)


@pytest.fixture(scope="module")
def resources(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = cfn["Resources"]
    return result


def _function_props(resources: dict[str, dict[str, Any]], logical_id: str) -> dict[str, Any]:
    function = resources[logical_id]
    assert function["Type"] == "AWS::Lambda::Function"
    props: dict[str, Any] = function["Properties"]
    return props


@pytest.fixture(scope="module")
def function_props(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return _function_props(resources, FUNCTION)


@pytest.fixture(scope="module")
def translations(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The translated template per linted mode (translated with that mode's parameter overrides)."""
    return {
        mode: cfn if not MODES[mode] else translate(TEMPLATE, parameter_overrides=MODES[mode])
        for mode in LINTED_MODES
    }


@pytest.fixture(scope="module")
def mode_templates(
    source: dict[str, Any], translations: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """(SAM source, translated) files per linted mode. A mode's overrides become the parameters'
    defaults, so every tool (sam validate takes no parameters) sees that mode."""
    directory = tmp_path_factory.mktemp("modes")
    paths: dict[str, tuple[Path, Path]] = {}
    for mode in LINTED_MODES:
        if not MODES[mode]:
            sam_path = TEMPLATE
        else:
            variant = _with_defaults(source, MODES[mode])
            sam_path = directory / f"{mode}.sam.json"
            sam_path.write_text(json.dumps(variant, indent=2), encoding="utf-8")
        translated = _with_defaults(translations[mode], MODES[mode])
        cfn_path = directory / f"{mode}.cfn.json"
        cfn_path.write_text(json.dumps(translated, indent=2), encoding="utf-8")
        paths[mode] = (sam_path, cfn_path)
    return paths


def _with_defaults(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """The template as if it were written for these values: parameter defaults, Settings edited."""
    parameters, edits = split_overrides(overrides)
    result = with_mapping_values(template, edits)
    for name, value in parameters.items():
        result["Parameters"][name]["Default"] = value
    return result


def _default(template: dict[str, Any], name: str) -> Any:
    """A parameter's default, or a ``Settings.<Group>.<Key>`` value, as the template says."""
    if "." not in name:
        return template["Parameters"][name].get("Default")
    map_name, group, key = name.split(".")
    return template["Mappings"][map_name][group][key]


def _resolve(overrides: dict[str, str] | None = None) -> ResolvedStack:
    """The stack CloudFormation would create with these parameter values (and the required ones)."""
    return resolve_stack(TEMPLATE, REQUIRED_PARAMETERS | (overrides or {}))


@pytest.fixture(scope="module")
def stacks() -> dict[str, ResolvedStack]:
    """Per mode: the stack as deployed - conditions evaluated, resources and outputs whose Condition is
    false dropped, every intrinsic resolved to its value (``samstack.resolve_stack``)."""
    return {mode: _resolve(overrides) for mode, overrides in MODES.items()}


@pytest.fixture
def sam_cache_lock() -> Iterator[Path]:
    """Serialise sam builds that share the cache (parallel checkouts, xdist workers)."""
    SAM_CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (SAM_CACHE_ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield SAM_CACHE_ROOT
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- tools


@pytest.mark.parametrize("mode", LINTED_MODES)
def test_cfn_lint_passes_on_sam_template(mode_templates: dict[str, tuple[Path, Path]], mode: str) -> None:
    result = _run([*CFN_LINT, str(mode_templates[mode][0])])
    assert result.returncode == 0, _explain(result)


def test_translation_does_not_depend_on_the_mode(translations: dict[str, dict[str, Any]]) -> None:
    """Conditions, not the SAM transform, select the optional parts: one translation serves every mode
    (only the Settings values the mode edits differ)."""
    on, off = ({k: v for k, v in translations[m].items() if k != "Mappings"} for m in ("on", "off"))
    assert on == off


@pytest.mark.parametrize("mode", LINTED_MODES)
def test_cfn_lint_passes_on_translated_template(
    mode_templates: dict[str, tuple[Path, Path]], mode: str
) -> None:
    result = _run([*CFN_LINT[:-1], "--format", "json", "--", str(mode_templates[mode][1])])
    # cfn-lint's exit code is a bit mask (2 error, 4 warning, 8 informational); 1 means it failed.
    assert not result.returncode & 1, _explain(result)
    findings = json.loads(result.stdout or "[]")
    assert not findings, json.dumps(findings, indent=2)


@pytest.mark.parametrize("mode", LINTED_MODES)
def test_sam_validate_lint_passes(mode_templates: dict[str, tuple[Path, Path]], mode: str) -> None:
    template = mode_templates[mode][0]
    result = _run([*SAM, "validate", "--lint", "--region", "us-east-1", "--template", str(template)])
    assert result.returncode == 0, _explain(result)


def test_sam_build_succeeds(tmp_path: Path, sam_cache_lock: Path) -> None:
    build_dir = tmp_path / "build"
    # sam keys its dependency cache on build.toml, which it keeps next to the build dir; carry it over
    # between runs (one per checkout, since it records absolute source paths).
    checkout_key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
    saved_graph = sam_cache_lock / f"build-{checkout_key}.toml"
    build_graph = tmp_path / "build.toml"
    if saved_graph.is_file():
        shutil.copyfile(saved_graph, build_graph)
    started = time.monotonic()
    # cwd is the cache root because sam keeps downloaded dependencies in ./.aws-sam/deps.
    result = _run(
        [
            *SAM,
            "build",
            "--template",
            str(TEMPLATE),
            "--build-dir",
            str(build_dir),
            "--cached",
            "--cache-dir",
            str(sam_cache_lock / "cache"),
            "--parallel",
        ],
        cwd=sam_cache_lock,
        timeout=240,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, _explain(result)
    shutil.copyfile(build_graph, saved_graph)
    assert (build_dir / "template.yaml").is_file()
    layer_python = build_dir / "SharedLayer" / "python"
    assert (layer_python / "transcriber").is_dir(), "the layer must ship the transcriber package"
    assert (layer_python / "aws_lambda_powertools").is_dir(), "the layer must ship its requirements"
    for function in FUNCTIONS:
        assert (build_dir / function / "app.py").is_file(), function
    # Native extensions must match the function's architecture (arm64).
    for extension in layer_python.rglob("*.so"):
        assert "x86_64" not in extension.name, extension
    print(f"sam build took {elapsed:.1f} s")


# --------------------------------------------------------------------------- translated structure


def _as_strings(value: Any) -> list[str]:
    """Render an IAM Resource value as ${...} strings; Fn::If yields both branches."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _as_strings(item)]
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return [f"${{{arg}}}"]
        if key == "Fn::GetAtt":
            target = ".".join(arg) if isinstance(arg, list) else str(arg)
            return [f"${{{target}}}"]
        if key == "Fn::Sub" and isinstance(arg, str):
            return [arg]
        if key == "Fn::If":
            return _as_strings(arg[1]) + _as_strings(arg[2])
    raise AssertionError(f"unexpected IAM resource form: {value!r}")


def _strings(value: Any) -> list[str]:
    """A resolved IAM Action or Resource value as a list."""
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _actions(statement: dict[str, Any]) -> list[str]:
    return _strings(statement["Action"])


def _secret_arn(stack: ResolvedStack) -> str:
    """What the functions may read: the secret by ARN, or by name with Secrets Manager's random suffix."""
    secret_id = str(stack.parameters["DeepgramSecretId"])
    if secret_id.startswith("arn:"):
        return secret_id
    return f"arn:aws:secretsmanager:{stack.region}:{stack.account_id}:secret:{secret_id}-??????"


# The output bucket's prefixes the functions write, read back and delete.
OUTPUT_PREFIXES = ("TRANSCRIPT_PREFIX", "FAILURE_PREFIX", "KEPT_ANSWER_PREFIX")


def _per_object_grants(stack: ResolvedStack) -> set[tuple[str, str]]:
    """(action, resource) pairs the per-object work needs - no more: read the upload (and tell a deleted
    one from a denied one), write the transcript or failure record, read the key, keep idempotency records."""
    input_bucket, output_bucket = stack.resource("InputBucket").arn, stack.resource("OutputBucket").arn
    table = stack.resource("IdempotencyTable").arn
    env = _resolved_function(stack, FUNCTION)["Environment"]["Variables"]
    capacity_table = (
        stack.resource("CapacityTable").arn
        if stack.conditions["CreateCapacityTable"]
        else f"arn:aws:dynamodb:us-east-1:123456789012:table/{env['CAPACITY_TABLE']}"
    )
    # writes and deletes only under the output prefixes the code uses
    outputs = [f"{output_bucket}/{env[name]}*" for name in OUTPUT_PREFIXES]
    return {
        ("s3:GetObject", f"{input_bucket}/*"),
        ("s3:GetObjectVersion", f"{input_bucket}/*"),
        ("s3:ListBucket", str(input_bucket)),
        *(
            (action, resource)
            for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject")
            for resource in outputs
        ),
        ("s3:ListBucket", str(output_bucket)),  # a missing output reads as 404 (the ordering checks)
        ("secretsmanager:GetSecretValue", _secret_arn(stack)),
        *(
            (f"dynamodb:{action}", str(table))
            for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")
        ),
        *(
            (f"dynamodb:{action}", str(capacity_table))
            for action in ("Query", "PutItem", "UpdateItem", "DeleteItem")
        ),
        # completion events: only on the bus the code publishes to, only when they are on
        *(
            (action, f"{DEFAULT_EVENT_BUS.rsplit('/', 1)[0]}/{env['EVENT_BUS_NAME']}")
            for action in ("events:PutEvents", "events:DescribeEventBus")
            if stack.conditions["HasCompletionEvents"]
        ),
    }


def _optional_resources(stack: ResolvedStack) -> set[str]:
    """Resources granted only when their option is on: an existing bucket's objects, the input's KMS key."""
    optional = {
        "UseExistingBucket": _existing_bucket_objects(stack),
        "HasInputKmsKey": INPUT_KMS_KEY,
        "HasDataKmsKey": DATA_KMS_KEY,
    }
    return {resource for condition, resource in optional.items() if stack.conditions[condition]}


def _grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (action, resource)
        for statement in statements
        for action in _actions(statement)
        for resource in _strings(statement["Resource"])
    }


def _resolved_function(stack: ResolvedStack, function_id: str) -> dict[str, Any]:
    function = stack.resource(function_id)
    assert function.type == "AWS::Lambda::Function"
    return function.properties


def _role_id(stack: ResolvedStack, function_id: str) -> str:
    role_arn = _resolved_function(stack, function_id)["Role"]
    roles = [r.logical_id for r in stack.of_type("AWS::IAM::Role") if r.arn == role_arn]
    assert roles, f"{function_id} must use a role from this stack"
    return roles[0]


def _role_statements(stack: ResolvedStack, function_id: str) -> list[dict[str, Any]]:
    """Every statement the function's role grants: its inline policies, AWS::IAM::Policy resources
    naming it, and this stack's managed policies it attaches."""
    role = stack.resource(_role_id(stack, function_id))
    documents = [p["PolicyDocument"] for p in role.properties.get("Policies", [])]
    documents += [
        r.properties["PolicyDocument"]
        for r in stack.of_type("AWS::IAM::Policy")
        if role.physical_name in r.properties["Roles"]
    ]
    documents += [
        r.properties["PolicyDocument"]
        for r in stack.of_type("AWS::IAM::ManagedPolicy")
        if r.arn in role.properties.get("ManagedPolicyArns", [])
    ]
    return [s for document in documents for s in document["Statement"]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_role_is_least_privilege(
    stacks: dict[str, ResolvedStack], function_id: str, mode: str
) -> None:
    stack = stacks[mode]
    assert _role_id(stack, function_id) == FUNCTION_ROLES[function_id]
    role = stack.resource(FUNCTION_ROLES[function_id]).properties

    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"]["Service"] in ("lambda.amazonaws.com", ["lambda.amazonaws.com"]), trust
    assert trust["Action"] in ("sts:AssumeRole", ["sts:AssumeRole"]), trust
    assert trust["Effect"] == "Allow"

    own_policies = {r.arn for r in stack.of_type("AWS::IAM::ManagedPolicy")}
    for arn in role.get("ManagedPolicyArns", []):
        if arn in own_policies:
            continue  # checked statement by statement below
        # Rules out e.g. AWSLambdaSQSQueueExecutionRole, which grants SQS actions on every queue.
        assert arn.split(":iam::aws:policy/", 1)[1] in ALLOWED_MANAGED_POLICIES, arn

    existing_bucket = stack.conditions["UseExistingBucket"]
    buffered = stack.conditions["UseBufferedMode"]
    kms_key = stack.conditions["HasInputKmsKey"]
    allowed_resources = {resource for _, resource in _per_object_grants(stack)} | _optional_resources(stack)
    queue_ids = {q.arn: q.logical_id for q in stack.of_type("AWS::SQS::Queue")}
    statements = _role_statements(stack, function_id)
    assert statements
    granted: set[str] = set()
    sqs_granted: set[tuple[str, str]] = set()
    granted_resources: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement, statement
        assert "NotResource" not in statement, statement
        actions = _actions(statement)
        for action in actions:
            assert "*" not in action, f"wildcard action {action!r} in {statement.get('Sid')}"
        granted.update(actions)
        for resource in _strings(statement["Resource"]):
            granted_resources.add(resource)
            for action in actions:
                if action.startswith("sqs:"):
                    # Only this stack's queues, and only the grants the function needs.
                    grant = (action, queue_ids.get(resource, resource))
                    assert grant in SQS_GRANTS[function_id], (
                        f"{statement.get('Sid')}: {action} on {resource!r}"
                    )
                    sqs_granted.add(grant)
                elif resource == "*":
                    assert action in WILDCARD_RESOURCE_ACTIONS, statement
                else:
                    assert resource in allowed_resources, f"{statement.get('Sid')} grants {resource!r}"
    sqs_actions = {action for action, _ in SQS_GRANTS[function_id]}
    assert granted <= ALLOWED_ACTIONS | WILDCARD_RESOURCE_ACTIONS | sqs_actions, granted - ALLOWED_ACTIONS
    required = REQUIRED_SQS_GRANTS[function_id] | (
        BUFFER_CONSUME_GRANTS if buffered and function_id == FUNCTION else set()
    )
    missing = required - sqs_granted
    assert not missing, f"{function_id} lacks {sorted(missing)}"
    # The optional grants exist exactly when their option is on.
    assert (_existing_bucket_objects(stack) in granted_resources) == existing_bucket
    assert (INPUT_KMS_KEY in granted_resources) == kms_key
    assert (DATA_KMS_KEY in granted_resources) == stack.conditions["HasDataKmsKey"]
    assert bool(sqs_granted & BUFFER_CONSUME_GRANTS) == (buffered and function_id == FUNCTION)


@pytest.mark.parametrize("mode", ["off", "on"])
def test_existing_bucket_grant_is_read_only_and_names_only_that_bucket(
    stacks: dict[str, ResolvedStack], mode: str
) -> None:
    stack = stacks[mode]
    grants = [
        (function_id, s)
        for function_id in FUNCTIONS
        for s in _role_statements(stack, function_id)
        if EXISTING_BUCKET in json.dumps(s)
    ]
    if mode == "off":
        assert not grants
        assert "ExistingBucketReadPolicy" not in stack.resources
        return
    assert sorted(f for f, _ in grants) == sorted(FUNCTIONS)
    for _, statement in grants:
        assert sorted(_actions(statement)) == ["s3:GetObject", "s3:GetObjectVersion"]
        assert statement["Resource"] == _existing_bucket_objects(stack)
        assert statement["Condition"] == {"StringEquals": {"s3:ResourceAccount": stack.account_id}}
    policy = stack.resource("ExistingBucketReadPolicy").properties
    assert policy["Roles"] == [stack.resource(FUNCTION_ROLES[f]).physical_name for f in FUNCTIONS]
    # The name cannot widen the grant: no wildcards, no path.
    pattern = stack.template["Parameters"]["ExistingBucketName"]["AllowedPattern"]
    assert re.fullmatch(pattern, EXISTING_BUCKET)
    assert re.fullmatch(pattern, "")
    for bad in ("*", "my-*", "a/b", "my?archive", "arn:aws:s3:::x"):
        assert not re.fullmatch(pattern, bad), bad


@pytest.mark.parametrize("mode", ["off", "on"])
def test_backfill_role_only_lists_the_input_buckets_invokes_transcribe_and_writes_reports(
    stacks: dict[str, ResolvedStack], mode: str
) -> None:
    stack = stacks[mode]
    if mode == "off":
        assert "BackfillRole" not in stack.resources
        assert "BackfillRoleArn" not in stack.outputs
        return
    role = stack.resource("BackfillRole").properties
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "batchoperations.s3.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": stack.account_id},
        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:{stack.region}:{stack.account_id}:job/*"},
    }
    [policy] = role["Policies"]
    function_arn = str(stack.resource("TranscribeFunction").arn)
    input_bucket = f"arn:aws:s3:::{stack.resource('InputBucket').physical_name}"
    output_bucket = stack.resource("OutputBucket").physical_name
    assert _grants(policy["PolicyDocument"]["Statement"]) == {
        ("lambda:InvokeFunction", function_arn),
        ("lambda:InvokeFunction", f"{function_arn}:*"),
        *(
            (action, bucket)
            for action in ("s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation")
            for bucket in (input_bucket, f"arn:aws:s3:::{EXISTING_BUCKET}")
        ),
        ("s3:PutObject", f"arn:aws:s3:::{output_bucket}/backfill-reports/*"),
        # "on" chooses DataKmsKeyArn: the report is written to a bucket encrypted with it (through S3).
        ("kms:GenerateDataKey", DATA_KMS_KEY),
        ("kms:Decrypt", DATA_KMS_KEY),
    }
    assert stack.outputs["BackfillRoleArn"] == str(stack.resource("BackfillRole").arn)


@pytest.mark.parametrize("mode", ["off", "on"])
def test_kms_grant_is_decrypt_on_the_named_key_through_s3_only(
    stacks: dict[str, ResolvedStack], mode: str
) -> None:
    stack = stacks[mode]
    grants = [
        (function_id, s)
        for function_id in FUNCTIONS
        for s in _role_statements(stack, function_id)
        if any(action.startswith("kms:") for action in _actions(s)) and s["Resource"] != DATA_KMS_KEY
    ]
    if mode == "off":
        assert not grants
        assert "InputKmsDecryptPolicy" not in stack.resources
        return
    assert sorted(f for f, _ in grants) == sorted(FUNCTIONS)
    for _, statement in grants:
        assert _actions(statement) == ["kms:Decrypt"]
        assert statement["Resource"] == INPUT_KMS_KEY
        assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    pattern = str(SETTING_RULES["Uploads.InputKmsKeyArn"])
    assert re.fullmatch(pattern, INPUT_KMS_KEY)
    for bad in ("*", "arn:aws:kms:us-east-1:123456789012:key/*", "alias/mine", "arn:aws:kms:*:*:key/a"):
        assert not re.fullmatch(pattern, bad), bad


@pytest.mark.parametrize(
    "secret_id", ["deepgram/dev/api-key", "arn:aws:secretsmanager:us-east-1:1:secret:k-AbCdEf"]
)
def test_both_function_roles_attach_the_per_object_policy(secret_id: str) -> None:
    """The retry function re-runs the transcribe function's work: both roles attach one managed policy
    that grants exactly what that work needs, and neither role grants any of it another way."""
    stack = _resolve({"DeepgramSecretId": secret_id})
    policy = stack.resource(PER_OBJECT_POLICY)
    assert policy.type == "AWS::IAM::ManagedPolicy"
    statements = policy.properties["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" and not s.keys() & {"NotAction", "NotResource"} for s in statements)
    assert _grants(statements) == _per_object_grants(stack)
    for function_id in FUNCTIONS:
        role = stack.resource(FUNCTION_ROLES[function_id]).properties
        assert policy.arn in role["ManagedPolicyArns"], function_id
        others = [s for s in _role_statements(stack, function_id) if s not in statements]
        assert not _grants(others) & _per_object_grants(stack), function_id


def test_function_reads_input_bucket_by_name_not_ref(resources: dict[str, dict[str, Any]]) -> None:
    """The input bucket depends on its notification destinations (the function, its invoke permission,
    the buffer queue and its policy). A !Ref/!GetAtt of InputBucket in any of them, or in the roles and
    their policies, would close a dependency cycle: they name the bucket by string."""
    for logical_id in (
        "TranscribeFunctionRole",
        "RetryFunctionRole",
        PER_OBJECT_POLICY,
        "TranscribeFunctionS3InvokePermission",
        UPLOAD_BUFFER_QUEUE,
        "UploadBufferQueuePolicy",
        "UploadBufferConsumePolicy",
        "ExistingBucketReadPolicy",
    ):
        text = json.dumps(resources[logical_id])
        assert '"InputBucket"' not in text, logical_id
        assert "InputBucket.Arn" not in text, logical_id


@pytest.mark.parametrize("bucket_id", BUCKETS)
def test_bucket_is_private_encrypted_and_tls_only(
    resources: dict[str, dict[str, Any]], bucket_id: str
) -> None:
    props = resources[bucket_id]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption
    # DataKmsKeyArn chooses between SSE-KMS and SSE-S3 (Fn::If): every choice encrypts.
    defaults = [rule["ServerSideEncryptionByDefault"] for rule in encryption]
    choices = [c for d in defaults for c in (d["Fn::If"][1:] if "Fn::If" in d else [d])]
    assert all(c["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"} for c in choices)
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"

    policies = [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    assert len(policies) == 1, f"{bucket_id} needs exactly one bucket policy"
    denies = [
        s
        for s in policies[0]["Statement"]
        if "Fn::If" not in s  # the denies that hold only with DataKmsKeyArn (test_trust_boundaries.py)
        and s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and s["Action"] in ("s3:*", ["s3:*"])
        and str(s["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
    ]
    assert len(denies) == 1, policies[0]
    covered = _as_strings(denies[0]["Resource"])
    assert f"${{{bucket_id}.Arn}}" in covered
    assert f"${{{bucket_id}.Arn}}/*" in covered


def _lambda_functions(resources: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function")


def test_functions_are_the_known_ones(resources: dict[str, dict[str, Any]]) -> None:
    """The per-function checks below cover every function; a new one needs its entries here."""
    assert _lambda_functions(resources) == sorted(FUNCTIONS)


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_has_log_group_with_retention(
    resources: dict[str, dict[str, Any]], function_id: str
) -> None:
    groups = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
        and r["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{function_id}}}"}
    ]
    assert len(groups) == 1
    assert groups[0]["RetentionInDays"] == setting("Functions", "LogRetentionDays")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_has_a_failure_path(stacks: dict[str, ResolvedStack], function_id: str, mode: str) -> None:
    """Nothing is lost: an asynchronously invoked function has a dead-letter queue (or an on-failure
    destination); an SQS-polling function's failed messages return to their queue, whose redrive
    policy moves them on after the last attempt."""
    stack = stacks[mode]
    props = _resolved_function(stack, function_id)
    function = stack.resource(function_id)
    queues = {q.arn: q for q in stack.of_type("AWS::SQS::Queue")}
    async_sources = [
        r
        for r in stack.of_type("AWS::Lambda::Permission")
        if r.properties["FunctionName"] == function.physical_name
    ]
    mappings = [
        r.properties
        for r in stack.of_type("AWS::Lambda::EventSourceMapping")
        if r.properties["FunctionName"] == function.physical_name
    ]
    assert async_sources or mappings, f"{function_id} has no event source"
    if async_sources:
        destinations = [
            r.properties["DestinationConfig"].get("OnFailure")
            for r in stack.of_type("AWS::Lambda::EventInvokeConfig")
            if r.properties["FunctionName"] == function.physical_name
        ]
        target = props.get("DeadLetterConfig", {}).get("TargetArn")
        assert target or any(destinations), f"{function_id} is invoked asynchronously without a failure path"
        if target:
            assert target in queues, target
    # EventBridge invokes asynchronously too (the function's DLQ covers handler failures); what the
    # rule itself cannot deliver goes to the target's dead-letter queue after its retries.
    targets = [
        t
        for r in stack.of_type("AWS::Events::Rule")
        for t in r.properties["Targets"]
        if t["Arn"] == function.arn
    ]
    for target in targets:
        assert target["DeadLetterConfig"]["Arn"] in queues
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 3600
    for mapping in mappings:
        queue = queues[mapping["EventSourceArn"]]
        assert "RedrivePolicy" in queue.properties, f"{queue.logical_id} needs a redrive policy"
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], (
            "one failure must not fail the batch"
        )


def _is_plain_env_value(value: Any, cfn: dict[str, Any]) -> bool:
    names = set(cfn["Parameters"]) | set(cfn["Resources"])
    if isinstance(value, str):
        return True
    if not isinstance(value, dict) or len(value) != 1:
        return False
    ((key, arg),) = value.items()
    if key == "Fn::Sub" and isinstance(arg, str):
        variables = {v.split(".", 1)[0] for v in _SUB_VARIABLE.findall(arg)}
        return bool(variables) and variables <= names | PSEUDO_PARAMETERS
    plain: dict[str, Callable[[], bool]] = {
        "Ref": lambda: arg in names and arg != "AWS::NoValue",
        "Fn::GetAtt": lambda: isinstance(arg, list) and arg[0] in cfn["Resources"],
        # A setting (Mappings: Settings:) that exists, or a mapping entry for every allowed value of
        # the parameter that picks it (DeepgramRegions by DeepgramRegion).
        "Fn::FindInMap": lambda: all(
            arg[2] in cfn["Mappings"][arg[0]][top] for top in _map_keys(arg[1], cfn)
        ),
        # One of two plain values by a declared condition (CAPACITY_TABLE: its own table or a shared one).
        "Fn::If": lambda: (
            isinstance(arg, list)
            and len(arg) == 3
            and arg[0] in cfn.get("Conditions", {})
            and all(_is_plain_env_value(v, cfn) for v in arg[1:])
        ),
    }
    return key in plain and bool(plain[key]())


def _map_keys(top: Any, cfn: dict[str, Any]) -> list[str]:
    """The top-level keys a FindInMap may read: one literal, or each allowed value of a parameter."""
    if isinstance(top, dict) and set(top) == {"Ref"}:
        return [str(value) for value in cfn["Parameters"][top["Ref"]]["AllowedValues"]]
    return [top]


def _function_env(stack: ResolvedStack, function_id: str) -> dict[str, str]:
    variables: dict[str, Any] = _resolved_function(stack, function_id)["Environment"]["Variables"]
    assert all(isinstance(value, str) for value in variables.values()), variables
    return variables


def _what_the_code_reads(env: dict[str, str]) -> tuple[Any, ...]:
    """The functions' settings from an environment (the retry function's has every variable), and the
    variables Powertools reads itself."""
    powertools = {name: value for name, value in env.items() if name.startswith("POWERTOOLS_")}
    return Settings.from_env(env), DeadLetterRetryPolicy.from_env(env), powertools


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_environment(cfn: dict[str, Any], resources: dict[str, Any], function_id: str) -> None:
    variables: dict[str, Any] = _function_props(resources, function_id)["Environment"]["Variables"]
    for name, value in variables.items():
        assert _is_plain_env_value(value, cfn), (
            f"{name}: {value!r} must be a literal, Ref, GetAtt, Sub or setting"
        )


@pytest.mark.parametrize(
    ("function_id", "settings_type"),
    [(FUNCTION, Settings), (RETRY_FUNCTION, Settings), (RETRY_FUNCTION, DeadLetterRetryPolicy)],
)
def test_template_defaults_are_the_code_defaults(
    stacks: dict[str, ResolvedStack], function_id: str, settings_type: type[Settings | DeadLetterRetryPolicy]
) -> None:
    """Each default lives once in the code and once in a template parameter: with every parameter at
    its default, the function's settings are what the code makes of the stack-specific values alone."""
    env = _function_env(stacks["off"], function_id)
    stack_specific = {name: env[name] for name in STACK_SPECIFIC_ENV[settings_type.__name__]}
    assert settings_type.from_env(env) == settings_type.from_env(stack_specific)


@pytest.mark.parametrize(("parameter", "value"), TUNED_PARAMETERS.items())
def test_every_tuning_parameter_reaches_the_code(
    stacks: dict[str, ResolvedStack], parameter: str, value: str
) -> None:
    default = _default(stacks["off"].template, parameter)
    assert str(default) != value, f"pick a {parameter} value other than its default"
    tuned = _function_env(_resolve({parameter: value}), RETRY_FUNCTION)
    assert _what_the_code_reads(tuned) != _what_the_code_reads(_function_env(stacks["off"], RETRY_FUNCTION))


def test_stack_specific_environment_names_this_stacks_resources(stacks: dict[str, ResolvedStack]) -> None:
    stack = stacks["off"]
    for function_id in FUNCTIONS:
        env = _function_env(stack, function_id)
        assert env["OUTPUT_BUCKET"] == stack.resource("OutputBucket").physical_name
        assert env["INPUT_BUCKET"] == stack.resource("InputBucket").physical_name
        assert env["IDEMPOTENCY_TABLE"] == stack.resource("IdempotencyTable").physical_name
        assert env["DEEPGRAM_SECRET_ID"] == REQUIRED_PARAMETERS["DeepgramSecretId"]
        assert env["CAPACITY_DEFERRAL_QUEUE_URL"] == stack.resource(DEAD_LETTER_QUEUE).ref
    retry = _function_env(stack, RETRY_FUNCTION)
    assert retry["DEAD_LETTER_QUEUE_URL"] == stack.resource(DEAD_LETTER_QUEUE).ref
    assert retry["PARKING_QUEUE_URL"] == stack.resource(PARKING_QUEUE).ref


def test_the_functions_transcribe_the_input_bucket_and_the_existing_bucket_only() -> None:
    """ALLOWED_BUCKETS follows ExistingBucketName, the one other bucket the read policy grants."""
    for overrides, expected in (({}, set()), ({"ExistingBucketName": "my-archive"}, {"my-archive"})):
        stack = _resolve(overrides)
        for function_id in FUNCTIONS:
            settings = Settings.from_env(_function_env(stack, function_id))
            assert settings.allowed_buckets == {stack.resource("InputBucket").physical_name, *expected}


def test_every_deepgram_option_has_its_variable_in_globals(source: dict[str, Any]) -> None:
    """A Deepgram option declared in the code (a ``DeepgramOptions`` field) is settable per stack, in
    the DeepgramOptions string; its own variable stays declared (empty) so one function can override it."""
    shared = source["Globals"]["Function"]["Environment"]["Variables"]
    assert shared["DEEPGRAM_OPTIONS"] == {"Ref": "DeepgramOptions"}
    missing = [f.name for f in fields(DeepgramOptions) if option_variable(f.name) not in shared]
    assert missing == [], f"declare a Globals variable for {missing}"
    assert all(shared[option_variable(f.name)] == "" for f in fields(DeepgramOptions))


def test_shared_environment_lives_in_globals(
    source: dict[str, Any], stacks: dict[str, ResolvedStack]
) -> None:
    """Both functions run the same per-object work; one place keeps their settings in step."""
    shared = source["Globals"]["Function"]["Environment"]["Variables"]
    assert shared.keys() >= STACK_SPECIFIC_ENV["Settings"]
    for function_id in FUNCTIONS:
        own = source["Resources"][function_id]["Properties"].get("Environment", {}).get("Variables", {})
        assert not own.keys() & shared.keys(), f"{function_id} overrides shared variables"
    transcribe, retry = (_function_env(stacks["off"], f) for f in FUNCTIONS)
    assert transcribe.keys() == shared.keys()
    assert {name: retry[name] for name in shared} == transcribe


def test_function_runtime_and_wiring(
    resources: dict[str, dict[str, Any]], function_props: dict[str, Any]
) -> None:
    assert function_props["Runtime"] == "python3.13"
    assert function_props["Handler"] == "app.lambda_handler"
    assert function_props["Architectures"] == ["arm64"]
    assert function_props["TracingConfig"] == {"Mode": "Active"}
    assert function_props["MemorySize"] == setting("Functions", "MemorySize")
    assert function_props["Timeout"] == setting("Functions", "FunctionTimeout")
    (layer,) = function_props["Layers"]
    layer_resource = resources[layer["Ref"]]
    assert layer_resource["Type"] == "AWS::Lambda::LayerVersion"
    assert layer_resource["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer_resource["Properties"]["CompatibleArchitectures"] == function_props["Architectures"]
    assert "NotificationConfiguration" not in resources["OutputBucket"]["Properties"], "no transcript loops"


def test_retry_function_wiring(resources: dict[str, dict[str, Any]]) -> None:
    transcribe, retry = _function_props(resources, FUNCTION), _function_props(resources, RETRY_FUNCTION)
    assert retry["Handler"] == "app.lambda_handler"
    for key in ("Runtime", "Architectures", "TracingConfig", "MemorySize", "Layers"):
        assert retry[key] == transcribe[key], key
    assert retry["Timeout"] == setting("Functions", "RetryFunctionTimeout")
    assert "ReservedConcurrentExecutions" not in retry, "the event source's MaximumConcurrency caps it"

    (mapping,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": RETRY_FUNCTION}
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "Arn"]}
    assert mapping["BatchSize"] == 5
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_transcribe_function_async_failure_handling(
    source: dict[str, Any], cfn: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    props = source["Resources"][FUNCTION]["Properties"]
    assert props["DeadLetterQueue"] == {
        "Type": "SQS",
        "TargetArn": {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "Arn"]},
    }
    refs = {
        "MaximumRetryAttempts": "AsyncRetryAttempts",
        "MaximumEventAgeInSeconds": "MaximumEventAgeSeconds",
    }
    assert props["EventInvokeConfig"] == {key: setting("Failures", name) for key, name in refs.items()}

    (config,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert config["FunctionName"] == {"Ref": FUNCTION}
    assert config["Qualifier"] == "$LATEST"
    for key, name in refs.items():
        # The transform passes FindInMap through; CloudFormation resolves it.
        assert config[key] == setting("Failures", name), key


def test_queues_are_the_known_ones(stacks: dict[str, ResolvedStack]) -> None:
    """The per-queue checks cover every queue; the buffer queues exist in buffered mode only."""
    for mode, stack in stacks.items():
        queues = {q.logical_id for q in stack.of_type("AWS::SQS::Queue")}
        buffer_queues = {UPLOAD_BUFFER_QUEUE, UPLOAD_BUFFER_DLQ}
        assert queues == set(QUEUES) | (buffer_queues if stack.conditions["UseBufferedMode"] else set()) | (
            {COMPLETION_EVENTS_QUEUE} if stack.conditions["HasCompletionEvents"] else set()
        ) | ({WEBHOOK_DLQ} if stack.conditions["HasWebhook"] else set()), mode


@pytest.mark.parametrize(
    "queue_id", [*QUEUES, UPLOAD_BUFFER_QUEUE, UPLOAD_BUFFER_DLQ, COMPLETION_EVENTS_QUEUE, WEBHOOK_DLQ]
)
def test_queue_is_encrypted_and_keeps_messages(stacks: dict[str, ResolvedStack], queue_id: str) -> None:
    queue = stacks["on"].resource(queue_id)
    assert queue.type == "AWS::SQS::Queue"
    props = queue.properties
    assert props.get("SqsManagedSseEnabled") is True or props.get("KmsMasterKeyId"), (
        f"{queue_id} is unencrypted"
    )
    assert not props.get("FifoQueue"), "Lambda dead-letter queues must be standard queues"
    assert int(props["MessageRetentionPeriod"]) >= MIN_RETENTION_SECONDS


@pytest.mark.parametrize("mode", ["off", "on"])
def test_queues_are_tls_only(stacks: dict[str, ResolvedStack], mode: str) -> None:
    stack = stacks[mode]
    for queue in stack.of_type("AWS::SQS::Queue"):
        policies = [
            r.properties
            for r in stack.of_type("AWS::SQS::QueuePolicy")
            if queue.ref in r.properties["Queues"]
        ]
        assert len(policies) == 1, queue.logical_id
        denies = [
            s
            for s in policies[0]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s["Principal"] in ("*", {"AWS": "*"})
            and s["Action"] in ("sqs:*", ["sqs:*"])
            and str(s["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
        ]
        assert len(denies) == 1, queue.logical_id
        assert queue.arn in _strings(denies[0]["Resource"])


def test_dead_letter_queue_feeds_retry_function_then_parking_queue(cfn: dict[str, Any]) -> None:
    resources, failures = cfn["Resources"], cfn["Mappings"]["Settings"]["Failures"]
    dlq = resources[DEAD_LETTER_QUEUE]["Properties"]
    # Lambda's advice for SQS event sources: visibility timeout >= 6 x the function timeout.
    max_retry_timeout = SETTING_RULES["Functions.RetryFunctionTimeout"][1]
    assert 6 * int(max_retry_timeout) <= int(dlq["VisibilityTimeout"]) <= SQS_MAX_VISIBILITY_SECONDS
    assert dlq["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [PARKING_QUEUE, "Arn"]},
        "maxReceiveCount": setting("Failures", "RetryMaxAttempts"),
    }
    parking = resources[PARKING_QUEUE]["Properties"]
    assert "RedrivePolicy" not in parking, "the parking queue is the end of the line"
    assert int(parking["MessageRetentionPeriod"]) >= int(dlq["MessageRetentionPeriod"])

    assert int(failures["RetryMaxAttempts"]) == 8
    for name in ("RetryBaseDelaySeconds", "RetryMaxDelaySeconds", "BlockedRetryDelaySeconds"):
        # The retry function delays with ChangeMessageVisibility, which stops at 12 hours.
        assert SETTING_RULES[f"Failures.{name}"][1] <= SQS_MAX_VISIBILITY_SECONDS, name  # type: ignore[operator]
    # With the defaults, the last retry happens long before the first enqueue's retention ends
    # (for standard queues, a redriven message keeps its original enqueue time).
    longest_delay = max(int(failures[n]) for n in ("RetryMaxDelaySeconds", "BlockedRetryDelaySeconds"))
    assert int(failures["RetryMaxAttempts"]) * longest_delay <= int(dlq["MessageRetentionPeriod"]) // 4


def _alarms(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_alarms_notify_the_alarm_topic(resources: dict[str, dict[str, Any]]) -> None:
    alarms = _alarms(resources)
    assert alarms.keys() >= {"DeadLetterQueueAgeAlarm", "ParkingQueueDepthAlarm"}
    for alarm_id, alarm in alarms.items():
        assert alarm.get("AlarmActions") == [{"Ref": ALARM_TOPIC}], alarm_id
        assert alarm["EvaluationPeriods"] >= 1, alarm_id

    age = alarms["DeadLetterQueueAgeAlarm"]
    assert (age["Namespace"], age["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert age["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [DEAD_LETTER_QUEUE, "QueueName"]}}
    ]
    assert age["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert age["Threshold"] == setting("Failures", "DeadLetterAgeAlarmSeconds")
    assert (age["Period"], age["EvaluationPeriods"]) == (300, 1)

    depth = alarms["ParkingQueueDepthAlarm"]
    assert (depth["Namespace"], depth["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert depth["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [PARKING_QUEUE, "QueueName"]}}
    ]
    assert depth["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert depth["Threshold"] == 1
    assert depth["TreatMissingData"] == "notBreaching"

    watched = {
        a["Dimensions"][0]["Value"]["Ref"]
        for a in alarms.values()
        if (a["Namespace"], a["MetricName"]) == ("AWS/Lambda", "Errors")
    }
    assert watched == set(FUNCTIONS)


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(cfn: dict[str, Any]) -> None:
    """CloudWatch cannot publish to a topic under the AWS managed key alias/aws/sns (its key policy
    cannot grant cloudwatch.amazonaws.com), so the topic needs a customer managed key that does."""
    resources = cfn["Resources"]
    topic = resources[ALARM_TOPIC]
    assert topic["Type"] == "AWS::SNS::Topic"
    key_ref = topic["Properties"]["KmsMasterKeyId"]
    assert key_ref != "alias/aws/sns"
    key = resources[key_ref["Ref"]]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    grants = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(grants) == 1
    assert set(grants[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}

    (subscription,) = [r for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert cfn["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": ALARM_TOPIC},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert cfn["Parameters"]["AlarmEmail"]["Default"] == ""


def test_key_filter_rules_never_have_empty_values(cfn: dict[str, Any], resources: dict[str, Any]) -> None:
    """S3 rejects filter rules with an empty Value: each rule sits behind a "parameter set" condition.
    The direct (Lambda) and buffered (queue) notifications use the same rules."""
    bucket = resources["InputBucket"]["Properties"]
    filters = []
    for kind, mode_when_on in (("LambdaConfigurations", False), ("QueueConfigurations", True)):
        condition, when_buffered, when_direct = bucket["NotificationConfiguration"][kind]["Fn::If"]
        assert condition == "UseBufferedMode"
        configurations = when_buffered if mode_when_on else when_direct
        assert (when_direct if mode_when_on else when_buffered) == {"Ref": "AWS::NoValue"}
        (configuration,) = configurations
        filters.append(configuration["Filter"])
    assert filters[0] == filters[1]
    condition_name, with_filter, without_filter = filters[0]["Fn::If"]
    assert without_filter == {"Ref": "AWS::NoValue"}
    rules = with_filter["S3Key"]["Rules"]
    assert {r["Fn::If"][1]["Name"] for r in rules} == {"prefix", "suffix"}
    guarded = set()
    for rule in rules:
        condition, value, otherwise = rule["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
        source = value["Value"]
        assert source in (setting("Uploads", "InputPrefix"), setting("Uploads", "InputSuffix"))
        assert cfn["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [source, ""]}]}
        guarded.add(condition)
    assert cfn["Conditions"][condition_name] == {"Fn::Or": [{"Condition": c} for c in sorted(guarded)]}


def test_parameters_and_outputs(cfn: dict[str, Any]) -> None:
    parameters = cfn["Parameters"]
    assert parameters["DeepgramSecretId"]["Default"] == "", "empty: deepgram/<EnvironmentName>/api-key"
    assert all(p.get("Description") for p in parameters.values())
    assert int(parameters["ReservedConcurrency"]["MaxValue"]) < 100, "stay below Deepgram's concurrency limit"
    assert parameters["EnvironmentName"]["Default"] == "dev"
    assert parameters["DeepgramOptions"]["Default"].startswith("model=nova-3&")
    assert cfn["Outputs"].keys() >= {
        "InputBucketName",
        "OutputBucketName",
        "TranscribeFunctionName",
        "TranscribeFunctionArn",
        "IdempotencyTableName",
        "SharedLayerArn",
        "DeepgramSecretId",
        "TranscriptPrefix",
        "UploadCommand",
        "DeadLetterQueueUrl",
        "DeadLetterQueueArn",
        "ParkingQueueUrl",
        "RetryFunctionName",
        "AlarmTopicArn",
        "FailurePrefix",
    }
    shared_env = cfn["Resources"][FUNCTION]["Properties"]["Environment"]["Variables"]
    assert cfn["Outputs"]["TranscriptPrefix"]["Value"] == shared_env["TRANSCRIPT_PREFIX"]
    assert cfn["Outputs"]["FailurePrefix"]["Value"] == shared_env["FAILURE_PREFIX"]
    assert cfn["Outputs"]["DeadLetterQueueUrl"]["Value"] == {"Ref": DEAD_LETTER_QUEUE}
    assert cfn["Outputs"]["ParkingQueueUrl"]["Value"] == {"Ref": PARKING_QUEUE}
    assert cfn["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": ALARM_TOPIC}

    expected = {
        "Failures.AsyncRetryAttempts": 2,
        "Failures.MaximumEventAgeSeconds": 21600,
        "Functions.RetryFunctionTimeout": 900,
        "Failures.RetryMaxAttempts": 8,
        "Failures.RetryBaseDelaySeconds": 60,
        "Failures.RetryMaxDelaySeconds": 3600,
        "Failures.BlockedRetryDelaySeconds": 3600,
        "Failures.DeadLetterAgeAlarmSeconds": 3600,
    }
    for name, default in expected.items():
        assert int(_default(cfn, f"Settings.{name}")) == default, name


def test_every_setting_has_a_rule_and_keeps_it(cfn: dict[str, Any]) -> None:
    """Settings are not parameters, so CloudFormation checks none of their values: these rules do
    (the constraints the parameters had), and a new setting needs its rule."""
    values = {
        f"{group}.{key}": value
        for group, entries in cfn["Mappings"]["Settings"].items()
        for key, value in entries.items()
    }
    assert values.keys() == SETTING_RULES.keys()
    broken = {name: value for name, value in values.items() if not satisfies(SETTING_RULES[name], value)}
    assert broken == {}


def test_idempotency_table_matches_powertools_defaults(resources: dict[str, dict[str, Any]]) -> None:
    props = resources["IdempotencyTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    # DataKmsKeyArn chooses between its key and DynamoDB's own (Fn::If): every choice encrypts.
    choices = props["SSESpecification"]["Fn::If"][1:]
    assert [choice["SSEEnabled"] for choice in choices] == [True, True]


def test_samconfig_environments() -> None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    default, prod = config["default"], config["prod"]
    assert default["global"]["parameters"]["stack_name"] != prod["global"]["parameters"]["stack_name"]
    for env in (default, prod):
        name = env["global"]["parameters"]["stack_name"]
        # Bucket names are "<stack>-output-<account>-<region>": lowercase and at most 63 characters.
        assert re.fullmatch(r"[a-z][a-z0-9-]{0,19}", name), name
        deploy = env["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert "DeepgramSecretId=" in deploy["parameter_overrides"]
    assert "EnvironmentName=prod" in prod["deploy"]["parameters"]["parameter_overrides"]
    assert default["local_invoke"]["parameters"]["env_vars"] == "events/env.json"


# --------------------------------------------------------------------------- ways in (modes)


@pytest.mark.parametrize("mode", MODES)
def test_no_reference_to_a_resource_that_is_not_created(stacks: dict[str, ResolvedStack], mode: str) -> None:
    """CloudFormation refuses a Ref, GetAtt or DependsOn naming a resource whose Condition is false;
    so does resolve_stack (next test), and every mode resolved."""
    stack = stacks[mode]
    for resource in stack.resources.values():
        assert resource.depends_on <= stack.resources.keys(), resource.logical_id


@pytest.mark.parametrize(
    "reference",
    [
        {"Properties": {"Tags": [{"Key": "k", "Value": {"Ref": "Optional"}}]}},
        {"Properties": {"Tags": [{"Key": "k", "Value": {"Fn::Sub": "${Optional.Arn}"}}]}},
        {"Metadata": {"Ready": {"Ref": "Optional"}}},
        {"DependsOn": "Optional"},
    ],
)
def test_resolver_refuses_references_to_resources_that_are_not_created(reference: dict[str, Any]) -> None:
    template = {
        "Parameters": {"On": {"Type": "String", "Default": "false"}},
        "Conditions": {"IsOn": {"Fn::Equals": [{"Ref": "On"}, "true"]}},
        "Resources": {
            "Optional": {"Type": "AWS::SQS::Queue", "Condition": "IsOn"},
            "Bucket": {"Type": "AWS::S3::Bucket", **reference},
        },
    }
    assert "Bucket" in resolve_stack(template, {"On": "true"}).resources
    with pytest.raises(TemplateError, match="Optional"):
        resolve_stack(template)


@pytest.mark.parametrize("mode", MODES)
def test_exactly_one_upload_path(stacks: dict[str, ResolvedStack], mode: str) -> None:
    """Uploads reach the function either directly (S3 -> Lambda) or buffered (S3 -> SQS -> Lambda)."""
    stack = stacks[mode]
    buffered = stack.conditions["UseBufferedMode"]
    bucket = stack.resource("InputBucket")
    function = stack.resource(FUNCTION)
    notification = bucket.properties["NotificationConfiguration"]
    assert set(notification) == {"QueueConfigurations" if buffered else "LambdaConfigurations"}
    (configuration,) = next(iter(notification.values()))
    assert configuration["Event"] == "s3:ObjectCreated:*"
    if buffered:
        assert configuration["Queue"] == stack.resource(UPLOAD_BUFFER_QUEUE).arn
    else:
        assert configuration["Function"] == function.arn
    # Filters: only the rules whose parameter is set (none by default).
    assert "Filter" not in configuration

    s3_permissions = {
        r.logical_id: r.properties
        for r in stack.of_type("AWS::Lambda::Permission")
        if r.properties["Principal"] == "s3.amazonaws.com"
    }
    mappings = {
        r.logical_id: r.properties
        for r in stack.of_type("AWS::Lambda::EventSourceMapping")
        if r.properties["FunctionName"] == function.physical_name
    }
    if buffered:
        assert not s3_permissions, "S3 may not invoke the function in buffered mode"
        assert list(mappings) == ["UploadBufferEventSource"]
        destination = "UploadBufferQueuePolicy"
    else:
        assert not mappings
        (permission,) = s3_permissions.values()
        assert permission == {
            "Action": "lambda:InvokeFunction",
            "FunctionName": function.physical_name,
            "Principal": "s3.amazonaws.com",
            "SourceAccount": stack.account_id,
            "SourceArn": bucket.arn,
        }
        (destination,) = s3_permissions
    # S3 validates the destination when the configuration is saved: the bucket waits for its
    # permission (Metadata reference, since DependsOn cannot name a conditional resource).
    assert destination in bucket.depends_on
    assert stack.outputs["IngestionMode"] == ("buffered" if buffered else "direct")


def test_input_key_filter_applies_in_both_modes() -> None:
    for buffered in ("false", "true"):
        stack = _resolve(
            {
                "BufferedMode": buffered,
                "Settings.Uploads.InputPrefix": "in/",
                "Settings.Uploads.InputSuffix": ".wav",
            }
        )
        notification = stack.resource("InputBucket").properties["NotificationConfiguration"]
        ((_, (configuration,)),) = notification.items()
        assert configuration["Filter"] == {
            "S3Key": {"Rules": [{"Name": "prefix", "Value": "in/"}, {"Name": "suffix", "Value": ".wav"}]}
        }


def test_buffered_mode_queues_and_event_source(stacks: dict[str, ResolvedStack]) -> None:
    stack = stacks["on"]
    parameters = stack.template["Parameters"]
    queue = stack.resource(UPLOAD_BUFFER_QUEUE)
    dlq = stack.resource(UPLOAD_BUFFER_DLQ)
    for props in (queue.properties, dlq.properties):
        assert props["SqsManagedSseEnabled"] is True
        assert int(props["MessageRetentionPeriod"]) == FOURTEEN_DAYS
    max_timeout = int(SETTING_RULES["Functions.FunctionTimeout"][1])
    assert 6 * max_timeout <= int(queue.properties["VisibilityTimeout"]) <= SQS_MAX_VISIBILITY_SECONDS
    assert queue.properties["RedrivePolicy"] == {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 5}
    assert "RedrivePolicy" not in dlq.properties, "the buffer's dead-letter queue is the end of the line"

    mapping = stack.template["Resources"]["UploadBufferEventSource"]
    assert mapping["DependsOn"] == "UploadBufferConsumePolicy", "Lambda checks the role when mapping"
    tuned = _resolve(
        OPTIONS_ON
        | {"Settings.Capacity.BufferedBatchSize": "7", "Settings.Capacity.BufferedMaximumConcurrency": "11"}
    )
    assert tuned.resource("UploadBufferEventSource").properties == {
        "FunctionName": tuned.resource(FUNCTION).physical_name,
        "EventSourceArn": tuned.resource(UPLOAD_BUFFER_QUEUE).arn,
        "BatchSize": "7",
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": "11"},
    }
    consume = stack.resource("UploadBufferConsumePolicy").properties
    assert consume["Roles"] == [stack.resource(FUNCTION_ROLES[FUNCTION]).physical_name]

    (policy,) = [
        r.properties for r in stack.of_type("AWS::SQS::QueuePolicy") if queue.ref in r.properties["Queues"]
    ]
    allows = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "InputBucketSendsUploadEvents",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue.arn,
            "Condition": {
                "ArnEquals": {"aws:SourceArn": stack.resource("InputBucket").arn},
                "StringEquals": {"aws:SourceAccount": stack.account_id},
            },
        }
    ]

    alarm = stack.resource("UploadBufferDeadLetterQueueDepthAlarm").properties
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": dlq.physical_name}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["AlarmActions"] == [stack.resource(ALARM_TOPIC).ref]

    expected = {"BufferedMaximumConcurrency": (20, 2, 1000), "BufferedBatchSize": (5, 1, 10)}
    for name, (default, minimum, maximum) in expected.items():
        assert int(_default(stack.template, f"Settings.Capacity.{name}")) == default, name
        assert SETTING_RULES[f"Capacity.{name}"] == (minimum, maximum), name
    assert parameters["BufferedMode"]["Default"] == "false"
    assert sorted(parameters["BufferedMode"]["AllowedValues"]) == ["false", "true"]


def test_existing_bucket_event_pattern(cfn: dict[str, Any]) -> None:
    """EventBridge ANDs fields but ORs the matchers of one field: prefix AND suffix is one wildcard."""
    expected_keys: dict[tuple[str, str], list[dict[str, Any]] | None] = {
        ("", ""): None,
        ("calls/", ""): [{"prefix": "calls/"}],
        ("", ".wav"): [{"suffix": ".wav"}],
        ("calls/", ".wav"): [{"wildcard": "calls/*.wav"}],
    }
    for (prefix, suffix), key in expected_keys.items():
        overrides = {"ExistingBucketName": EXISTING_BUCKET, "ExistingBucketPrefix": prefix}
        overrides[EXISTING_SUFFIX] = suffix
        pattern = _resolve(overrides).resource(EXISTING_BUCKET_RULE).properties["EventPattern"]
        detail: dict[str, Any] = {"bucket": {"name": [EXISTING_BUCKET]}}
        if key is not None:
            detail["object"] = {"key": key}
        assert pattern == {
            "source": ["aws.s3"],
            "account": ["123456789012"],  # the bucket is this account's: no other account's event matches
            "detail-type": ["Object Created"],
            "detail": detail,
        }, overrides
    # A "*" or "\\" in the prefix or suffix would be wildcard syntax.
    for allowed in (
        cfn["Parameters"]["ExistingBucketPrefix"]["AllowedPattern"],
        str(SETTING_RULES["Uploads.ExistingBucketSuffix"]),
    ):
        assert re.fullmatch(allowed, "calls/2024 (x).wav")
        assert not re.fullmatch(allowed, "calls/*")
        assert not re.fullmatch(allowed, "calls\\")


@pytest.mark.parametrize("mode", MODES)
def test_existing_bucket_rule_wiring(stacks: dict[str, ResolvedStack], mode: str) -> None:
    stack = stacks[mode]
    on = stack.conditions["UseExistingBucket"]
    function = stack.resource(FUNCTION)
    dead_letter_queue = stack.resource(DEAD_LETTER_QUEUE)
    # The completion events' sample rule is checked in its own test.
    others = {COMPLETION_EVENTS_RULE, WEBHOOK_RULE}
    rules = {r.logical_id for r in stack.of_type("AWS::Events::Rule")} - others
    events_permissions = {
        r.logical_id: r.properties
        for r in stack.of_type("AWS::Lambda::Permission")
        if r.properties["Principal"] == "events.amazonaws.com"
    }
    (failure_policy,) = [
        r.properties["PolicyDocument"]["Statement"]
        for r in stack.of_type("AWS::SQS::QueuePolicy")
        if dead_letter_queue.ref in r.properties["Queues"]
    ]
    events_sends = [s for s in failure_policy if s["Effect"] == "Allow"]
    if not on:
        assert not rules
        assert not events_permissions
        assert not events_sends
        assert "ExistingBucketSetupCommand" not in stack.outputs
        return
    assert rules == {EXISTING_BUCKET_RULE}
    rule = stack.resource(EXISTING_BUCKET_RULE)
    assert rule.properties["State"] == "ENABLED"
    assert "EventBusName" not in rule.properties, "S3 sends its events to the default bus"
    (target,) = rule.properties["Targets"]
    assert target["Arn"] == function.arn
    assert not target.keys() & {"Input", "InputPath", "InputTransformer"}, "the function gets the whole event"
    assert target["DeadLetterConfig"] == {"Arn": dead_letter_queue.arn}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
    (permission,) = events_permissions.values()
    assert permission == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": function.physical_name,
        "Principal": "events.amazonaws.com",
        "SourceArn": rule.arn,
    }
    # EventBridge may send undeliverable events to the dead-letter queue, from this rule only.
    assert events_sends == [
        {
            "Sid": "ExistingBucketRuleDeadLetters",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": dead_letter_queue.arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule.arn}},
        }
    ]
    assert stack.outputs["ExistingBucketSetupCommand"] == (
        f"aws s3api put-bucket-notification-configuration --bucket {EXISTING_BUCKET} "
        "--notification-configuration '{\"EventBridgeConfiguration\": {}}'"
    )


@pytest.mark.parametrize("mode", MODES)
def test_mode_outputs(stacks: dict[str, ResolvedStack], mode: str) -> None:
    stack = stacks[mode]
    outputs, conditions = stack.outputs, stack.conditions
    buffered_outputs = {
        "UploadBufferQueueUrl": UPLOAD_BUFFER_QUEUE,
        "UploadBufferDeadLetterQueueUrl": UPLOAD_BUFFER_DLQ,
    }
    for name, queue_id in buffered_outputs.items():
        if conditions["UseBufferedMode"]:
            assert outputs[name] == stack.resource(queue_id).ref
        else:
            assert name not in outputs
    assert ("ExistingBucketSetupCommand" in outputs) == conditions["UseExistingBucket"]
    assert outputs["IngestionMode"] in ("direct", "buffered")


def test_list_bucket_is_granted_on_the_input_and_output_buckets_only(
    stacks: dict[str, ResolvedStack],
) -> None:
    stack = stacks["off"]
    for function_id in FUNCTIONS:
        listing = [s for s in _role_statements(stack, function_id) if "s3:ListBucket" in _actions(s)]
        assert len(listing) == 2, function_id
        assert all(_actions(s) == ["s3:ListBucket"] for s in listing)
        buckets = {str(stack.resource(name).arn) for name in ("InputBucket", "OutputBucket")}
        assert {str(s["Resource"]) for s in listing} == buckets


# Who may invoke the functions, per mode: AWS services, each scoped to this stack's source.
ALLOWED_INVOKERS = {"s3.amazonaws.com", "events.amazonaws.com"}


def test_no_function_has_a_public_url_or_an_unauthenticated_trigger(stacks: dict[str, ResolvedStack]) -> None:
    for mode, stack in stacks.items():
        types = {resource.type for resource in stack.resources.values()}
        assert "AWS::Lambda::Url" not in types, mode
        assert not types & {"AWS::ApiGateway::RestApi", "AWS::ApiGatewayV2::Api", "AWS::Serverless::Api"}, (
            mode
        )
        for resource in stack.of_type("AWS::Lambda::Permission"):
            logical_id, props = resource.logical_id, resource.properties
            assert props["Action"] == "lambda:InvokeFunction", logical_id
            assert props["Principal"] in ALLOWED_INVOKERS, (mode, logical_id)
            assert "FunctionUrlAuthType" not in props, logical_id
            assert "SourceArn" in props, f"{logical_id} lets any {props['Principal']} source invoke"
            if props["Principal"] == "s3.amazonaws.com":
                assert "SourceAccount" in props, f"{logical_id}: bucket names are global, pin the account"


@pytest.mark.parametrize("mode", MODES)
def test_output_writes_and_deletes_are_scoped_to_the_output_prefixes(
    stacks: dict[str, ResolvedStack], mode: str
) -> None:
    stack = stacks[mode]
    output_bucket = stack.resource("OutputBucket").arn
    env = _resolved_function(stack, FUNCTION)["Environment"]["Variables"]
    prefixes = {f"{output_bucket}/{env[name]}*" for name in OUTPUT_PREFIXES}
    for function_id in FUNCTIONS:
        writes = {
            resource
            for action, resource in _grants(_role_statements(stack, function_id))
            if action in {"s3:PutObject", "s3:DeleteObject"}
        }
        assert writes == prefixes, function_id
        assert f"{output_bucket}/*" not in writes


def _access_log_destination(stack: ResolvedStack) -> dict[str, Any] | None:
    logging: dict[str, Any] | None = stack.resource("InputBucket").properties.get("LoggingConfiguration")
    return logging


def test_input_access_logging_is_off_by_default(stacks: dict[str, ResolvedStack]) -> None:
    stack = stacks["off"]

    assert _access_log_destination(stack) is None
    assert "AccessLogBucket" not in stack.resources
    assert "InputAccessLogBucketName" not in stack.outputs


def test_input_access_logs_can_go_to_a_new_private_bucket_only_s3_logging_may_write(
    stacks: dict[str, ResolvedStack],
) -> None:
    stack = stacks["on"]
    log_bucket = stack.resource("AccessLogBucket")
    input_bucket = stack.resource("InputBucket")

    assert _access_log_destination(stack) == {
        "DestinationBucketName": log_bucket.physical_name,
        "LogFilePrefix": "input-access-logs/",
    }
    assert stack.outputs["InputAccessLogBucketName"] == log_bucket.physical_name
    # server access logging can only write with SSE-S3
    [rule] = log_bucket.properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert "LoggingConfiguration" not in log_bucket.properties  # no log of the logs
    [policy] = [
        p.properties["PolicyDocument"]
        for p in stack.of_type("AWS::S3::BucketPolicy")
        if p.properties["Bucket"] == log_bucket.physical_name
    ]
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "S3ServerAccessLogsFromTheInputBucket",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": f"{log_bucket.arn}/input-access-logs/*",
            "Condition": {
                "ArnLike": {"aws:SourceArn": input_bucket.arn},
                "StringEquals": {"aws:SourceAccount": stack.account_id},
            },
        }
    ]


def test_input_access_logs_can_go_to_a_bucket_the_user_names(stacks: dict[str, ResolvedStack]) -> None:
    stack = stacks["access-logs-to-an-existing-bucket"]

    assert _access_log_destination(stack) == {
        "DestinationBucketName": "my-log-bucket",
        "LogFilePrefix": "s3/",
    }
    assert "AccessLogBucket" not in stack.resources
    assert stack.outputs["InputAccessLogBucketName"] == "my-log-bucket"


def test_capacity_defaults_agree_with_the_pool(cfn: dict[str, Any]) -> None:
    """The pool caps Deepgram requests for every stack that shares it; the function's reserved
    concurrency and the buffer's MaximumConcurrency are no larger by default (more would only wait),
    and both stay below Deepgram's pay-as-you-go limits (50 in all, 10 with audio intelligence)."""
    parameters, capacity = cfn["Parameters"], cfn["Mappings"]["Settings"]["Capacity"]
    # 0: the DeepgramRegion's defaults (tests/template/test_parameters.py checks every region's)
    assert int(parameters["CapacityPoolSize"]["Default"]) == int(capacity["CapacityAiCeiling"]) == 0
    region = cfn["Mappings"]["DeepgramRegions"][parameters["DeepgramRegion"]["Default"]]
    pool = int(region["PoolSize"])
    assert pool < 50
    assert int(region["AiCeiling"]) <= 10
    assert int(parameters["ReservedConcurrency"]["Default"]) <= pool
    assert int(capacity["BufferedMaximumConcurrency"]) <= pool
    assert capacity["CapacityTableName"] == ""


EVENT_BUS = "Settings.Outputs.EventBusName"
COMPLETION_EVENTS = "Settings.Outputs.CompletionEvents"


@pytest.mark.parametrize("overrides", [{}, {EVENT_BUS: "transcripts"}, {COMPLETION_EVENTS: "false"}])
def test_completion_events_sample_rule_is_a_disabled_consumer_of_this_environment(
    overrides: dict[str, str],
) -> None:
    """The sample rule (disabled) matches what the code publishes, on the bus it publishes to, and
    sends it to its own queue, which only that rule may write to; nothing exists with events off."""
    stack = _resolve(overrides)
    env = _resolved_function(stack, FUNCTION)["Environment"]["Variables"]
    rules = {r.logical_id for r in stack.of_type("AWS::Events::Rule")}
    if overrides.get(COMPLETION_EVENTS) == "false":
        assert env["COMPLETION_EVENTS"] == "false"
        assert COMPLETION_EVENTS_RULE not in rules
        assert not [g for g in _per_object_grants(stack) if g[0].startswith("events:")]
        return
    rule = stack.resource(COMPLETION_EVENTS_RULE).properties
    assert rule["State"] == "DISABLED"
    assert rule["EventBusName"] == env["EVENT_BUS_NAME"] == overrides.get(EVENT_BUS, "default")
    pattern = rule["EventPattern"]
    assert pattern["source"] == [EVENT_SOURCE]
    assert pattern["detail-type"] == [TRANSCRIPT_CREATED, TRANSCRIPTION_FAILED]
    assert pattern["detail"] == {"environment": [env["ENVIRONMENT_NAME"]]}
    queue = stack.resource(COMPLETION_EVENTS_QUEUE)
    (target,) = rule["Targets"]
    assert target["Arn"] == queue.arn
    (policy,) = [
        p.properties for p in stack.of_type("AWS::SQS::QueuePolicy") if queue.ref in p.properties["Queues"]
    ]
    (allow,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Condition"]["ArnEquals"]["aws:SourceArn"] == stack.resource(COMPLETION_EVENTS_RULE).arn
    bus = f"arn:aws:events:us-east-1:123456789012:event-bus/{env['EVENT_BUS_NAME']}"
    assert ("events:PutEvents", bus) in _per_object_grants(stack)
