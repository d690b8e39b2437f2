"""The container's AWS session: clients of the layer's services, built without botocore's scan of
every service it ships and from the layer's cut of botocore's data (both a cold start's cost), on
the same models and endpoints as botocore's own."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import boto3
import botocore
import botocore.model
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.exceptions import UnknownServiceError
from botocore.loaders import JSONFileLoader, Loader

from scripts.botocore_data import BOTOCORE_OWN, expected_files, without_documentation
from transcriber.services.clients import BOTOCORE_DATA as LAYER_DATA
from transcriber.services.clients import LAYER_OPERATIONS, LAYER_SERVICES, new_client, new_session

LAYER_PACKAGE = LAYER_DATA.parents[1]


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
    assert {path.name for path in ours} == {"endpoints", "service-2", "endpoint-rule-set-1"}
    assert len(ours) == 1 + 2 * len(LAYER_SERVICES)
    botocores = [path.name for path in loaded if path.is_relative_to(BOTOCORE_OWN)]
    assert not {"endpoints", "service-2", "endpoint-rule-set-1"} & set(botocores)


def test_each_client_has_the_layers_operations_as_botocore_defines_them() -> None:
    for service in sorted(LAYER_SERVICES):
        theirs = without_documentation(Loader().load_service_model(service, "service-2"))
        ours = new_session()._session.get_component("data_loader").load_service_model(service, "service-2")

        assert set(ours["operations"]) == LAYER_OPERATIONS[service], service
        assert all(ours["operations"][name] == theirs["operations"][name] for name in ours["operations"])
        assert all(ours["shapes"][name] == theirs["shapes"][name] for name in ours["shapes"])
        errors = {name for name, shape in theirs["shapes"].items() if shape.get("exception")}
        assert errors <= set(ours["shapes"]), service  # a client's exceptions stay botocore's
        assert ours["metadata"] == theirs["metadata"], service
        model = botocore.model.ServiceModel(ours, service)
        for name in model.operation_names:  # every shape an operation reaches is there to resolve
            operation = model.operation_model(name)
            for shape in (operation.input_shape, operation.output_shape, *operation.error_shapes):
                resolve_all(shape)


def resolve_all(shape: botocore.model.Shape | None, seen: set[str] | None = None) -> None:
    """Resolve every shape ``shape`` reaches (botocore raises ``NoShapeFoundError`` on a missing one)."""
    seen = set() if seen is None else seen
    if shape is None or shape.name in seen:
        return
    seen.add(shape.name)
    children = [*getattr(shape, "members", {}).values()]
    children += [getattr(shape, name) for name in ("member", "key", "value") if hasattr(shape, name)]
    for child in children:
        resolve_all(child, seen)


def test_a_client_has_no_method_for_an_operation_the_layer_never_calls(layers: boto3.session.Session) -> None:
    s3 = new_client(layers, "s3")

    assert hasattr(s3, "head_object")
    assert not hasattr(s3, "list_objects_v2")


def operations_called(source: str, names: dict[str, str]) -> set[str]:
    """The operations (of ``names``: method name -> operation) a module's source calls as methods."""
    return {
        names[node.func.attr]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
    }


def test_every_operation_the_layer_and_its_idempotency_store_call_is_in_its_cut() -> None:
    # A call the cut lacks would raise AttributeError in Lambda, so every method call in the layer
    # (and in Powertools' DynamoDB store, which it hands its client) that names an operation of one
    # of its services must name one the cut keeps. botocore's own calls are listed in LAYER_OPERATIONS.
    everything = {
        service: Loader().load_service_model(service, "service-2")["operations"] for service in LAYER_SERVICES
    }
    method_names = {botocore.xform_name(op): op for ops in everything.values() for op in ops}
    method_names |= {"generate_presigned_url": "GetObject"}  # presigns a GetObject (services.source)
    sources = [path.read_text(encoding="utf-8") for path in LAYER_PACKAGE.rglob("*.py")]
    sources.append(Path(inspect.getfile(DynamoDBPersistenceLayer)).read_text(encoding="utf-8"))
    called = set().union(*(operations_called(source, method_names) for source in sources))
    kept = set().union(*LAYER_OPERATIONS.values())

    assert called - kept == set()
    assert {"HeadObject", "PutObject", "GetItem", "TransactWriteItems", "PutEvents", "SendMessage"} <= called


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
