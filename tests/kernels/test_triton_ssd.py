"""The Triton SSD chunk scan (`kernels/triton/ssd.py`) under Triton's CPU interpreter (TRITON_INTERPRET=1) against
the sequential float64 oracle `ssd_ref`: outputs, final states and the gradients of every input, on tiny shapes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops import ssd, ssd_ref
from ssmkit.core.ops._dispatch import select

F64 = torch.float64
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


@pytest.fixture(scope="module")
def tri(triton_ssd):
    return lambda **kw: ssd(backend="triton", **kw)


def make(batch=2, L=33, H=2, P=4, G=1, N=4, dtype=F64, D_shape="H", z=True, bias=True, h0=True, seed=0):
    """Random inputs in mamba_ssm's test ranges (dt = softplus(randn - 1), A = -exp(rand)); None = left out."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    args = dict(x=r(batch, L, H, P), dt=r(batch, L, H) - 1.0, A=-torch.exp(torch.rand(H, generator=g, dtype=F64)),
                B=r(batch, L, G, N), C=r(batch, L, G, N), D=r(H) if D_shape == "H" else r(H, P) if D_shape else None,
                z=r(batch, L, H, P) if z else None, dt_bias=0.5 * r(H) if bias else None,
                initial_states=r(batch, H, P, N) if h0 else None)
    return {k: v.to(dtype) for k, v in args.items() if v is not None}


def run(fn, inp, **kw):
    """y, final states and the gradients of <y, u1> + <final, u2> (random u1, u2) w.r.t. every floating input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    y, hT = fn(**leaves, return_final_states=True, **kw)
    g = torch.Generator().manual_seed(1)
    loss = (y.double() * torch.randn(y.shape, generator=g, dtype=F64)).sum() \
        + (hT.double() * torch.randn(hT.shape, generator=g, dtype=F64)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y.detach(), hT.detach(), dict(zip(leaves, grads))


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def check(tri, inp, tol, **kw):
    y, hT, grads = run(tri, inp, **kw)
    y_r, hT_r, grads_r = run(ssd_ref, {k: v.double() for k, v in inp.items()},
                             **{k: v for k, v in kw.items() if k != "chunk_size"})
    assert y.dtype == inp["x"].dtype and hT.dtype == (F64 if y.dtype == F64 else torch.float32)
    assert rel(y, y_r) < tol and rel(hT, hT_r) < tol
    for k, g in grads.items():
        assert g.dtype == inp[k].dtype and rel(g, grads_r[k]) < tol, k


@pytest.mark.parametrize("L", [1, 7, 33])
@pytest.mark.parametrize("G", [1, 2])
def test_fp32_all_options(tri, L, G):
    """D (H,), z, dt_bias + softplus, initial and final states; L shorter than, not a multiple of, a chunk."""
    check(tri, make(L=L, G=G, dtype=torch.float32), TOL[torch.float32], chunk_size=16, dt_softplus=True)


@pytest.mark.parametrize("G", [1, 2])
def test_fp64_all_options(tri, G):
    check(tri, make(batch=1, L=33, G=G), TOL[F64], chunk_size=16, dt_softplus=True)


def test_fp64_D_per_channel_dt_limit_no_gate(tri):
    """D (H, P), no z / dt_bias / initial state, a dt_limit clamp and a chunk size that is not a power of two."""
    inp = make(batch=2, L=23, G=2, D_shape="HP", z=False, bias=False, h0=False)
    check(tri, inp, TOL[F64], chunk_size=6, dt_softplus=True, dt_limit=(0.2, 0.6))


def test_fp64_raw_dt_no_D(tri):
    inp = make(batch=1, L=20, D_shape=None, z=False, bias=False)
    inp["dt"] = inp["dt"].abs()
    check(tri, inp, TOL[F64], chunk_size=16)


def test_fp32_long_odd_length(tri):
    check(tri, make(batch=1, L=129, G=2, dtype=torch.float32), TOL[torch.float32], chunk_size=16, dt_softplus=True)


@pytest.mark.parametrize("G", [1, 2])
def test_seq_idx_packed_sequences(tri, G):
    """Boundaries inside a chunk (the new sequence then running on over chunks), on a chunk boundary (16) and at
    the last step; the initial state feeds only the first sequence and the final state is the last sequence's."""
    inp = make(batch=2, L=33, G=G)
    seq_idx = torch.tensor([[0] * 5 + [1] * 11 + [2] * 16 + [3], [4] * 3 + [5] * 30])
    check(tri, inp, TOL[F64], chunk_size=16, dt_softplus=True, seq_idx=seq_idx)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs(tri, dtype):
    """Half inputs run with an fp32 state: y in the input dtype, final states fp32, gradients in each input's dtype."""
    inp = make(batch=1, L=20, G=2, dtype=dtype)
    y, hT, grads = run(tri, inp, chunk_size=16, dt_softplus=True)
    y_r, hT_r = ssd_ref(**{k: v.double() for k, v in inp.items()}, dt_softplus=True, return_final_states=True)
    assert y.dtype == dtype and hT.dtype == torch.float32
    assert rel(y, y_r) < 1e-2 and rel(hT, hT_r) < 1e-5
    for k, g in grads.items():
        assert g.dtype == inp[k].dtype and torch.isfinite(g).all(), k


