"""template.yaml: cfn-lint (SAM source and translated CloudFormation), sam validate, sam build,
and the security, wiring and failure-handling ("nothing lost") properties other code relies on.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.translate_template import load_template, translate_template

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
BUCKETS = ("InputBucket", "OutputBucket")
DEAD_LETTER_QUEUE = "TranscribeDeadLetterQueue"
PARKING_QUEUE = "ParkingQueue"
QUEUES = (DEAD_LETTER_QUEUE, PARKING_QUEUE)
ALARM_TOPIC = "AlarmTopic"
MIN_RETENTION_SECONDS = 4 * 24 * 3600  # survives a long weekend
SQS_MAX_VISIBILITY_SECONDS = 43200

# Every action the functions' per-object work may grant (both run it). Adding one is a reviewed change.
ALLOWED_ACTIONS = {
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "secretsmanager:GetSecretValue",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
}
# SQS grants per function, as (action, resource) pairs: nothing on other queues, nothing on "*".
SQS_GRANTS = {
    # SAM's DeadLetterQueue policy: Lambda sends failed async events with the function's role.
    FUNCTION: {("sqs:SendMessage", f"${{{DEAD_LETTER_QUEUE}.Arn}}")},
    RETRY_FUNCTION: {
        # The SQS event source mapping polls with the function's role.
        ("sqs:ReceiveMessage", f"${{{DEAD_LETTER_QUEUE}.Arn}}"),
        ("sqs:DeleteMessage", f"${{{DEAD_LETTER_QUEUE}.Arn}}"),
        ("sqs:GetQueueAttributes", f"${{{DEAD_LETTER_QUEUE}.Arn}}"),
        # Backoff: the function delays a failed message's next receive.
        ("sqs:ChangeMessageVisibility", f"${{{DEAD_LETTER_QUEUE}.Arn}}"),
        # Failures no retry can fix may be parked at once.
        ("sqs:SendMessage", f"${{{PARKING_QUEUE}.Arn}}"),
    },
}
# Grants a function cannot work without.
REQUIRED_SQS_GRANTS = {
    FUNCTION: SQS_GRANTS[FUNCTION],
    RETRY_FUNCTION: SQS_GRANTS[RETRY_FUNCTION] - {("sqs:SendMessage", f"${{{PARKING_QUEUE}.Arn}}")},
}
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

REQUIRED_ENV = {
    "ENVIRONMENT_NAME": {"Ref": "EnvironmentName"},
    "OUTPUT_BUCKET": {"Ref": "OutputBucket"},
    "DEEPGRAM_SECRET_ID": {"Ref": "DeepgramSecretId"},
    "DEEPGRAM_API_URL": {"Ref": "DeepgramApiUrl"},
    "IDEMPOTENCY_TABLE": {"Ref": "IdempotencyTable"},
    "DEEPGRAM_MODEL": {"Ref": "DeepgramModel"},
    "DEEPGRAM_LANGUAGE": {"Ref": "DeepgramLanguage"},
    "DEEPGRAM_SMART_FORMAT": {"Ref": "DeepgramSmartFormat"},
    "DEEPGRAM_PUNCTUATE": {"Ref": "DeepgramPunctuate"},
    "DEEPGRAM_DIARIZE": {"Ref": "DeepgramDiarize"},
    "DEEPGRAM_UTTERANCES": {"Ref": "DeepgramUtterances"},
    "DEEPGRAM_PARAGRAPHS": {"Ref": "DeepgramParagraphs"},
    "DEEPGRAM_TAG": {"Ref": "DeepgramTag"},
    "DEEPGRAM_EXTRA_OPTIONS": {"Ref": "DeepgramExtraOptions"},
    "ALLOWED_EXTENSIONS": {"Ref": "MediaExtensions"},
    "SECRET_MAX_AGE_SECONDS": {"Ref": "SecretMaxAgeSeconds"},
    "PRESIGN_EXPIRY_SECONDS": {"Ref": "PresignExpirySeconds"},
    "IDEMPOTENCY_TTL_SECONDS": {"Ref": "IdempotencyTtlSeconds"},
    "DEEPGRAM_MAX_ATTEMPTS": {"Ref": "DeepgramMaxAttempts"},
    "TRANSCRIPT_PREFIX": "transcripts/",
    "FAILURE_PREFIX": "failures/",
    "POWERTOOLS_SERVICE_NAME": "transcriber",
    "POWERTOOLS_METRICS_NAMESPACE": "DeepgramTranscriber",
    "POWERTOOLS_LOG_LEVEL": {"Ref": "LogLevel"},
}
RETRY_ENV = {
    "DEAD_LETTER_QUEUE_URL": {"Ref": DEAD_LETTER_QUEUE},
    "PARKING_QUEUE_URL": {"Ref": PARKING_QUEUE},
    "RETRY_MAX_ATTEMPTS": {"Ref": "RetryMaxAttempts"},
    "RETRY_BASE_DELAY_SECONDS": {"Ref": "RetryBaseDelaySeconds"},
    "RETRY_MAX_DELAY_SECONDS": {"Ref": "RetryMaxDelaySeconds"},
    "BLOCKED_RETRY_DELAY_SECONDS": {"Ref": "BlockedRetryDelaySeconds"},
}
FUNCTION_ENV = {FUNCTION: REQUIRED_ENV, RETRY_FUNCTION: REQUIRED_ENV | RETRY_ENV}

# The SAM transform resolves EventInvokeConfig's parameter Refs to their values (samtranslator
# resolve_parameter_refs), so the translated template no longer uses these parameters (W2001).
TRANSFORM_RESOLVED_PARAMETERS = {"AsyncRetryAttempts", "MaximumEventAgeSeconds"}

PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


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
    """The translated (plain CloudFormation) template."""
    return translate_template(TEMPLATE)


@pytest.fixture(scope="module")
def translated_path(cfn: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("translated") / "template.json"
    path.write_text(json.dumps(cfn, indent=2), encoding="utf-8")
    return path


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


def test_cfn_lint_passes_on_sam_template() -> None:
    result = _run([*CFN_LINT, str(TEMPLATE)])
    assert result.returncode == 0, _explain(result)


def test_cfn_lint_passes_on_translated_template(translated_path: Path) -> None:
    result = _run([*CFN_LINT[:-1], "--format", "json", "--", str(translated_path)])
    # cfn-lint's exit code is a bit mask (2 error, 4 warning, 8 informational); 1 means it failed.
    assert not result.returncode & 1, _explain(result)
    findings = [
        f
        for f in json.loads(result.stdout or "[]")
        # Not a fault: see TRANSFORM_RESOLVED_PARAMETERS.
        if not (
            f["Rule"]["Id"] == "W2001"
            and f["Location"]["Path"][:1] == ["Parameters"]
            and f["Location"]["Path"][1] in TRANSFORM_RESOLVED_PARAMETERS
        )
    ]
    assert not findings, json.dumps(findings, indent=2)


def test_sam_validate_lint_passes() -> None:
    result = _run([*SAM, "validate", "--lint", "--region", "us-east-1", "--template", str(TEMPLATE)])
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


def _bucket_name_sub(resources: dict[str, dict[str, Any]], logical_id: str) -> str:
    name = resources[logical_id]["Properties"]["BucketName"]
    assert set(name) == {"Fn::Sub"}, f"{logical_id} needs an explicit BucketName (see template comment)"
    value: str = name["Fn::Sub"]
    return value


def _allowed_resource_strings(resources: dict[str, dict[str, Any]]) -> set[str]:
    input_name = _bucket_name_sub(resources, "InputBucket")
    output_name = _bucket_name_sub(resources, "OutputBucket")
    return {
        f"arn:${{AWS::Partition}}:s3:::{input_name}/*",
        f"arn:${{AWS::Partition}}:s3:::{output_name}/*",
        "${InputBucket.Arn}/*",
        "${OutputBucket.Arn}/*",
        "${IdempotencyTable.Arn}",
        "${DeepgramSecretId}",
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${DeepgramSecretId}-??????",
    }


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return list(action) if isinstance(action, list) else [action]


def _role_properties(resources: dict[str, dict[str, Any]], function_id: str) -> dict[str, Any]:
    role_ref = _function_props(resources, function_id)["Role"]
    assert set(role_ref) == {"Fn::GetAtt"}, f"{function_id} must use a role from this stack"
    role = resources[role_ref["Fn::GetAtt"][0]]
    assert role["Type"] == "AWS::IAM::Role"
    props: dict[str, Any] = role["Properties"]
    return props


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_role_is_least_privilege(resources: dict[str, dict[str, Any]], function_id: str) -> None:
    role = _role_properties(resources, function_id)

    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"]["Service"] in ("lambda.amazonaws.com", ["lambda.amazonaws.com"]), trust
    assert trust["Action"] in ("sts:AssumeRole", ["sts:AssumeRole"]), trust
    assert trust["Effect"] == "Allow"

    for arn_value in role.get("ManagedPolicyArns", []):
        (arn,) = _as_strings(arn_value)
        # Rules out e.g. AWSLambdaSQSQueueExecutionRole, which grants SQS actions on every queue.
        assert arn.split(":iam::aws:policy/", 1)[1] in ALLOWED_MANAGED_POLICIES, arn

    allowed_resources = _allowed_resource_strings(resources)
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    assert statements
    granted: set[str] = set()
    sqs_granted: set[tuple[str, str]] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement, statement
        assert "NotResource" not in statement, statement
        actions = _actions(statement)
        for action in actions:
            assert "*" not in action, f"wildcard action {action!r} in {statement.get('Sid')}"
        granted.update(actions)
        for resource in _as_strings(statement["Resource"]):
            for action in actions:
                if action.startswith("sqs:"):
                    # Only this stack's queues, and only the grants the function needs.
                    assert (action, resource) in SQS_GRANTS[function_id], (
                        f"{statement.get('Sid')}: {action} on {resource!r}"
                    )
                    sqs_granted.add((action, resource))
                elif resource == "*":
                    assert action in WILDCARD_RESOURCE_ACTIONS, statement
                else:
                    assert resource in allowed_resources, f"{statement.get('Sid')} grants {resource!r}"
    sqs_actions = {action for action, _ in SQS_GRANTS[function_id]}
    assert granted <= ALLOWED_ACTIONS | WILDCARD_RESOURCE_ACTIONS | sqs_actions, granted - ALLOWED_ACTIONS
    assert "s3:ListBucket" not in granted
    missing = REQUIRED_SQS_GRANTS[function_id] - sqs_granted
    assert not missing, f"{function_id} lacks {sorted(missing)}"


def test_functions_share_their_per_object_permissions(resources: dict[str, dict[str, Any]]) -> None:
    """The retry function re-runs the transcribe function's work, so it needs the same grants."""

    def work_statements(function_id: str) -> list[dict[str, Any]]:
        role = _role_properties(resources, function_id)
        statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
        return sorted((s for s in statements if not _actions(s)[0].startswith("sqs:")), key=json.dumps)

    assert work_statements(RETRY_FUNCTION) == work_statements(FUNCTION)


