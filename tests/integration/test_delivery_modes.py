"""Delivery modes end to end: the real handler in a local Lambda container, moto, and the Deepgram
emulator over HTTPS. bytes streams the object in the request body; auto sends the URL first and
the bytes once when Deepgram can't fetch the URL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from types import TracebackType

    from localworld.aws_faults import AwsFaultProxy
    from localworld.pytest_plugin import FunctionFactory, Uploads
    from localworld.world import LocalWorld

SPOKEN = "the quick brown fox jumps over the lazy dog"


def transcript(world: LocalWorld, key: str) -> tuple[dict[str, str], dict[str, Any]]:
    obj = world.aws.s3().get_object(Bucket=world.output_bucket, Key=world.transcript_key(key))
    return obj["Metadata"], json.loads(obj["Body"].read())


def words(document: dict[str, Any]) -> str:
    text = str(document["results"]["channels"][0]["alternatives"][0]["transcript"])
    return text.lower().rstrip(".")


def test_bytes_mode_streams_the_object_and_deepgram_hashes_what_it_received(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("calls/hello.wav", sample_audio, ContentType="audio/wav")

    result = start_function(DELIVERY_MODE="bytes").invoke(event)

    assert result.error is None, result.logs
    assert result.payload["objects"][0]["delivery"] == "bytes"
    [request] = world.emulator.requests
    assert request.headers["Content-Type"] == "audio/wav"
    assert int(request.headers["Content-Length"]) == len(sample_audio)
    assert "Transfer-Encoding" not in request.headers
    metadata, document = transcript(world, "calls/hello.wav")
    assert document["metadata"]["sha256"] == request.body_sha256 == hashlib.sha256(sample_audio).hexdigest()
    assert words(document) == SPOKEN
    assert metadata["delivery"] == "bytes"


def test_auto_sends_the_bytes_once_when_deepgram_cannot_reach_the_bucket(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    world.emulator.unreachable_buckets = {world.input_bucket}
    event = uploads.put("calls/private.wav", sample_audio, ContentType="audio/wav")

    result = start_function().invoke(event)  # DeliveryMode's default: auto

    assert result.error is None, result.logs
    assert result.payload["objects"][0]["delivery"] == "bytes"
    url_request, bytes_request = world.emulator.requests
    assert (url_request.headers["Content-Type"], url_request.status) == ("application/json", 400)
    assert url_request.err_code == "REMOTE_CONTENT_ERROR"
    assert (bytes_request.headers["Content-Type"], bytes_request.status) == ("audio/wav", 200)
    metadata, document = transcript(world, "calls/private.wav")
    assert document["metadata"]["sha256"] == hashlib.sha256(sample_audio).hexdigest()
    assert metadata["delivery"] == "bytes"
    assert any("sending the object's bytes" in line for line in result.logs)


def test_auto_retries_the_url_and_sends_no_bytes_on_a_transient_fetch_failure(
    world: LocalWorld,
    uploads: Uploads,
    start_function: FunctionFactory,
    sample_audio: bytes,
    aws_fault_proxy: AwsFaultProxy,
) -> None:
    """Deepgram's fetch times out once ("failed to return valid data"): the URL is sent again."""
    event = uploads.put("calls/flaky.wav", sample_audio, ContentType="audio/wav")
    world.emulator.url_fetch_timeout = 1.0
    stall = aws_fault_proxy.stall("GET", "calls/flaky.wav", 30)

    def release_after_the_first_answer() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(r.status is not None for r in world.emulator.requests):
                aws_fault_proxy.clear()  # later fetches go through
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=release_after_the_first_answer, daemon=True)
    watcher.start()
    try:
        # Presigned URLs point where the function's AWS endpoint is: through the proxy.
        result = start_function(extra_env={"AWS_ENDPOINT_URL": aws_fault_proxy.url}).invoke(event)
    finally:
        watcher.join(timeout=25)
        world.emulator.url_fetch_timeout = 30.0

    assert result.error is None, result.logs
    assert stall.held >= 1
    first, second = world.emulator.requests
    assert (first.status, first.err_code) == (400, "REMOTE_CONTENT_ERROR")
    assert first.headers["Content-Type"] == second.headers["Content-Type"] == "application/json"
    assert second.status == 200
    assert result.payload["objects"][0]["delivery"] == "url"


class CuttingRelay:
    """A TCP relay to the emulator that resets the first connection after ``cut_after`` bytes from
    the client (mid-upload: TLS passes through untouched); later connections are relayed whole."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.connections = 0
        self.cut = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._listener.close()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                self.connections += 1
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                limit = self.cut_after if self.connections == 1 else None
                threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
                threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    self.cut += 1
                    for end in (source, sink):  # reset both ends, as a dropped link looks
                        end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        end.close()
                    return
                sink.sendall(data)
                sent += len(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def test_a_dropped_upload_is_retried_with_the_object_read_again(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    event = uploads.put("calls/dropped.wav", sample_audio, ContentType="audio/wav")

    with CuttingRelay(world.emulator.port, cut_after=len(sample_audio) // 3) as relay:
        function = start_function(DELIVERY_MODE="bytes", DEEPGRAM_API_URL=f"https://127.0.0.1:{relay.port}")
        result = function.invoke(event)

    assert result.error is None, result.logs
    assert (relay.cut, relay.connections) == (1, 2)
    assert any("deepgram-connection" in line and "retrying" in line for line in result.logs)
    # The cut request never reached Deepgram whole: it processed one body, the whole object.
    [request] = world.emulator.requests
    assert request.body_sha256 == hashlib.sha256(sample_audio).hexdigest()
    _, document = transcript(world, "calls/dropped.wav")
    assert words(document) == SPOKEN


def test_one_billable_request_per_object_version_whatever_the_mode(
    world: LocalWorld, uploads: Uploads, start_function: FunctionFactory, sample_audio: bytes
) -> None:
    """A stack redeployed in another mode (or its retry function) answers from the idempotency
    record: the identity is the object version, not how it was delivered."""
    event = uploads.put("calls/once.wav", sample_audio, ContentType="audio/wav")

    results = [start_function(DELIVERY_MODE=mode).invoke(event) for mode in ("bytes", "url", "auto")]

    assert [r.error for r in results] == [None, None, None], [r.logs for r in results]
    assert [r.payload["objects"][0]["replayed"] for r in results] == [False, True, True]
    assert [r.payload["objects"][0]["delivery"] for r in results] == ["bytes"] * 3
    assert len(world.emulator.requests) == 1
