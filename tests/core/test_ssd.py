"""SSD (Mamba-2 scan): the chunked matrix form against the sequential fp64 oracle and other independent facts."""
import pytest
import torch
import torch.nn.functional as F

from ssmkit import kernels
from ssmkit.core.ops import selective_scan_ref, ssd, ssd_ref

F64 = torch.float64


def make(batch, L, H, P, G, N, dtype=F64, seed=0, D_shape="H", z=True, scale_dt=1.0):
    """Random SSD inputs in the ranges of the reference test plan (dt = softplus(randn - 1), A = -exp(rand))."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    args = dict(x=r(batch, L, H, P), dt=r(batch, L, H) - 1.0,
                A=-torch.exp(torch.rand(H, generator=g, dtype=F64)) * scale_dt,
                B=r(batch, L, G, N), C=r(batch, L, G, N), dt_bias=0.5 * r(H),
                D=r(H) if D_shape == "H" else r(H, P), z=r(batch, L, H, P) if z else None)
    return {k: (v.to(dtype) if v is not None else None) for k, v in args.items()}


def run(fn, inp, h0=None, upstream=None, **kw):
    """Output, final state and the gradients of <y, upstream> + <final, 1> w.r.t. every floating input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items() if v is not None}
    if h0 is not None:
        leaves["h0"] = h0.detach().clone().requires_grad_(True)
    args = {k: v for k, v in leaves.items() if k != "h0"}
    y, hT = fn(**args, dt_softplus=True, initial_states=leaves.get("h0"), return_final_states=True, **kw)
    up = (torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=F64).to(y.dtype) if upstream is None
          else upstream)
    grads = torch.autograd.grad((y * up).sum() + hT.sum(), list(leaves.values()))
    return y, hT, dict(zip(leaves, grads))


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


COMBOS = [  # (H, P, N, G, chunk, L): every listed value of each axis occurs
    (1, 8, 16, 1, 16, 1), (4, 8, 16, 2, 40, 7), (4, 64, 16, 4, 64, 64), (1, 64, 64, 1, 300, 64),
    (4, 8, 64, 4, 16, 257), (4, 8, 16, 1, 40, 257), (4, 64, 64, 2, 64, 7), (4, 8, 16, 2, 300, 257),
]


@pytest.mark.parametrize("H,P,N,G,Q,L", COMBOS)
def test_ssd_fp64_matches_sequential_ref(H, P, N, G, Q, L):
    inp = make(2, L, H, P, G, N, D_shape="H" if L % 2 else "HP", z=(H == 4))
    h0 = torch.randn(2, H, P, N, dtype=F64)
    y, hT, g = run(lambda **a: ssd(chunk_size=Q, **a), inp, h0)
    y_r, hT_r, g_r = run(ssd_ref, inp, h0)
    assert (y - y_r).abs().max() < 1e-10
    assert (hT - hT_r).abs().max() < 1e-10
    for k in g_r:
        assert (g[k] - g_r[k]).abs().max() < 1e-10, k


@pytest.mark.parametrize("H,P,N,G,Q,L", [COMBOS[1], COMBOS[4], COMBOS[6], COMBOS[7]])
def test_ssd_fp32_matches_fp64_ref(H, P, N, G, Q, L):
    inp64 = make(2, L, H, P, G, N, D_shape="HP")
    inp32 = {k: v.float() if v is not None else None for k, v in inp64.items()}
    h0 = torch.randn(2, H, P, N, dtype=F64)
    up = torch.randn(2, L, H, P, dtype=F64)
    y, hT, g = run(lambda **a: ssd(chunk_size=Q, **a), inp32, h0.float(), up.float())
    y_r, hT_r, g_r = run(ssd_ref, inp64, h0, up)
    assert y.dtype == torch.float32 and hT.dtype == torch.float32
    assert rel(y, y_r) < 1e-5 and rel(hT, hT_r) < 1e-5
    for k in g_r:
        assert rel(g[k], g_r[k]) < 1e-5, k


