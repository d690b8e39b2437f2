"""The container's AWS session: clients of the layer's services, built without botocore's scan of
every service it ships (a cold start's first-invocation cost), on the same models as botocore's own."""

from __future__ import annotations

import os
from pathlib import Path

import botocore
import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import Loader

from transcriber.services.clients import LAYER_SERVICES, new_client, new_session

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
