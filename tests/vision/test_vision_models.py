"""Vision backbones: published parameter counts, timm registration, official key layouts, checkpoint loading
through `checkpoint_filter_fn`, and bad-input errors."""
import math

import pytest
import timm
import torch

import ssmkit.vision  # noqa: F401  (registers the models)
from ssmkit.vision.models.vim import resample_pos_embed

# (name, published parameter count at 1000 classes / 224 px, tolerance of the rounding in the paper)
PRESETS = [
    ("vim_tiny_patch16_224", 7.15e6), ("vim_small_patch16_224", 25.80e6), ("vim_base_patch16_224", 97.60e6),
    ("vim_tiny_patch16_stride8_224", 7.25e6),
    ("vssd_micro", 13.51e6), ("vssd_tiny", 24.27e6), ("vssd_small", 40.08e6), ("vssd_base", 88.82e6),
    ("spatialmamba_tiny", 26.75e6), ("spatialmamba_small", 43.07e6), ("spatialmamba_base", 95.75e6),
]
REGISTERED = [p[0] for p in PRESETS] + ["vim_small_patch16_stride8_224", "vim_base_patch16_stride8_224"]


def _meta(name, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def test_every_preset_is_registered_under_its_module():
    names = set(timm.list_models(["vim_*", "vssd_*", "spatialmamba_*"]))
    assert set(REGISTERED) <= names
    assert set(timm.list_models(module="vssd")) >= {"vssd_micro", "vssd_tiny", "vssd_small", "vssd_base"}


@pytest.mark.parametrize("name,params", PRESETS + [(n, None) for n in REGISTERED if n not in dict(PRESETS)])
def test_create_model_with_other_classes_and_channels_and_paper_parameter_count(name, params):
    """One build per preset (on the meta device): num_classes=10, in_chans=1 change exactly the head and the
    first conv, and adding back 990 classes and 2 input channels gives the paper's count."""
    model = _meta(name, num_classes=10, in_chans=1)
    first_conv, classifier = model.pretrained_cfg["first_conv"], model.pretrained_cfg["classifier"]
    sd = model.state_dict()
    conv = sd[first_conv + ".weight"]
    assert conv.shape[1] == 1
    assert sd[classifier + ".weight"].shape == (10, model.num_features) and model.num_classes == 10
    if params is not None:
        n = sum(p.numel() for p in model.parameters())
        n += 990 * (model.num_features + 1) + 2 * conv[:, :1].numel()
        assert abs(n - params) < 0.005e6, f"{name}: {n} parameters at 1000 classes / 3 channels, paper {params}"


def _vim_official_keys(depth, D, N=16, grid=14, classes=1000, in_chans=3, patch=16):
    """Vim's checkpoint layout as the reference lists it (hustvl/Vim, 415 keys for depth 24)."""
    di, R = 2 * D, math.ceil(D / 16)
    keys = {"cls_token": (1, 1, D), "pos_embed": (1, grid * grid + 1, D),
            "patch_embed.proj.weight": (D, in_chans, patch, patch), "patch_embed.proj.bias": (D,),
            "norm_f.weight": (D,), "head.weight": (classes, D), "head.bias": (classes,)}
    for i in range(depth):
        p = f"layers.{i}."
        keys.update({p + "norm.weight": (D,), p + "mixer.in_proj.weight": (2 * di, D),
                     p + "mixer.out_proj.weight": (D, di)})
        for s, a in (("", "A_log"), ("_b", "A_b_log")):
            keys.update({p + f"mixer.conv1d{s}.weight": (di, 1, 4), p + f"mixer.conv1d{s}.bias": (di,),
                         p + f"mixer.x_proj{s}.weight": (R + 2 * N, di), p + f"mixer.dt_proj{s}.weight": (di, R),
                         p + f"mixer.dt_proj{s}.bias": (di,), p + f"mixer.{a}": (di, N),
                         p + f"mixer.D{s}": (di,)})
    return keys


def test_vim_tiny_state_dict_has_the_official_layout():
    sd = _meta("vim_tiny_patch16_224").state_dict()
    expected = _vim_official_keys(24, 192)
    assert len(expected) == 415
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_vssd_tiny_and_spatialmamba_tiny_official_key_samples():
    vssd = {k: tuple(v.shape) for k, v in _meta("vssd_tiny").state_dict().items()}
    assert len(vssd) == 421
    # tiny stage 1: width 64, d_inner 128, 2 heads, d_state 64 -> in_proj 2*128 + 2*64 + 2 = 386 wide
    assert vssd["layers.0.blocks.0.attn.in_proj.weight"] == (386, 64)
    assert vssd["layers.0.blocks.0.attn.conv2d.weight"] == (256, 1, 3, 3)
    for k in ("dt_bias", "A_log", "D"):
        assert vssd[f"layers.0.blocks.0.attn.{k}"] == (2,)
    assert vssd["layers.3.blocks.0.attn.to_qkv.weight"] == (3 * 512, 512)
    assert vssd["layers.3.blocks.0.attn.to_out.bias"] == (512,)
    assert vssd["layers.0.downsample.conv.0.conv.weight"] == (512, 64, 1, 1)
    assert vssd["layers.0.downsample.conv.2.norm.running_var"] == (128,)
    assert vssd["patch_embed.conv3.1.conv.weight"] == (64, 256, 1, 1)
    assert "layers.3.downsample.conv.0.conv.weight" not in vssd
    sm = {k: tuple(v.shape) for k, v in _meta("spatialmamba_tiny").state_dict().items()}
    p = "layers.0.blocks.1.self_attention."
    assert sm[p + "x_proj_weight"] == (4 + 2, 128) and sm[p + "dt_projs_weight"] == (128, 4)
    assert sm[p + "A_logs"] == (128, 1) and sm[p + "Ds"] == (128,)
    assert sm[p + "state_fusion.kernel_3_2"] == (128, 1, 3, 3) and sm[p + "state_fusion.alpha"] == (3,)
    for k in ("cpe1.weight", "ln_1.weight", "cpe2.bias", "ln_2.bias", "mlp.fc1.weight", "mlp.fc2.weight"):
        assert "layers.0.blocks.1." + k in sm


@pytest.mark.parametrize("name,size", [("test_vim", 32), ("test_vssd", 64), ("test_spatialmamba", 64)])
def test_official_checkpoint_file_loads_through_filter_fn(tmp_path, name, size):
    kwargs = dict(img_size=size, patch_size=8) if name == "test_vim" else {}
    torch.manual_seed(1)
    source = timm.create_model(name, num_classes=7, **kwargs).eval()
    extra = {"model": source.state_dict(), "epoch": 3}  # the official training scripts' wrapping
    path = tmp_path / "official.pth"
    torch.save(extra, path)
    torch.manual_seed(2)
    loaded = timm.create_model(name, pretrained=True, num_classes=7,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=7), **kwargs).eval()
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(loaded(x), source(x))
    # a new class count drops the head and keeps the backbone
    other = timm.create_model(name, pretrained=True, num_classes=3,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=7), **kwargs)
    assert other.get_classifier().out_features == 3
    assert torch.equal(other.state_dict()["layers.0.blocks.0.cpe1.weight" if name != "test_vim"
                                          else "layers.0.mixer.A_b_log"],
                       source.state_dict()["layers.0.blocks.0.cpe1.weight" if name != "test_vim"
                                           else "layers.0.mixer.A_b_log"])


