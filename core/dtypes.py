"""The dtype policy of every op and mixer: states and scan parameters are fp32 (fp64 when the input is fp64),
outputs take the input's dtype; conv windows hold past inputs and keep their dtype."""
from __future__ import annotations

import torch


def state_dtype(x: torch.Tensor) -> torch.dtype:
    """States and scan parameters are fp32, or fp64 when the input is fp64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
