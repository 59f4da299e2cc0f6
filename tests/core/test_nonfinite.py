"""Non-finite values (issue 17, items 3 and 4): every backend propagates NaN/inf exactly where the sequential
definition (`_ref`, a loop over time) does; nothing travels backwards in time or into another packed sequence.

The oracle is the `_ref` loop in fp64: we compare which outputs are non-finite, and the finite ones by value.
"""
from __future__ import annotations

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.layers import S4D, Hyena, Mamba, Mamba2, mLSTM
from ssmkit.core.ops import (fft_conv, fft_conv_ref, mlstm_chunkwise, mlstm_parallel, mlstm_ref, selective_scan,
                             selective_scan_ref, ssd, ssd_ref)

F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def assert_same_nonfinite(y, ref, name="y"):
    """Same non-finite positions as the oracle; the finite ones equal to it."""
    bad, bad_ref = ~torch.isfinite(y), ~torch.isfinite(ref)
    assert torch.equal(bad, bad_ref), (f"{name}: non-finite at {bad.nonzero()[:8].tolist()}, "
                                       f"oracle at {bad_ref.nonzero()[:8].tolist()}")
    torch.testing.assert_close(y[~bad].to(F64), ref[~bad_ref].to(F64), rtol=1e-4, atol=1e-5)


