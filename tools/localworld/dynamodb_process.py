"""moto's DynamoDB in a process of its own, for load runs (``local_world(dynamodb_process=True)``).

One moto server process serves every container's AWS calls under one GIL, beside the Deepgram
emulator and the event pumps: under a bench's load its answers slow down with the load, where
AWS's do not. DynamoDB shares no state with the other services the world serves (S3's
notifications go to SQS, EventBridge's and SNS's targets are queues: those stay together), so it
can run apart. The functions reach it through the SDKs' standard service-specific endpoint,
``AWS_ENDPOINT_URL_DYNAMODB`` (``LocalAws.env``); the child is the same ``MotoServer``, so its
DynamoDB requests are still served one at a time (``AtomicDynamoDB``), conditions as strict.

Run as ``python -m localworld.dynamodb_process``: prints its endpoint URL, serves until stdin closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType
from typing import Self

from localworld.aws import MotoServer

_STOP_GRACE_S = 5.0


class DynamoDBProcess:
    """A child process serving moto (used for DynamoDB only) on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._endpoint_url: str | None = None

    def start(self) -> str:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        process = subprocess.Popen(
            [sys.executable, "-m", "localworld.dynamodb_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._process = process
        line = process.stdout.readline().strip() if process.stdout is not None else ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the DynamoDB process did not start (said {line!r})")
        self._endpoint_url = line
        return line

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("the DynamoDB process is not started")
        return self._endpoint_url

    def stop(self) -> None:
        process, self._process = self._process, None
        self._endpoint_url = None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the child's signal to stop
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    with MotoServer() as server:
        print(server.endpoint_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
