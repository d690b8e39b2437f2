"""The local world's fidelity patches for moto's in-process mock, as a pytest plugin: the core tier
(tests/core) runs moto in-process without the rest of the local world, and still gets what AWS does
where moto differs (a DELETE of a missing key in a versioned bucket adds a delete marker)."""

from __future__ import annotations

import pytest

from localworld import s3_delete_markers


@pytest.fixture(scope="session")
def moto_as_aws() -> None:
    """Install the patches once per process; moto's backends then behave as AWS does there."""
    s3_delete_markers.install()
