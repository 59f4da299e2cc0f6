"""The C++ 2-D selective scan (`kernels/cpu/chimera2d.cpp`) against `selective_scan_2d_ref` in fp64: outputs,
gradients of every input (gradcheck and the reference's autograd), fp32, options, NaN propagation, dispatch."""
from __future__ import annotations

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops import selective_scan_2d, selective_scan_2d_ref

NAMES = ("u", "delta1", "delta2", "A", "couplings", "B1", "B2", "C1", "C2", "D", "delta_bias")


@pytest.fixture(scope="module")
def cpp():
    try:
        return kernels.load("cpp", "selective_scan_2d", torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")


def _args(b, L, V, D, N, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    A = -(torch.rand(2, D, N, generator=g, dtype=torch.float64) * 3 + 0.1)
    rho = torch.rand(2, D, N, generator=g, dtype=torch.float64) * 2 - 1
    args = (r(b, L, V, D), r(b, L, V, D), r(b, L, V, D), A, rho, r(b, L, V, N), r(b, L, V, N), r(b, L, V, N),
            r(b, L, V, N), r(D), r(2, D))
    return dict(zip(NAMES, (a.to(dtype) for a in args)))


SHAPES = [(1, 1, 1, 1, 1), (2, 5, 3, 3, 2), (1, 4, 7, 2, 8), (3, 9, 1, 4, 5), (1, 1, 6, 2, 3), (1, 3, 4, 2, 16),
          (2, 3, 2, 3, 4)]  # (batch, L, V, D, N): N = 4, 8, 16 run the kernel's unrolled state loops


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("softplus", [True, False])
def test_values_and_gradients_match_reference(cpp, shape, softplus):
    kw = _args(*shape, seed=sum(shape))
    if not softplus:  # keep the steps positive, as softplus would
        kw["delta1"], kw["delta2"], kw["delta_bias"] = kw["delta1"].abs(), kw["delta2"].abs(), kw["delta_bias"].abs()
    leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
    got = cpp(**leaves, delta_softplus=softplus)
    ref_leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
    ref = selective_scan_2d_ref(**ref_leaves, delta_softplus=softplus)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(ref)
    (got * dy).sum().backward()
    (ref * dy).sum().backward()
    for name in NAMES:
        torch.testing.assert_close(leaves[name].grad, ref_leaves[name].grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("softplus", [True, False])
def test_gradcheck(cpp, softplus):
    kw = {k: v.requires_grad_() for k, v in _args(2, 3, 4, 2, 3, seed=3).items()}
    if not softplus:
        kw = {k: (v.detach().abs() if k.startswith("delta") else v.detach()).requires_grad_() for k, v in kw.items()}
    assert torch.autograd.gradcheck(lambda *t: cpp(*t, delta_softplus=softplus), tuple(kw.values()))


def test_optional_arguments(cpp):
    kw = _args(2, 4, 3, 3, 2, seed=7)
    for drop in ("D", "delta_bias"):
        sub = {**kw, drop: None}
        torch.testing.assert_close(cpp(**sub, delta_softplus=True),
                                   selective_scan_2d_ref(**sub, delta_softplus=True), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(cpp, dtype):
    """fp32 states for fp32 / bf16 inputs, as the reference; y in the input dtype."""
    kw = _args(2, 12, 5, 4, 8, seed=11)
    low = {k: v.to(dtype) for k, v in kw.items()}
    got = cpp(**low, delta_softplus=True)
    assert got.dtype == dtype
    ref = selective_scan_2d_ref(**{k: v.double() for k, v in low.items()}, delta_softplus=True)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("where", ["u", "delta1", "delta2", "B1", "C2"])
def test_nonfinite_propagates_like_reference(cpp, where):
    """A NaN / inf in one cell reaches exactly the outputs the reference's NaN reaches (its dependence cone)."""
    kw = _args(1, 5, 4, 2, 3, seed=5)
    for bad in (float("nan"), float("inf")):
        sub = dict(kw)
        sub[where] = kw[where].clone()
        sub[where][0, 2, 1] = bad
        got, ref = cpp(**sub, delta_softplus=True), selective_scan_2d_ref(**sub, delta_softplus=True)
        assert torch.equal(got.isnan(), ref.isnan()) and torch.equal(got.isinf(), ref.isinf())
        finite = ref.isfinite()
        assert finite.any() and (bad != bad) <= (not finite.all())   # a NaN always shows (an inf step resets)
        torch.testing.assert_close(got[finite], ref[finite], rtol=1e-12, atol=1e-12)


def test_auto_picks_cpp_and_torch_path_agrees(cpp, monkeypatch):
    kw = _args(2, 6, 4, 3, 2, seed=9)
    torch.testing.assert_close(selective_scan_2d(**kw, delta_softplus=True, backend="torch"),
                               selective_scan_2d(**kw, delta_softplus=True, backend="cpp"), rtol=1e-12, atol=1e-12)
    calls = []
    monkeypatch.setattr(kernels.cpu, "_CALLABLES", {"selective_scan_2d": lambda **k: calls.append(1) or cpp(**k)})
    selective_scan_2d(**kw, delta_softplus=True)
    assert calls == [1]
    monkeypatch.setenv("SSMKIT_DISABLE_BACKENDS", "cpp")
    selective_scan_2d(**kw, delta_softplus=True)
    assert calls == [1]


@pytest.mark.parametrize("budget", [0, None], ids=["recompute", "saved"])
def test_backward_with_saved_or_recomputed_states(cpp, monkeypatch, budget):
    """The backward from the forward's saved states and from states recomputed per batch row agree with the oracle."""
    import ssmkit.kernels.cpu.chimera2d as wrapper

    if budget is not None:
        monkeypatch.setattr(wrapper, "SAVE_BUDGET_BYTES", budget)
    kw = _args(3, 4, 3, 2, 8, seed=13)
    leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
    ref_leaves = {k: v.clone().requires_grad_() for k, v in kw.items()}
    cpp(**leaves, delta_softplus=True).square().sum().backward()
    selective_scan_2d_ref(**ref_leaves, delta_softplus=True).square().sum().backward()
    for name in NAMES:
        torch.testing.assert_close(leaves[name].grad, ref_leaves[name].grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("D", [16, 13], ids=["blocks", "tail"])
@pytest.mark.parametrize("with_D", [True, False])
def test_fp32_state_sums_in_channel_blocks(cpp, D, with_D):
    """fp32 at N = 8 sums the states of eight channels at a time (the vector path; 13 channels: a block and a tail):
    y and every gradient against the fp64 reference on the same fp32 values."""
    kw = _args(2, 5, 3, D, 8, seed=17)
    if not with_D:
        kw["D"] = None
    low = {k: v.float().requires_grad_() for k, v in kw.items() if v is not None}
    ref = {k: v.float().double().requires_grad_() for k, v in kw.items() if v is not None}
    y = cpp(**{**kw, **low}, delta_softplus=True)
    y_ref = selective_scan_2d_ref(**{**kw, **ref}, delta_softplus=True)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5)
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (y * dy.float()).sum().backward()
    (y_ref * dy).sum().backward()
    for name in low:
        torch.testing.assert_close(low[name].grad.double(), ref[name].grad, rtol=1e-3, atol=1e-4, msg=name)
