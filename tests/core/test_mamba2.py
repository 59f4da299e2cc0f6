"""Mamba2 mixer: mamba_ssm names and shapes, step == forward, continuation, and a Mamba-2 block stack."""
import pytest
import torch

from ssmkit.core.blocks import SequenceModel
from ssmkit.core.layers import Mamba2

F64 = torch.float64


def test_mamba2_state_dict_matches_mamba_ssm_layout():
    """mamba2-130m: d_model 768, d_state 128, headdim 64 -> 24 heads, in_proj 3352 x 768, conv over 1792."""
    m = Mamba2(768)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"in_proj.weight": (3352, 768), "conv1d.weight": (1792, 1, 4), "conv1d.bias": (1792,),
                      "dt_bias": (24,), "A_log": (24,), "D": (24,), "norm.weight": (1536,),
                      "out_proj.weight": (768, 1536)}
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


CONFIGS = [dict(), dict(ngroups=2, D_has_hdim=True, norm_before_gate=True), dict(rmsnorm=False, d_ssm=16),
           dict(dt_limit=(0.01, 0.05), d_ssm=24, ngroups=3)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_mamba2_step_equals_forward(cfg, step_through):
    torch.manual_seed(0)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=5, **cfg).double()
    with torch.no_grad():
        m.D.add_(torch.randn_like(m.D))
        x = torch.randn(2, 13, 16, dtype=F64)
        y = m(x)
        steps, state = step_through(m, x)
        assert torch.allclose(steps, y, atol=1e-12, rtol=0)
        y_full, (conv_f, ssm_f) = m(x, return_state=True)
        assert torch.allclose(state[0], conv_f, atol=1e-12, rtol=0)
        assert torch.allclose(state[1], ssm_f, atol=1e-12, rtol=0)


def test_mamba2_forward_continues_from_state():
    torch.manual_seed(1)
    m = Mamba2(16, d_state=8, headdim=4, ngroups=2).double()
    with torch.no_grad():
        x = torch.randn(2, 21, 16, dtype=F64)
        y1, s = m(x[:, :8], return_state=True)
        y2 = m(x[:, 8:], state=s)
        assert torch.allclose(torch.cat([y1, y2], 1), m(x), atol=1e-12, rtol=0)


def test_mamba2_block_stack_decodes_like_forward():
    torch.manual_seed(2)
    lm = SequenceModel(11, 16, 2, mixer=lambda i: Mamba2(16, d_state=8, headdim=8)).double()
    tokens = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        logits = lm(tokens)
        state = lm.initial_state(2)
        for t in range(9):
            step_logits, state = lm.step(tokens[:, t], state)
            assert torch.allclose(step_logits, logits[:, t], atol=1e-10, rtol=0)


def test_mamba2_bad_arguments():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, headdim=5)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, headdim=8, ngroups=3)
    with pytest.raises(ValueError, match="x"):
        Mamba2(16, headdim=8)(torch.randn(1, 4, 15))
