"""Hyena operator: causality, filter shapes, gating order against a direct-convolution oracle, L = 4096 forward."""
import math

import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import Hyena
from ssmkit.core.ops import fft_conv_ref


@pytest.mark.parametrize("t", [0, 5, 150, 299])
def test_hyena_is_causal(t):
    torch.manual_seed(t)
    layer = Hyena(16, l_max=300).double()
    x = torch.randn(2, 300, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t:] += torch.randn(2, 300 - t, 16, dtype=torch.float64)
    y, y2 = layer(x), layer(x2)
    assert torch.allclose(y[:, :t], y2[:, :t], rtol=0, atol=1e-10)
    assert (y[:, t] - y2[:, t]).abs().max() > 1e-6


def test_hyena_filter_shapes_and_parameter_names():
    layer = Hyena(32, l_max=100, filter_order=64, emb_dim=5)
    f = layer.filter_fn
    assert f.filter(70).shape == (70, 32)
    assert f.pos_emb.z.shape == (1, 100, 5) and f.pos_emb.t.shape == (1, 100, 1)
    assert f.modulation.deltas.shape == (1, 1, 32) and f.bias.shape == (32,)
    shapes = [tuple(p.shape) for p in f.implicit_filter.parameters()]
    assert shapes == [(64, 5), (64,), (1, 64), (64, 64), (64,), (64, 64), (64,), (32, 64)]
    assert layer.in_proj.weight.shape == (96, 32) and layer.short_filter.weight.shape == (96, 1, 3)
    keys = set(layer.state_dict())
    assert {"filter_fn.implicit_filter.1.freq", "filter_fn.pos_emb.z", "filter_fn.modulation.deltas",
            "filter_fn.bias", "out_proj.weight"} <= keys
    filt = {id(p) for p in layer.parameters() if getattr(p, "_optim", None) == {"weight_decay": 0.0}}
    assert id(f.implicit_filter[1].freq) in filt and id(layer.in_proj.weight) not in filt
    assert len(filt) == 8
    with_lr = Hyena(8, l_max=10, filter_lr=1e-3)
    assert all(p._optim == {"weight_decay": 0.0, "lr": 1e-3} for p in with_lr.filter_fn.implicit_filter.parameters())


def test_hyena_filter_is_modulated_mlp():
    layer = Hyena(8, l_max=50).double()
    f = layer.filter_fn
    z, t = f.pos_emb.z[0], f.pos_emb.t[0]
    assert torch.allclose(z[:, 0], torch.linspace(0, 1, 50, dtype=torch.float64))
    mlp = f.implicit_filter(f.pos_emb.z)[0]
    window = torch.exp(-t * f.modulation.deltas[0].abs()) + 0.05
    assert torch.allclose(f.filter(50), mlp * window)
    decay = f.modulation.deltas.abs().flatten()
    assert torch.allclose(decay[[0, -1]], torch.tensor([math.log(1e-2) / 1.5, math.log(1e-2) / 0.3]).abs().double())


def test_hyena_matches_direct_convolution_oracle():
    torch.manual_seed(0)
    layer = Hyena(8, l_max=64).double()
    x = torch.randn(2, 40, 8, dtype=torch.float64)
    u = layer.in_proj(x).transpose(1, 2)
    u = F.conv1d(F.pad(u, (2, 0)), layer.short_filter.weight, layer.short_filter.bias, groups=24)  # causal k=3
    x0, x1, v = u.split(8, dim=1)
    h = layer.filter_fn.filter(40).T
    v = v * x1
    v = fft_conv_ref(v, h) + v * layer.filter_fn.bias[:, None]
    want = layer.out_proj((v * x0).transpose(1, 2))
    assert (layer(x) - want).abs().max() < 1e-10


def test_hyena_forward_4096_by_128_on_cpu():
    torch.manual_seed(0)
    layer = Hyena(128, l_max=4096)
    with torch.no_grad():
        y = layer(torch.randn(1, 4096, 128))
    assert y.shape == (1, 4096, 128) and torch.isfinite(y).all()


def test_hyena_bad_input():
    layer = Hyena(8, l_max=16)
    with pytest.raises(ValueError, match="exceeds l_max"):
        layer(torch.randn(1, 17, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(\?, \?, 8\)"):
        layer(torch.randn(1, 16, 9))
    with pytest.raises(ValueError, match="emb_dim must be odd"):
        Hyena(8, l_max=16, emb_dim=4)
