"""The stand-in for AWS's Lambda python3.13 base image, built with no registry.

SAM CLI runs functions on ``public.ecr.aws/lambda/python:3.13-<arch>`` and adds its own
``aws-lambda-rie`` on top, which starts ``/var/runtime/bootstrap``. Where no container registry
is reachable, this builds an image of that name from Debian trixie (whose python3 is 3.13, made
with ``debootstrap``), the runtime interface client and the SDK from PyPI (``image/requirements.txt``),
and ``docker import``. The image is tagged a second time with a key of everything it is built
from, and is not built again while an image with that tag exists. The debootstrap root file
system is kept as a tarball under ``~/.cache/dg-transcribe/samlocal``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from samlocal.engine import Engine, apt_install, docker_cli

HERE = Path(__file__).resolve().parent / "image"
REQUIREMENTS = HERE / "requirements.txt"
BOOTSTRAP = HERE / "bootstrap"
BOOTSTRAP_PY = HERE / "bootstrap.py"
SUITE = "trixie"  # Debian 13: python3 is 3.13
DEBIAN_PACKAGES = ("python3", "ca-certificates")
RECIPE_VERSION = "1"  # bump when build() changes in a way the inputs below do not show
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dg-transcribe" / "samlocal"
KEY_REPOSITORY = "dg-transcribe/samlocal-lambda-python"
# What AWS's python3.13 image sets (the handler's own environment comes from SAM).
IMAGE_ENV = {
    "LANG": "en_US.UTF-8",
    "TZ": ":/etc/localtime",
    "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH": ":".join(
        [
            *("/var/lang/lib", "/lib64", "/usr/lib64", "/var/runtime", "/var/runtime/lib"),
            *("/var/task", "/var/task/lib", "/opt/lib"),
        ]
    ),
    "LAMBDA_TASK_ROOT": "/var/task",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
}


class ImageError(RuntimeError):
    pass


def lambda_architecture(machine: str | None = None) -> str:
    """Lambda's name for this host's architecture (containers run natively, not emulated)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise ImageError(f"Lambda has no architecture for {machine}")


def _debian_arch(architecture: str) -> str:
    return {"x86_64": "amd64", "arm64": "arm64"}[architecture]


def _pip_platform(architecture: str) -> str:
    return {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}[architecture]


@dataclass(frozen=True)
class StandInImage:
    architecture: str

    @property
    def name(self) -> str:
        """The image SAM CLI asks for: ``public.ecr.aws/lambda/python:3.13-<arch>``."""
        return f"public.ecr.aws/lambda/python:3.13-{self.architecture}"

    @property
    def rootfs_key(self) -> str:
        return _digest(RECIPE_VERSION, SUITE, self.architecture, *DEBIAN_PACKAGES)

    @property
    def key(self) -> str:
        """Changes with anything the image is built from."""
        return _digest(
            self.rootfs_key,
            REQUIREMENTS.read_text(),
            BOOTSTRAP.read_text(),
            BOOTSTRAP_PY.read_text(),
            repr(sorted(IMAGE_ENV.items())),
        )

    @property
    def key_tag(self) -> str:
        return f"{KEY_REPOSITORY}:{self.architecture}-{self.key}"

    @property
    def rootfs_tarball(self) -> Path:
        return CACHE_DIR / f"rootfs-{SUITE}-{self.architecture}-{self.rootfs_key}.tar"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _docker(engine: Engine, *args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_cli(), *args],
        env={**os.environ, **engine.env()},
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def image_id(engine: Engine, reference: str) -> str | None:
    result = _docker(engine, "image", "inspect", "--format", "{{.Id}}", reference)
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_image(engine: Engine, image: StandInImage) -> bool:
    """Make ``image.name`` the stand-in built from today's inputs; True when it had to be built."""
    wanted = image_id(engine, image.key_tag)
    if wanted is None:
        build(engine, image)
        wanted = image_id(engine, image.key_tag)
        built = True
    else:
        built = False
    if wanted is None:
        raise ImageError(f"{image.key_tag} is missing after the build")
    if image_id(engine, image.name) != wanted:
        _check(_docker(engine, "tag", image.key_tag, image.name))
    return built


def build(engine: Engine, image: StandInImage) -> None:
    with tempfile.TemporaryDirectory(prefix="samlocal-rootfs-") as temp:
        rootfs = Path(temp) / "rootfs"
        rootfs.mkdir()
        _root_filesystem(image, rootfs)
        _runtime(image, rootfs)
        changes = [f"ENV {name}={value}" for name, value in IMAGE_ENV.items()]
        changes += ["WORKDIR /var/task", 'ENTRYPOINT ["/var/runtime/bootstrap"]']
        archive = Path(temp) / "image.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        with archive.open("rb") as data:
            args = ["import", *[arg for change in changes for arg in ("--change", change)], "-"]
            _check(_docker(engine, *args, image.key_tag, stdin=data.fileno()))


def _root_filesystem(image: StandInImage, rootfs: Path) -> None:
    """debootstrap minbase + python3, from the cached tarball when there is one."""
    tarball = image.rootfs_tarball
    if not tarball.is_file():
        if shutil.which("debootstrap") is None:
            apt_install("debootstrap")
        staging = rootfs.parent / "debootstrap"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--arch={_debian_arch(image.architecture)}",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                SUITE,
                str(staging),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
        )
        # Package caches and lists are not part of an image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (staging / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(staging), "-cf", str(partial), "."], check=True)
        partial.replace(tarball)
        shutil.rmtree(staging)
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-xf", str(tarball)], check=True)


def _runtime(image: StandInImage, rootfs: Path) -> None:
    """/var/runtime (awslambdaric, the SDK, bootstrap) and /var/lang/bin/python3.13."""
    runtime = rootfs / "var" / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(runtime),
            "--only-binary=:all:",
            "--platform",
            _pip_platform(image.architecture),
            "--python-version",
            "3.13",
            "--implementation",
            "cp",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copyfile(BOOTSTRAP, runtime / "bootstrap")
    (runtime / "bootstrap").chmod(0o755)
    shutil.copyfile(BOOTSTRAP_PY, runtime / "bootstrap.py")
    lang_bin = rootfs / "var" / "lang" / "bin"
    lang_bin.mkdir(parents=True, exist_ok=True)
    (lang_bin / "python3.13").symlink_to("/usr/bin/python3.13")
    (lang_bin / "python3").symlink_to("python3.13")
    (lang_bin / "python").symlink_to("python3.13")
    (rootfs / "var" / "task").mkdir(parents=True, exist_ok=True)
    (rootfs / "opt").mkdir(parents=True, exist_ok=True)


def debian_mirror() -> str:
    """The Debian mirror apt is configured with here (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = path.read_text()
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and "security" not in suites.group(1) + uris.group(1):
                return uris.group(1)
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        for line in sources_list.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in line:
                return next(part for part in parts[1:] if not part.startswith("["))
    raise ImageError("no Debian mirror found in apt's sources")


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise ImageError(f"{' '.join(result.args)} failed ({result.returncode}):\n{result.stderr}")
