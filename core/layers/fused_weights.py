"""Weights for the fused one-token kernels that stand in for a module's forward in `step`."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn


def fused_weights(module: nn.Module, kind: type, name: str) -> Mapping[str, torch.Tensor]:
    """`module`'s parameters by name, for a fused step kernel that computes what `kind.forward` computes.

    For a plain module this is its `_parameters` dict itself: a dictionary read, because per token an nn.Module
    attribute lookup costs about as much as the fused kernel's arithmetic. Weights re-parametrised with
    `torch.nn.utils.parametrize` (weight norm, orthogonal, ...) are resolved through their attributes, so the
    kernel sees what forward sees. A module whose forward is not `kind.forward` (a LoRA or quantised wrapper) or
    that carries forward hooks (a pruning mask) would make `step` disagree with `forward`: it raises, naming it."""
    own_forward = type(module).forward is not kind.forward
    if own_forward or module._forward_hooks or module._forward_pre_hooks:
        raise NotImplementedError(
            f"step computes {name} from its weights as {kind.__name__}.forward does, but this "
            f"{type(module).__name__} changes its forward ({'its own forward' if own_forward else 'forward hooks'}); "
            "merge or remove that (e.g. torch.nn.utils.prune.remove, merging an adapter) before stepping")
    return own_parameters(module)


def own_parameters(module: nn.Module) -> Mapping[str, torch.Tensor]:
    """`module`'s own (not its children's) parameters by name as forward sees them: the `_parameters` dict itself,
    or, for a module with parametrizations, each one's current value."""
    params = module._parameters
    if "parametrizations" not in module._modules:
        return params
    return {n: getattr(module, n) for n in list(params) + list(module._modules["parametrizations"].keys())}
