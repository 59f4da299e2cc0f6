"""Published forecasting models, one file each; all map x (B, L, C) [+ x_mark] to a forecast (B, H, C)."""
from .linear import DLinear, NLinear
from .s_mamba import SMamba
from .spacetime import SpaceTime
from .chimera import Chimera
