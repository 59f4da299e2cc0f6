"""BiMamba variants against their explicit two-pass definitions, and the length-aware partial flip."""
import pytest
import torch

from ssmkit.core.layers import BiMamba, Mamba, partial_flip

F64 = torch.float64
VIM_KEYS = {"in_proj.weight", "out_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
            "dt_proj.bias", "A_log", "D", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight",
            "dt_proj_b.bias", "A_b_log", "D_b"}


def _x(L=11, d=8, seed=0):
    return torch.randn(2, L, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_bimamba_v2_has_vim_key_names_and_shapes():
    m = BiMamba(192, variant="v2")
    sd = m.state_dict()
    assert set(sd) == VIM_KEYS
    assert sd["in_proj.weight"].shape == (768, 192) and sd["out_proj.weight"].shape == (192, 384)
    assert sd["x_proj_b.weight"].shape == (44, 384) and sd["conv1d_b.weight"].shape == (384, 1, 4)
    assert sd["A_b_log"].shape == (384, 16) and sd["D_b"].shape == (384,) and sd["dt_proj_b.weight"].shape == (384, 12)


@pytest.mark.parametrize("divide_out", [True, False])
def test_bimamba_v2_equals_two_mamba_passes(divide_out):
    torch.manual_seed(0)
    m = BiMamba(8, variant="v2", d_state=4, divide_out=divide_out).double()
    f, b = Mamba(8, d_state=4).double(), Mamba(8, d_state=4).double()
    sd = m.state_dict()
    f.load_state_dict({k: v for k, v in sd.items() if "_b" not in k})
    b.load_state_dict({"in_proj.weight": sd["in_proj.weight"], "out_proj.weight": sd["out_proj.weight"],
                       "conv1d.weight": sd["conv1d_b.weight"], "conv1d.bias": sd["conv1d_b.bias"],
                       "x_proj.weight": sd["x_proj_b.weight"], "dt_proj.weight": sd["dt_proj_b.weight"],
                       "dt_proj.bias": sd["dt_proj_b.bias"], "A_log": sd["A_b_log"], "D": sd["D_b"]})
    with torch.no_grad():
        m.D_b.add_(0.3)
        b.D.add_(0.3)  # make the two branches differ
        x = _x()
        expected = f(x) + b(x.flip(1)).flip(1)
        assert torch.allclose(m(x), expected / 2 if divide_out else expected, atol=1e-12, rtol=0)


def test_bimamba_caduceus_ties_projections_and_equals_v2_without_division():
    torch.manual_seed(1)
    c = BiMamba(8, variant="caduceus", d_state=4).double()
    assert c.mamba_rev.in_proj.weight is c.mamba_fwd.in_proj.weight
    assert c.mamba_rev.out_proj.weight is c.mamba_fwd.out_proj.weight
    n_mamba = sum(p.numel() for p in Mamba(8, d_state=4).parameters())
    n_proj = c.mamba_fwd.in_proj.weight.numel() + c.mamba_fwd.out_proj.weight.numel()
    assert sum(p.numel() for p in c.parameters()) == 2 * n_mamba - n_proj
    v2 = BiMamba(8, variant="v2", d_state=4, divide_out=False).double()
    rev = c.mamba_rev.state_dict()
    sd = {"conv1d_b.weight": rev["conv1d.weight"], "conv1d_b.bias": rev["conv1d.bias"],
          "x_proj_b.weight": rev["x_proj.weight"], "dt_proj_b.weight": rev["dt_proj.weight"],
          "dt_proj_b.bias": rev["dt_proj.bias"], "A_b_log": rev["A_log"], "D_b": rev["D"]}
    v2.load_state_dict({**c.mamba_fwd.state_dict(), **sd})
    with torch.no_grad():
        x = _x(seed=2)
        assert torch.allclose(c(x), v2(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("strategy", ["add", "ew_multiply"])
def test_bimamba_smamba_is_independent_and_reversal_equivariant(strategy):
    """Swapping the two mixers' weights equals running on the reversed sequence and reversing the output."""
    torch.manual_seed(2)
    m = BiMamba(8, variant="smamba", d_state=4, d_conv=2, expand=1, strategy=strategy).double()
    assert m.mamba_rev.in_proj.weight is not m.mamba_fwd.in_proj.weight
    swapped = BiMamba(8, variant="smamba", d_state=4, d_conv=2, expand=1, strategy=strategy).double()
    swapped.mamba_fwd.load_state_dict(m.mamba_rev.state_dict())
    swapped.mamba_rev.load_state_dict(m.mamba_fwd.state_dict())
    with torch.no_grad():
        x = _x(seed=3)
        assert torch.allclose(swapped(x), m(x.flip(1)).flip(1), atol=1e-12, rtol=0)
        assert not torch.allclose(m(x), m(x.flip(1)).flip(1), atol=1e-6)


@pytest.mark.parametrize("variant", ["v2", "caduceus", "smamba"])
def test_bimamba_output_depends_on_both_sides(variant):
    torch.manual_seed(3)
    m = BiMamba(8, variant=variant, d_state=4).double()
    x = _x().requires_grad_(True)
    m(x)[:, 5].sum().backward()
    per_pos = x.grad.abs().sum((0, 2))
    assert per_pos[:5].min() > 0 and per_pos[6:].min() > 0


def test_bimamba_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        BiMamba(8, variant="v1")
    with pytest.raises(ValueError, match="strategy"):
        BiMamba(8, strategy="concat")
    with pytest.raises(ValueError, match="x"):
        BiMamba(8, d_state=4)(torch.randn(2, 5, 7))


def test_partial_flip_reverses_valid_prefix_and_never_touches_padding():
    L, r = 9, 2
    x = torch.arange(1, L + 1).repeat(L + 1, 1).unsqueeze(-1).expand(L + 1, L, 3)   # (L+1, L, 3), one row per n
    lengths = torch.arange(L + 1)
    y = partial_flip(x, lengths, r)
    for n in range(L + 1):
        k = max(n - r, 0)
        expected = list(range(k, 0, -1)) + list(range(k + 1, L + 1))
        assert y[n, :, 0].tolist() == expected, n
        assert torch.equal(y[n, n:], x[n, n:])                          # padding positions untouched
    assert torch.equal(partial_flip(y, lengths, r), x)                  # an involution
    assert torch.equal(partial_flip(x[:, :, 0], lengths, 0)[L], x[L, :, 0].flip(0))


def test_partial_flip_bad_arguments():
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="lengths"):
        partial_flip(x, torch.tensor([2, 6]))
    with pytest.raises(TypeError, match="lengths"):
        partial_flip(x, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="lengths"):
        partial_flip(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="r must"):
        partial_flip(x, torch.tensor([1, 2]), r=-1)
