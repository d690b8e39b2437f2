"""Calls per object, counted on the local world's side, for N objects in one warm container.

A counting subclass of the local world's ``AwsFaultProxy`` sits between the function and moto
(the function's ``AWS_ENDPOINT_URL`` points at it), and tells the service and operation of every
request from its SigV4 credential scope and ``X-Amz-Target``. Presigned GETs (Deepgram fetching
the media) carry the scope in the query and are counted apart. Deepgram calls come from the
emulator's request log. The baseline handler is counted the same way, for comparison.
"""

from __future__ import annotations

from collections import Counter

from bench.common import (
    BASELINE_DIR,
    CountingProxy,
    Row,
    SectionResult,
    Uploader,
    baseline_python,
    bench_spec,
    check,
    new_function,
    prime_emulator,
    product_spec,
    runtime_python,
    say,
)
from localworld.template import FunctionSpec
from localworld.world import LocalWorld


def count(
    world: LocalWorld,
    proxy: CountingProxy,
    spec: FunctionSpec,
    *,
    python: str,
    uploader: Uploader,
    objects: int,
) -> tuple[Counter[str], dict[str, Counter[str]], int, Counter[str]]:
    events = [uploader.upload() for _ in range(objects)]
    env = {**world.function_env(), "AWS_ENDPOINT_URL": proxy.url}
    function = new_function(spec, env, python=python)
    before = len(world.emulator.requests)
    proxy.reset_calls()
    try:
        for event in events:
            check(function.invoke(event), f"calls ({spec.logical_id})")
        containers = function.container_count
    finally:
        function.close()
    if containers != 1:
        raise RuntimeError(f"expected one warm container, saw {containers}")
    listen = [r for r in world.emulator.requests[before:] if r.path.startswith("/v1/listen")]
    statuses = Counter(str(r.status) for r in listen)
    services = proxy.tally()
    operations = {service: proxy.operations(service) for service in services}
    return services, operations, len(listen), statuses


def _ops(operations: dict[str, Counter[str]], service: str) -> str:
    found = operations.get(service, Counter())
    return ", ".join(f"{op} {n}" for op, n in sorted(found.items())) or "none"


def run(world: LocalWorld, objects: int = 100) -> SectionResult:
    section = SectionResult("calls")
    uploader = Uploader(world, "bench/calls")
    prime_emulator(world, uploader)
    with CountingProxy(world.moto.endpoint_url) as proxy:
        say(f"calls: {objects} objects through our handler")
        ours = count(
            world, proxy, product_spec(world), python=runtime_python(), uploader=uploader, objects=objects
        )
        say(f"calls: {objects} objects through the baseline handler")
        base = count(
            world,
            proxy,
            bench_spec(world, BASELINE_DIR, "Baseline"),
            python=baseline_python(),
            uploader=uploader,
            objects=objects,
        )
    (o_services, o_ops, o_dg, o_status), (b_services, b_ops, b_dg, b_status) = ours, base
    n = objects
    secrets = o_services["secretsmanager"]
    section.rows += [
        Row(
            "calls",
            f"Secrets Manager reads, {n} objects, 1 warm container",
            str(secrets),
            str(b_services["secretsmanager"]),
            goal="1 per cache period",
            met=secrets == 1,
        ),
        Row(
            "calls",
            "S3 calls per object (function's own)",
            f"{o_services['s3'] / n:.2f} ({_ops(o_ops, 's3')})",
            f"{b_services['s3'] / n:.2f} ({_ops(b_ops, 's3')})",
            goal="<= 6",
            met=o_services["s3"] / n <= 6,
        ),
        Row(
            "calls",
            "DynamoDB calls per object",
            f"{o_services['dynamodb'] / n:.2f} ({_ops(o_ops, 'dynamodb')})",
            f"{b_services['dynamodb'] / n:.2f}",
            goal="<= 5",
            met=o_services["dynamodb"] / n <= 5,
        ),
        Row(
            "calls",
            "Deepgram calls per object",
            f"{o_dg / n:.2f} ({dict(o_status)})",
            f"{b_dg / n:.2f} ({dict(b_status)})",
            goal="exactly 1",
            met=o_dg == n,
        ),
        Row(
            "calls",
            "presigned GETs per object (Deepgram's download)",
            f"{o_services['s3-presigned'] / n:.2f}",
            f"{b_services['s3-presigned'] / n:.2f}",
        ),
    ]
    counted = {"s3", "s3-presigned", "dynamodb", "secretsmanager"}
    other = {k: v for k, v in o_services.items() if k not in counted}
    if other:
        section.notes.append(f"other AWS calls by our handler: {dict(other)}")
    return section