def test_continuation_with_initial_states(tri):
    """Two calls, the second started from the first's final states, equal one call over the whole sequence."""
    inp = make(batch=1, L=30, G=2, h0=False)
    y, hT = tri(**inp, chunk_size=16, dt_softplus=True, return_final_states=True)
    timed = ("x", "dt", "B", "C", "z")
    first = {k: (v[:, :13] if k in timed else v) for k, v in inp.items()}
    second = {k: (v[:, 13:] if k in timed else v) for k, v in inp.items()}
    y1, h1 = tri(**first, chunk_size=16, dt_softplus=True, return_final_states=True)
    y2, h2 = tri(**second, chunk_size=16, dt_softplus=True, return_final_states=True, initial_states=h1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, hT, rtol=1e-12, atol=1e-12)


def test_backend_callable_needs_backward_impl_for_grads(tri):
    fn = kernels.load("triton", "ssd", torch.device("cpu"))
    inp = make(batch=1, L=5, h0=False)
    with torch.no_grad():
        y = fn(**{k: v for k, v in inp.items() if k not in ("x", "dt", "A", "B", "C")},
               x=inp["x"], dt=inp["dt"], A=inp["A"], B=inp["B"], C=inp["C"], chunk_size=4, dt_softplus=True)
    assert rel(y, ssd_ref(**inp, dt_softplus=True)) < TOL[F64]
    inp["x"].requires_grad_(True)
    with pytest.raises(ValueError, match="backward_impl"):
        fn(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 4)


def test_auto_on_cpu_never_picks_triton(tri):
    """Even with the interpreter on, backend='auto' on CPU tensors keeps the CPU order (cpp, then PyTorch)."""
    def torch_impl():
        pass
    assert select("ssd", "auto", torch.device("cpu"), torch_impl) is torch_impl


def test_strided_views(tri):
    """x, z, B, C as views into one projection (as Mamba-2 splits its in_proj output) and a transposed dt."""
    b, L, H, P, G, N = 2, 19, 2, 4, 2, 4
    g = torch.Generator().manual_seed(3)
    proj = torch.randn(b, L, 2 * H * P + 2 * G * N, generator=g, dtype=F64)
    z, x = proj[..., :H * P].view(b, L, H, P), proj[..., H * P:2 * H * P].view(b, L, H, P)
    B = proj[..., 2 * H * P:2 * H * P + G * N].view(b, L, G, N)
    C = proj[..., 2 * H * P + G * N:].view(b, L, G, N)
    dt = torch.randn(b, H, L, generator=g, dtype=F64).transpose(1, 2)
    assert not (x.is_contiguous() or B.is_contiguous() or dt.is_contiguous())
    inp = dict(x=x, dt=dt, A=-torch.rand(H, dtype=F64, generator=g) - 0.5, B=B, C=C, z=z, D=torch.randn(H, dtype=F64))
    check(tri, inp, TOL[F64], chunk_size=8, dt_softplus=True)


def test_several_blocks_per_chunk(tri, monkeypatch):
    """Blocks of 16 (instead of up to 64) so a chunk of 40 spans 3 row blocks and causal column blocks, and P, N of
    20 span 2 blocks each: every tiling loop of the kernels runs more than once."""
    from ssmkit.kernels.triton import ssd as triton_ssd

    monkeypatch.setattr(triton_ssd, "MAX_BLOCK", 16)
    inp = make(batch=1, L=50, H=2, P=20, G=2, N=20, D_shape="HP")
    check(tri, inp, TOL[F64], chunk_size=40, dt_softplus=True, seq_idx=torch.tensor([[0] * 30 + [1] * 20]))


def test_explicit_triton_on_cpu_without_interpreter_names_the_reason(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(kernels.BackendUnavailable, match="CUDA tensors"):
        ssd(**make(batch=1, L=3, h0=False), dt_softplus=True, backend="triton")
    assert "CUDA tensors" in kernels.available("cpu", ops=("ssd",))["triton"]


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """The interpreter runs code the GPU compiler rejects: lower every kernel (all options on, bf16 inputs) to an
    sm_90 cubin with Triton's own ptxas, in a fresh process without the interpreter. Needs no GPU."""
    pytest.importorskip("triton.backends.nvidia")
    env = dict(os.environ, TRITON_INTERPRET="0")
    script = Path(__file__).with_name("_triton_ssd_aot.py")
    done = subprocess.run([sys.executable, str(script), "bf16"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("compiled for sm_90") == 4
