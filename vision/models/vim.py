"""Vision Mamba (Vim, Zhu et al. 2024; hustvl/Vim) in the timm registry.

Patch embedding -> class token inserted in the middle of the patch sequence -> absolute position embedding ->
`depth` bidirectional Mamba (bimamba v2) blocks in mamba_ssm's add-then-norm order -> final RMSNorm -> the
class token -> linear head. Parameter names equal the official checkpoints (`patch_embed.proj`, `cls_token`,
`pos_embed`, `layers.{i}.norm`, `layers.{i}.mixer.*` incl. the `_b` backward branch, `norm_f`, `head`), so
they load through `checkpoint_filter_fn` with no renames; only the position embedding is resampled when the
patch grid differs.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, lecun_normal_, register_notrace_function, register_notrace_module, \
    resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ssmkit.core.blocks import RMSNorm
from ssmkit.core.layers import BiMamba
from ssmkit.core.ops.bimamba_scan import bimamba_conv, bimamba_scan

from ._capture import capturing, shape_str

__all__ = ["VisionMamba", "VimBlock", "VimMixer", "checkpoint_filter_fn"]

# torch.fx leaf: the dtype-dependent RMSNorm
register_notrace_module(RMSNorm)


def scan_branch_ops(xs: torch.Tensor, z: torch.Tensor, conv_weight: torch.Tensor, conv_bias: Optional[torch.Tensor],
                    x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor, dt_proj_bias: torch.Tensor,
                    A_log: torch.Tensor, D: torch.Tensor, d_state: int) -> torch.Tensor:
    """One direction of the bimamba-v2 mixer on (B, d_inner, L) with the registered scan op: causal depthwise
    conv + SiLU -> x_proj -> dt_proj -> selective scan gated by SiLU(z) (core's `_scan_branch`, scriptable)."""
    width = conv_weight.shape[-1]
    xs = F.silu(F.conv1d(F.pad(xs, [width - 1, 0]), conv_weight, conv_bias, 1, 0, 1, xs.shape[1]))
    dt, B, C = F.linear(xs.transpose(1, 2), x_proj_weight).split([dt_proj_weight.shape[1], d_state, d_state], -1)
    dt = F.linear(dt, dt_proj_weight)
    f = torch.float64 if xs.dtype == torch.float64 else torch.float32
    return torch.ops.ssmkit.selective_scan(xs, dt.transpose(1, 2), -torch.exp(A_log.to(f)), B.transpose(1, 2),
                                           C.transpose(1, 2), D.to(f), z, dt_proj_bias.to(f), True)


@register_notrace_module
class VimMixer(BiMamba):
    """Core's bimamba-v2 `BiMamba` (same parameters and keys) with a graph-capture path (`forward_ops`) and a fused
    inference path (`forward_fused`, taken when no gradient is recorded); training runs `BiMamba.forward`."""

    def __init__(self, d_model: int, d_state: int = 16, backend: str = "auto"):
        super().__init__(d_model, variant="v2", divide_out=True, d_state=d_state, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.forward_ops(x)
        else:
            return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if capturing():
            return self.forward_ops(x)
        if not torch.is_grad_enabled() and x.dtype in (torch.float32, torch.float64):
            return self.forward_fused(x)
        return BiMamba.forward(self, x)

    @torch.jit.unused
    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: both directions' conv + SiLU in one `bimamba_conv` and both scans in one `bimamba_scan`, over
        the time-ordered layer outputs. The backward branch's causal conv of the flipped sequence is the anti-causal
        conv (reversed taps) of the sequence itself, so nothing is flipped; the cpp backends read in_proj's output
        in place and write channel-contiguous u, v that x_proj and the scan read without a copy."""
        di, R = self.conv1d.weight.shape[0], self.dt_proj.weight.shape[1]
        xz = self.in_proj(x)                                                        # (B, L, 2 d_inner)
        u_f, u_b = bimamba_conv(xz[..., :di].transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias,
                                self.conv1d_b.weight[:, 0], self.conv1d_b.bias, backend=self.backend)
        bc_f = F.linear(u_f.transpose(1, 2), self.x_proj.weight)                  # (B, L, R + 2N): dt, B, C
        bc_b = F.linear(u_b.transpose(1, 2), self.x_proj_b.weight)
        dt_f, dt_b = F.linear(bc_f[..., :R], self.dt_proj.weight), F.linear(bc_b[..., :R], self.dt_proj_b.weight)
        # the parameters have x's dtype here (float32 / float64: in_proj took x); the cpp backend converts any other
        y = bimamba_scan(u_f, u_b, dt_f, dt_b, bc_f, bc_b, -torch.exp(self.A_log), -torch.exp(self.A_b_log), self.D,
                         self.D_b, self.dt_proj.bias, self.dt_proj_b.bias, xz[..., di:], R, True,
                         0.5 if self.divide_out else 1.0, backend=self.backend)
        return self.out_proj(y)

    def forward_ops(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model): out_proj((y_f + flip(y_b)) / 2), scans as registered ops."""
        xs, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)
        y_f = scan_branch_ops(xs, z, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                              self.dt_proj.bias, self.A_log, self.D, self.d_state)
        y_b = scan_branch_ops(xs.flip([-1]), z.flip([-1]), self.conv1d_b.weight, self.conv1d_b.bias,
                              self.x_proj_b.weight, self.dt_proj_b.weight, self.dt_proj_b.bias, self.A_b_log,
                              self.D_b, self.d_state)
        y = y_f + y_b.flip([-1])
        if self.divide_out:
            y = y / 2
        return self.out_proj(y.transpose(1, 2))


@register_notrace_module
class VimBlock(nn.Module):
    """Vim's block in mamba_ssm's add-then-norm order (keys `norm`, `mixer`):
    residual' = residual + drop_path(hidden); returns (mixer(norm(residual')), residual').

    `residual_in_fp32` keeps the running residual in fp32 under mixed precision (fp64 stays fp64)."""

    def __init__(self, dim: int, mixer: nn.Module, norm: nn.Module, residual_in_fp32: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.mixer, self.norm, self.residual_in_fp32 = mixer, norm, residual_in_fp32
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden: torch.Tensor, residual: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        if self.residual_in_fp32 and residual.dtype != torch.float64:
            residual = residual.float()
        return self.mixer(self.norm(residual.to(self.norm.weight.dtype))), residual


@register_notrace_module
class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, D, gh, gw) with a kernel-`patch_size`, stride-`stride` conv (stride < patch overlaps).

    With `strict_img_size` the input must be `img_size`; otherwise any size >= patch_size is accepted.
    """

    def __init__(self, img_size=224, patch_size=16, stride=16, in_chans=3, embed_dim=192,
                 strict_img_size: bool = True):
        super().__init__()
        self.img_size, self.patch_size, self.stride = to_2tuple(img_size), to_2tuple(patch_size), to_2tuple(stride)
        self.in_chans, self.strict_img_size = in_chans, strict_img_size
        self.grid_size = self.dynamic_grid(self.img_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.stride)

    def dynamic_grid(self, size) -> Tuple[int, int]:
        return tuple((s - p) // st + 1 for s, p, st in zip(size, self.patch_size, self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"x must be an image batch (B, {self.in_chans}, H, W), got {shape_str(x)}")
        h, w = x.shape[-2], x.shape[-1]
        if self.strict_img_size and (h != self.img_size[0] or w != self.img_size[1]):
            raise ValueError(f"x must be {self.img_size[0]}x{self.img_size[1]} pixels for this model, got "
                             f"{h}x{w}; create it with img_size=({h}, {w}) or dynamic_img_size=True")
        if h < self.patch_size[0] or w < self.patch_size[1]:
            raise ValueError(f"x must be at least {self.patch_size[0]}x{self.patch_size[1]} pixels, got {h}x{w}")
        return self.proj(x)


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: List[int], old_grid: List[int]) -> torch.Tensor:
    """Resample a (1, gh*gw + 1, D) embedding whose class token sits at index gh*gw // 2 to a new grid."""
    n_old = old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != n_old + 1:
        raise ValueError(f"pos_embed must have {n_old + 1} tokens for grid {old_grid}, got {shape_str(pos_embed)}")
    if new_grid[0] == old_grid[0] and new_grid[1] == old_grid[1]:
        return pos_embed
    mid = n_old // 2
    cls = pos_embed[:, mid:mid + 1]
    grid = torch.cat([pos_embed[:, :mid], pos_embed[:, mid + 1:]], dim=1)
    grid = resample_abs_pos_embed(grid, [new_grid[0], new_grid[1]], [old_grid[0], old_grid[1]], num_prefix_tokens=0)
    mid_new = new_grid[0] * new_grid[1] // 2
    return torch.cat([grid[:, :mid_new], cls, grid[:, mid_new:]], dim=1)


@register_notrace_function
def embed_tokens(patches: torch.Tensor, cls_token: torch.Tensor, pos_embed: torch.Tensor,
                 grid: List[int]) -> torch.Tensor:
    """(B, D, gh, gw) patches -> (B, M + 1, D) tokens with the class token at M // 2, plus position embedding."""
    x = patches.flatten(2).transpose(1, 2)
    mid = x.shape[1] // 2
    x = torch.cat([x[:, :mid], cls_token.expand(x.shape[0], -1, -1), x[:, mid:]], dim=1)
    return x + resample_pos_embed(pos_embed, [patches.shape[-2], patches.shape[-1]], grid)


@register_notrace_function
def pool_tokens(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """'token': the middle class token; 'avg': mean of the patch tokens; '': all tokens."""
    mid = (x.shape[1] - 1) // 2
    if pool_type == "token":
        return x[:, mid]
    if pool_type == "avg":
        return torch.cat([x[:, :mid], x[:, mid + 1:]], dim=1).mean(1)
    return x


@register_notrace_function
def tokens_to_nchw(x: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """(B, M + 1, D) with the middle class token -> patch tokens as (B, D, gh, gw)."""
    mid = (x.shape[1] - 1) // 2
    x = torch.cat([x[:, :mid], x[:, mid + 1:]], dim=1)
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid_hw[0], grid_hw[1])


class VisionMamba(nn.Module):
    """Vim backbone + classifier (see the module docstring). forward_features returns (B, M + 1, D) tokens.

    stride defaults to patch_size (non-overlapping patches); dynamic_img_size resamples the position embedding
    to any input size, otherwise the input must be img_size. drop_path_rate defaults to 0 as in timm (the
    paper trains with 0.1 / 0.05 / ...; pass it explicitly).
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, stride: Optional[int] = None,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = "token", embed_dim: int = 192,
                 depth: int = 24, d_state: int = 16, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-5, residual_in_fp32: bool = True, dynamic_img_size: bool = False,
                 backend: str = "auto"):
        super().__init__()
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens, self.grad_checkpointing = 1, False
        self.dynamic_img_size = dynamic_img_size
        self.patch_embed = PatchEmbed(img_size, patch_size, stride or patch_size, in_chans, embed_dim,
                                      strict_img_size=not dynamic_img_size)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [0.0] + [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # Vim's schedule, shifted
        self.layers = nn.ModuleList(
            VimBlock(embed_dim, VimMixer(embed_dim, d_state=d_state, backend=backend),
                     norm=RMSNorm(embed_dim, eps=norm_eps), residual_in_fp32=residual_in_fp32, drop_path=dpr[i])
            for i in range(depth))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = RMSNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        r = self.patch_embed.stride[0]
        self.feature_info = [dict(module=f"layers.{i}", num_chs=embed_dim, reduction=r) for i in range(depth)]
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Vim's init: lecun-normal patch conv, trunc-normal tokens/head, zero linear biases (dt biases keep
        their dt init), out_proj rescaled by 1/sqrt(depth)."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        for layer in self.layers:
            for m in layer.modules():
                if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                    nn.init.zeros_(m.bias)
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(depth)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^layers\.(\d+)", None),
                                                                       (r"^norm_f", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        if global_pool is not None:
            if global_pool not in ("token", "avg", ""):
                raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.patch_embed.grid_size
        return self.pos_drop(embed_tokens(self.patch_embed(x), self.cls_token, self.pos_embed, [grid[0], grid[1]]))

    @torch.jit.unused
    def _run_layer(self, layer: nn.Module, hidden, residual):
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, hidden, residual, use_reentrant=False)
        return layer(hidden, residual)

    def _final(self, hidden: torch.Tensor, residual: Optional[torch.Tensor]) -> torch.Tensor:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        return self.norm_f(residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self._embed(x)
        residual: Optional[torch.Tensor] = None
        for layer in self.layers:
            if torch.jit.is_scripting():
                hidden, residual = layer(hidden, residual)
            else:
                hidden, residual = self._run_layer(layer, hidden, residual)
        return self._final(hidden, residual).to(hidden.dtype)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(pool_tokens(x, self.global_pool))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The residual stream after each selected block (optionally through norm_f), as NCHW patch maps or
        NLC token sequences (class token kept in place), plus the final forward_features output."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if return_prefix_tokens:
            raise ValueError("return_prefix_tokens is not supported: the class token sits mid-sequence; use "
                             "output_fmt='NLC' to keep it")
        take, max_index = feature_take_indices(len(self.layers), indices)
        grid_hw = self.patch_embed.dynamic_grid(x.shape[-2:])
        hidden, residual = self._embed(x), None
        layers = self.layers if not stop_early or torch.jit.is_scripting() else self.layers[:max_index + 1]
        intermediates = []
        for i, layer in enumerate(layers):
            hidden, residual = self._run_layer(layer, hidden, residual)
            if i in take:
                stream = (hidden + residual).to(hidden.dtype)
                stream = self.norm_f(stream) if norm else stream
                intermediates.append(tokens_to_nchw(stream, grid_hw) if output_fmt == "NCHW" else stream)
        if intermediates_only:
            return intermediates
        return self._final(hidden, residual).to(hidden.dtype), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the blocks after the last taken index (and optionally norm_f / head); returns the indices."""
        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:max_index + 1]
        if prune_norm:
            self.norm_f = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


def checkpoint_filter_fn(state_dict: dict, model: VisionMamba) -> dict:
    """Official Vim checkpoint (optionally wrapped in {"model": ...}) -> this model's state_dict.

    Keys are the same; the position embedding is resampled to the model's patch grid and the patch conv to
    its patch size when they differ.
    """
    state_dict = state_dict.get("model", state_dict)
    out = {}
    for k, v in state_dict.items():
        if k == "pos_embed" and v.shape != model.pos_embed.shape:
            n = v.shape[1] - 1
            side = int(math.isqrt(n))
            if side * side != n:
                raise ValueError(f"checkpoint pos_embed {tuple(v.shape)} is not a square grid plus a class token")
            v = resample_pos_embed(v, model.patch_embed.grid_size, (side, side))
        elif k == "patch_embed.proj.weight" and v.shape[-2:] != model.patch_embed.proj.weight.shape[-2:]:
            v = nn.functional.interpolate(v.float(), size=model.patch_embed.patch_size, mode="bicubic",
                                          align_corners=False).to(v.dtype)
        out[k] = v
    return out


def _create(variant: str, pretrained: bool = False, **kwargs) -> VisionMamba:
    return build_model_with_cfg(VisionMamba, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=3, feature_cls="getter"), **kwargs)


