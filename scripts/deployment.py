"""Deployment chores around `sam deploy` and `sam delete`, with boto3 (the AWS CLI is not needed).

    python scripts/deployment.py secret [--config-env prod]      store the Deepgram API key
    python scripts/deployment.py kept [--config-env prod]        what a deleted stack leaves behind
    python scripts/deployment.py remove-bucket --bucket NAME --region R [--yes]
    python scripts/deployment.py remove-secret --secret-id ID --region R

The Makefile runs them (`make secret`, `make delete`). The stack name, region and secret id of an
environment come from samconfig.toml, as `sam deploy --config-env` reads them: the secret is the
DeepgramSecretId override, else the one the template derives, deepgram/<EnvironmentName>/api-key.
The API key is read from DEEPGRAM_API_KEY or a hidden prompt and never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SAMCONFIG: Final = REPO_ROOT / "samconfig.toml"
DEFAULT_CONFIG_ENV: Final = "default"
DEFAULT_ENVIRONMENT_NAME: Final = "dev"  # template.yaml's EnvironmentName default
# Buckets the stack names "<stack>-<role>-<account>-<region>" and keeps when it is deleted
# (DeletionPolicy: Retain), with what they hold.
KEPT_BUCKETS: Final = {
    "input": "uploaded audio",
    "output": "transcripts, captions and failure records",
    "access-logs": "the input bucket's S3 access logs (only with InputAccessLogBucket=new)",
}
# Queues that hold waiting work and the capacity table (which other stacks may share), kept when the
# stack is deleted or an update replaces them (DeletionPolicy and UpdateReplacePolicy: Retain). They
# carry CloudFormation's generated names, "<stack>-<logical id>-<suffix>".
KEPT_QUEUES: Final = {
    "TranscribeDeadLetterQueue": "failed events the retry function was working through",
    "ParkingQueue": "events that failed for good and wait for a person",
    "UploadBufferDeadLetterQueue": "buffered uploads that failed 5 times",
    "WebhookDeadLetterQueue": "completion events the webhook did not accept",
}
KEPT_TABLES: Final = {
    "CapacityTable": (
        "the Deepgram capacity pool; stacks that name it (Settings.Capacity.CapacityTableName) still use it, "
        "so whoever shares it owns it: remove it only when none does"
    ),
}
DELETED_WITH_THE_STACK: Final = (
    "the functions and their layer, the upload buffer and sample queues, the idempotency table, the log "
    "groups, alarms, dashboard and alarm topic; its KMS key after 7 days"
)
SECRET_RECOVERY_DAYS: Final = 7


class DeploymentError(Exception):
    """A chore cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Deployment:
    """One samconfig.toml environment: where `sam deploy --config-env <name>` puts the stack."""

    config_env: str
    stack_name: str
    region: str
    secret_id: str

    @classmethod
    def from_samconfig(cls, config_env: str, path: Path = SAMCONFIG) -> Deployment:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        if config_env not in config:
            known = ", ".join(name for name in config if isinstance(config[name], dict))
            raise DeploymentError(f"no environment {config_env!r} in {path.name} (known: {known})")
        sections = config[config_env]
        deploy = sections.get("deploy", {}).get("parameters", {})
        shared = sections.get("global", {}).get("parameters", {})
        stack_name = deploy.get("stack_name") or shared.get("stack_name")
        region = deploy.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not stack_name or not region:
            raise DeploymentError(f"{path.name} [{config_env}] must name stack_name and region")
        overrides = parameter_overrides(deploy.get("parameter_overrides", ""))
        environment_name = overrides.get("EnvironmentName") or DEFAULT_ENVIRONMENT_NAME
        secret_id = overrides.get("DeepgramSecretId") or f"deepgram/{environment_name}/api-key"
        return cls(config_env, stack_name, region, secret_id)


def parameter_overrides(text: str | Sequence[str]) -> dict[str, str]:
    """samconfig's parameter_overrides ("Key=Value Key2='a b'" or a list) as a dict."""
    items = shlex.split(text) if isinstance(text, str) else list(text)
    return dict(item.split("=", 1) for item in items if "=" in item)


# --- make secret ---------------------------------------------------------------------------------


def read_api_key(
    prompt: Callable[[str], str] | None = None,
    variable: str = "DEEPGRAM_API_KEY",
    what: str = "Deepgram API key",
) -> str:
    """The key from ``variable``, else a hidden prompt; never echoed."""
    ask = prompt or getpass.getpass
    key = os.environ.get(variable, "").strip() or ask(f"{what} (not shown): ").strip()
    if not key:
        raise DeploymentError(f"no API key: set {variable} or type it at the prompt")
    return key


