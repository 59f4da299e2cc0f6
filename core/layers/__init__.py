"""nn.Module mixers: sequences (B, L, D), images (B, H, W, C), video (B, T, H, W, C), grids (B, L, V, D)."""
from .mamba import Mamba
from .bimamba import BiMamba, partial_flip
from .mamba2 import Mamba2
from .hydra import Hydra
