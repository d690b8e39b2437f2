"""`make deploy` and `make delete` from a fresh clone, in a clean environment: they run the project's
own SAM CLI (from the venv, never from PATH) and get as far as needing AWS credentials.

Nothing leaves the machine: no credentials exist, the instance metadata service is off and every AWS
endpoint is a closed local port. `sam build` (the first step of `make deploy`) is covered by
test_template.py::test_sam_build_succeeds, so here make treats it as done (`make -o build`): the
build needs the package registry, the deploy step needs nothing but AWS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.template

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
NO_CREDENTIALS = "Unable to locate credentials"
MAX_QUESTIONS = 12


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files as a clone has them: tracked and new, nothing ignored (no .aws-sam)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    target = tmp_path_factory.mktemp("clone")
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """HOME (the venv cache) and a PATH without any `sam`; no AWS configuration at all."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "sam").exists()]
    keep = ("HOME", "LANG", "XDG_CACHE_HOME", "VENV_CACHE_DIR", "PYTHON313")
    return {
        **{name: os.environ[name] for name in keep if name in os.environ},
        "PATH": os.pathsep.join(path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": CLOSED_PORT,
        "SAM_CLI_TELEMETRY": "0",
    }


def _make(clone: Path, tmp_path: Path, *args: str, answers: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "build", *args],
        cwd=clone,
        env=_clean_env(tmp_path),
        input=answers,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _assert_stopped_at_credentials(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert NO_CREDENTIALS in output, output
    for missing_command in ("command not found", "No such file or directory", "No rule to make target"):
        assert missing_command not in output, output


def test_sam_is_not_on_the_clean_path(tmp_path: Path) -> None:
    assert shutil.which("sam", path=_clean_env(tmp_path)["PATH"]) is None


@pytest.mark.parametrize("args", [("deploy", "ENV=prod"), ("deploy-prod",)])
def test_make_deploy_builds_then_deploys_the_chosen_environment(
    clone: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=clone,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    build, deploy = plan.index("sam build"), plan.index('sam deploy --config-env "prod"')
    assert build < deploy, plan


@pytest.mark.parametrize("args", [("deploy",), ("deploy", "ENV=prod"), ("deploy-prod",)])
def test_make_deploy_gets_as_far_as_aws_credentials(
    clone: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    _assert_stopped_at_credentials(_make(clone, tmp_path, *args))
    assert not (clone / ".aws-sam").exists(), "nothing was built: the run needed no package registry"


def test_make_deploy_guided_asks_at_most_a_dozen_parameters(clone: Path, tmp_path: Path) -> None:
    """Every answer the default (Enter): the guide asks its questions, then needs credentials."""
    result = _make(clone, tmp_path, "deploy", "ENV=prod", "GUIDED=1", answers="\n" * 60)
    _assert_stopped_at_credentials(result)
    asked = result.stdout.count("Parameter ")
    assert 1 <= asked <= MAX_QUESTIONS, result.stdout
    assert "Parameter DeepgramSecretId [deepgram/prod/api-key]" in result.stdout


def test_make_delete_gets_as_far_as_aws_credentials(clone: Path, tmp_path: Path) -> None:
    result = _make(clone, tmp_path, "delete", answers="y\n")
    _assert_stopped_at_credentials(result)
    assert "dg-transcriber-dev" in result.stdout, "sam delete names the stack it would delete"


@pytest.mark.parametrize("target", ["deploy", "delete", "secret"])
def test_an_exported_env_variable_never_picks_the_environment(target: str, tmp_path: Path) -> None:
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=REPO_ROOT,
        env={**_clean_env(tmp_path), "ENV": "prod"},  # a CI or shell ENV, not make's command line
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert '--config-env "default"' in plan
    assert "prod" not in plan
