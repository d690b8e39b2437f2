"""The commands the stack's outputs print run with what the project installs: `make` targets of this
repository, with the variables those targets read (the AWS CLI is not installed, see docs/deploy.md)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from samstack import ResolvedStack
from tests.docs import make_target_variables
from tests.template.parsed import load_template, resolve_stack

pytestmark = pytest.mark.template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REQUIRED = {"DeepgramSecretId": "deepgram/dev/api-key"}
EVERYTHING_ON = {"BufferedMode": "true", "ExistingBucketName": "my-archive"}
# The one command no make target covers: turning on an existing bucket's EventBridge notifications.
# Its output says it is the AWS CLI and names the console's way instead.
AWS_CLI_OUTPUTS = {"ExistingBucketSetupCommand"}


def _stack(overrides: dict[str, str]) -> ResolvedStack:
    return resolve_stack(TEMPLATE, REQUIRED | overrides, stack_name="dg-transcriber-dev")


def _commands(stack: ResolvedStack) -> dict[str, str]:
    return {name: value for name, value in stack.outputs.items() if name.endswith("Command")}


def test_every_command_output_is_a_make_target_with_variables_it_reads() -> None:
    commands = _commands(_stack(EVERYTHING_ON | {"Settings.Capacity.EnableBackfill": "true"}))
    targets = make_target_variables()

    assert commands.keys() >= {
        "UploadCommand",
        "RedriveCommand",
        "UploadBufferRedriveCommand",
        "BackfillCommand",
    }
    for name, command in commands.items():
        if name in AWS_CLI_OUTPUTS:
            continue
        words = shlex.split(re.sub(r"<[^>]*>", "X", command))
        assert words[0] == "make", f"{name}: {command}"
        assert words[1] in targets, f"{name}: no make target {words[1]}"
        given = {word.split("=", 1)[0] for word in words[2:]}
        assert given <= targets[words[1]], (
            f"{name}: make {words[1]} does not read {given - targets[words[1]]}"
        )


def test_the_commands_name_this_stack_and_its_queues() -> None:
    stack = _stack(EVERYTHING_ON)
    commands = _commands(stack)

    assert commands["UploadCommand"] == "make upload STACK=dg-transcriber-dev FILE=./recording.wav"
    assert commands["RedriveCommand"] == "make redrive STACK=dg-transcriber-dev"
    buffer, buffer_dlq = (stack.resource(q).ref for q in ("UploadBufferQueue", "UploadBufferDeadLetterQueue"))
    assert commands["UploadBufferRedriveCommand"] == f"make redrive FROM={buffer_dlq} TO={buffer}"


def test_an_aws_cli_output_says_so_and_gives_the_way_without_it() -> None:
    stack = _stack(EVERYTHING_ON)
    outputs = load_template(TEMPLATE)["Outputs"]
    for name in AWS_CLI_OUTPUTS:
        assert stack.outputs[name].startswith("aws ")
        description = " ".join(outputs[name]["Description"].split())
        assert "AWS CLI" in description
        assert "does not install" in description
        assert "S3 console" in description
    cli = {name for name, value in stack.outputs.items() if str(value).startswith("aws ")}
    assert cli == AWS_CLI_OUTPUTS


@pytest.mark.parametrize(("prefix", "output"), [("", None), ("calls/", "calls/")])
def test_the_input_prefix_output_is_what_make_upload_puts_first(prefix: str, output: str | None) -> None:
    stack = _stack({"Settings.Uploads.InputPrefix": prefix})

    assert stack.outputs.get("InputPrefix") == output
