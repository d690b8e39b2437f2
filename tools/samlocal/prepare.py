"""What ``make sam-local`` needs before its first container, done ahead of it: docker.io installed,
the stand-in base image built and sam's build cache warm for the local template.

``make test`` runs this in the background while lint, types and the other tiers run, so on a fresh
machine the install, the image (debootstrap, wheels) and the cold ``sam build`` overlap them instead
of following them. Every step is one the sam-local fixtures take anyway and find done (the image
by its key tag, the build by sam's cache), so a failure here costs nothing but the head start: the
tests then take the step themselves and report its error. The engine started here is stopped here.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from samlocal import project
from samlocal.engine import docker_engine
from samlocal.image import StandInImage, ensure_image, lambda_architecture


def main() -> int:
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="samlocal-prepare-") as temp:
        workspace = Path(temp)
        started = time.monotonic()
        with docker_engine(workspace / "dockerd.log") as engine:
            timings["engine"] = time.monotonic() - started
            image = StandInImage(lambda_architecture())
            started = time.monotonic()
            ensure_image(engine, image)
            timings["image"] = time.monotonic() - started
            started = time.monotonic()
            template = project.write_local_template(workspace, image.architecture)
            project.sam_build(template, workspace, project.sam_env(extra=engine.env()))
            timings["sam build"] = time.monotonic() - started
    print("samlocal prepared: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
