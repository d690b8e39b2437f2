"""How every AWS client of the layer is made: one session per container, bounded timeouts and
standard retries.

botocore's defaults (60 s connect, 60 s read, legacy retries) could spend minutes on one call,
so the time a function keeps back for writing its outputs after Deepgram answers would be a
fiction. With these settings one call's worst case is known (``worst_case_call_s``), and
``InvocationRetryPolicy.reserve_s`` covers it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import DataNotFoundError
from botocore.loaders import Loader

CONNECT_TIMEOUT_S = 2.0
# Bounds each wait for bytes (S3 answers a PUT only once it is stored), not the whole transfer.
READ_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 2  # the first try and one retry ("standard" mode backs off up to 1 s between them)
MAX_RETRY_BACKOFF_S = 1.0

AWS_CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    # Presigned GETs must be SigV4: S3 refuses SigV2 for KMS-encrypted objects and new regions.
    signature_version="s3v4",
)

# Every AWS operation the layer's functions call, by service: its cut of botocore's data keeps
# only these, so a client has no method for any other. Beside the layer's own calls: Powertools'
# idempotency store (DynamoDB GetItem, PutItem, UpdateItem, DeleteItem) and botocore's own (S3
# HeadBucket: the region redirector; S3 CreateSession: directory buckets; DynamoDB
# DescribeEndpoints: endpoint discovery). ``tests/unit/test_clients.py`` finds every call.
LAYER_OPERATIONS: Mapping[str, frozenset[str]] = {
    "dynamodb": frozenset(
        {"DeleteItem", "DescribeEndpoints", "GetItem", "PutItem", "Query", "TransactWriteItems", "UpdateItem"}
    ),
    "events": frozenset({"DescribeEventBus", "PutEvents"}),
    "s3": frozenset({"CreateSession", "DeleteObject", "GetObject", "HeadBucket", "HeadObject", "PutObject"}),
    "secretsmanager": frozenset({"GetSecretValue"}),
    "sqs": frozenset({"ChangeMessageVisibility", "SendMessage"}),
}
LAYER_SERVICES = frozenset(LAYER_OPERATIONS)

# botocore's data cut to what LAYER_OPERATIONS need (scripts/botocore_data.py writes it): its
# whole endpoints.json (1.2 MB), every other operation's model and the documentation are parsed on
# a cold start, for nothing.
BOTOCORE_DATA = Path(__file__).resolve().with_name("botocore_data")


def worst_case_call_s() -> float:
    """Longest one AWS call can take with ``AWS_CLIENT_CONFIG`` before it raises."""
    return MAX_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + (MAX_ATTEMPTS - 1) * MAX_RETRY_BACKOFF_S


class LayerServicesLoader(Loader):
    """botocore's model loader, knowing only the layer's services.

    Before it loads a model, botocore checks the name against every service it ships: it reads
    each of its ~440 data directories, once per kind of model (the API and the endpoint rules),
    which is about 1,800 directory reads on a cold start, the first time any client is made.
    This loader answers that check from ``LAYER_SERVICES`` (those botocore has data for), so only
    the directories of the services asked for are read. Models load exactly as botocore's own."""

    def __init__(self, services: frozenset[str] = LAYER_SERVICES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._services = services

    def list_available_services(self, type_name: str) -> list[str]:
        return sorted(name for name in self._services if self._has_data(name, type_name))

    def _has_data(self, service: str, type_name: str) -> bool:
        try:
            self.list_api_versions(service, type_name)  # cached; needed anyway to load the model
        except DataNotFoundError:
            return False
        return True


def new_session() -> boto3.session.Session:
    """The container's one boto3 session: every client shares its model loader, so the endpoint
    data and each model are read once. The layer's cut of botocore's data comes just before
    botocore's own; ``AWS_DATA_PATH`` and ``~/.aws/models`` are searched first, as botocore does."""
    core = botocore.session.Session()
    extra = core.get_config_variable("data_path")
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in extra.split(os.pathsep)] if extra else []
    loader = LayerServicesLoader(extra_search_paths=paths)
    loader.search_paths.insert(loader.search_paths.index(loader.BUILTIN_DATA_PATH), str(BOTOCORE_DATA))
    core.register_component("data_loader", loader)
    return boto3.session.Session(botocore_session=core)


def new_client(session: boto3.session.Session, service: str) -> Any:
    """A client of ``service`` from the shared session, with the layer's configuration."""
    return session.client(service, config=AWS_CLIENT_CONFIG)  # type: ignore[call-overload]