def test_ssd_continuation_equals_one_pass():
    inp = make(2, 90, 4, 8, 2, 16)
    y, hT = ssd(**inp, chunk_size=32, dt_softplus=True, return_final_states=True)
    first = {k: v[:, :37] if v is not None and v.dim() > 1 and k != "D" else v for k, v in inp.items()}
    second = {k: v[:, 37:] if v is not None and v.dim() > 1 and k != "D" else v for k, v in inp.items()}
    y1, h1 = ssd(**first, chunk_size=32, dt_softplus=True, return_final_states=True)
    y2, h2 = ssd(**second, chunk_size=32, dt_softplus=True, initial_states=h1, return_final_states=True)
    assert torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-12, rtol=0)
    assert torch.allclose(h2, hT, atol=1e-12, rtol=0)


@pytest.mark.parametrize("Q", [4, 16, 64])
def test_ssd_seq_idx_packing_equals_each_sequence_alone(Q):
    lengths = [1, 13, 5, 16, 1, 9]
    L = sum(lengths)
    inp = make(1, L, 4, 8, 2, 16)
    h0 = torch.randn(1, 4, 8, 16, dtype=F64)
    seq_idx = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).unsqueeze(0)
    y, hT = ssd(**inp, chunk_size=Q, dt_softplus=True, seq_idx=seq_idx, initial_states=h0, return_final_states=True)
    start = 0
    for i, n in enumerate(lengths):
        part = {k: v[:, start:start + n] if v is not None and v.dim() > 1 and k != "D" else v for k, v in inp.items()}
        y_i, h_i = ssd_ref(**part, dt_softplus=True, initial_states=h0 if i == 0 else None, return_final_states=True)
        assert torch.allclose(y[:, start:start + n], y_i, atol=1e-11, rtol=0), i
        start += n
    assert torch.allclose(hT, h_i, atol=1e-11, rtol=0)
    y_ref = ssd_ref(**inp, dt_softplus=True, seq_idx=seq_idx, initial_states=h0)
    assert torch.allclose(y, y_ref, atol=1e-11, rtol=0)


@pytest.mark.parametrize("G", [1, 2])
def test_ssd_equals_selective_scan_with_broadcast_A(G):
    """SSD is Mamba-1's scan with A repeated over (P, N) and dt over P (channel h*P + p)."""
    batch, L, H, P, N = 2, 23, 4, 3, 5
    inp = make(batch, L, H, P, G, N, z=False)
    y = ssd(**inp, chunk_size=8, dt_softplus=True)
    u = inp["x"].reshape(batch, L, H * P).transpose(1, 2)
    delta = inp["dt"].repeat_interleave(P, dim=2).transpose(1, 2)
    A = inp["A"].repeat_interleave(P)[:, None].expand(H * P, N)
    Bs, Cs = (inp[k].permute(0, 2, 3, 1) for k in ("B", "C"))           # (batch, G, N, L)
    y_s = selective_scan_ref(u, delta, A, Bs, Cs, D=inp["D"].repeat_interleave(P),
                             delta_bias=inp["dt_bias"].repeat_interleave(P), delta_softplus=True)
    assert torch.allclose(y.reshape(batch, L, H * P).transpose(1, 2), y_s, atol=1e-11, rtol=0)


def test_ssd_gradcheck_tiny():
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64, requires_grad=True)
    x, dt, B, C, h0, z = r(1, 5, 2, 2), r(1, 5, 2), r(1, 5, 1, 3), r(1, 5, 1, 3), r(1, 2, 2, 3), r(1, 5, 2, 2)
    A = (-torch.rand(2, generator=g, dtype=F64) - 0.5).requires_grad_()
    seq_idx = torch.tensor([[0, 0, 0, 1, 1]])
    f = lambda x, dt, A, B, C, h0, z: ssd(x, dt, A, B, C, chunk_size=2, z=z, dt_softplus=True, initial_states=h0,
                                          seq_idx=seq_idx, return_final_states=True)
    assert torch.autograd.gradcheck(f, (x, dt, A, B, C, h0, z))