def test_function_reads_input_bucket_by_name_not_ref(resources: dict[str, dict[str, Any]]) -> None:
    """A !Ref/!GetAtt of InputBucket in the role would close the bucket -> permission -> function cycle."""
    role = json.dumps(resources["TranscribeFunctionRole"])
    assert '"InputBucket"' not in role
    assert "InputBucket.Arn" not in role


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
    assert all(
        rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"}
        for rule in encryption
    )
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
        if s["Effect"] == "Deny"
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
    assert groups[0]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_has_a_failure_path(resources: dict[str, dict[str, Any]], function_id: str) -> None:
    """Nothing is lost: an asynchronously invoked function has a dead-letter queue (or an on-failure
    destination); an SQS-polling function's failed messages return to their queue, whose redrive
    policy moves them on after the last attempt."""
    props = _function_props(resources, function_id)
    function_ref = {"Ref": function_id}
    async_sources = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["FunctionName"] == function_ref
    ]
    mappings = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping" and r["Properties"]["FunctionName"] == function_ref
    ]
    assert async_sources or mappings, f"{function_id} has no event source"
    if async_sources:
        destinations = [
            r["Properties"]["DestinationConfig"].get("OnFailure")
            for r in resources.values()
            if r["Type"] == "AWS::Lambda::EventInvokeConfig"
            and r["Properties"]["FunctionName"] == function_ref
        ]
        target = props.get("DeadLetterConfig", {}).get("TargetArn")
        assert target or any(destinations), f"{function_id} is invoked asynchronously without a failure path"
        if target:
            queue_id = target["Fn::GetAtt"][0]
            assert resources[queue_id]["Type"] == "AWS::SQS::Queue"
    for mapping in mappings:
        queue_id = mapping["EventSourceArn"]["Fn::GetAtt"][0]
        queue = resources[queue_id]
        assert queue["Type"] == "AWS::SQS::Queue"
        assert "RedrivePolicy" in queue["Properties"], f"{queue_id} needs a redrive policy"
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
    if key == "Ref":
        return arg in names and arg != "AWS::NoValue"
    if key == "Fn::GetAtt":
        return isinstance(arg, list) and arg[0] in cfn["Resources"]
    if key == "Fn::Sub" and isinstance(arg, str):
        variables = {v.split(".", 1)[0] for v in _SUB_VARIABLE.findall(arg)}
        return bool(variables) and variables <= names | PSEUDO_PARAMETERS
    return False