def _cfg(hf_file: Optional[str] = None, hf_hub_id: Optional[str] = None, **kwargs) -> dict:
    cfg = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.875, interpolation="bicubic",
               fixed_input_size=True, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
               first_conv="patch_embed.proj", classifier="head", license="apache-2.0",
               paper_ids="arXiv:2401.09417")
    if hf_file:
        cfg.update(hf_hub_id=hf_hub_id, hf_hub_filename=hf_file)
    return {**cfg, **kwargs}


default_cfgs = generate_default_cfgs({
    "vim_tiny_patch16_224.in1k": _cfg("vim_t_midclstok_76p1acc.pth", "hustvl/Vim-tiny-midclstok"),
    "vim_small_patch16_224.in1k": _cfg("vim_s_midclstok_80p5acc.pth", "hustvl/Vim-small-midclstok"),
    "vim_base_patch16_224.in1k": _cfg("vim_b_midclstok_81p9acc.pth", "hustvl/Vim-base-midclstok"),
    "vim_tiny_patch16_stride8_224.in1k": _cfg("vim_t+_midclstok_ft_78p3acc.pth", "hustvl/Vim-tiny-midclstok"),
    "vim_small_patch16_stride8_224.in1k": _cfg("vim_s+_midclstok_ft_81p6acc.pth", "hustvl/Vim-small-midclstok"),
    "vim_base_patch16_stride8_224": _cfg(),
    "test_vim.r160": _cfg(input_size=(3, 160, 160), crop_pct=0.95),
})


