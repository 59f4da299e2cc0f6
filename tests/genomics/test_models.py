"""DNA models: preset parameter counts, the official HyenaDNA key converter, exact RC equivariance of the RCPS
wrapper (Hyena, Mamba, xLSTM blocks), causality by gradients, DNA-xLSTM step == forward."""
import re

import pytest
import torch

from ssmkit.core.blocks import mLSTMBlock, sLSTMBlock
from ssmkit.core.layers import Hyena, Mamba
from ssmkit.genomics.models.caduceus import Caduceus
from ssmkit.genomics.models.dnaxlstm import DNAxLSTM
from ssmkit.genomics.models.hyenadna import (PRESETS, HyenaDNA, Mlp, convert_official_state_dict,
                                             load_official)
from ssmkit.genomics.models.rc import RCPS, ResidualBlock, rc_average_logits, rc_logits, reverse_complement_ids

def count(m):
    return sum(p.numel() for p in m.parameters())

# the reference table (instantiating the official standalone model), not our own formula
REFERENCE_COUNTS = {"tiny-1k": 436_096, "tiny-1k-d256": 1_641_088, "small-32k": 3_277_568,
                    "medium-160k": 6_550_528, "medium-450k": 6_550_528, "large-1m": 6_550_528}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_genomics_hyenadna_preset_counts(name):
    m = HyenaDNA.from_preset(name, l_max=8)  # l_max only changes fixed buffers, not parameters
    assert count(m) == REFERENCE_COUNTS[name]
    assert HyenaDNA.from_preset("tiny-1k").l_max == 1026 and PRESETS[name]["context"] > 0


def test_genomics_caduceus_preset_sizes():
    # Caduceus GB models ~0.47M; the 16 x d256 Ph checkpoint ~7.7M (reference section 2)
    assert round(count(Caduceus.from_preset("caduceus-ph-1k")) / 1e4) == 47
    assert round(count(Caduceus.from_preset("caduceus-ph-131k-d256-n16")) / 1e5) == 77
    assert isinstance(Caduceus.from_preset("caduceus-ps-1k"), RCPS)


def official_state_dict(d_model, n_layer, l_max, checkpoint_mixer):
    """A state_dict with the official key names and shapes (standalone_hyenadna.py under Lightning's `model.`),
    written out by hand from the official module layout, not from our model."""
    D, order, emb = d_model, 64, 5
    sd = {"model.backbone.embeddings.word_embeddings.weight": torch.randn(16, D)}
    mix = "mixer.layer" if checkpoint_mixer else "mixer"
    mlp = "mlp.layer" if checkpoint_mixer else "mlp"
    for i in range(n_layer):
        p = f"model.backbone.layers.{i}."
        sd.update({
            p + f"{mix}.in_proj.weight": torch.randn(3 * D, D), p + f"{mix}.in_proj.bias": torch.randn(3 * D),
            p + f"{mix}.out_proj.weight": torch.randn(D, D), p + f"{mix}.out_proj.bias": torch.randn(D),
            p + f"{mix}.short_filter.weight": torch.randn(3 * D, 1, 3),
            p + f"{mix}.short_filter.bias": torch.randn(3 * D),
            p + f"{mix}.filter_fn.bias": torch.randn(D),
            p + f"{mix}.filter_fn.pos_emb.z": torch.randn(1, l_max, emb),
            p + f"{mix}.filter_fn.pos_emb.t": torch.randn(1, l_max, 1),
            p + f"{mix}.filter_fn.implicit_filter.0.weight": torch.randn(order, emb),
            p + f"{mix}.filter_fn.implicit_filter.0.bias": torch.randn(order),
            p + f"{mix}.filter_fn.implicit_filter.2.weight": torch.randn(order, order),
            p + f"{mix}.filter_fn.implicit_filter.2.bias": torch.randn(order),
            p + f"{mix}.filter_fn.implicit_filter.4.weight": torch.randn(order, order),
            p + f"{mix}.filter_fn.implicit_filter.4.bias": torch.randn(order),
            p + f"{mix}.filter_fn.implicit_filter.6.weight": torch.randn(D, order),
            p + f"{mix}.filter_fn.modulation.deltas": torch.randn(1, 1, D),
            p + "norm1.weight": torch.randn(D), p + "norm1.bias": torch.randn(D),
            p + "norm2.weight": torch.randn(D), p + "norm2.bias": torch.randn(D),
            p + f"{mlp}.fc1.weight": torch.randn(4 * D, D), p + f"{mlp}.fc1.bias": torch.randn(4 * D),
            p + f"{mlp}.fc2.weight": torch.randn(D, 4 * D), p + f"{mlp}.fc2.bias": torch.randn(D),
        })
        freq = torch.randn(1, order)  # one shared Sin module: the same tensor under each position
        for j in (1, 3, 5):
            sd[p + f"{mix}.filter_fn.implicit_filter.{j}.freq"] = freq
    sd["model.backbone.ln_f.weight"], sd["model.backbone.ln_f.bias"] = torch.randn(D), torch.randn(D)
    sd["model.decoder.0.output_transform.weight"] = torch.randn(2, D)  # a fine-tuning head: not backbone
    return sd


