"""Hooks the local world's pytest plugin calls, so other plugins can watch the world without
importing it (``tests/hygiene.py`` collects secrets and scans outputs through them).

Implement them in a plugin with ``@pytest.hookimpl(optionalhook=True)``. They are named
``pytest_*`` because pytest takes no other function of a plugin as a hook implementation.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_localworld_secret_stored(name: str, value: Any) -> None:
    """A value was stored as the Secrets Manager secret ``name`` (str, bytes or None)."""


@pytest.hookspec
def pytest_localworld_api_keys_set(keys: list[str]) -> None:
    """The Deepgram emulator was told to accept these keys (at start-up or later)."""


@pytest.hookspec
def pytest_localworld_emulator_started(emulator: Any) -> None:
    """A Deepgram emulator started; its ``requests`` log grows from now on."""


@pytest.hookspec
def pytest_localworld_emulator_resetting(emulator: Any) -> None:
    """A Deepgram emulator's request log is about to be emptied."""


@pytest.hookspec
def pytest_localworld_world_created(world: Any) -> None:
    """A ``LocalWorld`` exists (its ``api_key`` is set)."""


@pytest.hookspec
def pytest_localworld_world_resetting(world: Any) -> None:
    """A ``LocalWorld`` is about to be emptied: its output bucket still holds what the test wrote."""


@pytest.hookspec
def pytest_localworld_moto_stopping(moto: Any) -> None:
    """A moto server is about to stop: anything still to be read from it must be read now."""


@pytest.hookspec
def pytest_localworld_invoked(function: Any, result: Any) -> None:
    """A local Lambda function returned ``result`` (an ``InvocationResult``)."""
