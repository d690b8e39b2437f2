"""Store the webhook's API key in the secret the stack's webhook connection reads (docs/webhooks.md).

    python scripts/webhook_secret.py [--config-env prod]        (the Makefile: make webhook-secret)

The secret is template.yaml's Settings.Webhook.ApiKeySecret, else webhook/<EnvironmentName>/api-key
(EnvironmentName from samconfig.toml's environment, as `sam deploy --config-env` reads it). The key is
read from WEBHOOK_API_KEY or a hidden prompt, never printed. Store it before the deployment that turns
the webhook on: CloudFormation reads it when it creates or updates the connection, so a new key
reaches EventBridge with the next `make deploy`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from samstack import load_template
from scripts.deployment import (
    DEFAULT_ENVIRONMENT_NAME,
    SAMCONFIG,
    Deployment,
    DeploymentError,
    parameter_overrides,
)

TEMPLATE: Final = Path(__file__).resolve().parent.parent / "template.yaml"


def secret_id(config_env: str, template: Path = TEMPLATE, samconfig: Path = SAMCONFIG) -> str:
    named = str(load_template(template)["Mappings"]["Settings"]["Webhook"]["ApiKeySecret"])
    if named:
        return named
    deploy = tomllib.loads(samconfig.read_text(encoding="utf-8")).get(config_env, {}).get("deploy", {})
    overrides = parameter_overrides(deploy.get("parameters", {}).get("parameter_overrides", ""))
    return f"webhook/{overrides.get('EnvironmentName') or DEFAULT_ENVIRONMENT_NAME}/api-key"


def read_api_key(prompt: Callable[[str], str] | None = None) -> str:
    ask = prompt or getpass.getpass
    key = os.environ.get("WEBHOOK_API_KEY", "").strip() or ask("Webhook API key (not shown): ").strip()
    if not key:
        raise DeploymentError("no API key: set WEBHOOK_API_KEY or type it at the prompt")
    return key


def store(client: Any, name: str, api_key: str) -> str:
    """Create the secret, or add the key as its new current version; returns the version id."""
    try:
        response = client.put_secret_value(SecretId=name, SecretString=api_key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        response = client.create_secret(
            Name=name,
            SecretString=api_key,
            Description="API key EventBridge sends to the transcriber's webhook",
        )
    return str(response["VersionId"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-env", default="default")
    args = parser.parse_args(argv)
    try:
        deployment = Deployment.from_samconfig(args.config_env)
        name = secret_id(args.config_env)
        version = store(boto3.client("secretsmanager", region_name=deployment.region), name, read_api_key())
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (NoCredentialsError, ClientError, BotoCoreError) as exc:
        print(f"error: could not store the webhook key: {exc}", file=sys.stderr)
        return 1
    print(
        f"Stored the webhook API key in secret {name} ({deployment.region}), version {version}. "
        f"Stack {deployment.stack_name} sends it from its next deployment "
        f"(make deploy ENV={args.config_env})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
