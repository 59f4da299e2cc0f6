"""Norms, the add-then-norm residual Block, Backbone and SequenceModel: formulas, mamba_ssm ordering and
names, mixed precision, and step decoding == forward logits."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.blocks import Backbone, Block, RMSNorm, RMSNormGated, SequenceModel
from ssmkit.core.layers import Mamba

F64 = torch.float64


def rms(x, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def test_rmsnorm_formula_and_low_precision():
    n = RMSNorm(6, eps=1e-3).double()
    with torch.no_grad():
        n.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 4, 6, dtype=F64)
    assert torch.allclose(n(x), rms(x, 1e-3) * torch.arange(1.0, 7.0, dtype=F64), rtol=1e-12, atol=1e-12)
    n32 = RMSNorm(6).float()
    xb = (torch.randn(5, 6) * 100).to(torch.bfloat16)
    out = n32(xb)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, rms(xb.float(), 1e-5).to(torch.bfloat16))  # computed in fp32, rounded once


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [None, 2, 3])
def test_rmsnorm_gated_formula(norm_before_gate, group_size):
    n = RMSNormGated(6, eps=1e-4, norm_before_gate=norm_before_gate, group_size=group_size).double()
    with torch.no_grad():
        n.weight.uniform_(0.5, 2.0)
    x, z = torch.randn(2, 3, 6, dtype=F64), torch.randn(2, 3, 6, dtype=F64)
    gs = group_size or 6

    def grouped(v):
        return rms(v.unflatten(-1, (-1, gs)), 1e-4).flatten(-2)

    want = grouped(x) * n.weight * F.silu(z) if norm_before_gate else grouped(x * F.silu(z)) * n.weight
    assert torch.allclose(n(x, z), want, rtol=1e-12, atol=1e-12)
    assert torch.allclose(n(x), grouped(x) * n.weight, rtol=1e-12, atol=1e-12)


def test_rmsnorm_gated_rejects_bad_group():
    with pytest.raises(ValueError, match="group_size=4 must divide d=6"):
        RMSNormGated(6, group_size=4)


class Scale(nn.Module):
    """A mixer with a visible effect: y = 2x + 1, and a step that counts its calls in the state."""

    def forward(self, x):
        return 2 * x + 1

    def step(self, x, state):
        return 2 * x + 1, state + 1


def test_block_adds_then_norms():
    blk = Block(4, Scale()).double()
    h, r = torch.randn(2, 3, 4, dtype=F64), torch.randn(2, 3, 4, dtype=F64)
    out, res = blk(h, r)
    assert torch.allclose(res, h + r) and torch.allclose(out, 2 * rms(h + r, 1e-5) + 1)
    out0, res0 = blk(h, None)
    assert torch.equal(res0, h) and torch.allclose(out0, 2 * rms(h, 1e-5) + 1)
    out_t, res_t, state = blk.step(h[:, 0], r[:, 0], torch.zeros(()))
    assert torch.allclose(out_t, out[:, 0]) and torch.allclose(res_t, res[:, 0]) and state == 1


def test_block_with_mlp_and_fp32_residual():
    mlp = nn.Linear(4, 4, dtype=torch.bfloat16)
    blk = Block(4, Scale(), mlp=mlp, residual_in_fp32=True).to(torch.bfloat16)
    h, r = torch.randn(2, 3, 4).to(torch.bfloat16), torch.randn(2, 3, 4).to(torch.bfloat16)
    out, res = blk(h, r)
    assert res.dtype == torch.float32 and out.dtype == torch.bfloat16
    res1 = (h + r).float()  # as mamba_ssm: the incoming pair is added in its dtype, then kept in fp32
    mix = blk.mixer(blk.norm(res1.to(torch.bfloat16)))
    res2 = res1 + mix.float()
    assert torch.equal(res, res2)
    assert torch.equal(out, mlp(blk.norm2(res2.to(torch.bfloat16))))


def test_block_drop_path_drops_or_rescales_whole_samples():
    torch.manual_seed(0)
    blk = Block(4, Scale(), drop_path=0.5)
    h, r = torch.randn(64, 3, 4), torch.randn(64, 3, 4)
    blk.eval()
    assert torch.equal(blk(h, r)[1], h + r)
    blk.train()
    inc = blk(h, r)[1] - r
    dropped = (inc == 0).flatten(1).all(1)
    kept = torch.isclose(inc, 2 * h, atol=1e-6).flatten(1).all(1)
    assert (dropped | kept).all() and dropped.any() and kept.any()


def lm(seed=0, n_layer=2):
    torch.manual_seed(seed)
    return SequenceModel(11, 8, n_layer, mixer=lambda i: Mamba(8, d_state=4)).double()


def test_sequence_model_step_decoding_equals_forward():
    model = lm()
    tokens = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        logits = model(tokens)
        state, steps = model.initial_state(2), []
        for tok in tokens.unbind(1):
            out, state = model.step(tok, state)
            steps.append(out)
    assert logits.shape == (2, 10, 11)
    assert torch.allclose(torch.stack(steps, 1), logits, rtol=1e-11, atol=1e-11)


def test_sequence_model_names_tying_and_init():
    model = SequenceModel(11, 16, 3, mixer=lambda i: Mamba(16, d_state=4))
    keys = set(model.state_dict())
    assert {"backbone.embedding.weight", "backbone.norm_f.weight", "lm_head.weight",
            "backbone.layers.2.mixer.A_log", "backbone.layers.0.norm.weight"} <= keys
    assert model.lm_head.weight is model.backbone.embedding.weight
    assert abs(model.backbone.embedding.weight.std().item() - 0.02) < 0.006
    for layer in model.backbone.layers:
        out = layer.mixer.out_proj.weight
        assert out.abs().max() <= (1 / 32 ** 0.5) / 3 ** 0.5  # kaiming bound 1/sqrt(fan_in), scaled by 1/sqrt(3)
        dt = F.softplus(layer.mixer.dt_proj.bias)  # marked _no_reinit: keeps mamba_ssm's dt init
        assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    untied = SequenceModel(11, 16, 1, mixer=lambda i: Mamba(16, d_state=4), tie_embeddings=False)
    assert untied.lm_head.weight is not untied.backbone.embedding.weight


def test_backbone_equals_manual_stack():
    torch.manual_seed(0)
    bb = Backbone(7, 4, 2, mixer=lambda i: Scale()).double()
    tokens = torch.randint(0, 7, (2, 5))
    e = bb.embedding(tokens)
    h1 = 2 * rms(e, 1e-5) + 1
    r2 = e + h1
    h2 = 2 * rms(r2, 1e-5) + 1
    assert torch.allclose(bb(tokens), rms(r2 + h2, 1e-5), rtol=1e-12, atol=1e-12)


def test_sequence_model_rejects_float_tokens():
    with pytest.raises(TypeError, match="tokens must be an integer tensor"):
        lm()(torch.zeros(2, 3))
