"""Retry function (being written)."""
