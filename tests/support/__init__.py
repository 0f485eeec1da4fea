"""Shared helpers for the tests: a real server process and raw clients."""
