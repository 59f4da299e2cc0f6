"""Non-finite inputs in the Triton kernels (under Triton's CPU interpreter): NaN and inf land exactly where the
sequential oracle has them, causally and, for SSD, only inside their own packed sequence (issue 17: backends agree
on non-finite input)."""
from __future__ import annotations

import pytest
import torch

from ssmkit.core.ops import selective_scan, selective_scan_ref, ssd, ssd_ref

F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def same_nonfinite(y, ref):
    """Non-finite exactly where the oracle is (NaN or inf: a chunked form may turn inf - inf into NaN, as the torch
    path does), the finite entries equal to it."""
    bad, bad_ref = ~torch.isfinite(y), ~torch.isfinite(ref)
    assert torch.equal(bad, bad_ref), f"non-finite at {bad.nonzero()[:8].tolist()}, oracle {bad_ref.nonzero()[:8]}"
    torch.testing.assert_close(y[~bad], ref[~bad_ref].to(y.dtype), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("where,value", [("delta", NAN), ("delta", INF), ("u", NAN), ("B", NAN), ("C", INF),
                                         ("z", NAN), ("delta_bias", NAN)])
def test_triton_selective_scan_matches_the_oracle_on_nonfinite_input(triton_scan, where, value):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    inp = dict(u=r(2, 3, 21), delta=r(2, 3, 21) - 1.0, A=-torch.rand(3, 4, generator=g, dtype=F64) * 4,
               B=r(2, 4, 21), C=r(2, 4, 21), D=r(3), z=r(2, 3, 21), delta_bias=r(3))
    t = inp[where]
    t[(0,) * (t.dim() - 1) + (13 if t.dim() > 1 else 1,)] = value
    ref, h_ref = selective_scan_ref(**inp, delta_softplus=True, return_last_state=True)
    assert (~torch.isfinite(ref)).any()
    y, h = selective_scan(**inp, delta_softplus=True, backend="triton", return_last_state=True)
    same_nonfinite(y, ref)
    same_nonfinite(h, h_ref)


@pytest.mark.parametrize("where,value", [("x", NAN), ("dt", INF), ("B", INF), ("C", NAN)])
def test_triton_ssd_nonfinite_stays_causal_and_inside_its_packed_sequence(triton_ssd, where, value):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    inp = dict(x=r(2, 37, 2, 3), dt=r(2, 37, 2) - 1.0, A=-torch.rand(2, generator=g, dtype=F64), B=r(2, 37, 1, 4),
               C=r(2, 37, 1, 4), D=r(2), dt_bias=r(2))
    t = inp[where]
    t[(0, 18) + (0,) * (t.dim() - 2)] = value  # inside the second packed sequence of row 0
    seq_idx = torch.tensor([[0] * 15 + [1] * 10 + [2] * 12, [0] * 20 + [1] * 17], dtype=torch.int32)
    kw = dict(dt_softplus=True, seq_idx=seq_idx, return_final_states=True)
    y_ref, h_ref = ssd_ref(**inp, **kw)
    assert torch.isfinite(y_ref[0, :18]).all() and torch.isfinite(y_ref[0, 25:]).all()
    assert (~torch.isfinite(y_ref[0, 18:25])).any()
    y, h = ssd(**inp, chunk_size=16, backend="triton", **kw)
    same_nonfinite(y, y_ref)
    same_nonfinite(h, h_ref)
