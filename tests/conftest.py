"""The local world (moto server + Deepgram emulator) comes from its pytest plugin,
``localworld.pytest_plugin`` (pyproject.toml's addopts), as fixtures: ``world``, ``uploads``,
``start_function``, ``start_delivery``, ``sample_audio``... See tools/localworld/README.md.
"""

pytest_plugins = ["tests.hygiene"]  # no API key or presigned-URL secret in anything written
