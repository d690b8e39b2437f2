"""DeepgramRegion through the real handler over HTTP: a stack resolved with a region and no endpoint
override calls Deepgram's regional hostname, which the local world routes to the emulator through
the function's ``HTTPS_PROXY`` with the TLS certificate verified for that name; the function runs
with the region's capacity defaults. An explicit endpoint override wins over the region."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import certifi
import pytest

if TYPE_CHECKING:
    from localworld.pytest_plugin import ParametersFunctionFactory, Uploads
    from localworld.world import LocalWorld

# template.yaml's DeepgramRegions: the hostname, and the pool and audio-intelligence ceiling a stack
# gets when CapacityPoolSize and Settings.Capacity.CapacityAiCeiling are left at 0.
REGIONS = {"EU": ("api.eu.deepgram.com", "20", "5"), "IN": ("api.in.deepgram.com", "10", "5")}
NO_OVERRIDE = {"Settings.Deepgram.DeepgramApiUrl": ""}


def tunnels(world: LocalWorld) -> list[tuple[str, int, int]]:
    assert world.deepgram_proxy is not None
    return [(t.host, t.port, t.status) for t in world.deepgram_proxy.tunnels]


def limit_reduced_to(world: LocalWorld, environment: dict[str, str]) -> int:
    """The pool size the function's last 429 left in the capacity table (services.capacity)."""
    item = world.aws.dynamodb().get_item(
        TableName=environment["CAPACITY_TABLE"],
        Key={"pk": {"S": environment["CAPACITY_POOL"]}, "sk": {"S": "limit"}},
    )["Item"]
    return int(item["reduced_to"]["N"])


def transcript_text(world: LocalWorld, source_key: str) -> str:
    body = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.transcript_key(source_key))["Body"]
    document = json.loads(body.read())
    return str(document["results"]["channels"][0]["alternatives"][0]["transcript"])


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_a_region_without_override_reaches_deepgrams_regional_host_with_its_defaults(
    region: str,
    world: LocalWorld,
    uploads: Uploads,
    start_function_with: ParametersFunctionFactory,
    sample_audio: bytes,
) -> None:
    host, pool_size, ai_ceiling = REGIONS[region]
    function = start_function_with({"DeepgramRegion": region, **NO_OVERRIDE})
    key = f"regions/{region.lower()}.wav"
    # One 429 first: the function halves the pool it runs with in the capacity table, which shows
    # the size it used.
    world.emulator.faults.next(1, status=429)
    world.emulator.retry_after = 1
    try:
        result = function.invoke(uploads.put(key, sample_audio))
    finally:
        world.emulator.retry_after = None

    assert result.error is None, result.logs
    assert [o["status"] for o in result.payload["objects"]] == ["transcribed"]
    environment = function.spec.environment
    assert environment["DEEPGRAM_API_URL"] == f"https://{host}"
    assert (environment["CAPACITY_POOL_SIZE"], environment["CAPACITY_AI_CEILING"]) == (pool_size, ai_ceiling)
    assert limit_reduced_to(world, environment) == int(pool_size) // 2
    requests = world.emulator.requests
    assert [r.status for r in requests] == [429, 200]
    for request in requests:
        assert request.headers["Host"] == host  # the URL the function called
        assert request.server_name == host  # the name its TLS handshake asked for, and verified
    seen = tunnels(world)  # one, or one per connection if the 429's was not kept alive
    assert seen
    assert set(seen) == {(host, 443, 200)}
    assert "quick brown fox" in transcript_text(world, key)


def test_the_regional_host_is_verified_against_the_trusted_ca(
    world: LocalWorld, uploads: Uploads, start_function_with: ParametersFunctionFactory, sample_audio: bytes
) -> None:
    """The control: trusting only the public CAs (certifi's bundle, as on Lambda) and not the local
    one, the function refuses the emulator's certificate for api.eu.deepgram.com: nothing is sent,
    nothing is written."""
    before = world.emulator.counters.get("tls_failures", 0)
    function = start_function_with(
        {"DeepgramRegion": "EU", **NO_OVERRIDE}, extra_env={"REQUESTS_CA_BUNDLE": certifi.where()}
    )

    result = function.invoke(uploads.put("regions/untrusted.wav", sample_audio))

    assert result.error is not None
    assert "deepgram-connection" in result.error["errorMessage"]
    assert world.emulator.requests == []
    assert world.emulator.counters.get("tls_failures", 0) > before
    assert ("api.eu.deepgram.com", 443, 200) in tunnels(world)
    assert world.aws.s3().list_objects_v2(Bucket=world.output_bucket).get("KeyCount", 0) == 0


def test_an_explicit_endpoint_override_wins_over_the_region(
    world: LocalWorld, uploads: Uploads, start_function_with: ParametersFunctionFactory, sample_audio: bytes
) -> None:
    # The world's own override (the emulator's URL) stays; only the region changes.
    function = start_function_with({"DeepgramRegion": "EU"})

    result = function.invoke(uploads.put("regions/override.wav", sample_audio))

    assert result.error is None, result.logs
    assert [o["status"] for o in result.payload["objects"]] == ["transcribed"]
    environment = function.spec.environment
    assert environment["DEEPGRAM_API_URL"] == world.emulator.url
    assert environment["CAPACITY_POOL_SIZE"] == "20"  # the override changes the endpoint only
    [request] = world.emulator.requests
    assert request.headers["Host"] == world.emulator.url.removeprefix("https://")
    assert request.server_name is None  # an IP address: no SNI, and no trip through the proxy
    assert tunnels(world) == []


def test_a_host_that_is_not_deepgrams_is_refused_by_the_local_network(
    world: LocalWorld, uploads: Uploads, start_function_with: ParametersFunctionFactory, sample_audio: bytes
) -> None:
    """The local world is never kinder than the internet: an endpoint that is not Deepgram's is not
    quietly answered by the emulator."""
    function = start_function_with({"Settings.Deepgram.DeepgramApiUrl": "https://deepgram.example.com"})

    result = function.invoke(uploads.put("regions/elsewhere.wav", sample_audio))

    assert result.error is not None
    assert "deepgram-connection" in result.error["errorMessage"]
    seen = tunnels(world)  # one per attempt: the handler tries a connection failure again
    assert seen
    assert set(seen) == {("deepgram.example.com", 443, 403)}
    assert world.emulator.requests == []
