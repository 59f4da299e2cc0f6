"""Spatial-Mamba (Xiao et al. 2025; EdwardChasel/Spatial-Mamba) in the timm registry.

Four channels-last stages (see `_hierarchical`) of blocks x += cpe1(x); x += dp(SASF-SSM(ln_1 x));
x += cpe2(x); x += dp(mlp(ln_2 x)), the SSM being core's `StructureAwareSSM` (raster scan that returns states,
dilated depthwise state fusion, read-out). Parameter names equal the official checkpoints
(`layers.{s}.blocks.{j}.{cpe1, ln_1, self_attention.*, cpe2, ln_2, mlp.fc1, mlp.fc2}`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ssmkit.core.layers import StructureAwareSSM

from ._capture import capturing
from ._hierarchical import HierarchicalBackbone, Mlp, drop_path_or_identity

__all__ = ["SASFMixer", "SpatialMamba", "checkpoint_filter_fn"]


@register_notrace_module
class SASFMixer(StructureAwareSSM):
    """Core's `StructureAwareSSM` (same parameters and keys) with a graph-capture path, `forward_ops`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.forward_ops(x)
        else:
            return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_ops(x) if capturing() else StructureAwareSSM.forward(self, x)

    def forward_ops(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, d_model) -> same: conv + SiLU, the state-returning scan as a registered op, state fusion,
        read-out C . h' + D x, LayerNorm, SiLU(z) gate, out_proj."""
        Bsz, H, W = x.shape[0], x.shape[1], x.shape[2]
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv2d(xs.permute(0, 3, 1, 2))).flatten(2)                  # (B, d_inner, L)
        dt, Bm, Cm = F.linear(u.transpose(1, 2), self.x_proj_weight.to(u.dtype)).split(
            [self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.linear(dt, self.dt_projs_weight.to(u.dtype))
        f = torch.float64 if u.dtype == torch.float64 else torch.float32
        h = torch.ops.ssmkit.selective_scan_states(u, dt.transpose(1, 2), -torch.exp(self.A_logs.to(f)),
                                                   Bm.transpose(1, 2), self.dt_projs_bias.to(f), True)
        N = h.shape[-1]                                                             # h (B, d_inner, L, N)
        maps = h.permute(0, 3, 1, 2).reshape(Bsz * N, self.d_inner, H, W)
        h = self.state_fusion(maps).reshape(Bsz, N, self.d_inner, H * W)            # (B, N, d_inner, L)
        y = (h * Cm.to(f).transpose(1, 2).unsqueeze(2)).sum(1) + self.Ds.to(f)[:, None] * u.to(f)
        y = self.out_norm(y.transpose(1, 2).reshape(Bsz, H, W, self.d_inner).to(x.dtype)) * F.silu(z)
        return self.out_proj(y)


@register_notrace_module
class SpatialMambaBlock(nn.Module):
    """cpe1 -> ln_1 -> StructureAwareSSM -> cpe2 -> ln_2 -> MLP, all residual, on (B, H, W, C)."""

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 2.0, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SASFMixer(dim, d_state=d_state, ssm_ratio=ssm_ratio, backend=backend)
        self.drop_path = drop_path_or_identity(drop_path)
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe1(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.self_attention(self.ln_1(x)))
        x = x + self.cpe2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(self.ln_2(x)))


class SpatialMamba(HierarchicalBackbone):
    """Spatial-Mamba classifier; stage s has width embed_dim * 2**s. forward_features is (B, H/32, W/32, C)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg", embed_dim: int = 64,
                 depths=(2, 4, 8, 4), d_state: int = 1, ssm_ratio: float = 2.0, mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, backend: str = "auto"):
        dims = [embed_dim * 2 ** s for s in range(len(depths))]

        def make_block(s: int, dim: int, dp: float) -> nn.Module:
            return SpatialMambaBlock(dim, d_state, ssm_ratio, mlp_ratio, drop_rate, dp, backend)
        super().__init__(in_chans, num_classes, global_pool, dims, depths, make_block, drop_rate, drop_path_rate)


def checkpoint_filter_fn(state_dict: dict, model: SpatialMamba) -> dict:
    """Official Spatial-Mamba checkpoint (optionally under "model") -> this model's state_dict; keys are the
    same. The CUDA eval path's cached `state_fusion._merge_weight` (if saved) and other foreign keys are
    dropped; the three fusion kernels and alpha it is computed from are kept."""
    state_dict = state_dict.get("model", state_dict)
    own = model.state_dict()
    return {k: v for k, v in state_dict.items() if k in own}


def _create(variant: str, pretrained: bool = False, **kwargs) -> SpatialMamba:
    return build_model_with_cfg(SpatialMamba, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"), **kwargs)


def _cfg(**kwargs) -> dict:
    """Official weights are on Google Drive (no hub id): load them with pretrained_cfg_overlay=dict(file=...)."""
    return {**dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                   interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                   first_conv="patch_embed.conv1.conv", classifier="head", license="apache-2.0",
                   paper_ids="arXiv:2410.15091"), **kwargs}


default_cfgs = generate_default_cfgs({
    "spatialmamba_tiny.in1k": _cfg(),
    "spatialmamba_small.in1k": _cfg(),
    "spatialmamba_base.in1k": _cfg(),
    "test_spatialmamba.r160": _cfg(input_size=(3, 160, 160), pool_size=(5, 5), crop_pct=0.95),
})


@register_model
def spatialmamba_tiny(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-T: 64 / (2, 4, 8, 4), 26.75M parameters."""
    return _create("spatialmamba_tiny", pretrained, **dict(dict(embed_dim=64, depths=(2, 4, 8, 4)), **kwargs))


@register_model
def spatialmamba_small(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-S: 64 / (2, 4, 21, 5), 43.07M parameters."""
    return _create("spatialmamba_small", pretrained, **dict(dict(embed_dim=64, depths=(2, 4, 21, 5)), **kwargs))


@register_model
def spatialmamba_base(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-B: 96 / (2, 4, 21, 5), 95.75M parameters."""
    return _create("spatialmamba_base", pretrained, **dict(dict(embed_dim=96, depths=(2, 4, 21, 5)), **kwargs))


@register_model
def test_spatialmamba(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """A 16-wide, (1, 1, 1, 1)-deep Spatial-Mamba for fast tests."""
    return _create("test_spatialmamba", pretrained, **dict(dict(embed_dim=16, depths=(1, 1, 1, 1)), **kwargs))
