"""``sam local invoke`` and ``sam local start-lambda`` for real: SAM CLI, a Docker engine and the
Lambda python3.13 base image (the stand-in built by ``samlocal.image`` where no registry is
reachable), running the built functions against the local world (moto server + Deepgram emulator).

``make sam-local`` runs this module; ``make test`` runs it after the other tests. It installs and
starts what it needs (docker.io, dockerd, the image) and stops the dockerd it started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from samlocal import project
from samlocal.artifact import distributions, pinned
from samlocal.engine import Engine, docker_engine
from samlocal.image import StandInImage, ensure_image, lambda_architecture

if TYPE_CHECKING:
    from localworld.world import LocalWorld

# The first run on a fresh machine installs docker.io and builds the base image (minutes).
pytestmark = [pytest.mark.samlocal, pytest.mark.timeout(900)]

EVENTS = project.ROOT / "events"
RETRY_EVENT = EVENTS / "retry-dead-letter.json"
# Every sample event the transcribe function takes (env.json is the --env-vars sample; retry-* go
# to the retry function).
TRANSCRIBE_EVENTS = sorted(
    path for path in EVENTS.glob("*.json") if path.name != "env.json" and not path.name.startswith("retry-")
)


@dataclass
class SamLocal:
    world: LocalWorld
    built_template: Path
    env_vars_file: Path
    env: dict[str, str]
    timings: dict[str, float]

    def invoke(self, function: str, event: Path) -> project.Invocation:
        return project.local_invoke(
            self.built_template,
            function,
            event,
            env_vars_file=self.env_vars_file,
            env=self.env,
            parameter_overrides=self.world.parameter_overrides,
        )


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with docker_engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log") as started:
        yield started


@pytest.fixture(scope="module")
def sam_local(
    engine: Engine,
    world_session: LocalWorld,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> SamLocal:
    timings: dict[str, float] = {}
    started = time.monotonic()
    image = StandInImage(lambda_architecture())
    ensure_image(engine, image)
    timings["image"] = time.monotonic() - started
    workspace = tmp_path_factory.mktemp("samlocal")
    started = time.monotonic()
    template = project.write_local_template(workspace, image.architecture)
    built = project.sam_build(template, workspace, project.sam_env(extra=engine.env()))
    timings["sam build"] = time.monotonic() - started
    started_by = "started here" if engine.started_pid else "already running"
    summary = (
        f"samlocal: engine {started_by}{' (docker.io installed)' if engine.installed else ''}; "
        + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items())
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{summary}")
    world = world_session
    env = project.sam_env(world.moto.endpoint_url, engine.env())
    project.install_ca(built, world.emulator.ca_bundle)
    endpoints = project.Endpoints(
        world.moto.endpoint_url,
        {function: world.function(function).environment for function in project.FUNCTIONS},
    )
    env_vars_file = workspace / "env-vars.json"
    env_vars_file.write_text(json.dumps(project.env_vars(endpoints), indent=1))
    return SamLocal(world, built, env_vars_file, env, timings)


@pytest.fixture
def world(sam_local: SamLocal) -> LocalWorld:
    sam_local.world.reset()
    return sam_local.world


def output_keys(world: LocalWorld, prefix: str) -> set[str]:
    """The JSON outputs (transcripts, failure records); the derived formats sit beside a transcript."""
    listing = world.aws.s3().list_objects_v2(Bucket=world.output_bucket, Prefix=prefix)
    return {item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".json")}


def transcript_text(world: LocalWorld, key: str) -> str:
    body = world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)["Body"].read()
    document: dict[str, Any] = json.loads(body)
    return str(document["results"]["channels"][0]["alternatives"][0]["transcript"])


def test_there_are_transcribe_events() -> None:
    assert len(TRANSCRIBE_EVENTS) >= 12
    assert RETRY_EVENT.is_file()


@pytest.mark.parametrize("path", TRANSCRIBE_EVENTS, ids=lambda p: p.name)
def test_sam_local_invoke_transcribes_every_sample_event(
    sam_local: SamLocal, world: LocalWorld, path: Path
) -> None:
    event: Any = json.loads(path.read_text(encoding="utf-8"))
    expected = {world.transcript_key(obj.key, obj.bucket) for obj in world.seed_objects(event)}

    invocation = sam_local.invoke("TranscribeFunction", path)

    assert invocation.error_type is None, project.explain(invocation.result)
    if path.name.startswith("sqs-"):
        assert invocation.payload == {"batchItemFailures": []}
    elif path.name.startswith("s3-batch-"):
        [task] = invocation.payload["results"]
        assert task["resultCode"] == "Succeeded", task
    assert output_keys(world, world.transcript_prefix) == expected
    assert output_keys(world, world.failure_prefix) == set()
    assert len(world.emulator.requests) == len(expected)
    for key in expected:
        assert transcript_text(world, key).strip(), key


def test_sam_local_invoke_leaves_a_failure_record_for_a_missing_object(
    sam_local: SamLocal, world: LocalWorld
) -> None:
    # events/s3-put.json names an object that was never uploaded. The HEAD that reads per-upload
    # options (UploadOptions' default) finds it missing before any Deepgram request: permanent, recorded.
    invocation = sam_local.invoke("TranscribeFunction", EVENTS / "s3-put.json")

    assert invocation.error_type is None, project.explain(invocation.result)
    [key] = output_keys(world, world.failure_prefix)
    assert key == world.failure_key("samples/hello world.wav")
    record = json.loads(world.aws.s3().get_object(Bucket=world.output_bucket, Key=key)["Body"].read())
    assert record["reason"] == "s3-object-missing", record
    assert output_keys(world, world.transcript_prefix) == set()
    assert world.emulator.requests == []


def test_sam_local_invoke_reports_a_raised_error_in_the_payload(
    sam_local: SamLocal, world: LocalWorld
) -> None:
    # Deepgram out of credit (402) is raised, so Lambda would retry: sam exits 0, the payload says so.
    world.seed_objects(json.loads((EVENTS / "direct.json").read_text(encoding="utf-8")))
    world.emulator.api_keys = set()  # every key is now rejected: 401 twice, then raised

    invocation = sam_local.invoke("TranscribeFunction", EVENTS / "direct.json")

    assert invocation.error_type is not None, invocation.payload
    assert "deepgram-invalid-credentials" in json.dumps(invocation.payload)
    assert output_keys(world, world.transcript_prefix) == set()


def test_sam_local_invoke_retry_function_on_a_dead_letter(sam_local: SamLocal, world: LocalWorld) -> None:
    event: Any = json.loads(RETRY_EVENT.read_text(encoding="utf-8"))
    original = json.loads(event["Records"][0]["body"])
    world.seed_objects(original)

    invocation = sam_local.invoke("RetryFunction", RETRY_EVENT)

    assert invocation.error_type is None, project.explain(invocation.result)
    assert invocation.payload == {"batchItemFailures": []}
    assert output_keys(world, world.transcript_prefix) == {world.transcript_key("samples/retried.wav")}
    assert transcript_text(world, world.transcript_key("samples/retried.wav")).strip()


def test_sam_local_start_lambda_answers_a_boto3_invoke(
    sam_local: SamLocal, world: LocalWorld, tmp_path: Path
) -> None:
    event: Any = json.loads((EVENTS / "direct.json").read_text(encoding="utf-8"))
    [expected] = {world.transcript_key(obj.key) for obj in world.seed_objects(event)}

    with project.start_lambda(
        sam_local.built_template,
        sam_local.env_vars_file,
        sam_local.env,
        world.parameter_overrides,
        tmp_path / "start-lambda.log",
    ) as endpoint:
        client = boto3.client(
            "lambda",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(read_timeout=120, retries={"max_attempts": 0}),
        )
        response = client.invoke(FunctionName="TranscribeFunction", Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read())

    assert response["StatusCode"] == 200
    assert "FunctionError" not in response, payload
    assert output_keys(world, world.transcript_prefix) == {expected}
    assert transcript_text(world, expected).strip()


def test_the_locally_run_layer_holds_the_pinned_distributions(sam_local: SamLocal) -> None:
    # Built for this host's architecture, the layer the containers ran holds the same pins as the
    # deployed (arm64) one (tests/artifact checks that build).
    layer = sam_local.built_template.parent / "SharedLayer" / "python"
    assert distributions(layer) == pinned(project.ROOT / "layers" / "shared" / "requirements.txt")
