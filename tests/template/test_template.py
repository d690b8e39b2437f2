"""template.yaml: cfn-lint (SAM source and translated CloudFormation), sam validate, sam build,
and the security and wiring properties other code relies on.

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

from scripts.translate_template import translate_template

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
BUCKETS = ("InputBucket", "OutputBucket")

# Every action the transcribe function's own statements may grant. Adding one is a reviewed change.
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
    "TRANSCRIPT_PREFIX": "transcripts/",
    "FAILURE_PREFIX": "failures/",
    "POWERTOOLS_SERVICE_NAME": "transcriber",
    "POWERTOOLS_METRICS_NAMESPACE": "DeepgramTranscriber",
    "POWERTOOLS_LOG_LEVEL": {"Ref": "LogLevel"},
}

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


@pytest.fixture(scope="module")
def function_props(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    function = resources[FUNCTION]
    assert function["Type"] == "AWS::Lambda::Function"
    props: dict[str, Any] = function["Properties"]
    return props


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
    result = _run([*CFN_LINT, str(translated_path)])
    assert result.returncode == 0, _explain(result)


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
    assert (build_dir / FUNCTION / "app.py").is_file()
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


def test_function_role_is_least_privilege(
    resources: dict[str, dict[str, Any]], function_props: dict[str, Any]
) -> None:
    role_id = function_props["Role"]["Fn::GetAtt"][0]
    role = resources[role_id]["Properties"]

    for arn in role.get("ManagedPolicyArns", []):
        assert isinstance(arn, str), arn
        assert arn.split(":iam::aws:policy/", 1)[1] in ALLOWED_MANAGED_POLICIES, arn

    allowed_resources = _allowed_resource_strings(resources)
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    assert statements
    granted: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement, statement
        assert "NotResource" not in statement, statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            assert "*" not in action, f"wildcard action {action!r} in {statement.get('Sid')}"
        granted.update(actions)
        for resource in _as_strings(statement["Resource"]):
            if resource == "*":
                assert set(actions) <= WILDCARD_RESOURCE_ACTIONS, statement
            else:
                assert resource in allowed_resources, f"{statement.get('Sid')} grants {resource!r}"
    assert granted <= ALLOWED_ACTIONS | WILDCARD_RESOURCE_ACTIONS, granted - ALLOWED_ACTIONS
    assert "s3:ListBucket" not in granted


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


def test_function_has_log_group_with_retention(resources: dict[str, dict[str, Any]]) -> None:
    groups = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
        and r["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{FUNCTION}}}"}
    ]
    assert len(groups) == 1
    assert groups[0]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


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


def test_function_environment(cfn: dict[str, Any], function_props: dict[str, Any]) -> None:
    variables: dict[str, Any] = function_props["Environment"]["Variables"]
    missing = REQUIRED_ENV.keys() - variables.keys()
    assert not missing, f"missing environment variables: {sorted(missing)}"
    for name, expected in REQUIRED_ENV.items():
        assert variables[name] == expected, name
    for name, value in variables.items():
        assert _is_plain_env_value(value, cfn), f"{name}: {value!r} must be a literal, Ref, GetAtt or Sub"


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
    }
    assert cfn["Outputs"]["TranscriptPrefix"]["Value"] == REQUIRED_ENV["TRANSCRIPT_PREFIX"]


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
