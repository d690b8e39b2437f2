"""A Docker engine for ``sam local``: the one already running, or one started here and stopped by PID.

The engine started here has no bridge network and touches no iptables rules: SAM's Lambda
containers run in the host's network namespace (see ``samlocal.sam``), so every byte between them
and the local world goes over loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = Path("/run/dg-transcribe-samlocal")
SOCKET = RUN_DIR / "docker.sock"
DEFAULT_SOCKET = Path("/var/run/docker.sock")
DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class EngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class Engine:
    docker_host: str  # the DOCKER_HOST value for docker, docker-py and SAM
    started_pid: int | None  # the dockerd started here, or None for one that was already running
    installed: bool  # whether docker.io was installed by this run

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.docker_host}


def docker_cli() -> str:
    found = shutil.which("docker")
    if found is None:
        raise EngineError("no docker command on PATH (Debian's docker.io provides one)")
    return found


def is_reachable(docker_host: str) -> bool:
    """True when an engine answers on ``docker_host`` (the CLI negotiates the API version)."""
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        [docker_cli(), "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, "DOCKER_HOST": docker_host},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def find_dockerd() -> str | None:
    return shutil.which("dockerd") or next((p for p in DOCKERD_CANDIDATES if Path(p).is_file()), None)


def apt_install(*packages: str) -> None:
    """Install Debian packages (as root; ``apt-get update`` first, as a fresh machine needs)."""
    if os.geteuid() != 0:
        raise EngineError(f"installing {', '.join(packages)} needs root: install them, or run as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        check=True,
        capture_output=True,
    )


def ensure_dockerd() -> tuple[str, bool]:
    """The dockerd binary, installing Debian's docker.io when there is none; and whether it did."""
    dockerd = find_dockerd()
    if dockerd is not None and shutil.which("docker") is not None:
        return dockerd, False
    apt_install("docker.io")
    dockerd = find_dockerd()
    if dockerd is None:
        raise EngineError("docker.io is installed but no dockerd was found")
    return dockerd, True


def start_dockerd(dockerd: str, log_path: Path) -> subprocess.Popen[bytes]:
    if os.geteuid() != 0:
        raise EngineError("starting dockerd needs root (or start a Docker engine yourself)")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                dockerd,
                "--host",
                f"unix://{SOCKET}",
                "--pidfile",
                str(RUN_DIR / "dockerd.pid"),
                "--exec-root",
                str(RUN_DIR / "exec"),
                # No docker0 bridge, no NAT rules: containers use the host's network namespace.
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    docker_host = f"unix://{SOCKET}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(f"dockerd exited with {process.returncode}; see {log_path}")
        if SOCKET.exists() and is_reachable(docker_host):
            return process
        time.sleep(0.5)
    stop_dockerd(process)
    raise EngineError(f"dockerd did not answer within {START_TIMEOUT_S:.0f} s; see {log_path}")


def stop_dockerd(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to that PID (dockerd stops its containers and its containerd), SIGKILL if it hangs."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    unmount_leftovers()


def unmount_leftovers(run_dir: Path = RUN_DIR) -> None:
    """dockerd leaves its default network namespace mounted under its exec root: unmount it."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(f"{run_dir}/")), reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)


@contextmanager
def docker_engine(log_path: Path) -> Iterator[Engine]:
    """The engine DOCKER_HOST (or the default socket) names if one answers; else start one here."""
    for docker_host in filter(None, (os.environ.get("DOCKER_HOST"), f"unix://{DEFAULT_SOCKET}")):
        if is_reachable(docker_host):
            yield Engine(docker_host, started_pid=None, installed=False)
            return
    dockerd, installed = ensure_dockerd()
    process = start_dockerd(dockerd, log_path)
    try:
        yield Engine(f"unix://{SOCKET}", started_pid=process.pid, installed=installed)
    finally:
        stop_dockerd(process)
