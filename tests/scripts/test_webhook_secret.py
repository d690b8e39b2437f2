"""scripts/webhook_secret.py (`make webhook-secret`): the key goes into the secret the template's
webhook connection reads, created or given a new version, and is never printed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from samstack import resolve_stack
from scripts import webhook_secret

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "hook-secret-0123456789abcdef"  # a stand-in: the point is that it never shows
REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "WEBHOOK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


@pytest.mark.parametrize(("config_env", "environment"), [("default", "dev"), ("prod", "prod")])
def test_the_secret_is_the_one_the_deployed_connection_reads(config_env: str, environment: str) -> None:
    stack = resolve_stack(
        REPO_ROOT / "template.yaml",
        {"EnvironmentName": environment, "Settings.Webhook.Url": "https://hooks.example.com/x"},
    )
    value = stack.resource("WebhookConnection").properties["AuthParameters"]["ApiKeyAuthParameters"][
        "ApiKeyValue"
    ]
    (read,) = re.findall(r"\{\{resolve:secretsmanager:([^}]*)\}\}", value)
    assert webhook_secret.secret_id(config_env) == read


def test_the_key_is_stored_then_rotated_and_never_printed(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_API_KEY", KEY)
    assert webhook_secret.main([]) == 0
    monkeypatch.setenv("WEBHOOK_API_KEY", KEY + "-2")
    assert webhook_secret.main([]) == 0

    client = boto3.client("secretsmanager", region_name=REGION)
    assert client.get_secret_value(SecretId="webhook/dev/api-key")["SecretString"] == KEY + "-2"
    out = capsys.readouterr()
    assert "webhook/dev/api-key" in out.out
    assert KEY not in out.out + out.err


def test_no_key_is_an_error_not_an_empty_secret(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda _prompt: "")
    assert webhook_secret.main([]) == 2
    assert "no API key" in capsys.readouterr().err
    client = boto3.client("secretsmanager", region_name=REGION)
    assert client.list_secrets()["SecretList"] == []
