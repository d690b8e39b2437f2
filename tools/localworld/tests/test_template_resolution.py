"""load_stack: parameters, conditions, Globals (by the SAM transform), intrinsics and physical names,
as a deploy would; and what the local runtime needs per function."""

from pathlib import Path

import pytest

from localworld.aws import s3_subscriptions
from localworld.template import DeadLetterTarget, Stack, TemplateError, load_stack

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"

ACCOUNT_REGION = "123456789012-us-east-1"


def test_function_environment_is_fully_resolved(fixture_stack: Stack) -> None:
    env = fixture_stack.function("EchoFunction").environment

    assert env == {
        "POWERTOOLS_SERVICE_NAME": "fixture",  # from Globals
        "LOG_LEVEL": "DEBUG",  # the function's value wins over Globals
        "OUTPUT_BUCKET": "transcriber-local-outputbucket",  # generated, lower-cased bucket name
        "INPUT_BUCKET_ARN": f"arn:aws:s3:::transcriber-local-input-{ACCOUNT_REGION}",
        "IDEMPOTENCY_TABLE": "transcriber-local-IdempotencyTable",
        "WORK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/transcriber-local-WorkQueue",
        "DLQ_ARN": "arn:aws:sqs:us-east-1:123456789012:transcriber-local-dlq",
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:transcriber-local-AlertTopic",
        "SECRET_ID": "fixture/secret",
        "FIRST_LANGUAGE": "en",
        "JOINED": "a|dev|z",
        "MODE": "development",
        "LITERAL": "${NotResolved}-us-east-1",
        "ENABLED": "true",
        "COUNT": "5",
    }


def test_function_spec_merges_globals_and_finds_layers(fixture_stack: Stack) -> None:
    spec = fixture_stack.function("EchoFunction")

    assert spec.function_name == "transcriber-local-EchoFunction"
    assert (
        spec.function_arn == "arn:aws:lambda:us-east-1:123456789012:function:transcriber-local-EchoFunction"
    )
    assert spec.handler == "echo.handler"
    assert spec.runtime == "python3.13"
    assert spec.code_uri == FIXTURES / "handlers"
    assert spec.layers == [FIXTURES / "layer"]
    assert spec.external_layers[0].startswith("arn:aws:lambda:us-east-1:017000801446:layer:")
    assert (spec.timeout, spec.memory_mb, spec.reserved_concurrency) == (2, 512, 2)
    assert spec.event_invoke_config == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    assert spec.dead_letter_queue == DeadLetterTarget(
        "SQS", "arn:aws:sqs:us-east-1:123456789012:transcriber-local-dlq"
    )
    # The SAM S3 event, as the transform writes it: a notification on the bucket.
    assert spec.events["InputBucketNotification0"] == {
        "Type": "S3",
        "Properties": {
            "Bucket": f"transcriber-local-input-{ACCOUNT_REGION}",
            "Events": "s3:ObjectCreated:*",
            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}},
        },
    }


def test_conditions_follow_parameter_overrides() -> None:
    dev = load_stack(FIXTURE_TEMPLATE)
    prod = load_stack(FIXTURE_TEMPLATE, {"Environment": "prod", "UploadPrefix": ""})

    assert dev.conditions == {"IsProd": False, "HasPrefix": True, "ProdWithPrefix": False}
    assert "ProdOnlyBucket" not in dev.resources
    assert prod.resource("ProdOnlyBucket").physical_name == "transcriber-local-prodonlybucket"
    # Fn::If with AWS::NoValue removes the key entirely.
    assert "STRICT" not in dev.function("EchoFunction").environment
    assert "Filter" not in prod.function("EchoFunction").events["InputBucketNotification0"]["Properties"]
    assert prod.function("EchoFunction").environment["MODE"] == "production"
    assert (
        load_stack(FIXTURE_TEMPLATE, {"Environment": "prod"}).function("EchoFunction").environment["STRICT"]
        == "yes"
    )


