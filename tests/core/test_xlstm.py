"""mLSTM (parallel / chunkwise / recurrent) and sLSTM against unstabilised fp64 loops; blocks step == forward."""
import math

import pytest
import torch

from ssmkit.core.blocks import mLSTMBlock, sLSTMBlock
from ssmkit.core.layers import mLSTM, sLSTM
from ssmkit.core.ops import mlstm_chunkwise, mlstm_parallel, mlstm_ref, mlstm_step, slstm

FORMS = {
    "recurrent": lambda *a, **kw: mlstm_ref(*a, **kw),
    "parallel": lambda *a, **kw: mlstm_parallel(*a, **kw),
    "chunk3": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=3, **kw),
    "chunk16": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=16, **kw),
    "chunk64": lambda *a, **kw: mlstm_chunkwise(*a, chunk_size=64, **kw),
}


def _inputs(S, seed=0, gate_scale=3.0, dtype=torch.float64, B=2, NH=3, DH=4, DV=5):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    q, k, v = r(B, NH, S, DH), r(B, NH, S, DH), r(B, NH, S, DV)
    i, f = gate_scale * r(B, NH, S), gate_scale * r(B, NH, S)
    return tuple(t.to(dtype) for t in (q, k, v, i, f))


def _mlstm_unstabilised(q, k, v, i, f):
    """Plain fp64 recurrence with true (unscaled) C and n."""
    B, NH, S, DH = q.shape
    C = torch.zeros(B, NH, DH, v.shape[-1], dtype=torch.float64)
    n = torch.zeros(B, NH, DH, dtype=torch.float64)
    hs = []
    for q_t, k_t, v_t, i_t, f_t in zip(*(t.double().unbind(2) for t in (q, k, v, i, f))):
        k_t = k_t / math.sqrt(DH)
        fg, ig = torch.sigmoid(f_t)[..., None], torch.exp(i_t)[..., None]
        C = fg[..., None] * C + ig[..., None] * k_t[..., :, None] * v_t[..., None, :]
        n = fg * n + ig * k_t
        den = torch.clamp((q_t * n).sum(-1).abs(), min=1.0)
        hs.append(torch.einsum("bhd,bhde->bhe", q_t, C) / den[..., None])
    return torch.stack(hs, 2)


@pytest.mark.parametrize("S", [1, 7, 37, 100])
@pytest.mark.parametrize("form", list(FORMS))
def test_mlstm_forms_equal_unstabilised_recurrence_fp64(S, form):
    args = _inputs(S, seed=S)
    want = _mlstm_unstabilised(*args)
    # eps (added to the stabilised denominator, so scaled by e^m) is the only deviation from the plain math.
    got = FORMS[form](*args, eps=0.0)
    assert (got - want).abs().max() < 1e-10 * want.abs().max().clamp_min(1)
    assert (FORMS[form](*args) - mlstm_ref(*args)).abs().max() < 1e-10 * want.abs().max().clamp_min(1)


@pytest.mark.parametrize("form", list(FORMS))
def test_mlstm_forms_fp32_within_1e4_relative(form):
    args = _inputs(70, seed=1)
    want = mlstm_ref(*args)
    got = FORMS[form](*(t.float() for t in args))
    assert got.dtype == torch.float32
    assert (got.double() - want).norm() / want.norm() < 1e-4


@pytest.mark.parametrize("first,second", [("parallel", "chunk3"), ("chunk16", "recurrent"), ("recurrent", "chunk64")])
@pytest.mark.parametrize("split", [1, 13, 29])
def test_mlstm_continuation_from_state(first, second, split):
    args = _inputs(41, seed=split)
    full, full_state = mlstm_ref(*args, return_final_state=True)
    head = [t[:, :, :split] for t in args]
    tail = [t[:, :, split:] for t in args]
    h1, state = FORMS[first](*head, return_final_state=True)
    h2, state2 = FORMS[second](*tail, initial_state=state, return_final_state=True)
    assert (torch.cat([h1, h2], 2) - full).abs().max() < 1e-10 * full.abs().max()
    for a, b in zip(state2, full_state):
        assert (a - b).abs().max() < 1e-10 * b.abs().max().clamp_min(1)


@pytest.mark.parametrize("pattern", ["random", "open", "closed", "alternating"])
def test_mlstm_extreme_gates_stay_finite(pattern):
    q, k, v, i, f = _inputs(50, seed=3, dtype=torch.float32)
    if pattern == "random":
        i, f = 30 * (2 * torch.rand_like(i) - 1), 30 * (2 * torch.rand_like(f) - 1)
    elif pattern == "open":
        i, f = torch.full_like(i, 30.0), torch.full_like(f, 30.0)
    elif pattern == "closed":
        i, f = torch.full_like(i, -30.0), torch.full_like(f, -30.0)
    else:
        sign = torch.where(torch.arange(50) % 2 == 0, 1.0, -1.0)
        i, f = 30 * sign.expand_as(i), -30 * sign.expand_as(f)
    want = _mlstm_unstabilised(q, k, v, i, f)
    for form in FORMS.values():
        leaf = [t.clone().requires_grad_() for t in (q, k, v, i, f)]
        h = form(*leaf, eps=0.0)
        assert torch.isfinite(h).all()
        assert (h.double() - want).abs().max() < 1e-3 * want.abs().max().clamp_min(1)
        h.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in leaf)


