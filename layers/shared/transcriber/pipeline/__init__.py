"""The per-object work and the ways in: the workflow, the event adapters, the dead-letter retrier."""
