"""Provisioning moto from templates, S3 -> SQS routing, secrets, reset and the invoke CLI."""

import json
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from localworld.aws import LocalAws, client_env, is_s3_test_event
from localworld.invoke import env_overrides_from_file, main, parse_parameter_overrides, run_invoke
from localworld.template import Stack, load_stack

FIXTURE_TEMPLATE = Path(__file__).parent / "fixtures" / "template.yaml"
INPUT_BUCKET = "transcriber-local-input-123456789012-us-east-1"


def test_provision_creates_declared_resources(local_aws: LocalAws, fixture_stack: Stack) -> None:
    result = local_aws.provision(fixture_stack)

    s3 = local_aws.s3()
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {
        INPUT_BUCKET,
        "transcriber-local-outputbucket",
    }
    assert s3.get_bucket_versioning(Bucket=INPUT_BUCKET)["Status"] == "Enabled"
    assert "Status" not in s3.get_bucket_versioning(Bucket="transcriber-local-outputbucket")

    ddb = local_aws.dynamodb()
    table = ddb.describe_table(TableName="transcriber-local-IdempotencyTable")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = ddb.describe_time_to_live(TableName="transcriber-local-IdempotencyTable")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiration"}

    # The queue's RedrivePolicy needs the DLQ to exist first; the template lists the DLQ later.
    sqs = local_aws.sqs()
    attributes = sqs.get_queue_attributes(QueueUrl=result.created["WorkQueue"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:transcriber-local-dlq",
        "maxReceiveCount": 3,
    }
    assert attributes["VisibilityTimeout"] == "60"

    subscriptions = local_aws.sns().list_subscriptions()["Subscriptions"]
    assert [s["Endpoint"] for s in subscriptions] == [
        "arn:aws:sqs:us-east-1:123456789012:transcriber-local-dlq"
    ]
    # The function and what the SAM transform made for it have no local resource to create.
    assert {fixture_stack.resource(logical_id).type for logical_id in result.skipped} == {
        "AWS::Lambda::Function",
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::Permission",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::IAM::Role",
    }


def test_template_queue_refs_reach_moto(local_aws: LocalAws, fixture_stack: Stack) -> None:
    local_aws.provision(fixture_stack)
    queue_url = fixture_stack.function("EchoFunction").environment["WORK_QUEUE_URL"]  # AWS-form URL

    local_aws.sqs().send_message(QueueUrl=queue_url, MessageBody="hello")
    messages = local_aws.sqs().receive_message(QueueUrl=queue_url)["Messages"]

    assert [m["Body"] for m in messages] == ["hello"]


def test_bucket_notifications_follow_the_function_s3_event(local_aws: LocalAws, fixture_stack: Stack) -> None:
    local_aws.provision(fixture_stack)
    queue_url = local_aws.route_bucket_notifications(fixture_stack, "EchoFunction")
    s3, sqs = local_aws.s3(), local_aws.sqs()

    s3.put_object(Bucket=INPUT_BUCKET, Key="elsewhere/ignored.wav", Body=b"x")
    s3.put_object(Bucket=INPUT_BUCKET, Key="uploads/a b.wav", Body=b"x")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]

    bodies = [json.loads(m["Body"]) for m in messages]
    assert not any(is_s3_test_event(m["Body"]) for m in messages)
    # moto URL-encodes the key more than S3 does ("/" too): consumers must unquote_plus either way.
    assert [unquote_plus(b["Records"][0]["s3"]["object"]["key"]) for b in bodies] == ["uploads/a b.wav"]
    assert bodies[0]["Records"][0]["eventName"] == "ObjectCreated:Put"
    assert bodies[0]["Records"][0]["s3"]["configurationId"] == "EchoFunction-InputBucketNotification0"


def test_notifications_carry_version_id_and_sequencer_like_s3s(
    local_aws: LocalAws, fixture_stack: Stack
) -> None:
    local_aws.provision(fixture_stack)
    queue_url = local_aws.route_bucket_notifications(fixture_stack, "EchoFunction")
    s3, sqs = local_aws.s3(), local_aws.sqs()

    versions = [
        s3.put_object(Bucket=INPUT_BUCKET, Key="uploads/v.wav", Body=b)["VersionId"] for b in (b"1", b"2")
    ]
    s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=INPUT_BUCKET, Key="uploads/v.wav", Body=b"3")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]

    records = [json.loads(m["Body"])["Records"][0]["s3"]["object"] for m in messages]
    assert [r["versionId"] for r in records] == [*versions, "null"]
    sequencers = [int(r["sequencer"], 16) for r in records]
    assert sequencers == sorted(sequencers)
    assert len(set(sequencers)) == 3


def test_routing_twice_keeps_one_configuration(local_aws: LocalAws, fixture_stack: Stack) -> None:
    local_aws.provision(fixture_stack)
    local_aws.route_bucket_notifications(fixture_stack, "EchoFunction")
    local_aws.route_bucket_notifications(fixture_stack, "EchoFunction")

    config = local_aws.s3().get_bucket_notification_configuration(Bucket=INPUT_BUCKET)
    assert [c["Id"] for c in config["QueueConfigurations"]] == ["EchoFunction-InputBucketNotification0"]


def test_secrets_can_be_created_updated_and_left_empty(local_aws: LocalAws) -> None:
    client = local_aws.secretsmanager()

    local_aws.create_secret("deepgram/key", "first")
    local_aws.create_secret("deepgram/key", "second")
    local_aws.create_secret("binary", b"\x00\x01")
    local_aws.create_secret("empty", None)

    assert client.get_secret_value(SecretId="deepgram/key")["SecretString"] == "second"
    assert client.get_secret_value(SecretId="binary")["SecretBinary"] == b"\x00\x01"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_secret_value(SecretId="empty")


