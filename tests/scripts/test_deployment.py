"""scripts/deployment.py: `make secret` and what `make delete` says is kept, against moto."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from samstack import load_template
from scripts import deployment
from scripts.deployment import Deployment, main

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "dg-secret-key-0123456789abcdef"  # a stand-in: the point is that it never shows
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "DEEPGRAM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def test_each_samconfig_environment_names_its_stack_region_and_secret() -> None:
    dev, prod = Deployment.from_samconfig("default"), Deployment.from_samconfig("prod")
    assert (dev.stack_name, dev.region, dev.secret_id) == (
        "dg-transcriber-dev",
        REGION,
        "deepgram/dev/api-key",
    )
    assert (prod.stack_name, prod.secret_id) == ("dg-transcriber-prod", "deepgram/prod/api-key")


def test_without_a_secret_override_the_secret_is_the_one_the_template_derives(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text(
        'version = 0.1\n[qa.deploy.parameters]\nstack_name = "dg-qa"\nregion = "eu-west-1"\n'
        'parameter_overrides = "EnvironmentName=qa AlarmEmail=a@example.com"\n'
        '[bare.deploy.parameters]\nstack_name = "dg-bare"\nregion = "eu-west-1"\n',
        encoding="utf-8",
    )
    assert Deployment.from_samconfig("qa", config).secret_id == "deepgram/qa/api-key"
    template_default = load_template(REPO_ROOT / "template.yaml")["Parameters"]["EnvironmentName"]["Default"]
    assert Deployment.from_samconfig("bare", config).secret_id == f"deepgram/{template_default}/api-key"
    with pytest.raises(deployment.DeploymentError, match="no environment 'staging'"):
        Deployment.from_samconfig("staging", config)


def test_secret_stores_the_key_from_the_environment_and_never_prints_it(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", API_KEY)
    assert main(["secret", "--config-env", "prod"]) == 0
    monkeypatch.setenv("DEEPGRAM_API_KEY", API_KEY + "-rotated")
    assert main(["secret", "--config-env", "prod"]) == 0  # a second run adds a version

    client = boto3.client("secretsmanager", region_name=REGION)
    assert client.get_secret_value(SecretId="deepgram/prod/api-key")["SecretString"] == API_KEY + "-rotated"
    output = capsys.readouterr()
    assert "deepgram/prod/api-key" in output.out
    assert API_KEY not in output.out + output.err


def test_secret_asks_for_the_key_without_echo_when_the_variable_is_unset(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []

    def typed(prompt: str) -> str:
        prompts.append(prompt)
        return API_KEY

    monkeypatch.setattr("getpass.getpass", typed)
    assert main(["secret"]) == 0
    assert prompts == ["Deepgram API key (not shown): "]
    client = boto3.client("secretsmanager", region_name=REGION)
    assert client.get_secret_value(SecretId="deepgram/dev/api-key")["SecretString"] == API_KEY
    monkeypatch.setattr("getpass.getpass", lambda prompt: "")
    assert main(["secret"]) == 2
    assert "no API key" in capsys.readouterr().err


def test_kept_lists_the_retained_buckets_and_the_secret_with_commands_that_remove_them(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    buckets = [f"dg-transcriber-dev-{role}-{ACCOUNT}-{REGION}" for role in ("input", "output")]
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket=bucket, Key="a.wav", Body=b"1")
        s3.put_object(Bucket=bucket, Key="a.wav", Body=b"2")
        s3.delete_object(Bucket=bucket, Key="a.wav")  # two versions and a delete marker
    monkeypatch.setenv("DEEPGRAM_API_KEY", API_KEY)
    main(["secret"])
    capsys.readouterr()

    assert main(["kept"]) == 0
    report = capsys.readouterr().out
    for bucket in buckets:
        assert f"s3://{bucket}: " in report
        assert f"remove-bucket --bucket {bucket} --region {REGION}" in report
    assert "(3 object versions)" in report
    assert "access-logs" not in report, "only buckets that exist are listed"
    assert f"remove-secret --secret-id deepgram/dev/api-key --region {REGION}" in report
    assert "Deleted with the stack:" in report

    for bucket in buckets:
        assert main(["remove-bucket", "--bucket", bucket, "--region", REGION, "--yes"]) == 0
    assert main(["remove-secret", "--secret-id", "deepgram/dev/api-key", "--region", REGION]) == 0
    assert s3.list_buckets()["Buckets"] == []
    assert main(["kept"]) == 0
    assert "nothing: no bucket, queue, table or secret of this stack is left" in capsys.readouterr().out


def test_kept_says_nothing_was_deleted_while_the_stack_exists(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sam delete` answered "no": the stack is still there, and so is everything in it."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(
        StackName="dg-transcriber-dev",
        TemplateBody='{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}',
    )
    assert main(["kept"]) == 0
    assert (
        capsys.readouterr().out == "Stack dg-transcriber-dev (us-east-1) still exists: nothing was deleted.\n"
    )
    cloudformation.delete_stack(StackName="dg-transcriber-dev")
    assert main(["kept"]) == 0
    assert "Kept after deleting stack dg-transcriber-dev" in capsys.readouterr().out


def test_remove_bucket_asks_first(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="kept-bucket")
    monkeypatch.setattr("builtins.input", lambda question: "n")
    assert main(["remove-bucket", "--bucket", "kept-bucket", "--region", REGION]) == 1
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["kept-bucket"]


def test_make_secret_stores_the_key_over_http(tmp_path: Path) -> None:
    """The Makefile target itself, against moto server: ENV picks the samconfig environment."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": endpoint,
            "DEEPGRAM_API_KEY": API_KEY,
        }
        result = subprocess.run(
            ["make", "--no-print-directory", "secret", "ENV=prod"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert API_KEY not in result.stdout + result.stderr
        client = boto3.client(
            "secretsmanager",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert client.get_secret_value(SecretId="deepgram/prod/api-key")["SecretString"] == API_KEY
    finally:
        server.stop()


def test_kept_lists_the_webhook_key_secret_with_its_removal_command(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make webhook-secret` stores a key the stack never owned: a deleted stack leaves it behind."""
    from scripts.webhook_secret import secret_id

    name = secret_id("prod")
    assert name in {"webhook/prod/api-key", deployment_settings_webhook_secret()}
    boto3.client("secretsmanager", region_name=REGION).create_secret(Name=name, SecretString=API_KEY)

    assert main(["kept", "--config-env", "prod"]) == 0
    report = capsys.readouterr().out
    assert f"secret {name}: the webhook's API key (make webhook-secret)" in report
    assert f"remove-secret --secret-id {name} --region {REGION}" in report
    assert "deepgram/prod/api-key" not in report, "only secrets that exist are listed"
    assert API_KEY not in report

    assert main(["remove-secret", "--secret-id", name, "--region", REGION]) == 0
    assert main(["kept", "--config-env", "prod"]) == 0
    assert "nothing: no bucket, queue, table or secret of this stack is left" in capsys.readouterr().out


def deployment_settings_webhook_secret() -> str:
    """template.yaml's Settings.Webhook.ApiKeySecret (empty: the derived name)."""
    return str(load_template(REPO_ROOT / "template.yaml")["Mappings"]["Settings"]["Webhook"]["ApiKeySecret"])


def test_the_kept_list_is_what_the_template_retains() -> None:
    """Every queue and table template.yaml keeps on deletion is on `make delete`'s list, and no other."""
    resources = load_template(REPO_ROOT / "template.yaml")["Resources"]
    retained = {
        logical_id: spec["Type"]
        for logical_id, spec in resources.items()
        if spec.get("DeletionPolicy") == "Retain"
        and spec["Type"] in {"AWS::SQS::Queue", "AWS::DynamoDB::Table"}
    }
    assert set(deployment.KEPT_QUEUES) == {i for i, t in retained.items() if t == "AWS::SQS::Queue"}
    assert set(deployment.KEPT_TABLES) == {i for i, t in retained.items() if t == "AWS::DynamoDB::Table"}
    for logical_id in retained:
        assert resources[logical_id].get("UpdateReplacePolicy") == "Retain", logical_id


def test_kept_lists_the_waiting_queues_and_the_shared_capacity_table_with_commands_that_remove_them(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    parking = sqs.create_queue(QueueName="dg-transcriber-dev-ParkingQueue-1AB2C3")["QueueUrl"]
    sqs.send_message(QueueUrl=parking, MessageBody="{}")
    sqs.create_queue(QueueName="dg-transcriber-dev-UploadBufferQueue-9ZZ")  # deleted with the stack
    sqs.create_queue(QueueName="dg-transcriber-devx-ParkingQueue-1AB2C3")  # another stack's
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="dg-transcriber-dev-CapacityTable-XYZ",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    assert main(["kept"]) == 0
    report = capsys.readouterr().out
    assert f"queue {parking}: events that failed for good and wait for a person (1 messages)" in report
    assert f"remove-queue --queue-url {parking} --region {REGION}" in report
    assert "UploadBufferQueue" not in report.split("Deleted with the stack:")[0]
    assert "devx" not in report
    assert "table dg-transcriber-dev-CapacityTable-XYZ: the Deepgram capacity pool" in report
    assert "whoever shares it owns it" in report
    assert f"remove-table --table-name dg-transcriber-dev-CapacityTable-XYZ --region {REGION}" in report

    assert main(["remove-queue", "--queue-url", parking, "--region", REGION]) == 0
    assert (
        main(["remove-table", "--table-name", "dg-transcriber-dev-CapacityTable-XYZ", "--region", REGION])
        == 0
    )
    assert dynamodb.list_tables()["TableNames"] == []
    assert parking not in sqs.list_queues().get("QueueUrls", [])
