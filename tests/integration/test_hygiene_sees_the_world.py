"""Secret hygiene (tests/hygiene.py) learns what the local world does only through the hooks of its
pytest plugin: if that wiring broke, hygiene would silently check nothing. Prove it is wired."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.hygiene import find_leaks, leak_report

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


def test_an_error_body_quoting_the_request_in_any_encoding_is_scrubbed(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    secret_hygiene: Hygiene | None,
) -> None:
    """Deepgram (or a proxy before it) answers 400 with the presigned URL and the key quoted back
    doubly percent-encoded, +-encoded and percent-encoded: the failure record and the logs keep the
    message, without a credential in any encoding."""
    assert secret_hygiene is not None
    world.emulator.faults.next(1, status=400, style="echo")

    result = start_function().invoke(uploads.put("hygiene/echo.wav", sample_audio))

    assert result.error is None, result.logs
    secret_hygiene.harvest_all()
    [request] = world.emulator.requests
    assert request.status == 400
    s3 = world.aws.s3()
    record = s3.get_object(Bucket=world.output_bucket, Key=world.failure_key("hygiene/echo.wav"))[
        "Body"
    ].read()
    message = json.loads(record)["message"]
    assert "[REDACTED]" in message
    texts = [("failure record", record.decode()), ("logs", "\n".join(result.logs))]
    leaks = find_leaks(secret_hygiene.registry, texts)
    assert not leaks, leak_report(leaks)
