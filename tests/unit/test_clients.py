"""The container's AWS session: clients of the layer's services, built without botocore's scan of
every service it ships (a cold start's first-invocation cost), on the same models as botocore's own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import JSONFileLoader, Loader

from scripts.botocore_endpoints import BOTOCORE_ENDPOINTS, render
from transcriber.services.clients import ENDPOINTS_FILE, LAYER_SERVICES, new_client, new_session

BOTOCORE_DATA = Path(botocore.__file__).parent / "data"


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)


def test_making_the_layers_clients_reads_only_their_own_model_directories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed: list[Path] = []
    real_listdir = os.listdir

    def recording_listdir(path: str | os.PathLike[str] = ".") -> list[str]:
        listed.append(Path(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", recording_listdir)
    session = new_session()
    for service in sorted(LAYER_SERVICES):
        new_client(session, service)

    assert BOTOCORE_DATA not in listed  # botocore's own loader lists all ~440 services, twice
    read = {path.name for path in listed if path.parent == BOTOCORE_DATA}
    assert read <= LAYER_SERVICES


@pytest.mark.parametrize("service", sorted(LAYER_SERVICES))
def test_each_client_has_the_model_botocores_own_loader_picks(service: str) -> None:
    client = new_client(new_session(), service)

    latest = Loader().determine_latest_version(service, "service-2")
    assert client.meta.service_model.api_version == latest
    assert client.meta.region_name == "eu-west-1"


def test_a_service_the_layer_does_not_use_is_unknown_to_its_session() -> None:
    with pytest.raises(UnknownServiceError):
        new_client(new_session(), "ec2")


def test_aws_data_path_is_still_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    loader = new_session()._session.get_component("data_loader")
    assert str(tmp_path) in loader.search_paths


def test_the_layers_endpoint_data_is_the_pinned_botocores_own_for_its_services() -> None:
    # After a botocore upgrade this fails until `python scripts/botocore_endpoints.py` is run again.
    pinned = json.loads(BOTOCORE_ENDPOINTS.read_text(encoding="utf-8"))
    assert ENDPOINTS_FILE.read_text(encoding="utf-8") == render(pinned)


def test_making_the_layers_clients_does_not_parse_botocores_whole_endpoint_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[Path] = []
    real_load_file = JSONFileLoader.load_file

    def recording_load_file(self: JSONFileLoader, file_path: str) -> object:
        loaded.append(Path(file_path))
        return real_load_file(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", recording_load_file)
    session = new_session()
    for service in sorted(LAYER_SERVICES):
        new_client(session, service)

    assert ENDPOINTS_FILE.with_suffix("") in loaded
    assert BOTOCORE_ENDPOINTS.with_suffix("") not in loaded


@pytest.fixture(scope="module")
def botocores_own() -> boto3.session.Session:
    return boto3.session.Session()  # botocore's own loader and its whole endpoints.json


@pytest.fixture(scope="module")
def layers() -> boto3.session.Session:
    return new_session()


# One region of each kind of partition, and Europe's sovereign cloud.
PARTITION_REGIONS = ["eu-west-1", "us-east-1", "cn-north-1", "us-gov-west-1", "eusc-de-east-1"]


@pytest.mark.parametrize("region", PARTITION_REGIONS)
@pytest.mark.parametrize("service", sorted(LAYER_SERVICES))
def test_each_client_reaches_the_endpoint_botocores_own_data_gives(
    service: str, region: str, botocores_own: boto3.session.Session, layers: boto3.session.Session
) -> None:
    theirs = botocores_own.client(service, region_name=region)  # type: ignore[call-overload]
    ours = layers.client(service, region_name=region)  # type: ignore[call-overload]

    assert (ours.meta.endpoint_url, ours.meta.partition) == (theirs.meta.endpoint_url, theirs.meta.partition)