@pytest.mark.parametrize("function_id", FUNCTIONS)
def test_function_environment(cfn: dict[str, Any], resources: dict[str, Any], function_id: str) -> None:
    variables: dict[str, Any] = _function_props(resources, function_id)["Environment"]["Variables"]
    required = FUNCTION_ENV[function_id]
    missing = required.keys() - variables.keys()
    assert not missing, f"missing environment variables: {sorted(missing)}"
    for name, expected in required.items():
        assert variables[name] == expected, name
    for name, value in variables.items():
        assert _is_plain_env_value(value, cfn), f"{name}: {value!r} must be a literal, Ref, GetAtt or Sub"


def test_shared_environment_lives_in_globals(source: dict[str, Any]) -> None:
    """Both functions run the same per-object work; one place keeps their settings in step."""
    shared = source["Globals"]["Function"]["Environment"]["Variables"]
    assert shared == REQUIRED_ENV
    for function_id in FUNCTIONS:
        own = source["Resources"][function_id]["Properties"].get("Environment", {}).get("Variables", {})
        assert not own.keys() & shared.keys(), f"{function_id} overrides shared variables"


def test_function_runtime_and_wiring(
    resources: dict[str, dict[str, Any]], function_props: dict[str, Any]
) -> None:
    assert function_props["Runtime"] == "python3.13"
    assert function_props["Handler"] == "app.lambda_handler"
    assert function_props["Architectures"] == ["arm64"]
    assert function_props["TracingConfig"] == {"Mode": "Active"}
    assert function_props["MemorySize"] == {"Ref": "MemorySize"}
    assert function_props["Timeout"] == {"Ref": "FunctionTimeout"}
    (layer,) = function_props["Layers"]
    layer_resource = resources[layer["Ref"]]
    assert layer_resource["Type"] == "AWS::Lambda::LayerVersion"
    assert layer_resource["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer_resource["Properties"]["CompatibleArchitectures"] == function_props["Architectures"]

    bucket = resources["InputBucket"]["Properties"]
    notifications = bucket["NotificationConfiguration"]["LambdaConfigurations"]
    assert [n["Event"] for n in notifications] == ["s3:ObjectCreated:*"]
    assert notifications[0]["Function"] == {"Fn::GetAtt": [FUNCTION, "Arn"]}
    assert "NotificationConfiguration" not in resources["OutputBucket"]["Properties"], "no transcript loops"


def test_retry_function_wiring(resources: dict[str, dict[str, Any]]) -> None:
    transcribe, retry = _function_props(resources, FUNCTION), _function_props(resources, RETRY_FUNCTION)
    assert retry["Handler"] == "app.lambda_handler"
    for key in ("Runtime", "Architectures", "TracingConfig", "MemorySize", "Layers"):
        assert retry[key] == transcribe[key], key
    assert retry["Timeout"] == {"Ref": "RetryFunctionTimeout"}
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
    assert props["EventInvokeConfig"] == {key: {"Ref": name} for key, name in refs.items()}
    assert set(refs.values()) == TRANSFORM_RESOLVED_PARAMETERS

    (config,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert config["FunctionName"] == {"Ref": FUNCTION}
    assert config["Qualifier"] == "$LATEST"
    for key, name in refs.items():
        # Resolved by the transform (CloudFormation passes the stack's values to it).
        assert config[key] == int(cfn["Parameters"][name]["Default"]), key


@pytest.mark.parametrize("queue_id", QUEUES)
def test_queue_is_encrypted_and_keeps_messages(resources: dict[str, dict[str, Any]], queue_id: str) -> None:
    queue = resources[queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    props = queue["Properties"]
    assert props.get("SqsManagedSseEnabled") is True or props.get("KmsMasterKeyId"), (
        f"{queue_id} is unencrypted"
    )
    assert not props.get("FifoQueue"), "Lambda dead-letter queues must be standard queues"
    assert int(props["MessageRetentionPeriod"]) >= MIN_RETENTION_SECONDS


def test_queues_are_tls_only(resources: dict[str, dict[str, Any]]) -> None:
    for queue_id in QUEUES:
        policies = [
            r["Properties"]
            for r in resources.values()
            if r["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue_id} in r["Properties"]["Queues"]
        ]
        assert len(policies) == 1, queue_id
        denies = [
            s
            for s in policies[0]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s["Principal"] in ("*", {"AWS": "*"})
            and s["Action"] in ("sqs:*", ["sqs:*"])
            and str(s["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
        ]
        assert len(denies) == 1, queue_id
        assert f"${{{queue_id}.Arn}}" in _as_strings(denies[0]["Resource"])


def test_dead_letter_queue_feeds_retry_function_then_parking_queue(cfn: dict[str, Any]) -> None:
    resources, parameters = cfn["Resources"], cfn["Parameters"]
    dlq = resources[DEAD_LETTER_QUEUE]["Properties"]
    # Lambda's advice for SQS event sources: visibility timeout >= 6 x the function timeout.
    max_retry_timeout = int(parameters["RetryFunctionTimeout"]["MaxValue"])
    assert 6 * max_retry_timeout <= int(dlq["VisibilityTimeout"]) <= SQS_MAX_VISIBILITY_SECONDS
    assert dlq["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [PARKING_QUEUE, "Arn"]},
        "maxReceiveCount": {"Ref": "RetryMaxAttempts"},
    }
    parking = resources[PARKING_QUEUE]["Properties"]
    assert "RedrivePolicy" not in parking, "the parking queue is the end of the line"
    assert int(parking["MessageRetentionPeriod"]) >= int(dlq["MessageRetentionPeriod"])

    attempts = parameters["RetryMaxAttempts"]
    assert int(attempts["Default"]) == 8
    assert int(attempts["MinValue"]) >= 2
    assert int(attempts["MaxValue"]) <= 50
    for name in ("RetryBaseDelaySeconds", "RetryMaxDelaySeconds", "BlockedRetryDelaySeconds"):
        # The retry function delays with ChangeMessageVisibility, which stops at 12 hours.
        assert int(parameters[name]["MaxValue"]) <= SQS_MAX_VISIBILITY_SECONDS, name
    # With the defaults, the last retry happens long before the first enqueue's retention ends
    # (for standard queues, a redriven message keeps its original enqueue time).
    longest_delay = max(
        int(parameters[n]["Default"]) for n in ("RetryMaxDelaySeconds", "BlockedRetryDelaySeconds")
    )
    assert int(attempts["Default"]) * longest_delay <= int(dlq["MessageRetentionPeriod"]) // 4


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
    assert age["Threshold"] == {"Ref": "DeadLetterAgeAlarmSeconds"}
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
    """S3 rejects filter rules with an empty Value: each rule sits behind a "parameter set" condition."""
    bucket = resources["InputBucket"]["Properties"]
    notification = bucket["NotificationConfiguration"]["LambdaConfigurations"][0]
    condition_name, with_filter, without_filter = notification["Filter"]["Fn::If"]
    assert without_filter == {"Ref": "AWS::NoValue"}
    rules = with_filter["S3Key"]["Rules"]
    assert {r["Fn::If"][1]["Name"] for r in rules} == {"prefix", "suffix"}
    guarded = set()
    for rule in rules:
        condition, value, otherwise = rule["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
        parameter = value["Value"]["Ref"]
        assert cfn["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
        guarded.add(condition)
    assert cfn["Conditions"][condition_name] == {"Fn::Or": [{"Condition": c} for c in sorted(guarded)]}


def test_parameters_and_outputs(cfn: dict[str, Any]) -> None:
    parameters = cfn["Parameters"]
    assert "Default" not in parameters["DeepgramSecretId"]
    assert all(p.get("Description") for p in parameters.values())
    assert int(parameters["ReservedConcurrency"]["MaxValue"]) < 100, "stay below Deepgram's concurrency limit"
    assert int(parameters["FunctionTimeout"]["MaxValue"]) <= 900
    assert parameters["EnvironmentName"]["Default"] == "dev"
    assert parameters["DeepgramModel"]["Default"] == "nova-3"
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
    assert cfn["Outputs"]["TranscriptPrefix"]["Value"] == REQUIRED_ENV["TRANSCRIPT_PREFIX"]
    assert cfn["Outputs"]["FailurePrefix"]["Value"] == REQUIRED_ENV["FAILURE_PREFIX"]
    assert cfn["Outputs"]["DeadLetterQueueUrl"]["Value"] == {"Ref": DEAD_LETTER_QUEUE}
    assert cfn["Outputs"]["ParkingQueueUrl"]["Value"] == {"Ref": PARKING_QUEUE}
    assert cfn["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": ALARM_TOPIC}

    expected = {
        "AsyncRetryAttempts": (2, 0, 2),
        "MaximumEventAgeSeconds": (21600, 60, 21600),
        "RetryFunctionTimeout": (900, 30, 900),
        "RetryMaxAttempts": (8, 2, 50),
        "RetryBaseDelaySeconds": (60, None, None),
        "RetryMaxDelaySeconds": (3600, None, SQS_MAX_VISIBILITY_SECONDS),
        "BlockedRetryDelaySeconds": (3600, None, SQS_MAX_VISIBILITY_SECONDS),
        "DeadLetterAgeAlarmSeconds": (3600, None, None),
    }
    for name, (default, minimum, maximum) in expected.items():
        parameter = parameters[name]
        assert parameter["Type"] == "Number", name
        assert int(parameter["Default"]) == default, name
        if minimum is not None:
            assert int(parameter["MinValue"]) == minimum, name
        if maximum is not None:
            assert int(parameter["MaxValue"]) == maximum, name


def test_idempotency_table_matches_powertools_defaults(resources: dict[str, dict[str, Any]]) -> None:
    props = resources["IdempotencyTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


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
