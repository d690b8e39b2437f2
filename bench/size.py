"""Artifact size: ``sam build`` output (TranscribeFunction + SharedLayer) vs the baseline's
dependencies (``pip install --target`` of deepgram-sdk and its dependencies for the same platform,
arm64 / python3.13; boto3 is left out on both sides: the Lambda runtime provides it).

sam build runs offline-capable like tests/template does: the dev venv's python first on PATH, the
dependency cache in ~/.cache/dg-transcribe/sam-build (shared, under its lock), a temporary build dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bench.common import (
    BASELINE_DIR,
    BASELINE_REQUIREMENTS,
    CACHE_ROOT,
    ROOT,
    Row,
    SectionResult,
    baseline_python,
    say,
)

SAM_CACHE_ROOT = Path(os.environ.get("SAM_BUILD_CACHE_ROOT") or CACHE_ROOT / "sam-build")
PLATFORM = "manylinux2014_aarch64"  # template.yaml: Architectures [arm64]
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def zipped_bytes(paths: list[Path]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "a.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for root in paths:
                for file in sorted(root.rglob("*")):
                    if file.is_file():
                        archive.write(file, file.relative_to(root))
        return target.stat().st_size


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def top_packages(site: Path, count: int = 5) -> str:
    sizes = {entry.name: tree_bytes(entry) for entry in site.iterdir() if entry.is_dir()}
    sizes = {name: size for name, size in sizes.items() if not name.endswith((".dist-info", "__pycache__"))}
    ranked = sorted(sizes.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{name} {size / 1e6:.1f}" for name, size in ranked)


def sam_build(build_dir: Path) -> None:
    SAM_CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    saved_graph = SAM_CACHE_ROOT / f"bench-build-{checkout}.toml"
    graph = build_dir.parent / "build.toml"
    with (SAM_CACHE_ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if saved_graph.is_file():
                shutil.copyfile(saved_graph, graph)
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "samcli",
                    "build",
                    "--template",
                    str(ROOT / "template.yaml"),
                    "--build-dir",
                    str(build_dir),
                    "--cached",
                    "--cache-dir",
                    str(SAM_CACHE_ROOT / "cache"),
                    "--parallel",
                ],
                cwd=SAM_CACHE_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"sam build failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            if graph.is_file():
                shutil.copyfile(graph, saved_graph)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def baseline_install(target: Path) -> None:
    lines = BASELINE_REQUIREMENTS.read_text().splitlines()
    pin = next(line.strip() for line in lines if line.startswith("deepgram-sdk"))
    result = subprocess.run(
        [
            baseline_python(),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(target),
            "--platform",
            PLATFORM,
            "--python-version",
            "3.13",
            "--implementation",
            "cp",
            "--only-binary=:all:",
            pin,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip install --target failed:\n{result.stderr[-2000:]}")
    for name in RUNTIME_PROVIDED:  # what the runtime provides is not part of the artifact
        for path in target.glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(target / "bin", ignore_errors=True)
    shutil.copy(BASELINE_DIR / "app.py", target / "app.py")


def run() -> SectionResult:
    section = SectionResult("size")
    with tempfile.TemporaryDirectory(prefix="bench-size-") as tmp:
        build_dir = Path(tmp) / "build"
        say("size: sam build (about 20 s cold, a few s cached)")
        sam_build(build_dir)
        function = build_dir / "TranscribeFunction"
        layer = build_dir / "SharedLayer"
        ours = tree_bytes(function) + tree_bytes(layer)
        ours_zip = zipped_bytes([function, layer])
        say("size: pip install --target of deepgram-sdk (arm64)")
        baseline_dir = Path(tmp) / "baseline"
        baseline_install(baseline_dir)
        base = tree_bytes(baseline_dir)
        base_zip = zipped_bytes([baseline_dir])
        provided = sum(
            tree_bytes(path) if path.is_dir() else path.stat().st_size
            for name in RUNTIME_PROVIDED
            for path in (layer / "python").glob(f"{name}*")
        )
        layer_top = top_packages(layer / "python")
        base_top = top_packages(baseline_dir)
    section.rows += [
        Row(
            "size",
            "artifact, unzipped (function + layer)",
            mb(ours),
            f"{mb(base)} (deepgram-sdk)",
            ours / base,
        ),
        Row(
            "size",
            "  unzipped, less what the runtime provides (botocore...)",
            mb(ours - provided),
            mb(base),
            (ours - provided) / base,
        ),
        Row("size", "artifact, zipped", mb(ours_zip), mb(base_zip), ours_zip / base_zip),
        Row("size", "  largest packages (MB)", layer_top, base_top),
    ]
    return section
