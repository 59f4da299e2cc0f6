"""The fused bidirectional scan (core op `bimamba_scan`, cpp backend) equals two reference scans, and Vim's
inference path through it equals its training path."""
import pytest
import timm
import torch

import ssmkit.vision  # noqa: F401
from ssmkit.core.ops.bimamba_scan import bimamba_scan, bimamba_scan_ref


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


def test_vim_inference_path_equals_the_training_path():
    torch.manual_seed(0)
    model = timm.create_model("test_vim", img_size=32, patch_size=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
    train_path = model(x)  # grad enabled: core's BiMamba with its two scans
    torch.testing.assert_close(fused, train_path.detach(), rtol=1e-5, atol=1e-5)
