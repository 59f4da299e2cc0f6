"""Empty inputs (issue 17, item 6): L = 0 and batch 0 give empty outputs (and the initial state, where an op carries
one) from every op and layer on every backend, instead of an internal FFT / conv / stack error.

Seen: causal_conv1d, fft_conv, mlstm_chunkwise and the torch selective scan crashed at L = 0 while the cpp scan
returned an empty result (backends disagreed); most layers crashed.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from ssmkit import kernels
from ssmkit.core import layers as Lr
from ssmkit.core import ops

F64 = torch.float64


def backends(op):
    """'torch' plus the accelerated CPU backends present here for `op`."""
    names = ["torch"]
    try:
        kernels.load("cpp", op, torch.device("cpu"))
        names.append("cpp")
    except kernels.BackendUnavailable:
        pass
    return names


def r(*shape):
    return torch.randn(*shape, dtype=F64)


@pytest.mark.parametrize("batch,L", [(2, 0), (0, 5), (0, 0)])
def test_selective_scan_empty_on_every_backend(batch, L):
    dim, N = 3, 4
    h0 = r(batch, dim, N)
    args = (r(batch, dim, L), r(batch, dim, L), -torch.rand(dim, N, dtype=F64), r(batch, N, L), r(batch, N, L))
    kw = dict(D=r(dim), z=r(batch, dim, L), delta_bias=r(dim), delta_softplus=True, initial_state=h0,
              return_last_state=True)
    y_ref, h_ref = ops.selective_scan_ref(*args, **kw)
    assert y_ref.shape == (batch, dim, L)
    for backend in backends("selective_scan"):
        y, h = ops.selective_scan(*args, **kw, backend=backend)
        assert y.shape == (batch, dim, L) and h.shape == (batch, dim, N), backend
        torch.testing.assert_close(h, h_ref)  # L = 0: the initial state comes back
    states = ops.selective_scan_states(args[0], args[1], args[2], args[3], initial_state=h0)
    assert states.shape == (batch, dim, L, N)
    assert ops.selective_scan_states_ref(args[0], args[1], args[2], args[3], initial_state=h0).shape == states.shape


@pytest.mark.parametrize("batch,L", [(2, 0), (0, 5), (0, 0)])
def test_ssd_empty(batch, L):
    H, P, G, N = 4, 3, 2, 5
    args = (r(batch, L, H, P), r(batch, L, H), -torch.rand(H, dtype=F64), r(batch, L, G, N), r(batch, L, G, N))
    h0 = r(batch, H, P, N)
    kw = dict(D=r(H), dt_softplus=True, initial_states=h0, return_final_states=True)
    for y, h in (ops.ssd(*args, chunk_size=4, **kw, backend="torch"), ops.ssd_ref(*args, **kw)):
        assert y.shape == (batch, L, H, P) and h.shape == (batch, H, P, N)
        if L == 0:
            torch.testing.assert_close(h, h0)
    seq_idx = torch.zeros(batch, L, dtype=torch.long)
    assert ops.ssd(*args, seq_idx=seq_idx, dt_softplus=True).shape == (batch, L, H, P)
    assert ops.ssd_noncausal(*args, dt_softplus=True).shape == (batch, L, H, P)
    assert ops.ssd_noncausal_ref(*args, dt_softplus=True).shape == (batch, L, H, P)


@pytest.mark.parametrize("batch,L", [(2, 0), (0, 5), (0, 0)])
def test_causal_conv1d_empty_on_every_backend(batch, L):
    x, w, b = r(batch, 3, L), r(3, 4), r(3)
    state = r(batch, 3, 3)
    for backend in backends("causal_conv1d"):
        y, s = ops.causal_conv1d(x, w, b, "silu", initial_state=state, return_final_state=True, backend=backend)
        assert y.shape == (batch, 3, L) and s.shape == (batch, 3, 3)
        if L == 0:
            torch.testing.assert_close(s, state)
    y_ref, s_ref = ops.causal_conv1d_ref(x, w, b, "silu", initial_state=state, return_final_state=True)
    assert y_ref.shape == (batch, 3, L) and s_ref.shape == (batch, 3, 3)


@pytest.mark.parametrize("batch,L", [(2, 0), (0, 5), (0, 0)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_empty(batch, L, bidirectional):
    u = r(batch, 3, L)
    k = r(*((2,) if bidirectional else ()), 3, L)
    assert ops.fft_conv(u, k, bidirectional).shape == (batch, 3, L)
    assert ops.fft_conv_ref(u, k, bidirectional).shape == (batch, 3, L)


@pytest.mark.parametrize("batch,S", [(2, 0), (0, 5), (0, 0)])
def test_xlstm_ops_empty(batch, S):
    q, k, v = r(batch, 2, S, 3), r(batch, 2, S, 3), r(batch, 2, S, 4)
    i, f = r(batch, 2, S), r(batch, 2, S)
    state = (r(batch, 2, 3, 4), r(batch, 2, 3), r(batch, 2))
    for h, s in (ops.mlstm_chunkwise(q, k, v, i, f, chunk_size=4, initial_state=state, return_final_state=True),
                 ops.mlstm_parallel(q, k, v, i, f, initial_state=state, return_final_state=True),
                 ops.mlstm_ref(q, k, v, i, f, initial_state=state, return_final_state=True)):
        assert h.shape == (batch, 2, S, 4)
        assert [t.shape for t in s] == [t.shape for t in state]
    y, s = ops.slstm(r(batch, S, 4, 2, 3), r(2, 3, 4, 3), r(2, 4, 3), return_final_state=True)
    assert y.shape == (batch, S, 2, 3) and all(t.shape == (batch, 2, 3) for t in s)


def test_ssm_kernels_of_length_zero():
    H, N = 3, 4
    dt = torch.rand(H, dtype=F64)
    A = torch.complex(-torch.rand(H, N, dtype=F64), torch.randn(H, N, dtype=F64))
    B, C = torch.ones_like(A), torch.complex(r(H, N), r(H, N))
    assert ops.s4d_kernel(dt, A, B, C, 0).shape == (H, 0)
    assert ops.s4d_kernel_ref(dt, A, B, C, 0).shape == (H, 0)
    P = torch.complex(r(1, H, N), r(1, H, N))
    assert ops.dplr_kernel(dt, A, P, B, C, 0).shape == (H, 0)
    assert ops.dplr_kernel_ref(dt, A, P, B, C, 0).shape == (H, 0)
    a, b, c = r(H, N), r(H, N), r(H, N)
    for fn in (ops.companion_kernel, ops.companion_kernel_ref, ops.companion_kernel_squaring):
        assert fn(a, b, c, 0).shape == (H, 0)
    with pytest.raises(ValueError, match="L must be a non-negative int"):
        ops.s4d_kernel(dt, A, B, C, -1)


def test_convssm_scan_empty():
    Lam = torch.rand(4, dtype=F64)
    Bu = r(2, 0, 3, 3, 4)
    assert ops.convssm_scan(Lam, Bu).shape == Bu.shape
    assert ops.convssm_scan_ref(Lam, Bu).shape == Bu.shape


LAYERS = {
    "Mamba": lambda: (Lr.Mamba(8, d_state=4), 8),
    "Mamba2": lambda: (Lr.Mamba2(16, d_state=8, headdim=8), 16),
    "S4": lambda: (Lr.S4(8, d_state=8), 8),
    "S4D": lambda: (Lr.S4D(8, d_state=8), 8),
    "Hyena": lambda: (Lr.Hyena(8, l_max=16, filter_order=8), 8),
    "mLSTM": lambda: (Lr.mLSTM(16, num_heads=2), 16),
    "sLSTM": lambda: (Lr.sLSTM(16, num_heads=2), 16),
    "BiMamba": lambda: (Lr.BiMamba(8, d_state=4), 8),
    "Hydra": lambda: (Lr.Hydra(16, d_state=8, headdim=8), 16),
    "CompanionSSM": lambda: (Lr.CompanionSSM(8, kernel_dim=4), 8),
    "ClosedLoopCompanionSSM": lambda: (Lr.ClosedLoopCompanionSSM(8, kernel_dim=4), 8),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("batch,L", [(2, 0), (0, 5), (0, 0)])
def test_sequence_layers_give_empty_outputs(name, batch, L):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Initializing zero-element tensors is a no-op" is not ours
        layer, d = LAYERS[name]()
    y = layer(torch.randn(batch, L, d))
    y = y[0] if isinstance(y, tuple) else y
    assert y.shape == (batch, L, d)


IMAGE_LAYERS = {
    "SS2D": lambda: Lr.SS2D(8, d_state=4),
    "StructureAwareSSM": lambda: Lr.StructureAwareSSM(8, d_state=4),
    "MultiHeadScan": lambda: Lr.MultiHeadScan(8, num_heads=2, d_state=4),
    "Chimera2DSSM": lambda: Lr.Chimera2DSSM(8, d_state=4),
}


@pytest.mark.parametrize("name", sorted(IMAGE_LAYERS))
@pytest.mark.parametrize("shape", [(2, 0, 3, 8), (2, 3, 0, 8), (0, 3, 3, 8)])
def test_grid_layers_give_empty_outputs(name, shape):
    torch.manual_seed(0)
    assert IMAGE_LAYERS[name]()(torch.randn(*shape)).shape == shape


@pytest.mark.parametrize("shape", [(2, 0, 3, 3, 8), (2, 2, 0, 3, 8), (0, 2, 3, 3, 8)])
def test_convs5_empty_video(shape):
    torch.manual_seed(0)
    layer = Lr.ConvS5(8, d_state=4)
    y, state = layer(torch.randn(*shape), return_state=True)
    assert y.shape == shape and state.x.shape == (shape[0], shape[2], shape[3], 4)