def test_reset_clears_everything(local_aws: LocalAws, fixture_stack: Stack) -> None:
    local_aws.provision(fixture_stack)
    local_aws.reset()

    assert local_aws.s3().list_buckets()["Buckets"] == []


def test_client_env_points_boto3_at_moto() -> None:
    env = client_env("http://127.0.0.1:1234", "eu-west-1")

    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1234"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"


def test_real_template_provisions_buckets_table_and_log_group(
    local_aws: LocalAws, real_template: Path
) -> None:
    stack = load_stack(real_template, {"DeepgramSecretId": "deepgram/local/api-key"})
    result = local_aws.provision(stack)

    buckets = {b["Name"] for b in local_aws.s3().list_buckets()["Buckets"]}
    assert buckets == {
        "transcriber-local-input-123456789012-us-east-1",
        "transcriber-local-output-123456789012-us-east-1",
    }
    assert local_aws.dynamodb().describe_table(TableName=stack.resource("IdempotencyTable").physical_name)
    assert "TranscribeFunction" in result.skipped
    queue_url = local_aws.route_bucket_notifications(stack, "TranscribeFunction")
    assert queue_url.endswith("transcriber-local-TranscribeFunction-s3-events")


def test_real_template_provisions_the_completion_events_rule_as_declared(
    local_aws: LocalAws, real_template: Path
) -> None:
    """EventBridge rules that target queues are created in their template state, with their targets;
    the sample consumer of the completion events stays disabled until a test enables it."""
    stack = load_stack(real_template, {"DeepgramSecretId": "deepgram/local/api-key"})
    local_aws.provision(stack)
    rule = stack.resource("CompletionEventsSampleRule")
    events = local_aws.events()

    described = events.describe_rule(Name=rule.physical_name, EventBusName="default")

    assert described["State"] == "DISABLED"
    assert json.loads(described["EventPattern"]) == rule.properties["EventPattern"]
    [target] = events.list_targets_by_rule(Rule=rule.physical_name, EventBusName="default")["Targets"]
    assert target["Arn"] == stack.resource("CompletionEventsSampleQueue").arn
    events.enable_rule(Name=rule.physical_name, EventBusName="default")
    detail = {"environment": stack.parameters["EnvironmentName"]}
    entry = {
        "Source": "deepgram-s3-transcriber",
        "DetailType": "Transcript Created",
        "Detail": json.dumps(detail),
    }
    events.put_events(Entries=[entry])  # type: ignore[list-item]
    queue_url = local_aws.sqs().get_queue_url(
        QueueName=stack.resource("CompletionEventsSampleQueue").physical_name
    )
    [message] = local_aws.sqs().receive_message(QueueUrl=queue_url["QueueUrl"], WaitTimeSeconds=2)["Messages"]
    assert json.loads(message["Body"])["detail"] == detail


def test_rules_on_a_named_bus_create_the_bus(local_aws: LocalAws, real_template: Path) -> None:
    stack = load_stack(
        real_template,
        {"DeepgramSecretId": "deepgram/local/api-key", "Settings.Outputs.EventBusName": "transcripts"},
    )
    local_aws.events().create_event_bus(Name="transcripts")  # a bus that exists already is used
    local_aws.provision(stack)

    rule = stack.resource("CompletionEventsSampleRule")
    assert local_aws.events().describe_rule(Name=rule.physical_name, EventBusName="transcripts")["Arn"]


# --- invoke CLI ----------------------------------------------------------------------------


def test_env_vars_file_takes_only_declared_variables(fixture_stack: Stack) -> None:
    spec = fixture_stack.function("EchoFunction")
    data = {
        "Parameters": {"LOG_LEVEL": "WARNING", "OTHER": 1},
        "EchoFunction": {"COUNT": 7, "ENABLED": False},
    }

    taken, ignored = env_overrides_from_file(data, spec)

    assert taken == {"LOG_LEVEL": "WARNING", "COUNT": "7", "ENABLED": "false"}
    assert ignored == ["OTHER"]


def test_parameter_overrides_accept_both_forms() -> None:
    assert parse_parameter_overrides(["A=1", "ParameterKey=B,ParameterValue=x=y"]) == {"A": "1", "B": "x=y"}


def test_run_invoke_in_a_moto_world() -> None:
    result = run_invoke(
        "EchoFunction",
        {"hello": "world"},
        template=FIXTURE_TEMPLATE,
        env_vars={"EchoFunction": {"LOG_LEVEL": "ERROR"}},
        warn=lambda _message: None,
    )

    assert result.ok, result.error
    env = result.payload["env"]
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert env["LOG_LEVEL"] == "ERROR"
    assert result.payload["event"] == {"hello": "world"}


def test_cli_prints_logs_then_result_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"n": 3, "reason": "bad audio"}))
    template = tmp_path / "template.yaml"
    template.write_text(
        FIXTURE_TEMPLATE.read_text()
        .replace("CodeUri: handlers/", f"CodeUri: {FIXTURE_TEMPLATE.parent / 'handlers'}")
        .replace("ContentUri: layer/", f"ContentUri: {FIXTURE_TEMPLATE.parent / 'layer'}")
        .replace("Handler: echo.handler", "Handler: printer.handler")
    )

    code = main(
        ["--function", "EchoFunction", "--event", str(event), "--template", str(template), "--world", "none"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out) == 3
    assert "stdout line for 3" in err

    template.write_text(template.read_text().replace("printer.handler", "boom.handler"))
    code = main(["-f", "EchoFunction", "-e", str(event), "-t", str(template), "--world", "none"])
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["errorType"] == "TranscriptionFailedError"
    assert "[ERROR] TranscriptionFailedError: cannot transcribe: bad audio" in err
