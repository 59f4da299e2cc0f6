"""StructureAwareSSM (Spatial-Mamba) and the all-states selective scan it is built on."""
import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import StructureAwareSSM
from ssmkit.core.ops import selective_scan, selective_scan_states, selective_scan_states_ref


@pytest.mark.parametrize("layout", ["fixed", "input", "grouped"])
def test_scan_states_matches_loop_and_scan_output(layout):
    torch.manual_seed(0)
    b, d, L, N = 2, 4, 11, 3
    u, delta = torch.randn(b, d, L, dtype=torch.float64), torch.randn(b, d, L, dtype=torch.float64)
    A, bias = -torch.rand(d, N, dtype=torch.float64), torch.rand(d, dtype=torch.float64)
    B = {"fixed": torch.randn(d, N), "input": torch.randn(b, N, L), "grouped": torch.randn(b, 2, N, L)}[layout]
    B, h0 = B.double(), torch.randn(b, d, N, dtype=torch.float64)
    h = selective_scan_states(u, delta, A, B, bias, True, h0)
    torch.testing.assert_close(h, selective_scan_states_ref(u, delta, A, B, bias, True, h0), rtol=1e-12, atol=1e-12)
    # the states are what the selective scan contracts with C: y_t = C_t . h_t
    C = torch.randn(b, N, L, dtype=torch.float64)
    y = selective_scan(u, delta, A, B, C, delta_bias=bias, delta_softplus=True, initial_state=h0)
    torch.testing.assert_close((h * C.transpose(1, 2).unsqueeze(1)).sum(-1), y, rtol=1e-12, atol=1e-12)


def _explicit_fusion(fusion, h):
    """Oracle: sum over kernels, taps and clamped (replicate-border) neighbours, written out."""
    _, d, H, W = h.shape
    out = torch.zeros_like(h)
    for a, k, dil in zip(fusion.alpha, (fusion.kernel_3, fusion.kernel_3_1, fusion.kernel_3_2), fusion.dilations):
        for i in range(3):
            for j in range(3):
                rows = (torch.arange(H) + (i - 1) * dil).clamp(0, H - 1)
                cols = (torch.arange(W) + (j - 1) * dil).clamp(0, W - 1)
                out += a * k[:, 0, i, j].view(1, d, 1, 1) * h[:, :, rows][:, :, :, cols]
    return out


@pytest.mark.parametrize("H,W,N", [(5, 7, 1), (2, 9, 2), (1, 4, 1)])
def test_fused_states_equal_explicit_dilated_sum(H, W, N):
    torch.manual_seed(0)
    layer = StructureAwareSSM(8, d_state=N).double()
    with torch.no_grad():
        for p in layer.state_fusion.parameters():
            p.normal_()
    x = torch.randn(2, H, W, layer.d_inner, dtype=torch.float64)
    h, _ = layer.scan_states(x)
    fused = layer.fuse_states(h, H, W)
    for n in range(N):
        maps = h[..., n].reshape(2, layer.d_inner, H, W)
        ref = _explicit_fusion(layer.state_fusion, maps).reshape(2, layer.d_inner, H * W)
        torch.testing.assert_close(fused[..., n], ref, rtol=1e-12, atol=1e-12)


def test_forward_matches_explicit_pipeline_and_train_equals_eval():
    torch.manual_seed(0)
    layer = StructureAwareSSM(8, d_state=2).double()
    x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    xs, z = layer.in_proj(x).chunk(2, dim=-1)
    xs = F.silu(layer.conv2d(xs.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    flat = xs.reshape(2, 24, -1)
    dt, B, C = (flat @ layer.x_proj_weight.t()).split([layer.dt_rank, 2, 2], -1)
    h = selective_scan_states_ref(flat.transpose(1, 2), (dt @ layer.dt_projs_weight.t()).transpose(1, 2),
                                  -torch.exp(layer.A_logs), B.transpose(1, 2), layer.dt_projs_bias, True)
    hf = torch.stack([_explicit_fusion(layer.state_fusion, h[..., n].reshape(2, -1, 4, 6)).reshape(2, -1, 24)
                      for n in range(2)], -1)
    y = (hf * C.unsqueeze(1)).sum(-1).transpose(1, 2) + layer.Ds * flat
    ref = layer.out_proj(layer.out_norm(y.reshape_as(xs)) * F.silu(z))
    layer.train()
    out_train = layer(x)
    layer.eval()
    out_eval = layer(x)
    torch.testing.assert_close(out_train, ref, rtol=1e-10, atol=1e-10)
    assert torch.equal(out_train, out_eval)


def test_spatial_ssm_gradients_and_bad_input():
    torch.manual_seed(0)
    layer = StructureAwareSSM(16)
    assert layer.state_fusion.kernel_3_2.shape == (32, 1, 3, 3) and layer.A_logs.shape == (32, 1)
    x = torch.randn(2, 5, 7, 16)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for n, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 16, 5, 7))
    with pytest.raises(ValueError, match="u must have shape"):
        selective_scan_states(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 1), torch.randn(2, 1))