def cpp_or_skip():
    try:
        kernels.load("cpp", "selective_scan", torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")


def scan_inputs(dtype, batch=2, dim=3, L=70, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(batch, dim, L), delta=r(batch, dim, L), A=-torch.rand(dim, N, generator=g, dtype=dtype),
                B=r(batch, N, L), C=r(batch, N, L), D=r(dim), z=r(batch, dim, L), delta_bias=r(dim))


# ------------------------------------------------------------------------------------------- selective scan

@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("where,value", [("delta", NAN), ("delta", INF), ("delta", -INF), ("u", NAN), ("u", INF),
                                         ("B", NAN), ("C", INF), ("z", NAN), ("delta_bias", NAN)])
def test_selective_scan_backends_agree_on_nonfinite_input(dtype, where, value):
    """Seen: backend='cpp' with a NaN in delta and delta_softplus=True returned finite numbers (softplus(NaN) = 20)."""
    cpp_or_skip()
    inp = scan_inputs(dtype)
    t = inp[where]
    t[(0,) * (t.dim() - 1) + (13 if t.dim() > 1 else 1,)] = value
    ref = selective_scan_ref(**{k: v.to(F64) for k, v in inp.items()}, delta_softplus=True)
    assert (~torch.isfinite(ref)).any() != (where == "delta" and value == -INF)  # softplus(-inf) = 0: finite
    for backend in ("torch", "cpp"):
        y, h = selective_scan(**inp, delta_softplus=True, backend=backend, return_last_state=True)
        assert_same_nonfinite(y, ref, f"{backend} y")
        _, h_ref = selective_scan_ref(**{k: v.to(F64) for k, v in inp.items()}, delta_softplus=True,
                                      return_last_state=True)
        assert torch.equal(torch.isfinite(h), torch.isfinite(h_ref)), backend


def test_cpp_softplus_of_nan_is_nan_in_forward_and_backward():
    cpp_or_skip()
    inp = scan_inputs(torch.float32, L=5)
    inp["delta"][0, 0, 2] = NAN
    grads = {}
    for backend in ("torch", "cpp"):
        leaf = {k: v.clone().requires_grad_() for k, v in inp.items()}
        y = selective_scan(**leaf, delta_softplus=True, backend=backend)
        assert torch.isnan(y[0, 0, 2:]).all() and torch.isfinite(y[0, 0, :2]).all() and torch.isfinite(y[1]).all()
        y.nan_to_num(0.0).sum().backward()
        grads[backend] = leaf["delta"].grad
    assert torch.isnan(grads["cpp"][0, 0, 2]) and torch.isnan(grads["torch"][0, 0, 2])
    assert torch.equal(torch.isfinite(grads["cpp"]), torch.isfinite(grads["torch"]))


def test_mamba_with_nan_weight_gives_nan_on_every_backend():
    """Seen: a NaN in Mamba.dt_proj.weight gave a finite output from the default backend."""
    torch.manual_seed(0)
    m = Mamba(8, d_state=4)
    with torch.no_grad():
        m.dt_proj.weight[3, 0] = NAN
    x = torch.randn(2, 9, 8)
    outputs = {}
    for backend in ("auto", "torch"):
        m.backend = backend
        outputs[backend] = m(x)
    assert torch.isnan(outputs["torch"]).all()
    assert torch.isnan(outputs["auto"]).all()


# ----------------------------------------------------------------------------------------------------- SSD

def ssd_inputs(batch=2, L=37, H=4, P=3, G=2, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(x=r(batch, L, H, P), dt=r(batch, L, H), A=-torch.rand(H, generator=g, dtype=F64), B=r(batch, L, G, N),
                C=r(batch, L, G, N), D=r(H), dt_bias=r(H))


def test_ssd_nan_does_not_travel_back_within_a_chunk():
    """Seen: ssd(chunk_size=8) with a NaN at t = 13 gave NaN at t = 8..19."""
    inp = ssd_inputs(batch=1, L=32, G=1, H=2)
    inp["x"][0, 13, 0, 0] = NAN
    y = ssd(**inp, chunk_size=8, dt_softplus=True, backend="torch")
    assert torch.isfinite(y[0, :13]).all()
    assert torch.isnan(y[0, 13:, 0, 0]).all()
    assert torch.isfinite(y[0, :, 1]).all() and torch.isfinite(y[0, :, 0, 1:]).all()  # other head / channels


@pytest.mark.parametrize("where", ["x", "dt", "B", "C", "initial_states"])
@pytest.mark.parametrize("value", [NAN, INF])
@pytest.mark.parametrize("chunk_size", [1, 4, 8, 64])
def test_ssd_nonfinite_stays_causal_and_inside_its_packed_sequence(where, value, chunk_size):
    """Seen: with seq_idx packing two sequences, a NaN in the second made the first one's outputs NaN."""
    inp = ssd_inputs()
    seq_idx = torch.tensor([[0] * 15 + [1] * 10 + [2] * 12, [0] * 20 + [1] * 17])
    h0 = torch.randn(2, 4, 3, 5, dtype=F64)
    if where == "initial_states":
        h0[1, 2, 0, 1] = value
    else:
        t = inp[where]
        t[(0, 18) + (1,) * (t.dim() - 2)] = value  # inside the second packed sequence of row 0
    kw = dict(dt_softplus=True, seq_idx=seq_idx, initial_states=h0, return_final_states=True)
    y_ref, h_ref = ssd_ref(**inp, **kw)
    y, h = ssd(**inp, chunk_size=chunk_size, backend="torch", **kw)
    assert_same_nonfinite(y, y_ref)
    assert_same_nonfinite(h, h_ref, "final state")
    if where != "initial_states":
        assert torch.isfinite(y_ref[0, :15]).all() and torch.isfinite(y_ref[0, 25:]).all()  # the oracle isolates
        assert torch.isfinite(y_ref[0, :18]).all() and (~torch.isfinite(y_ref[0, 18:25])).any()


def test_ssd_ref_reset_does_not_multiply_a_nan_state_by_zero():
    inp = ssd_inputs(batch=1, L=6, G=1, H=1)
    inp["x"][0, 1] = NAN
    y = ssd_ref(**inp, dt_softplus=True, seq_idx=torch.tensor([[0, 0, 0, 1, 1, 1]]))
    assert torch.isnan(y[0, 1:3]).all() and torch.isfinite(y[0, 3:]).all() and torch.isfinite(y[0, 0]).all()


def test_mamba2_nan_in_input_is_causal():
    torch.manual_seed(0)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=8)
    x = torch.randn(2, 24, 16)
    x[0, 13, 2] = NAN
    y = m(x)
    assert torch.isfinite(y[0, :13]).all() and torch.isnan(y[0, 13:]).any() and torch.isfinite(y[1]).all()


# ---------------------------------------------------------------------------------------------------- mLSTM

@pytest.mark.parametrize("where", ["q", "k", "v", "i", "f"])
@pytest.mark.parametrize("value", [NAN, INF])
def test_mlstm_parallel_forms_keep_nonfinite_causal(where, value):
    g = torch.Generator().manual_seed(1)
    shapes = dict(q=(2, 2, 20, 3), k=(2, 2, 20, 3), v=(2, 2, 20, 4), i=(2, 2, 20), f=(2, 2, 20))
    inp = {n: torch.randn(*s, generator=g, dtype=F64) for n, s in shapes.items()}
    inp[where][(0, 1, 11) + (1,) * (inp[where].dim() - 3)] = value
    state = (torch.randn(2, 2, 3, 4, dtype=F64), torch.randn(2, 2, 3, dtype=F64), torch.randn(2, 2, dtype=F64))
    h_ref, s_ref = mlstm_ref(**inp, initial_state=state, return_final_state=True)
    assert torch.isfinite(h_ref[0, 1, :11]).all()
    for h, s in (mlstm_chunkwise(**inp, chunk_size=4, initial_state=state, return_final_state=True),
                 mlstm_chunkwise(**inp, chunk_size=7, initial_state=state, return_final_state=True),
                 mlstm_parallel(**inp, initial_state=state, return_final_state=True)):
        assert_same_nonfinite(h, h_ref)
        for name, a, b in zip("Cnm", s, s_ref):
            assert_same_nonfinite(a, b, name)


@pytest.mark.parametrize("where", ["i", "f"])
def test_mlstm_parallel_forms_match_the_recurrence_for_gates_of_minus_inf(where):
    """f = -inf forgets everything, i = -inf writes nothing: both finite in the recurrence and in every form."""
    g = torch.Generator().manual_seed(2)
    shapes = dict(q=(2, 2, 19, 3), k=(2, 2, 19, 3), v=(2, 2, 19, 4), i=(2, 2, 19), f=(2, 2, 19))
    inp = {n: torch.randn(*s, generator=g, dtype=F64) for n, s in shapes.items()}
    inp[where][0, 0, 5] = inp[where][1, 1, 12] = -INF
    state = (torch.randn(2, 2, 3, 4, dtype=F64), torch.randn(2, 2, 3, dtype=F64), torch.randn(2, 2, dtype=F64))
    h_ref, s_ref = mlstm_ref(**inp, initial_state=state, return_final_state=True)
    assert torch.isfinite(h_ref).all()
    for h, s in (mlstm_chunkwise(**inp, chunk_size=4, initial_state=state, return_final_state=True),
                 mlstm_parallel(**inp, initial_state=state, return_final_state=True)):
        torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
        for a, b in zip(s, s_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_mlstm_layer_nan_in_input_is_causal():
    torch.manual_seed(0)
    m = mLSTM(16, num_heads=2, chunk_size=4)
    x = torch.randn(2, 12, 16)
    x[0, 7, 0] = NAN
    y = m(x)
    assert torch.isfinite(y[0, :7]).all() and torch.isnan(y[0, 7:]).any() and torch.isfinite(y[1]).all()


# ------------------------------------------------------------------------------------------------- FFT conv

@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("Lk", [1, 6, 40])
@pytest.mark.parametrize("where,value", [("u", NAN), ("u", INF), ("u", -INF), ("k", NAN), ("k", INF)])
def test_fft_conv_nonfinite_lands_where_the_direct_convolution_has_it(bidirectional, Lk, where, value):
    """Seen: one NaN in u made the whole FFT output NaN (it spreads through the transform)."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 40, generator=g, dtype=F64)
    k = torch.randn(*((2,) if bidirectional else ()), 3, Lk, generator=g, dtype=F64)
    if where == "u":
        u[0, 1, 17] = value
    else:
        k[(0,) * bidirectional + (1, Lk // 2)] = value
    y_ref = fft_conv_ref(u, k, bidirectional)
    assert_same_nonfinite(fft_conv(u, k, bidirectional), y_ref)
    assert_same_nonfinite(fft_conv(u.float(), k.float(), bidirectional), y_ref)
    if where == "u" and not bidirectional:
        assert torch.isfinite(y_ref[0, 1, :17]).all() and torch.isfinite(y_ref[0, 1, 17 + Lk:]).all()


@pytest.mark.parametrize("layer", ["S4D", "Hyena"])
def test_fft_layers_nan_in_input_is_causal(layer):
    """Seen: S4D and Hyena turned one NaN into an all-NaN output."""
    torch.manual_seed(0)
    m = S4D(8, d_state=8) if layer == "S4D" else Hyena(8, l_max=32, filter_order=16)
    x = torch.randn(2, 32, 8)
    x[0, 20, 3] = NAN
    y = m(x)
    assert torch.isfinite(y[0, :20]).all() and torch.isnan(y[0, 20:]).any() and torch.isfinite(y[1]).all()