def store_secret(
    client: Any, secret_id: str, api_key: str, description: str = "Deepgram API key of the S3 transcriber"
) -> str:
    """Create the secret, or add the key as its new current version; returns the version id."""
    try:
        response = client.put_secret_value(SecretId=secret_id, SecretString=api_key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        response = client.create_secret(Name=secret_id, SecretString=api_key, Description=description)
    return str(response["VersionId"])


def command_secret(deployment: Deployment) -> int:
    api_key = read_api_key()
    client = boto3.client("secretsmanager", region_name=deployment.region)
    version = store_secret(client, deployment.secret_id, api_key)
    print(
        f"Stored the Deepgram API key in secret {deployment.secret_id} ({deployment.region}), version "
        f"{version}. Stack {deployment.stack_name} reads it (warm functions within 5 minutes)."
    )
    return 0


# --- make delete: what is kept, and how to remove it ---------------------------------------------


def kept_bucket_names(stack_name: str, account_id: str, region: str) -> dict[str, str]:
    """Bucket name -> what it holds, as template.yaml names the retained buckets."""
    return {f"{stack_name}-{role}-{account_id}-{region}": held for role, held in KEPT_BUCKETS.items()}


def count_versions(s3: S3Client, bucket: str, limit: int = 10_000) -> int | None:
    """Object versions and delete markers in ``bucket`` (up to ``limit``); None if it does not exist."""
    count = 0
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            count += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
            if count >= limit:
                break
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"NoSuchBucket", "404"}:
            return None
        raise
    return count


def secret_exists(client: Any, secret_id: str) -> bool:
    """True while the secret exists and is not scheduled for deletion."""
    try:
        description = client.describe_secret(SecretId=secret_id)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return "DeletedDate" not in description


def stack_exists(client: Any, stack_name: str) -> bool:
    """True while CloudFormation still has the stack (not yet deleted, or deletion declined)."""
    try:
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    return any(stack["StackStatus"] != "DELETE_COMPLETE" for stack in stacks)


def webhook_secret_id(config_env: str) -> str:
    """The webhook key's secret: Settings.Webhook.ApiKeySecret, else webhook/<EnvironmentName>/api-key."""
    from scripts.webhook_secret import secret_id  # noqa: PLC0415 - that module imports this one

    return secret_id(config_env)


def this_script() -> str:
    """How to run this script again, with the interpreter that has boto3."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))}"


def command_kept(deployment: Deployment) -> int:
    session = boto3.session.Session(region_name=deployment.region)
    region = deployment.region
    if stack_exists(session.client("cloudformation"), deployment.stack_name):
        print(f"Stack {deployment.stack_name} ({region}) still exists: nothing was deleted.")
        return 0
    account_id = session.client("sts").get_caller_identity()["Account"]
    s3 = session.client("s3")
    print(f"Kept after deleting stack {deployment.stack_name} ({region}), and how to remove each:")
    found = 0
    for bucket, held in kept_bucket_names(deployment.stack_name, account_id, region).items():
        versions = count_versions(s3, bucket)
        if versions is None:
            continue
        found += 1
        print(f"  s3://{bucket}: {held} ({versions} object versions)")
        print(f"    {this_script()} remove-bucket --bucket {bucket} --region {region}")
    found += print_kept_queues_and_tables(session, deployment.stack_name, region)
    secrets = session.client("secretsmanager")
    for secret_id, held in (
        (deployment.secret_id, "the Deepgram API key (make secret)"),
        (webhook_secret_id(deployment.config_env), "the webhook's API key (make webhook-secret)"),
    ):
        if secret_exists(secrets, secret_id):
            found += 1
            print(f"  secret {secret_id}: {held}")
            print(f"    {this_script()} remove-secret --secret-id {secret_id} --region {region}")
    if not found:
        print("  nothing: no bucket, queue, table or secret of this stack is left.")
    print(f"Deleted with the stack: {DELETED_WITH_THE_STACK}.")
    print(
        "Not touched: SAM's artifact bucket (aws-sam-cli-managed-default-*, shared by every SAM stack "
        "in the region). Remove the kept buckets before deploying a stack of the same name again."
    )
    return 0


def kept_by_logical_id(
    names: Sequence[str], stack_name: str, kept: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(name, what it holds) for each name CloudFormation generated for a kept resource of the stack."""
    return [
        (name, held)
        for name in names
        for logical_id, held in kept.items()
        if name.rsplit("/", 1)[-1].startswith(f"{stack_name}-{logical_id}-")
    ]


