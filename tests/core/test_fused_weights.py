"""The fused one-token steps read weights as forward sees them: re-parametrised weights (weight norm) step exactly
like forward; a module whose forward differs from its weights (an adapter subclass, a pruning hook) is refused by
name instead of stepping past it."""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrizations, prune

from ssmkit.core.layers import Mamba
from ssmkit.recsys.models import Mamba4Rec, TiM4Rec

F64 = torch.float64


def step_all(m, x):
    state = m.initial_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = m.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1)


def weight_normed_mamba():
    torch.manual_seed(0)
    m = Mamba(8, d_state=4).double()
    for name in ("in_proj", "out_proj", "x_proj"):
        parametrizations.weight_norm(getattr(m, name))
    parametrizations.weight_norm(m, "A_log")  # a parametrised parameter of the mixer itself
    with torch.no_grad():  # move the magnitudes so that the parametrisation changes the weights
        for name in ("in_proj", "out_proj", "x_proj"):
            getattr(m, name).parametrizations.weight.original0.mul_(1.7)
        m.parametrizations.A_log.original0.mul_(0.8)
    return m


@pytest.mark.parametrize("cpp", [True, False], ids=["fused", "pytorch"])
def test_weight_normed_mamba_steps_like_forward(cpp, monkeypatch):
    if not cpp:
        monkeypatch.setenv("SSMKIT_DISABLE_BACKENDS", "cpp")
    m = weight_normed_mamba().eval()
    x = torch.randn(2, 9, 8, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(step_all(m, x), m(x), rtol=1e-12, atol=1e-12)


class ScaledLinear(nn.Linear):
    """An adapter-like subclass: its forward is not what its weights alone compute."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_a_submodule_with_its_own_forward_is_refused_by_name():
    m = Mamba(8, d_state=4)
    m.out_proj = ScaledLinear(m.d_inner, 8, bias=False)
    with pytest.raises(NotImplementedError, match=r"out_proj .*ScaledLinear changes its forward \(its own forward\)"):
        m.step(torch.randn(1, 8), m.initial_state(1))


def test_a_pruned_submodule_is_refused_by_name():
    m = Mamba(8, d_state=4)
    prune.l1_unstructured(m.x_proj, "weight", amount=0.5)
    with pytest.raises(NotImplementedError, match=r"x_proj .*\(forward hooks\).*prune.remove"):
        m.step(torch.randn(1, 8), m.initial_state(1))
    prune.remove(m.x_proj, "weight")  # made permanent: steps like forward again
    x = torch.randn(1, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(step_all(m.eval(), x), m(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [Mamba4Rec, TiM4Rec])
def test_weight_normed_recommenders_stream_like_reencoding(cls):
    torch.manual_seed(0)
    kw = dict(d_state=8) if cls is Mamba4Rec else dict(d_state=8, headdim=8, chunk_size=4)
    model = cls(n_items=30, hidden_size=16, n_layers=2, **kw).double().eval()
    for layer in model.layers:
        parametrizations.weight_norm(layer.ffn.w_1)
        mixer = layer.tissd if cls is TiM4Rec else layer.mamba
        parametrizations.weight_norm(mixer.in_proj)
        with torch.no_grad():
            layer.ffn.w_1.parametrizations.weight.original0.mul_(1.5)
            mixer.in_proj.parametrizations.weight.original0.mul_(0.7)
    items = torch.randint(1, 31, (2, 7))
    times = torch.cumsum(torch.rand(2, 7, dtype=F64) * 86400 * 9, 1)
    state = model.initial_state(2)
    with torch.no_grad():
        for t in range(7):
            h, state = model.step(items[:, t], state, times[:, t])
        ref = model.encode(items, torch.full((2,), 7), times)
    torch.testing.assert_close(h, ref, rtol=1e-10, atol=1e-10)