def _slstm_unstabilised(wx, R, b):
    B, S, _, NH, DH = wx.shape
    y = c = n = torch.zeros(B, NH, DH, dtype=torch.float64)
    ys = []
    for wx_t in wx.double().unbind(1):
        raw = wx_t + torch.einsum("bhd,hdge->bghe", y, R.double()) + b.double().transpose(0, 1)
        i, f, z, o = raw.unbind(1)
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        y = torch.sigmoid(o) * c / n
        ys.append(y)
    return torch.stack(ys, 1)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_slstm_equals_unstabilised_recurrence(scale):
    g = torch.Generator().manual_seed(int(scale))
    wx = scale * torch.randn(2, 40, 4, 3, 4, generator=g, dtype=torch.float64)
    R = 0.5 * torch.randn(3, 4, 4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    want = _slstm_unstabilised(wx, R, b)
    assert (slstm(wx, R, b) - want).abs().max() < 1e-10
    y1, state = slstm(wx[:, :15], R, b, return_final_state=True)
    y2 = slstm(wx[:, 15:], R, b, initial_state=state)
    assert (torch.cat([y1, y2], 1) - want).abs().max() < 1e-10
    y32 = slstm(wx.float() * 3, R.float(), b.float())  # pre-activations up to ~+-100
    assert torch.isfinite(y32).all()


def _perturb(block, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return block


def _forward_vs_step(block, dtype, step_through, L=19):
    block = block.to(dtype)
    x = torch.randn(2, L, block.d_model, dtype=dtype)
    with torch.no_grad():
        y = block(x)
        ys, _ = step_through(block, x)
    return ((y - ys).abs().max() / y.abs().max()).item()


@pytest.mark.parametrize("make", [lambda: mLSTMBlock(16, chunk_size=5), lambda: mLSTMBlock(16, mode="parallel"),
                                  lambda: sLSTMBlock(16, num_heads=2)])
def test_xlstm_blocks_step_equals_forward(make, step_through):
    block = _perturb(make())
    assert _forward_vs_step(block, torch.float64, step_through) < 1e-10
    assert _forward_vs_step(block, torch.float32, step_through) < 1e-4
    x, block = torch.randn(2, 7, 16, dtype=torch.float64), block.double()
    with torch.no_grad():  # the block is the mixer in xLSTM's residual form
        mixed = x + block.xlstm(block.xlstm_norm(x))
        want = mixed if block.ffn is None else mixed + block.ffn(block.ffn_norm(mixed))
        assert torch.allclose(block(x), want, atol=1e-12, rtol=0)


def test_xlstm_block_shapes_and_parameter_names():
    m = mLSTMBlock(32, num_heads=4)
    keys = set(m.state_dict())
    for key in ["xlstm_norm.weight", "xlstm.proj_up.weight", "xlstm.q_proj.weight", "xlstm.conv1d.conv.weight",
                "xlstm.mlstm_cell.igate.weight", "xlstm.mlstm_cell.fgate.bias", "xlstm.mlstm_cell.outnorm.weight",
                "xlstm.learnable_skip", "xlstm.proj_down.weight"]:
        assert key in keys
    assert m.xlstm.proj_up.weight.shape == (128, 32) and m.xlstm.q_proj.weight.shape == (16, 4, 4)
    s = sLSTMBlock(32, num_heads=4)
    assert s.xlstm.slstm_cell.recurrent_kernel.shape == (4, 8, 4, 8) and s.ffn.proj_up.weight.shape == (128, 32)
    x = torch.randn(2, 9, 32)
    assert m(x).shape == x.shape and s(x).shape == x.shape


def test_xlstm_bad_input():
    q, k, v, i, f = _inputs(8, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"k must have shape \(B, NH, S, DH\)"):
        mlstm_parallel(q, k[..., :3], v, i, f)
    with pytest.raises(ValueError, match=r"f must have shape \(B, NH, S\)"):
        mlstm_chunkwise(q, k, v, i, f[..., None])
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        mlstm_chunkwise(q, k, v, i, f, chunk_size=0)
    with pytest.raises(TypeError, match=r"state must be a tuple \(C, n, m\)"):
        mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[..., 0], f[..., 0], state=torch.zeros(1))
    with pytest.raises(ValueError, match="mode must be"):
        mLSTM(16, mode="fast")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        sLSTM(10, num_heads=4)
    with pytest.raises(ValueError, match=r"x must have shape \(\?, \?, 16\)"):
        mLSTM(16)(torch.randn(1, 4, 15))
