"""Session-wide set-up: on a machine without CUDA, Triton's interpreter must be on before anything imports triton
(torch.compile and torch.export in the vision and core tests do), or the Triton kernel tests in tests/kernels
cannot run in the same process."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
