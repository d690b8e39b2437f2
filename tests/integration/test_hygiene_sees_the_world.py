"""Secret hygiene (tests/hygiene.py) learns what the local world does only through the hooks of its
pytest plugin: if that wiring broke, hygiene would silently check nothing. Prove it is wired."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld
    from tests.hygiene import Hygiene


def test_hygiene_learns_the_worlds_secrets_and_sees_its_invocations(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    secret_hygiene: Hygiene | None,
) -> None:
    assert secret_hygiene is not None
    assert world.api_key in secret_hygiene.registry  # LocalWorld.api_key and the emulator's keys
    stored = "f" * 8 + "rotated-key-for-hygiene"
    world.aws.create_secret(world.secret_id, stored)
    assert stored in secret_hygiene.registry  # LocalAws.create_secret
    world.aws.create_secret(world.secret_id, world.api_key)
    invocations = secret_hygiene.invocations

    result = start_function().invoke(uploads.put("hygiene/a.wav", sample_audio))

    assert result.error is None, result.logs
    assert secret_hygiene.invocations == invocations + 1
    secret_hygiene.harvest_all()  # the presigned URL the emulator received is now a secret
    [request] = world.emulator.requests
    signature = request.json["url"].split("X-Amz-Signature=")[1].split("&")[0]
    assert signature in secret_hygiene.registry
