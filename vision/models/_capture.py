"""What the backbones share for graph capture (TorchScript, torch.export, torch.compile, ONNX).

Each SSM mixer has an eager forward (core's modules, autograd, any backend; Vim's mixer also a fused inference
path without autograd) and `forward_ops`, written in TorchScript's subset and calling the scan ops registered in
`ssmkit.core.ops.custom_ops`, with the same result. `forward` takes `forward_ops` when scripted (a static branch
TorchScript resolves at compile time) or traced by dynamo (torch.compile / torch.export), the eager path otherwise.
"""
from __future__ import annotations

import torch

import ssmkit.core.ops.custom_ops  # noqa: F401  (registers torch.ops.ssmkit.*)


def shape_str(x: torch.Tensor) -> str:
    """x's shape as "(2, 3, 32, 32)": the form error messages use, also under TorchScript."""
    return "(" + ", ".join([str(s) for s in x.shape]) + ")"


def capturing() -> bool:
    """True while dynamo traces (torch.compile, torch.export): mixers then call the registered custom ops."""
    return torch.compiler.is_compiling()
