"""Run the Deepgram emulator from the command line until Ctrl-C.

python -m localworld.deepgram --port 8443 --api-key KEY [--api-key KEY2]
    [--max-concurrency N] [--latency S] [--ca-dir DIR] [--retry-after S]
    [--asr-workers N] [--preload] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from localworld.deepgram.server import DeepgramEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localworld.deepgram",
        description="Deepgram-compatible pre-recorded API emulator (HTTPS).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port (0 picks a free one; default 8443)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted key (repeatable); default: $DEEPGRAM_API_KEY",
    )
    parser.add_argument("--max-concurrency", type=int, default=100, help="concurrent requests before 429")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--retry-after", type=float, default=None, help="send Retry-After on 429 answers")
    parser.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help="where the CA lives, reused across runs (default ~/.cache/localworld/deepgram-emulator)",
    )
    parser.add_argument("--asr-workers", type=int, default=1, help="recogniser processes")
    parser.add_argument("--preload", action="store_true", help="load the speech model before serving")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request (keys redacted)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    keys = args.api_key or ([os.environ["DEEPGRAM_API_KEY"]] if os.environ.get("DEEPGRAM_API_KEY") else [])
    if not keys:
        print("error: give at least one --api-key (or set DEEPGRAM_API_KEY)", file=sys.stderr)
        return 2
    # Outside the repository by default, so the CA key is never committed by accident.
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    ca_dir = args.ca_dir or cache_home / "localworld" / "deepgram-emulator"
    emulator = DeepgramEmulator(
        api_keys=keys,
        host=args.host,
        port=args.port,
        max_concurrency=args.max_concurrency,
        latency=args.latency,
        retry_after=args.retry_after,
        state_dir=ca_dir,
        asr_workers=args.asr_workers,
        preload_asr=args.preload,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    with emulator:
        print(f"Deepgram emulator: {emulator.url}  ({len(keys)} key(s) accepted)", flush=True)
        print(f"CA bundle: {emulator.ca_bundle}", flush=True)
        print(f"  export REQUESTS_CA_BUNDLE={emulator.ca_bundle}", flush=True)
        print(f"  export DEEPGRAM_BASE_URL={emulator.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