@register_model
def vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti: D=192, 24 blocks, 7.15M parameters."""
    return _create("vim_tiny_patch16_224", pretrained, **dict(dict(embed_dim=192, depth=24), **kwargs))


@register_model
def vim_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S: D=384, 24 blocks, 25.80M parameters."""
    return _create("vim_small_patch16_224", pretrained, **dict(dict(embed_dim=384, depth=24), **kwargs))


@register_model
def vim_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-B: D=768, 24 blocks, 97.60M parameters."""
    return _create("vim_base_patch16_224", pretrained, **dict(dict(embed_dim=768, depth=24), **kwargs))


@register_model
def vim_tiny_patch16_stride8_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti+: overlapping 16x16 patches at stride 8 (27x27 grid), 7.25M parameters."""
    return _create("vim_tiny_patch16_stride8_224", pretrained,
                   **dict(dict(embed_dim=192, depth=24, stride=8), **kwargs))


@register_model
def vim_small_patch16_stride8_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S+: Vim-S with 16x16 patches at stride 8."""
    return _create("vim_small_patch16_stride8_224", pretrained,
                   **dict(dict(embed_dim=384, depth=24, stride=8), **kwargs))


@register_model
def vim_base_patch16_stride8_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-B with 16x16 patches at stride 8 (no official weights)."""
    return _create("vim_base_patch16_stride8_224", pretrained,
                   **dict(dict(embed_dim=768, depth=24, stride=8), **kwargs))


@register_model
def test_vim(pretrained: bool = False, **kwargs) -> VisionMamba:
    """A 4-block, D=32 Vim at 160 px for fast tests (as timm's `test_*` models)."""
    return _create("test_vim", pretrained,
                   **dict(dict(img_size=160, embed_dim=32, depth=4, d_state=4, patch_size=16), **kwargs))
