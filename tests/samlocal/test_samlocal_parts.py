"""The parts of ``samlocal`` that need no container engine (these run in the ordinary test run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from samlocal import project
from samlocal.artifact import canonical, distributions, pinned
from samlocal.image import StandInImage, lambda_architecture
from samlocal.sam import HostNetworkError, host_network_options
from samstack import load_template

SAM_OPTIONS = {
    "labels": {"sam.cli.container.type": "lambda", "sam.cli.function.name": "TranscribeFunction"},
    "ports": {"8080": ("127.0.0.1", 7712)},
    "entrypoint": ["/var/rapid/aws-lambda-rie", "--log-level", "error"],
    "environment": {"A": "b"},
}


def test_sam_lambda_containers_move_to_the_host_network() -> None:
    options = host_network_options(SAM_OPTIONS)

    assert options["network_mode"] == "host"
    assert "ports" not in options
    assert options["entrypoint"] == [
        "/var/rapid/aws-lambda-rie",
        "--log-level",
        "error",
        "--runtime-interface-emulator-address",
        "127.0.0.1:7712",
    ]
    assert options["environment"] == {"A": "b"}
    assert SAM_OPTIONS["ports"] == {"8080": ("127.0.0.1", 7712)}  # the caller's dict is untouched


def test_other_containers_are_left_alone() -> None:
    options = {"labels": {"purpose": "build"}, "ports": {"80": 8000}}
    assert host_network_options(options) is options


def test_debug_ports_are_refused_rather_than_silently_dropped() -> None:
    with pytest.raises(HostNetworkError, match="extra published ports"):
        host_network_options({**SAM_OPTIONS, "ports": {"8080": ("127.0.0.1", 1), "5858": ("127.0.0.1", 2)}})


def test_the_local_template_changes_only_architecture_endpoint_names_and_paths() -> None:
    original = load_template(project.TEMPLATE)
    local = project.local_template(original, "x86_64")

    assert local["Globals"]["Function"]["Architectures"] == ["x86_64"]
    variables = local["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["AWS_ENDPOINT_URL"] == variables["REQUESTS_CA_BUNDLE"] == ""
    original_variables = original["Globals"]["Function"]["Environment"]["Variables"]
    assert {k: v for k, v in variables.items() if k not in project.ENDPOINT_VARIABLES} == original_variables
    layer = local["Resources"]["SharedLayer"]
    assert layer["Metadata"]["BuildArchitecture"] == "x86_64"
    assert Path(layer["Properties"]["ContentUri"]) == project.ROOT / "layers" / "shared"
    assert Path(local["Resources"]["TranscribeFunction"]["Properties"]["CodeUri"]).is_dir()
    # Nothing else differs: same resources, same handlers, same policies.
    assert local["Resources"].keys() == original["Resources"].keys()
    for name in ("TranscribeFunction", "RetryFunction"):
        changed = dict(local["Resources"][name]["Properties"])
        before = dict(original["Resources"][name]["Properties"])
        changed.pop("CodeUri")
        before.pop("CodeUri")
        changed.pop("Architectures", None)
        before.pop("Architectures", None)
        assert changed == before
    assert original["Globals"]["Function"]["Architectures"] == ["arm64"]  # the input is not modified


def test_env_vars_give_each_function_its_settings_and_the_local_endpoints() -> None:
    document = project.env_vars(
        project.Endpoints(
            "http://127.0.0.1:5000",
            {"TranscribeFunction": {"OUTPUT_BUCKET": "out"}, "RetryFunction": {"PARKING_QUEUE_URL": "q"}},
        )
    )
    assert document == {
        "TranscribeFunction": {
            "OUTPUT_BUCKET": "out",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "REQUESTS_CA_BUNDLE": "/var/task/localworld-ca.pem",
        },
        "RetryFunction": {
            "PARKING_QUEUE_URL": "q",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "REQUESTS_CA_BUNDLE": "/var/task/localworld-ca.pem",
        },
    }


def test_the_image_key_changes_with_what_the_image_is_built_from() -> None:
    image = StandInImage("x86_64")
    assert image.name == "public.ecr.aws/lambda/python:3.13-x86_64"
    assert image.key_tag.endswith(f"x86_64-{image.key}")
    assert StandInImage("arm64").key != image.key
    assert lambda_architecture("aarch64") == "arm64"
    assert lambda_architecture("x86_64") == "x86_64"


def test_pins_and_distributions_compare_by_canonical_name(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("Typing_Extensions==4.16.0\n")
    (tmp_path / "req.txt").write_text("# c\n-r base.txt\naws-lambda-powertools[tracer]==3.37.0  # x\n")
    (tmp_path / "typing_extensions-4.16.0.dist-info").mkdir()
    (tmp_path / "aws_lambda_powertools-3.37.0.dist-info").mkdir()

    assert pinned(tmp_path / "req.txt") == distributions(tmp_path)
    assert canonical("python_dateutil") == "python-dateutil"
    (tmp_path / "bad.txt").write_text("requests>=2\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        pinned(tmp_path / "bad.txt")