def print_kept_queues_and_tables(session: boto3.session.Session, stack_name: str, region: str) -> int:
    """List the kept queues (with their waiting messages) and tables; returns how many."""
    sqs = session.client("sqs")
    urls = sqs.list_queues(QueueNamePrefix=f"{stack_name}-").get("QueueUrls", [])
    queues = kept_by_logical_id(urls, stack_name, KEPT_QUEUES)
    for url, held in queues:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        waiting = attributes.get("Attributes", {}).get("ApproximateNumberOfMessages", "?")
        print(f"  queue {url}: {held} ({waiting} messages)")
        print(f"    {this_script()} remove-queue --queue-url {url} --region {region}")
    tables = kept_by_logical_id(
        session.client("dynamodb").list_tables().get("TableNames", []), stack_name, KEPT_TABLES
    )
    for table, held in tables:
        print(f"  table {table}: {held}")
        print(f"    {this_script()} remove-table --table-name {table} --region {region}")
    return len(queues) + len(tables)


def object_versions(s3: S3Client, bucket: str) -> Iterator[list[ObjectIdentifierTypeDef]]:
    """Every object version and delete marker of ``bucket``, in batches DeleteObjects takes (1,000)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        batch: list[ObjectIdentifierTypeDef] = [
            {"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries if "Key" in e and "VersionId" in e
        ]
        if batch:
            yield batch


def remove_bucket(s3: S3Client, bucket: str) -> int:
    """Delete every version of every object, then the bucket; returns how many versions went."""
    removed = 0
    for batch in object_versions(s3, bucket):
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise DeploymentError(f"s3://{bucket}: could not delete {first.get('Key')}: {first.get('Code')}")
        removed += len(batch)
    s3.delete_bucket(Bucket=bucket)
    return removed


def command_remove_bucket(bucket: str, region: str, *, yes: bool) -> int:
    s3 = boto3.client("s3", region_name=region)
    versions = count_versions(s3, bucket)
    if versions is None:
        print(f"s3://{bucket} does not exist.")
        return 0
    question = f"Delete s3://{bucket} and its {versions} object versions for good? [y/N] "
    if not yes and input(question).strip().lower() not in {"y", "yes"}:
        print("Nothing deleted.")
        return 1
    removed = remove_bucket(s3, bucket)
    print(f"Deleted s3://{bucket} ({removed} object versions).")
    return 0


def command_remove_secret(secret_id: str, region: str) -> int:
    client = boto3.client("secretsmanager", region_name=region)
    client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=SECRET_RECOVERY_DAYS)
    print(
        f"Scheduled secret {secret_id} for deletion in {SECRET_RECOVERY_DAYS} days "
        "(restore_secret undoes it until then)."
    )
    return 0


def command_remove_queue(queue_url: str, region: str) -> int:
    boto3.client("sqs", region_name=region).delete_queue(QueueUrl=queue_url)
    print(f"Deleted queue {queue_url} (and any message still in it).")
    return 0


def command_remove_table(table_name: str, region: str) -> int:
    boto3.client("dynamodb", region_name=region).delete_table(TableName=table_name)
    print(f"Deleted table {table_name}.")
    return 0


# --- entry point ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/deployment.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("secret", "store the Deepgram API key"), ("kept", "what a deleted stack leaves")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config-env", default=DEFAULT_CONFIG_ENV, help="samconfig.toml environment")
    bucket = commands.add_parser("remove-bucket", help="empty a kept bucket (every version) and delete it")
    bucket.add_argument("--bucket", required=True)
    bucket.add_argument("--region", required=True)
    bucket.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    secret = commands.add_parser(
        "remove-secret", help="schedule the secret's deletion (7-day recovery window)"
    )
    secret.add_argument("--secret-id", required=True)
    secret.add_argument("--region", required=True)
    queue = commands.add_parser("remove-queue", help="delete a kept queue and its messages")
    queue.add_argument("--queue-url", required=True)
    queue.add_argument("--region", required=True)
    table = commands.add_parser("remove-table", help="delete a kept table (the capacity pool)")
    table.add_argument("--table-name", required=True)
    table.add_argument("--region", required=True)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    if args.command == "remove-bucket":
        return command_remove_bucket(args.bucket, args.region, yes=args.yes)
    if args.command == "remove-secret":
        return command_remove_secret(args.secret_id, args.region)
    if args.command == "remove-queue":
        return command_remove_queue(args.queue_url, args.region)
    if args.command == "remove-table":
        return command_remove_table(args.table_name, args.region)
    deployment = Deployment.from_samconfig(args.config_env)
    return command_secret(deployment) if args.command == "secret" else command_kept(deployment)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except NoCredentialsError:
        print(
            "error: no AWS credentials: set AWS_PROFILE (a profile in ~/.aws/config) or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            file=sys.stderr,
        )
    except (BotoCoreError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
