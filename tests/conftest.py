"""The local world (moto server + Deepgram emulator) comes from its pytest plugin,
``localworld.pytest_plugin``, loaded by the conftest.py of the directories whose tests use it
(tests/integration, tests/samlocal, tools/localworld/tests, bench/tests), as fixtures: ``world``, ``uploads``,
``start_function``, ``start_delivery``, ``sample_audio``... See tools/localworld/README.md.
"""

pytest_plugins = ["tests.hygiene"]  # no API key or presigned-URL secret in anything written
