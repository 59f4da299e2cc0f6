"""nn.Module mixers: sequences (B, L, D), images (B, H, W, C), video (B, T, H, W, C), grids (B, L, V, D)."""
from .mamba import Mamba
from .s4 import S4, S4D
from .xlstm import mLSTM, sLSTM
from .companion import ClosedLoopCompanionSSM, CompanionSSM
from .hyena import Hyena
from .bimamba import BiMamba, partial_flip
from .mamba2 import Mamba2
from .hydra import Hydra
from .ss2d import SS2D
from .spatial import StructureAwareSSM
from .chimera2d import Chimera2DSSM
from .convs5 import ConvS5
from .multihead_scan import MultiHeadScan
