"""The mixer contract that every sequence mixer exported by `ssmkit.core.layers` follows (docs/DESIGN.md).

- `forward(x, state=None, return_state=False)`: x in the layer's layout -> y, same shape and x's dtype; with
  `return_state`, (y, state) where state continues the sequence: forward on pieces with the state carried over
  equals one forward on the whole.
- Recurrent mixers also have `initial_state(batch_size)` (grid mixers: `initial_state(batch_size, H, W)`) and
  `step(x_t, state) -> (y_t, state)`, which equals `forward` one position at a time.
- The state is one NamedTuple type per layer (`MambaState`, `S4State`, ...), documented where it is defined.
  Recurrent states are fp32 (complex64 for complex states; fp64 / complex128 for fp64 inputs); conv windows
  hold past inputs and keep their dtype.
- Mixers that are not recurrent (bidirectional, 2-D, implicit long convolutions) take the same arguments and
  raise `reject_state`'s error when given a state or asked for one.
- Bad shapes raise ValueError naming the argument (`check_tensor`); constructors take `device` / `dtype`.
"""
from __future__ import annotations

import torch.nn as nn


def reject_state(mixer: nn.Module, state, return_state: bool) -> None:
    """Raise for a state given to, or asked of, a mixer that carries none."""
    if state is not None or return_state:
        raise ValueError(f"{type(mixer).__name__} is not recurrent: it takes no state and returns none "
                         f"(got state={'a state' if state is not None else None}, return_state={return_state})")
