"""CPU C++ backend (compiled on first use). Not built yet: every op reports itself unavailable."""
from .. import BackendUnavailable


def load(op, device):
    if device.type != "cpu":
        raise BackendUnavailable(f"cpp backend runs on CPU tensors, got device {device}")
    raise BackendUnavailable(f"cpp backend has no {op} kernel yet")
