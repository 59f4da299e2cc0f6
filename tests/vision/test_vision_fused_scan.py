"""The fused bidirectional scan (core op `bimamba_scan`, cpp backend) equals two reference scans, and Vim's
inference path through it equals its training path."""
import pytest
import timm
import torch

import ssmkit.vision  # noqa: F401
from ssmkit.core.ops.bimamba_scan import bimamba_conv, bimamba_conv_ref, bimamba_scan, bimamba_scan_ref


def _inputs(dtype, b=2, d=6, L=37, N=4, R=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)
    A_f, A_b = -torch.rand(d, N, generator=g, dtype=dtype) * 3, -torch.rand(d, N, generator=g, dtype=dtype) * 3
    z = r(b, L, 2 * d)[..., d:]  # a strided view, as the mixer passes it
    return (r(b, d, L), r(b, d, L), r(b, L, d), r(b, L, d), r(b, L, R + 2 * N), r(b, L, R + 2 * N), A_f, A_b, r(d),
            r(d), r(d), r(d), z, R)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_scan_equals_the_reference(backend, dtype):
    args = _inputs(dtype)
    ref = bimamba_scan_ref(*[a.double() if torch.is_tensor(a) else a for a in args])
    got = bimamba_scan(*args, backend=backend)
    assert got.shape == (2, 37, 6) and got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)
    nan_args = list(args)
    for i in (0, 1):  # a NaN input at step 5 of row (1, 2) in both directions reaches every step of that row only
        nan_args[i] = args[i].clone()
        nan_args[i][1, 2, 5] = float("nan")
    out = bimamba_scan(*nan_args, backend=backend)
    assert out[1, :, 2].isnan().all() and out.isnan().sum() == 37


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_scan_blocks_tail_and_non_finite(backend, dtype):
    # 37 channels: the cpp kernel's full channel blocks and a partial last one; N = 16 as in Vim; u, v given as
    # (b, d, L) views of channel-contiguous memory, as the mixer passes them
    args = list(_inputs(dtype, b=1, d=37, L=23, N=16, R=5, seed=1))
    args[0], args[1] = args[0].transpose(1, 2).contiguous().transpose(1, 2), args[1].transpose(1, 2).contiguous()
    args[1] = args[1].transpose(1, 2)
    args[2] = args[2].clone()
    args[2][0, 4, 36] = float("inf")    # dt = inf in the last (tail) channel at step 4: forward state non-finite
    args[2][0, 9, 3] = -float("inf")    # dt = softplus(-inf) = 0: finite
    args[4] = args[4].clone()
    args[4][0, 11, 5 + 16 + 2] = float("nan")  # a NaN C of the forward direction at step 11: every channel there
    ref = bimamba_scan_ref(*[a.double() if torch.is_tensor(a) else a for a in args])
    got = bimamba_scan(*args, backend=backend)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert ref[0, 11].isnan().all() and not ref[0, 12:, :36].isnan().any()
    assert ref[0, :4, 36].isfinite().all() and not ref[0, 4:, 36].isfinite().any()
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_conv_equals_the_reference(backend, dtype):
    g = torch.Generator().manual_seed(2)
    xz = torch.randn(2, 9, 2 * 21, generator=g, dtype=dtype)
    x = xz[..., :21].transpose(1, 2)  # (b, d, L) view of in_proj's output, as the mixer passes it
    w_f, w_b = torch.randn(21, 4, generator=g, dtype=dtype), torch.randn(21, 4, generator=g, dtype=dtype)
    b_f, b_b = torch.randn(21, generator=g, dtype=dtype), torch.randn(21, generator=g, dtype=dtype)
    x = x.clone()
    x[1, 3, 4] = float("nan")  # reaches steps 4..7 forward and 1..4 backward of channel 3 only
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for bias in ((b_f, b_b), (None, None)):
        ref = bimamba_conv_ref(x.double(), w_f.double(), *[None if b is None else b.double() for b in bias[:1]],
                               w_b.double(), None if bias[1] is None else bias[1].double())
        got = bimamba_conv(x, w_f, bias[0], w_b, bias[1], backend=backend)
        for r, o in zip(ref, got):
            assert o.shape == x.shape and o.dtype == dtype
            torch.testing.assert_close(o.double(), r, rtol=tol, atol=tol, equal_nan=True)
        assert got[0].isnan().sum() == 4 and got[0][1, 3, 4:8].isnan().all()
        assert got[1].isnan().sum() == 4 and got[1][1, 3, 1:5].isnan().all()


def test_vim_inference_path_equals_the_training_path():
    torch.manual_seed(0)
    model = timm.create_model("test_vim", img_size=32, patch_size=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
    train_path = model(x)  # grad enabled: core's BiMamba with its two scans
    torch.testing.assert_close(fused, train_path.detach(), rtol=1e-5, atol=1e-5)
