"""Non-finite input through the accelerated selective-scan backends (issue 17, item 3): the C++ scan and the Triton
scan (under Triton's CPU interpreter) put NaN / inf exactly where the fp64 oracle has them.

Seen: the C++ scan with delta_softplus=True turned a NaN in delta into finite numbers (its clamp `x < 20 ? x : 20`
maps NaN to 20); the Triton softplus clamped with tl.minimum, which may do the same.
"""
from __future__ import annotations

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops import selective_scan_ref

F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def inputs(where, value, dtype, L=21):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64).to(dtype)  # noqa: E731
    inp = dict(u=r(2, 3, L), delta=r(2, 3, L), A=-torch.rand(3, 5, generator=g, dtype=F64).to(dtype),
               B=r(2, 5, L), C=r(2, 5, L), D=r(3), z=r(2, 3, L), delta_bias=r(3))
    inp[where][(0,) * (inp[where].dim() - 1) + (9,)] = value
    return inp


def assert_like_oracle(fn, inp):
    y, h = fn(**inp, delta_softplus=True, return_last_state=True)
    y_ref, h_ref = selective_scan_ref(**{k: v.to(F64) for k, v in inp.items()}, delta_softplus=True,
                                      return_last_state=True)
    for out, ref in ((y, y_ref), (h, h_ref)):
        bad, bad_ref = ~torch.isfinite(out), ~torch.isfinite(ref)
        assert torch.equal(bad, bad_ref), f"non-finite at {bad.nonzero()[:6].tolist()}, oracle {bad_ref.nonzero()[:6]}"
        torch.testing.assert_close(out[~bad].to(F64), ref[~bad_ref], rtol=1e-4, atol=1e-5)


CASES = [("delta", NAN), ("delta", INF), ("u", NAN), ("u", INF), ("B", INF), ("z", NAN)]


@pytest.mark.parametrize("where,value", CASES)
def test_cpp_scan_nonfinite_like_oracle(where, value):
    try:
        fn = kernels.load("cpp", "selective_scan", torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")
    assert_like_oracle(fn, inputs(where, value, torch.float32))


@pytest.mark.parametrize("where,value", CASES)
def test_triton_scan_nonfinite_like_oracle(triton_scan, where, value):
    assert_like_oracle(triton_scan, inputs(where, value, torch.float32))


@pytest.mark.parametrize("where,value", [("x", NAN), ("dt", INF), ("B", NAN), ("initial_states", NAN)])
def test_triton_ssd_nonfinite_stays_causal_and_in_its_sequence(triton_ssd, where, value):
    """Seen (torch chunked form, and the kernels share its chunk matrices): a NaN at t = 13 with chunk_size=8 gave NaN
    at t = 8..19, and a NaN in one packed sequence reached the one before it."""
    from ssmkit.core.ops import ssd, ssd_ref

    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    inp = dict(x=r(1, 24, 2, 2), dt=r(1, 24, 2), A=-torch.rand(2, generator=g), B=r(1, 24, 1, 4), C=r(1, 24, 1, 4),
               D=r(2), dt_bias=r(2), initial_states=r(1, 2, 2, 4))
    t = inp[where]
    t[(0, 1, 1, 1) if where == "initial_states" else (0, 13) + (0,) * (t.dim() - 2)] = value
    kw = dict(dt_softplus=True, seq_idx=torch.tensor([[0] * 10 + [1] * 14]), return_final_states=True)
    y_ref, h_ref = ssd_ref(**{k: v.double() for k, v in inp.items()}, **kw)
    y, h = ssd(**inp, chunk_size=8, backend="triton", **kw)
    for out, ref in ((y, y_ref), (h, h_ref)):
        bad, bad_ref = ~torch.isfinite(out), ~torch.isfinite(ref)
        assert torch.equal(bad, bad_ref), f"non-finite at {bad.nonzero()[:6].tolist()}, oracle {bad_ref.nonzero()[:6]}"
        torch.testing.assert_close(out[~bad].double(), ref[~bad_ref], rtol=1e-4, atol=1e-4)
