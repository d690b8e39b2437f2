"""``python -m samlocal.sam ARGS`` is ``sam ARGS`` with SAM's Lambda containers on the host network.

SAM CLI 1.170 runs each function container on Docker's default network and publishes the
runtime interface emulator's port 8080 on a free port of 127.0.0.1; ``--docker-network host``
only stops it from attaching a second network. On a machine whose traffic must stay on loopback
that default network (a bridge with private addresses) is not allowed, so this wrapper changes
just one call, docker-py's container create, for SAM's Lambda containers: host network mode
(the handler reaches the local world at 127.0.0.1), and the emulator told to listen on the very
address and port SAM would have published. Everything else is SAM CLI unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from docker.models.containers import ContainerCollection

SAM_LAMBDA_LABEL = ("sam.cli.container.type", "lambda")
RIE_CONTAINER_PORT = "8080"
RIE_ADDRESS_FLAG = "--runtime-interface-emulator-address"


class HostNetworkError(RuntimeError):
    pass


def host_network_options(options: dict[str, Any]) -> dict[str, Any]:
    """docker-py ``containers.create`` options for a SAM Lambda container, moved to the host network."""
    labels = options.get("labels") or {}
    if labels.get(SAM_LAMBDA_LABEL[0]) != SAM_LAMBDA_LABEL[1]:
        return options
    changed = dict(options)
    ports = dict(changed.pop("ports", None) or {})
    published = ports.pop(RIE_CONTAINER_PORT, None)
    if not (isinstance(published, tuple) and len(published) == 2):
        raise HostNetworkError(f"SAM published no runtime emulator port: {options.get('ports')!r}")
    if ports:
        raise HostNetworkError(f"extra published ports (debugging?) are not supported here: {ports!r}")
    entrypoint = changed.get("entrypoint")
    if not isinstance(entrypoint, list) or not entrypoint:
        raise HostNetworkError(f"unexpected entrypoint from SAM: {entrypoint!r}")
    interface, port = published
    changed["entrypoint"] = [*entrypoint, RIE_ADDRESS_FLAG, f"{interface}:{port}"]
    changed["network_mode"] = "host"
    return changed


def install() -> None:
    """Patch docker-py's ``ContainerCollection.create`` in this process (idempotent)."""
    original = ContainerCollection.create
    if getattr(original, "_samlocal_host_network", False):
        return

    def create(self: ContainerCollection, image: Any, command: Any = None, **options: Any) -> Any:
        return original(self, image, command, **host_network_options(options))

    create._samlocal_host_network = True  # type: ignore[attr-defined]
    ContainerCollection.create = create


def main(argv: Sequence[str] | None = None) -> None:
    install()
    from samcli.cli.main import cli  # noqa: PLC0415 - after the patch, as late as sam itself would

    cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="sam")


if __name__ == "__main__":
    main()
