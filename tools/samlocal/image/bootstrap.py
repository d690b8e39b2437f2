"""Runs awslambdaric with the module search path of Lambda's python3.13 runtime."""

import sys

# Function code, then layers, then the runtime's own packages (boto3), then the standard library.
FIRST = ["/var/task", "/opt/python/lib/python3.13/site-packages", "/opt/python", "/var/runtime"]
sys.path[:] = FIRST + [entry for entry in sys.path if entry not in FIRST]

from awslambdaric.__main__ import main  # noqa: E402 - needs the path above

main(["awslambdaric", sys.argv[1]])
