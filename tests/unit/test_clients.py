"""The container's AWS session: clients of the layer's services, built without botocore's scan of
every service it ships and from the layer's cut of botocore's data (both a cold start's cost), on
the same models and endpoints as botocore's own."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import JSONFileLoader, Loader

from scripts.botocore_data import BOTOCORE_OWN, expected_files
from transcriber.services.clients import BOTOCORE_DATA as LAYER_DATA
from transcriber.services.clients import LAYER_SERVICES, new_client, new_session


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

    assert BOTOCORE_OWN not in listed  # botocore's own loader lists all ~440 services, twice
    read = {path.name for path in listed if path.parent == BOTOCORE_OWN}
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


def test_the_layers_botocore_data_is_the_pinned_botocores_own_cut_to_its_services() -> None:
    # After a botocore upgrade this fails until `python scripts/botocore_data.py` is run again.
    shipped = {
        str(path.relative_to(LAYER_DATA)): path.read_text(encoding="utf-8")
        for path in LAYER_DATA.rglob("*.json")
    }
    assert shipped == expected_files()


def test_making_the_layers_clients_parses_none_of_botocores_own_endpoint_data_or_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[Path] = []
    real_load_file = JSONFileLoader.load_file

    def recording_load_file(self: JSONFileLoader, file_path: str) -> object:
        data = real_load_file(self, file_path)
        if data is not None:  # None: no such file on this search path
            loaded.append(Path(file_path))
        return data

    monkeypatch.setattr(JSONFileLoader, "load_file", recording_load_file)
    session = new_session()
    for service in sorted(LAYER_SERVICES):
        new_client(session, service)

    ours = {path.relative_to(LAYER_DATA) for path in loaded if path.is_relative_to(LAYER_DATA)}
    assert {path.name for path in ours} == {"endpoints", "service-2"}
    assert len(ours) == 1 + len(LAYER_SERVICES)
    botocores = [path.name for path in loaded if path.is_relative_to(BOTOCORE_OWN)]
    assert "endpoints" not in botocores
    assert "service-2" not in botocores


def test_each_client_has_botocores_own_operations_and_shapes(layers: boto3.session.Session) -> None:
    for service in sorted(LAYER_SERVICES):
        theirs = Loader().load_service_model(service, "service-2")
        ours = new_client(layers, service).meta.service_model

        assert list(ours.operation_names) == sorted(theirs["operations"]), service
        assert list(ours.shape_names) == list(theirs["shapes"]), service
        assert ours.metadata == theirs["metadata"], service


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