def test_vim_checkpoint_position_embedding_is_resampled_around_the_middle_class_token(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("test_vim", img_size=32, patch_size=8)  # 4x4 grid, class token at index 8
    path = tmp_path / "vim.pth"
    torch.save({"model": source.state_dict()}, path)
    model = timm.create_model("test_vim", img_size=48, patch_size=8, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)))  # 6x6 grid, class token at 18
    old, new = source.pos_embed.detach(), model.pos_embed.detach()
    assert new.shape == (1, 37, 32)
    assert torch.equal(new[:, 18], old[:, 8])
    # a constant grid stays constant under bicubic resampling
    const = torch.cat([torch.ones(1, 8, 2), torch.full((1, 1, 2), 5.0), torch.ones(1, 8, 2)], dim=1)
    out = resample_pos_embed(const, (5, 5), (4, 4))
    assert out.shape == (1, 26, 2) and torch.equal(out[:, 12], const[:, 8])
    torch.testing.assert_close(torch.cat([out[:, :12], out[:, 13:]], 1), torch.ones(1, 25, 2))


def test_bad_inputs_name_the_problem():
    vim = timm.create_model("test_vim", img_size=32, patch_size=8)
    with pytest.raises(ValueError, match=r"32x32 pixels .* got 40x40"):
        vim(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match=r"x must be an image batch \(B, 3, H, W\), got \(1, 1, 32, 32\)"):
        vim(torch.randn(1, 1, 32, 32))
    dynamic = timm.create_model("test_vim", img_size=32, patch_size=8, dynamic_img_size=True)
    assert dynamic(torch.randn(1, 3, 40, 48)).shape == (1, 1000)
    for name in ("test_vssd", "test_spatialmamba"):
        with pytest.raises(ValueError, match=r"\(B, 1, H, W\), got \(1, 3, 64, 64\)"):
            timm.create_model(name, in_chans=1)(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("test_vssd", global_pool="token")
