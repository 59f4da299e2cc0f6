"""The four-stage channels-last backbone shared by VSSD and Spatial-Mamba (MLLA-style stem and downsampling).

Both official models use the same conv stem (`patch_embed.conv1/conv2/conv3`, 4x down), stages
`layers.{s}.blocks.{j}` each followed by a conv downsampling `layers.{s}.downsample.conv.{0,1,2}` (2x down,
channels doubled), a final LayerNorm `norm`, mean pooling and `head`. Blocks take and return (B, H, W, C).
`HierarchicalBackbone` implements the timm model API on top of that layout; a model supplies the block.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import DropPath, register_notrace_function, trunc_normal_
from timm.models._features import feature_take_indices

from ._capture import shape_str


class ConvLayer(nn.Module):
    """conv -> optional BatchNorm -> optional ReLU (keys `conv`, `norm`)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x) if self.norm is not None else x
        return self.act(x) if self.act is not None else x


class Stem(nn.Module):
    """(B, in_chans, H, W) -> (B, H/4, W/4, dim): conv3x3 s2 -> residual conv pair -> conv3x3 s2 to 4*dim -> 1x1."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        half = dim // 2
        self.conv1 = ConvLayer(in_chans, half, 3, 2, 1, bias=False)
        self.conv2 = nn.Sequential(ConvLayer(half, half, 3, 1, 1, bias=False),
                                   ConvLayer(half, half, 3, 1, 1, bias=False, act=False))
        self.conv3 = nn.Sequential(ConvLayer(half, dim * 4, 3, 2, 1, bias=False),
                                   ConvLayer(dim * 4, dim, 1, bias=False, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv2(x) + x
        return self.conv3(x).permute(0, 2, 3, 1)


class Downsample(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): 1x1 to 8C + ReLU, dw3x3 s2 + ReLU, 1x1 to 2C + BN."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(2 * dim * ratio)
        self.conv = nn.Sequential(ConvLayer(dim, hidden, 1, norm=False),
                                  ConvLayer(hidden, hidden, 3, 2, 1, groups=hidden, norm=False),
                                  ConvLayer(hidden, 2 * dim, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), \
            nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


@register_notrace_function
def check_image(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Raise ValueError naming `x` unless it is (B, in_chans, H, W); returns x (a torch.fx leaf)."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"x must be an image batch (B, {in_chans}, H, W), got {shape_str(x)}")
    return x


def drop_path_or_identity(p: float) -> nn.Module:
    return DropPath(p) if p > 0 else nn.Identity()


class Stage(nn.Module):
    """`blocks` then an optional `downsample` (the official key layout)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.grad_checkpointing = False

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            for blk in self.blocks:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
        else:
            for blk in self.blocks:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.run_blocks(x)
        return self.downsample(x) if self.downsample is not None else x


class HierarchicalBackbone(nn.Module):
    """Stem + stages of `make_block(stage, dim, drop_path)` + LayerNorm + mean pool + head, channels-last.

    forward_features returns the normed (B, H/32, W/32, C) map (`output_fmt = "NHWC"`);
    forward_intermediates returns each stage's output before its downsampling (reductions 4, 8, 16, 32).
    """

    output_fmt = "NHWC"

    def __init__(self, in_chans: int, num_classes: int, global_pool: str, dims: Sequence[int],
                 depths: Sequence[int], make_block: Callable[[int, int, float], nn.Module], drop_rate: float,
                 drop_path_rate: float):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        if len(dims) != len(depths):
            raise ValueError(f"dims {tuple(dims)} and depths {tuple(depths)} must have the same length")
        self.num_classes, self.global_pool, self.in_chans = num_classes, global_pool, in_chans
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = Stem(in_chans, dims[0])
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        layers, start = [], 0
        for s, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [make_block(s, dim, dpr[start + j]) for j in range(depth)]
            layers.append(Stage(blocks, Downsample(dim) if s < len(dims) - 1 else None))
            start += depth
        self.layers = nn.ModuleList(layers)
        self.feature_info = [dict(num_chs=dim, reduction=4 * 2 ** s, module=f"layers.{s}")
                             for s, dim in enumerate(dims)]
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """The official init: trunc-normal(0.02) linear weights with zero bias, unit LayerNorms."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^patch_embed", blocks=r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.downsample", (0,)), (r"^layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(check_image(x, self.in_chans))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Each selected stage's output before downsampling (NCHW or NHWC), plus forward_features' output.
        `norm` is accepted for the timm signature; only the last stage has a norm (`norm`), applied to it."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.layers), indices)
        x = self.patch_embed(check_image(x, self.in_chans))
        last = len(self.layers) - 1
        stages = self.layers if not stop_early or torch.jit.is_scripting() else self.layers[:max_index + 1]
        intermediates = []
        for s, stage in enumerate(stages):
            x = stage.run_blocks(x)
            if s in take:
                out = self.norm(x) if norm and s == last else x
                intermediates.append(out.permute(0, 3, 1, 2) if output_fmt == "NCHW" else out)
            if stage.downsample is not None:
                x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Keep the stages up to the last taken index (its downsampling dropped); optionally drop norm / head."""
        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:max_index + 1]
        self.layers[-1].downsample = None
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take
