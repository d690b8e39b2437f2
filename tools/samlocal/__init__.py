"""``sam local invoke`` for real, on a machine with no container registry.

``engine`` finds or starts a Docker engine (installing Debian's ``docker.io`` if none is there),
``image`` builds the stand-in for AWS's ``public.ecr.aws/lambda/python:3.13-<arch>`` base image
from Debian packages and PyPI wheels, ``sam`` runs the SAM CLI with its Lambda containers in the
host's network namespace, and ``project`` prepares the template, the build and the ``--env-vars``
file that point the unchanged handlers at the local world.
"""
