"""VSSD: Vision Mamba with non-causal state space duality (Shi et al. 2024; YuHengsss/VSSD) in the timm registry.

Four channels-last stages (see `_hierarchical`); stages 1-3 use NC-SSD blocks, the last stage softmax
attention. Each block: x += cpe1(x); x += dp(attn(norm1 x)); x += cpe2(x); x += dp(mlp(norm2 x)).
Parameter names equal the official checkpoints (`layers.{s}.blocks.{j}.{cpe1, norm1, attn.*, cpe2, norm2,
mlp.fc1, mlp.fc2}`), so they load with no renames.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ssmkit.core.init import init_dt_bias, mamba2_A_log, set_optim
from ssmkit.core.ops import ssd_noncausal

from ._capture import capturing, shape_str
from ._hierarchical import HierarchicalBackbone, Mlp, drop_path_or_identity

__all__ = ["VSSD", "NonCausalSSD", "checkpoint_filter_fn"]


@register_notrace_module
class NonCausalSSD(nn.Module):
    """VSSD's NC-SSD mixer on (B, H, W, C) maps.

    in_proj -> [z, xBC, dt]; xBC -> depthwise kxk conv + SiLU -> (x, B, C); per head a = softplus(dt + dt_bias)
    * exp(A_log) (VSSD's positive dA); y = C (B^T (a x)) + D x over the whole image (order-free);
    out_proj(LayerNorm(y) * z) (z has no activation in VSSD).
    """

    def __init__(self, d_model: int, num_heads: int, d_state: int = 64, expand: int = 2, d_conv: int = 3,
                 A_init_range=(1, 16), dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, backend: str = "auto"):
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide expand * d_model = {self.d_inner}")
        self.d_model, self.nheads, self.d_state, self.backend = d_model, num_heads, d_state, backend
        self.headdim = self.d_inner // num_heads
        conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + num_heads, bias=bias)
        self.conv2d = nn.Conv2d(conv_dim, conv_dim, d_conv, padding=(d_conv - 1) // 2, groups=conv_dim,
                                bias=conv_bias)
        self.dt_bias = nn.Parameter(init_dt_bias(num_heads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(mamba2_A_log(num_heads, A_init_range))
        self.D = nn.Parameter(torch.ones(num_heads))
        for p in (self.dt_bias, self.A_log, self.D):
            set_optim(p, weight_decay=0.0)
        self.norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 4 or u.shape[-1] != self.d_model:
            raise ValueError(f"u must be (B, H, W, {self.d_model}) channels-last, got {shape_str(u)}")
        Bsz, H, W = u.shape[0], u.shape[1], u.shape[2]
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * self.d_state, self.nheads], dim=-1)
        xBC = F.silu(self.conv2d(xBC.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).reshape(Bsz, H * W, -1)
        x, Bm, Cm = xBC.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.unflatten(-1, (self.nheads, self.headdim))
        dt = dt.reshape(Bsz, H * W, self.nheads)
        A = torch.exp(self.A_log.to(torch.float64 if u.dtype == torch.float64 else torch.float32))
        if torch.jit.is_scripting():
            y = torch.ops.ssmkit.ssd_noncausal(x, dt, A, Bm.unsqueeze(2), Cm.unsqueeze(2), self.D, self.dt_bias, True)
        else:
            y = self._scan_eager(x, dt, A, Bm.unsqueeze(2), Cm.unsqueeze(2))
        y = self.norm(y.reshape(Bsz, H, W, self.d_inner)) * z
        return self.out_proj(y)

    @torch.jit.unused
    def _scan_eager(self, x, dt, A, Bm, Cm):
        """The public op (any backend), or its registered custom op while dynamo traces."""
        if capturing():
            return torch.ops.ssmkit.ssd_noncausal(x, dt, A, Bm, Cm, self.D, self.dt_bias, True)
        return ssd_noncausal(x, dt, A, Bm, Cm, self.D, self.dt_bias, dt_softplus=True, backend=self.backend)


@register_notrace_module
class StandardAttention(nn.Module):
    """Softmax multi-head self-attention over all positions of a (B, H, W, C) map (keys to_qkv, to_out)."""

    def __init__(self, dim: int, heads: int, drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        self.heads, self.drop = heads, drop
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(1, 2)
        q, k, v = self.to_qkv(tokens).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).flatten(2)).view_as(x)


@register_notrace_module
class VSSDBlock(nn.Module):
    """cpe1 -> norm1 -> attn (NC-SSD or softmax) -> cpe2 -> norm2 -> MLP, all residual, on (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, attn_type: str = "mamba2", mlp_ratio: float = 4.0,
                 d_state: int = 64, ssd_expansion: int = 2, drop: float = 0.0, drop_path: float = 0.0,
                 backend: str = "auto"):
        super().__init__()
        if attn_type not in ("mamba2", "standard"):
            raise ValueError(f"attn_type must be 'mamba2' or 'standard', got {attn_type!r}")
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = (NonCausalSSD(dim, num_heads, d_state, ssd_expansion, backend=backend) if attn_type == "mamba2"
                     else StandardAttention(dim, num_heads, drop))
        self.drop_path = drop_path_or_identity(drop_path)
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe1(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.cpe2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VSSD(HierarchicalBackbone):
    """VSSD classifier; stage s has width embed_dim * 2**s. forward_features is (B, H/32, W/32, C)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg", embed_dim: int = 64,
                 depths=(2, 4, 8, 4), num_heads=(2, 4, 8, 16), attn_types=("mamba2", "mamba2", "mamba2", "standard"),
                 mlp_ratio: float = 4.0, d_state: int = 64, ssd_expansion: int = 2, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, backend: str = "auto"):
        if not len(depths) == len(num_heads) == len(attn_types):
            raise ValueError(f"depths, num_heads and attn_types must have equal lengths, got {depths}, "
                             f"{num_heads}, {attn_types}")
        dims = [embed_dim * 2 ** s for s in range(len(depths))]

        def make_block(s: int, dim: int, dp: float) -> nn.Module:
            return VSSDBlock(dim, num_heads[s], attn_types[s], mlp_ratio, d_state, ssd_expansion, drop_rate, dp,
                             backend)
        super().__init__(in_chans, num_classes, global_pool, dims, depths, make_block, drop_rate, drop_path_rate)


def checkpoint_filter_fn(state_dict: dict, model: VSSD) -> dict:
    """Official VSSD checkpoint (optionally under "model") -> this model's state_dict; keys are the same.

    Keys of official modules this model does not have (e.g. a detection backbone's `outnorm{i}`) are dropped.
    """
    state_dict = state_dict.get("model", state_dict)
    own = model.state_dict()
    return {k: v for k, v in state_dict.items() if k in own}


def _create(variant: str, pretrained: bool = False, **kwargs) -> VSSD:
    return build_model_with_cfg(VSSD, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"), **kwargs)


def _cfg(file: str = None, **kwargs) -> dict:
    cfg = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
               interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
               first_conv="patch_embed.conv1.conv", classifier="head", license="apache-2.0",
               paper_ids="arXiv:2407.18559")
    if file:
        cfg.update(hf_hub_id="YuhengSSS/VSSD", hf_hub_filename=file)
    return {**cfg, **kwargs}


default_cfgs = generate_default_cfgs({
    "vssd_micro.in1k": _cfg("vssd_micro_best.pth"),
    "vssd_tiny.in1k": _cfg("vssd_tiny_best_ema.pth"),
    "vssd_small.in1k": _cfg("vssd_small_best_ema.pth"),
    "vssd_base.in1k": _cfg("vssd_base_best_ema.pth"),
    "test_vssd.r160": _cfg(input_size=(3, 160, 160), pool_size=(5, 5), crop_pct=0.95),
})


@register_model
def vssd_micro(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Micro: 48 / (2, 2, 8, 4), d_state 48, 13.51M parameters."""
    return _create("vssd_micro", pretrained, **dict(dict(embed_dim=48, depths=(2, 2, 8, 4), d_state=48), **kwargs))


@register_model
def vssd_tiny(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Tiny: 64 / (2, 4, 8, 4), 24.27M parameters."""
    return _create("vssd_tiny", pretrained, **dict(dict(embed_dim=64, depths=(2, 4, 8, 4)), **kwargs))


@register_model
def vssd_small(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Small: 64 / (3, 4, 21, 5), 40.08M parameters."""
    return _create("vssd_small", pretrained, **dict(dict(embed_dim=64, depths=(3, 4, 21, 5)), **kwargs))


@register_model
def vssd_base(pretrained: bool = False, **kwargs) -> VSSD:
    """VSSD-Base: 96 / (3, 4, 21, 5), heads (3, 6, 12, 24), 88.82M parameters."""
    return _create("vssd_base", pretrained, **dict(dict(embed_dim=96, depths=(3, 4, 21, 5),
                                                         num_heads=(3, 6, 12, 24)), **kwargs))


@register_model
def test_vssd(pretrained: bool = False, **kwargs) -> VSSD:
    """A 16-wide, (1, 1, 1, 1)-deep VSSD for fast tests."""
    return _create("test_vssd", pretrained, **dict(dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                                                         d_state=8), **kwargs))