def test_ssd_dt_limit_is_applied_after_softplus():
    inp = make(1, 20, 2, 4, 1, 8, z=False)
    y = ssd(**inp, chunk_size=8, dt_softplus=True, dt_limit=(0.05, 0.2))
    dt = F.softplus(inp["dt"] + inp["dt_bias"]).clamp(0.05, 0.2)
    y_ref = ssd_ref(**{**inp, "dt": dt, "dt_bias": None})
    assert torch.allclose(y, y_ref, atol=1e-12, rtol=0)
    assert not torch.allclose(y, ssd(**inp, chunk_size=8, dt_softplus=True), atol=1e-3)


def test_ssd_stress_large_decay_is_finite_and_accurate():
    """dt A down to about -50 per step: every exponent stays <= 0, no NaN/Inf, fp32 still matches fp64."""
    inp64 = make(1, 130, 2, 4, 1, 8, scale_dt=20.0)
    inp64["dt_bias"] = inp64["dt_bias"] + 2.0
    y_r = ssd_ref(**inp64, dt_softplus=True)
    y = ssd(**{k: v.float() if v is not None else None for k, v in inp64.items()}, chunk_size=64, dt_softplus=True)
    assert torch.isfinite(y).all()
    assert rel(y, y_r) < 1e-5


def test_ssd_low_precision_input_keeps_dtype_and_fp32_state():
    inp = {k: v.to(torch.bfloat16) if v is not None else None for k, v in make(1, 10, 2, 4, 1, 8).items()}
    y, hT = ssd(**inp, chunk_size=4, dt_softplus=True, return_final_states=True)
    assert y.dtype == torch.bfloat16 and hT.dtype == torch.float32


def test_ssd_bad_input_raises_naming_the_argument():
    inp = make(1, 6, 4, 2, 1, 3, z=False)
    with pytest.raises(ValueError, match="groups"):
        ssd(**{**inp, "B": torch.randn(1, 6, 3, 3, dtype=F64), "C": torch.randn(1, 6, 3, 3, dtype=F64)})
    with pytest.raises(ValueError, match="seq_idx must be non-decreasing"):
        ssd(**inp, seq_idx=torch.tensor([[0, 0, 1, 0, 1, 1]]))
    with pytest.raises(TypeError, match="seq_idx"):
        ssd(**inp, seq_idx=torch.zeros(1, 6))
    with pytest.raises(ValueError, match="dt"):
        ssd(**{**inp, "dt_bias": None, "dt": -torch.rand(1, 6, 4, dtype=F64)})
    with pytest.raises(ValueError, match="A must be <= 0"):
        ssd(**{**inp, "A": torch.ones(4, dtype=F64)}, dt_softplus=True)
    with pytest.raises(ValueError, match="dt_limit"):
        ssd(**inp, dt_softplus=True, dt_limit=(-1.0, 1.0))
    with pytest.raises(ValueError, match="initial_states"):
        ssd(**inp, dt_softplus=True, initial_states=torch.zeros(1, 4, 2, 5, dtype=F64))
    empty = ssd(**{k: v[:, :0] if v is not None and v.dim() > 1 and k != "D" else v for k, v in inp.items()})
    assert empty.shape == (1, 0, 4, 2)  # L = 0 is not an error: an empty output (issue 17)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd(**inp, dt_softplus=True, chunk_size=0)
    with pytest.raises(kernels.BackendUnavailable, match="CUDA"):
        ssd(**inp, dt_softplus=True, backend="mamba_ssm")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ssd_mamba_ssm_backend_matches_torch():
    pytest.importorskip("mamba_ssm")
    inp = {k: v.float().cuda() if v is not None else None for k, v in make(2, 300, 4, 64, 2, 64).items()}
    h0 = torch.randn(2, 4, 64, 64, device="cuda")
    y, hT = ssd(**inp, chunk_size=64, dt_softplus=True, initial_states=h0, return_final_states=True,
                backend="mamba_ssm")
    y_t, hT_t = ssd(**inp, chunk_size=64, dt_softplus=True, initial_states=h0, return_final_states=True,
                    backend="torch")
    assert rel(y, y_t) < 1e-3 and rel(hT, hT_t) < 1e-3
