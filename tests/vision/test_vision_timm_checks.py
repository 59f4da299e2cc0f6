"""The generic checks timm's tests/test_models.py applies to every registered model, on the tiny `test_*`
presets at small sizes: forward (no NaN, same with grad checkpointing), backward reaching every parameter,
default-cfg consistency, features_only, forward_intermediates vs forward_features, torch.fx vs eager."""
import pytest
import timm
import torch
from timm.layers import create_feature_extractor

import ssmkit.vision  # noqa: F401

# name, create kwargs, test input size
MODELS = [("test_vim", dict(img_size=32, patch_size=8), 32), ("test_vssd", {}, 64),
          ("test_spatialmamba", {}, 64)]
IDS = [m[0] for m in MODELS]


def _model(name, kwargs, **extra):
    torch.manual_seed(0)
    return timm.create_model(name, **{**kwargs, **extra})


@pytest.mark.parametrize("name,kwargs,size", MODELS, ids=IDS)
def test_forward_and_grad_checkpointing_and_backward(name, kwargs, size):
    model = _model(name, kwargs, num_classes=42).eval()
    x = torch.randn(2, 3, size, size)
    y = model(x)
    assert y.shape == (2, 42) and not torch.isnan(y).any()
    model.set_grad_checkpointing()
    torch.testing.assert_close(model(x), y, rtol=1e-4, atol=1e-5)
    model.train()
    model(x).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(not torch.isnan(p.grad).any() for p in model.parameters())


@pytest.mark.parametrize("name,kwargs,size", MODELS, ids=IDS)
def test_default_cfg_consistency(name, kwargs, size):
    """At the cfg's input size: unpooled features of num_features channels on a pool_size grid (NHWC for the
    hierarchical models, tokens for Vim), pre_logits of head_hidden_size, reset_classifier(0) and (0, '')."""
    model = _model(name, {}).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    feats = model.forward_features(x)
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
    if name == "test_vim":
        assert feats.ndim == 3 and feats.shape[-1] == model.num_features
    else:
        assert model.output_fmt == "NHWC" and feats.shape == (1, *cfg["pool_size"], model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == feats.shape
    sd = model.state_dict()
    assert cfg["classifier"] + ".weight" in _model(name, {}).state_dict()
    assert cfg["first_conv"] + ".weight" in sd


@pytest.mark.parametrize("name,kwargs,size", MODELS, ids=IDS)
def test_features_only_and_forward_intermediates(name, kwargs, size):
    model = _model(name, kwargs).eval()
    x = torch.randn(2, 3, size, size)
    final, inter = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert len(inter) == len(model.feature_info)
    for feat, info in zip(inter, model.feature_info):
        assert feat.shape == (2, info["num_chs"], size // info["reduction"], size // info["reduction"])
    only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    for a, b in zip(only, inter[-2:]):
        torch.testing.assert_close(a, b)
    features = _model(name, kwargs, features_only=True).eval()
    feats = features(x)
    n = 3 if name == "test_vim" else 4  # Vim's getter default: the last 3 blocks; stages: all 4
    assert len(feats) == n and features.feature_info.channels() == [f.shape[1] for f in feats]
    reductions = features.feature_info.reduction()
    assert reductions == sorted(reductions)
    assert [size // r for r in reductions] == [f.shape[-1] for f in feats]
    # the pruned getter wrapper reproduces the full model's intermediates
    for a, b in zip(feats, inter[-n:]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name,kwargs,size", MODELS, ids=IDS)
def test_fx_trace_equals_eager(name, kwargs, size):
    model = _model(name, kwargs, num_classes=5)
    x = torch.randn(2, 3, size, size)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        traced = create_feature_extractor(model, {"head": "out"})
        torch.manual_seed(3)
        out = traced(x)["out"]
        torch.manual_seed(3)
        assert torch.equal(out, model(x))
    out.mean().backward()
    assert all(p.grad is not None for p in traced.parameters())
