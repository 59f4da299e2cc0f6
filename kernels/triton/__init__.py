"""Triton GPU backend. Not built yet: every op reports itself unavailable."""
from .. import BackendUnavailable


def load(op, device):
    raise BackendUnavailable(f"triton backend has no {op} kernel yet")