@pytest.mark.parametrize("checkpoint_mixer", [False, True])
def test_genomics_hyenadna_official_checkpoint_converter(checkpoint_mixer):
    sd = official_state_dict(32, 2, 66, checkpoint_mixer)
    m = load_official(HyenaDNA(d_model=32, n_layer=2, l_max=66), sd)
    key = "model.backbone.layers.1." + ("mixer.layer" if checkpoint_mixer else "mixer") + ".in_proj.weight"
    torch.testing.assert_close(m.backbone.layers[1].mixer.in_proj.weight, sd[key])
    torch.testing.assert_close(m.lm_head.weight, sd["model.backbone.embeddings.word_embeddings.weight"])
    assert all(not re.search(r"\.layer\.", k) for k in convert_official_state_dict(sd))
    with pytest.raises(ValueError, match="pos_emb"):  # wrong l_max: the fixed buffers do not fit
        load_official(HyenaDNA(d_model=32, n_layer=2, l_max=40), sd)


def test_genomics_hyenadna_block_matches_hand_written_forward():
    """Oracle: the official block order written out with the model's own submodules."""
    torch.manual_seed(0)
    m = HyenaDNA(d_model=16, n_layer=2, l_max=40, embed_dropout=0.0).double().eval()
    ids = torch.randint(7, 12, (2, 30))
    x = m.backbone.embeddings.word_embeddings.weight[ids]
    residual = None
    for layer in m.backbone.layers:
        residual = x if residual is None else residual + x
        h = layer.mixer(layer.norm1(residual))
        residual = residual + h
        x = layer.mlp(layer.norm2(residual))
    expected = m.backbone.ln_f(residual + x) @ m.backbone.embeddings.word_embeddings.weight.T
    torch.testing.assert_close(m(ids), expected)
    assert isinstance(m.backbone.layers[0].mlp, Mlp)


def _first_input_gradient(model, ids, t):
    """|d logits[:, t] / d embedding(ids)| per position (via a hook on the embedding output)."""
    store = {}
    module = model.backbone.embeddings if isinstance(model, HyenaDNA) else model.embedding
    handle = module.register_forward_hook(lambda mod, inp, out: store.setdefault("x", out.retain_grad() or out))
    logits = model(ids)
    handle.remove()
    logits[:, t].sum().backward()
    return store["x"].grad.abs().sum(-1)


@pytest.mark.parametrize("make", [lambda: HyenaDNA(d_model=16, n_layer=2, l_max=40, embed_dropout=0.0),
                                  lambda: DNAxLSTM(d_model=16, n_layer=2, s_lstm_at=(1,), chunk_size=8)],
                         ids=["hyenadna", "dnaxlstm"])
def test_genomics_causal_models_never_see_the_future(make):
    torch.manual_seed(0)
    model = make().double()
    ids = torch.randint(7, 12, (2, 24))
    t = 11
    g = _first_input_gradient(model, ids, t)
    # nothing after t reaches logits at t (FFT convolution leaves fp64 round-off, ~1e-18, not a signal)
    assert (g[:, t + 1:] <= 1e-12 * g[:, : t + 1].max()).all()
    assert (g[:, : t + 1].sum(0) > 0).all()  # everything up to t does


def test_genomics_bidirectional_models_see_both_sides():
    torch.manual_seed(0)
    for model in (DNAxLSTM(d_model=16, n_layer=2, bidirectional=True, chunk_size=8).double(),
                  Caduceus(d_model=16, n_layer=2).double()):
        g = _first_input_gradient(model, torch.randint(7, 12, (2, 24)), 11)
        assert (g[:, 12:].sum(0) > 0).all() and (g[:, :11].sum(0) > 0).all()


def test_genomics_dnaxlstm_step_equals_forward():
    torch.manual_seed(0)
    model = DNAxLSTM(d_model=16, n_layer=3, s_lstm_at=(1,), chunk_size=4).double().eval()
    ids = torch.randint(7, 12, (2, 13))
    full = model(ids)
    state, steps = None, []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="causal"):
        DNAxLSTM(d_model=16, n_layer=1, bidirectional=True).initial_state(1)


def _hyena_block(d):
    return lambda i: ResidualBlock(d, Hyena(d, l_max=32), mlp=torch.nn.Sequential(torch.nn.Linear(d, 2 * d),
                                                                                  torch.nn.GELU(),
                                                                                  torch.nn.Linear(2 * d, d)))


BLOCKS = {
    "hyena": _hyena_block,
    "mamba": lambda d: (lambda i: ResidualBlock(d, Mamba(d, d_state=4))),
    "xlstm": lambda d: (lambda i: mLSTMBlock(d, chunk_size=4) if i == 0 else sLSTMBlock(d)),
}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_genomics_rcps_is_exactly_rc_equivariant(kind):
    torch.manual_seed(0)
    d = 16
    model = RCPS(BLOCKS[kind](d), d, n_layer=2).double().eval()
    with torch.no_grad():  # break any accidental symmetry between the two halves of the embedding
        model.embedding.weight.normal_()
    ids = torch.randint(7, 12, (3, 20))
    out, out_rc = model(ids), model(reverse_complement_ids(ids))
    torch.testing.assert_close(out_rc, rc_logits(out), rtol=1e-10, atol=1e-10)
    # per-token features flip along L, so their mean is RC-invariant
    torch.testing.assert_close(model.hidden(reverse_complement_ids(ids)), model.hidden(ids).flip(1))
    # and a plain model is not equivariant (the test can fail)
    plain = DNAxLSTM(d_model=d, n_layer=1, bidirectional=True).double().eval()
    assert not torch.allclose(plain(reverse_complement_ids(ids)), rc_logits(plain(ids)))
    # "Ph" averaging makes any model equivariant at test time
    torch.testing.assert_close(rc_average_logits(plain, reverse_complement_ids(ids)),
                               rc_logits(rc_average_logits(plain, ids)))
