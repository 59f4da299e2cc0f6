"""nn.Module mixers: sequences (B, L, D), images (B, H, W, C), video (B, T, H, W, C), grids (B, L, V, D)."""
from .mamba import Mamba
from .ss2d import SS2D
from .spatial import StructureAwareSSM
from .chimera2d import Chimera2DSSM
from .convs5 import ConvS5
from .multihead_scan import MultiHeadScan
