"""The artifact ships what was tested: the shared layer that ``sam build`` makes from template.yaml
holds exactly the distributions ``layers/shared/requirements.txt`` pins, at those versions, and
the dev venv, the benchmark's runtime venv and the stand-in Lambda image agree with it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from samlocal import project
from samlocal.artifact import canonical, distributions, pinned

pytestmark = pytest.mark.template

ROOT = project.ROOT
LAYER_REQUIREMENTS = ROOT / "layers" / "shared" / "requirements.txt"
SDK = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")


@pytest.fixture(scope="module")
def built_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sam build SharedLayer`` of the real template (arm64, as deployed)."""
    workspace = tmp_path_factory.mktemp("layer")
    built = project.sam_build(project.TEMPLATE, workspace, project.sam_env(), resource="SharedLayer")
    return built.parent / "SharedLayer" / "python"


def test_the_built_layer_holds_exactly_the_pinned_distributions(built_layer: Path) -> None:
    assert distributions(built_layer) == pinned(LAYER_REQUIREMENTS)


def test_the_built_layer_carries_the_transcriber_package_and_a_complete_sdk(built_layer: Path) -> None:
    assert (built_layer / "transcriber" / "pipeline" / "workflow.py").is_file()
    # Beside the package, where transcriber.domain.profiles.SHIPPED_FILE looks for it.
    assert (built_layer / "profiles.toml").is_file()
    # The cut of botocore's data its clients load instead of botocore's own (services.clients).
    data = built_layer / "transcriber" / "services" / "botocore_data"
    assert (data / "endpoints.json").is_file()
    assert (data / "s3" / "2006-03-01" / "service-2.json").is_file()
    shipped = distributions(built_layer)
    assert {name: shipped.get(name) for name in SDK} == {
        name: pinned(LAYER_REQUIREMENTS)[name] for name in SDK
    }
    for package in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"):
        assert (built_layer / package).exists(), package


def test_every_layer_pin_is_exact_and_listed_once() -> None:
    lines = [
        line.split("#", 1)[0].strip() for line in LAYER_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    ]
    names = [canonical(line.split("==")[0].split("[")[0]) for line in lines if line]
    assert len(names) == len(set(names))
    assert all("==" in line for line in lines if line)


def test_the_dev_venv_runs_the_layer_pins() -> None:
    # requirements-dev.txt includes the layer file; the venv the tests run in has those versions.
    assert pinned(ROOT / "requirements-dev.txt").items() >= pinned(LAYER_REQUIREMENTS).items()
    for name, pin in pinned(LAYER_REQUIREMENTS).items():
        assert version(name) == pin, name


def test_the_benchmark_runtime_and_the_stand_in_image_use_the_same_sdk() -> None:
    layer = pinned(LAYER_REQUIREMENTS)
    assert pinned(ROOT / "bench" / "runtime-requirements.txt") == layer
    image = pinned(ROOT / "tools" / "samlocal" / "image" / "requirements.txt")
    assert {name: image[name] for name in SDK} == {name: layer[name] for name in SDK}