def test_refs_arns_outputs_and_dependencies(fixture_stack: Stack) -> None:
    queue = fixture_stack.resource("WorkQueue")

    assert queue.ref == "https://sqs.us-east-1.amazonaws.com/123456789012/transcriber-local-WorkQueue"
    assert queue.arn == "arn:aws:sqs:us-east-1:123456789012:transcriber-local-WorkQueue"
    assert queue.properties["RedrivePolicy"]["deadLetterTargetArn"].endswith(":transcriber-local-dlq")
    assert "DeadLetterQueue" in queue.depends_on
    assert fixture_stack.resource("IdempotencyTable").arn == (
        "arn:aws:dynamodb:us-east-1:123456789012:table/transcriber-local-IdempotencyTable"
    )
    assert fixture_stack.outputs == {
        "InputBucketName": f"transcriber-local-input-{ACCOUNT_REGION}",
        "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:transcriber-local-EchoFunction",
        "RoleArn": "arn:aws:iam::123456789012:role/transcriber-local-EchoFunctionRole",  # SAM-generated
    }


def test_stack_name_region_and_endpoint_shape_names() -> None:
    stack = load_stack(
        FIXTURE_TEMPLATE, stack_name="other", region="eu-west-1", endpoint_url="http://127.0.0.1:5555"
    )

    assert stack.resource("InputBucket").physical_name == "other-input-123456789012-eu-west-1"
    assert stack.resource("WorkQueue").ref == "http://127.0.0.1:5555/123456789012/other-WorkQueue"
    assert (
        stack.function("EchoFunction").environment["DLQ_ARN"]
        == "arn:aws:sqs:eu-west-1:123456789012:other-dlq"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Environment": "staging"}, "AllowedValues"),
        ({"NoSuchParameter": "x"}, "undeclared"),
        ({"ReservedConcurrency": "many"}, "not a Number"),
    ],
)
def test_bad_parameter_overrides_are_rejected(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        load_stack(FIXTURE_TEMPLATE, overrides)


def test_real_template_derives_the_secret_from_the_environment(real_template: Path) -> None:
    env = load_stack(real_template, {"EnvironmentName": "qa"}).function("TranscribeFunction").environment
    assert env["DEEPGRAM_SECRET_ID"] == "deepgram/qa/api-key"


def test_unknown_reference_and_function_are_reported(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: !Ref Missing\n"
    )

    with pytest.raises(TemplateError, match="Missing"):
        load_stack(template)
    with pytest.raises(TemplateError, match="no function 'Nope'"):
        load_stack(FIXTURE_TEMPLATE).function("Nope")


def test_real_template_transcribe_function_resolves(real_template: Path) -> None:
    stack = load_stack(real_template, {"DeepgramSecretId": "deepgram/local/api-key"})
    spec = stack.function("TranscribeFunction")

    assert spec.handler == "app.lambda_handler"
    assert spec.code_uri == real_template.parent / "functions" / "transcribe"
    assert real_template.parent / "layers" / "shared" in spec.layers
    assert spec.environment["OUTPUT_BUCKET"] == f"transcriber-local-output-{ACCOUNT_REGION}"
    assert stack.resource("InputBucket").physical_name == f"transcriber-local-input-{ACCOUNT_REGION}"
    assert spec.environment["IDEMPOTENCY_TABLE"] == stack.resource("IdempotencyTable").physical_name
    assert spec.environment["DEEPGRAM_SECRET_ID"] == "deepgram/local/api-key"
    assert spec.environment["DEEPGRAM_API_URL"].startswith("https://")
    [subscription] = s3_subscriptions(stack, "TranscribeFunction").values()
    assert subscription["Bucket"] == stack.resource("InputBucket").physical_name
    assert subscription["Events"] == "s3:ObjectCreated:*"


@pytest.mark.parametrize(
    ("find", "mapping", "message"),
    [
        ("[M, !If [C, K, K], V]", "V: x", "not allowed inside it"),  # only Ref and FindInMap
        ("[M, K, V]", "V: {Nested: x}", "not a string or a list of strings"),
        ("[M, K, V, {DefaultValue: x}]", "V: x", "takes \\[map, top key, key\\]"),  # needs LanguageExtensions
    ],
)
def test_find_in_map_refuses_what_cloudformation_refuses(
    tmp_path: Path, find: str, mapping: str, message: str
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Conditions:\n  C: !Equals [a, a]\n"
        f"Mappings:\n  M:\n    K:\n      {mapping}\n"
        "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n    Properties:\n"
        f"      BucketName: !FindInMap {find}\n"
    )

    with pytest.raises(TemplateError, match=message):
        load_stack(template)
