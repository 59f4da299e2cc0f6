"""Shared helpers for the selective-scan backend tests: random inputs in mamba_ssm's test style, and a comparison
of a backend callable against the float64 oracle (outputs, final state and the gradients of every input)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

# the oracle lives next to this file; tests are collected with --import-mode=importlib, so load it by path
_spec = importlib.util.spec_from_file_location("_ssmkit_kernels_oracle", Path(__file__).with_name("_oracle.py"))
_oracle = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_ssmkit_kernels_oracle", _oracle)
_spec.loader.exec_module(_oracle)
scan_oracle = _oracle.scan_oracle

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_case(batch=2, dim=4, nstate=5, length=33, layout="var", groups=2, dtype=torch.float32, has_D=True,
              has_z=True, has_bias=True, softplus=True, has_h0=True, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)

    if layout == "inv":
        B, C = r(dim, nstate), r(dim, nstate)
    elif layout == "var":
        B, C = r(batch, nstate, length), r(batch, nstate, length)
    elif layout == "grp":
        B, C = r(batch, groups, nstate, length), r(batch, groups, nstate, length)
    else:
        raise ValueError(layout)
    delta = (delta_scale * r(batch, dim, length)) if softplus else (delta_scale * rand(batch, dim, length))
    case = dict(
        u=r(batch, dim, length),
        delta=delta,
        A=(-0.5 * rand(dim, nstate) - 0.1).to(dtype),
        B=B,
        C=C,
        D=r(dim) if has_D else None,
        z=r(batch, dim, length) if has_z else None,
        delta_bias=0.5 * rand(dim) if has_bias else None,
        initial_state=r(batch, dim, nstate) if has_h0 else None,
    )
    return case, softplus


def call(fn, case, softplus, return_last_state=True):
    c = case
    return fn(c["u"], c["delta"], c["A"], c["B"], c["C"], c["D"], c["z"], c["delta_bias"], softplus,
              return_last_state, c["initial_state"])


def outputs_and_grads(fn, case, softplus, seed=1):
    """(y, last_state, {name: grad}) of fn with random upstream gradients on y and last_state."""
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in case.items()}
    y, last = call(fn, leaves, softplus)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    gl = torch.randn(last.shape, generator=g, dtype=torch.float64)
    loss = (y.double() * gy).sum() + (last.double() * gl).sum()
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in present])
    return y.detach(), last.detach(), dict(zip(present, grads))


def rel_err(a, b):
    a, b = a.double(), b.double()
    scale = b.abs().max().clamp_min(1e-30)
    return ((a - b).abs().max() / scale).item()


def assert_matches_oracle(fn, case, softplus, tol):
    y, last, grads = outputs_and_grads(fn, case, softplus)
    case64 = {k: (v.double() if v is not None else None) for k, v in case.items()}
    y_ref, last_ref, grads_ref = outputs_and_grads(scan_oracle, case64, softplus)
    assert y.dtype == case["u"].dtype and y.shape == case["u"].shape
    assert last.shape == last_ref.shape and last.dtype in (torch.float32, torch.float64)
    errs = {"y": rel_err(y, y_ref), "last_state": rel_err(last, last_ref)}
    for k in grads_ref:
        assert grads[k].shape == case[k].shape and grads[k].dtype == case[k].dtype, k
        errs["d" + k] = rel_err(grads[k], grads_ref[k])
    bad = {k: v for k, v in errs.items() if not v < tol}
    assert not bad, f"errors above {tol}: {bad} (all: {errs})"
    return errs
