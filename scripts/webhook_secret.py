"""Store the webhook's API key in the secret the stack's webhook connection reads (docs/webhooks.md).

    python scripts/webhook_secret.py [--config-env prod]        (the Makefile: make webhook-secret)

The secret is template.yaml's Settings.Webhook.ApiKeySecret, else webhook/<EnvironmentName>/api-key
(EnvironmentName from samconfig.toml's environment, as `sam deploy --config-env` reads it). The key is
read from WEBHOOK_API_KEY or a hidden prompt, never printed. Store it before the deployment that turns
the webhook on: CloudFormation reads it when it creates the connection, and again only when the
template's reference changes, so a changed key must be given to the connection (docs/webhooks.md).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from samstack import load_template
from scripts.deployment import (
    DEFAULT_ENVIRONMENT_NAME,
    SAMCONFIG,
    Deployment,
    DeploymentError,
    parameter_overrides,
    read_api_key,
    store_secret,
)

TEMPLATE: Final = Path(__file__).resolve().parent.parent / "template.yaml"


def secret_id(config_env: str, template: Path = TEMPLATE, samconfig: Path = SAMCONFIG) -> str:
    named = str(load_template(template)["Mappings"]["Settings"]["Webhook"]["ApiKeySecret"])
    if named:
        return named
    deploy = tomllib.loads(samconfig.read_text(encoding="utf-8")).get(config_env, {}).get("deploy", {})
    overrides = parameter_overrides(deploy.get("parameters", {}).get("parameter_overrides", ""))
    return f"webhook/{overrides.get('EnvironmentName') or DEFAULT_ENVIRONMENT_NAME}/api-key"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-env", default="default")
    args = parser.parse_args(argv)
    try:
        deployment = Deployment.from_samconfig(args.config_env)
        name = secret_id(args.config_env)
        key = read_api_key(variable="WEBHOOK_API_KEY", what="Webhook API key")
        client = boto3.client("secretsmanager", region_name=deployment.region)
        version = store_secret(client, name, key, "API key EventBridge sends to the transcriber's webhook")
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (NoCredentialsError, ClientError, BotoCoreError) as exc:
        print(f"error: could not store the webhook key: {exc}", file=sys.stderr)
        return 1
    print(
        f"Stored the webhook API key in secret {name} ({deployment.region}), version {version}. "
        f"A new stack reads it when it creates the webhook connection; stack {deployment.stack_name} "
        "already deployed keeps the old key until its connection is updated (docs/webhooks.md)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
