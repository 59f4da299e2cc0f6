"""nn.Module mixers: sequences (B, L, D), images (B, H, W, C), video (B, T, H, W, C), grids (B, L, V, D).

Every mixer follows the contract written in `ssmkit.core.layers.contract`; the recurrent ones come with their
state type (a NamedTuple). A mixer joins the contract test (tests/core/test_mixer_contract.py) by being listed
in `__all__` here.
"""
from .mamba import Mamba, MambaState
from .s4 import S4, S4D, S4State
from .xlstm import mLSTM, mLSTMState, sLSTM, sLSTMState
from .companion import ClosedLoopCompanionSSM, CompanionSSM, CompanionState
from .hyena import Hyena
from .bimamba import BiMamba, partial_flip
from .mamba2 import Mamba2, Mamba2State
from .hydra import Hydra
from .ss2d import SS2D
from .spatial import StructureAwareSSM
from .chimera2d import Chimera2DSSM
from .convs5 import ConvS5, ConvS5State
from .multihead_scan import MultiHeadScan

__all__ = ["Mamba", "MambaState", "S4", "S4D", "S4State", "mLSTM", "mLSTMState", "sLSTM", "sLSTMState",
           "CompanionSSM", "ClosedLoopCompanionSSM", "CompanionState", "Hyena", "BiMamba", "partial_flip", "Mamba2",
           "Mamba2State", "Hydra", "SS2D", "StructureAwareSSM", "Chimera2DSSM", "ConvS5", "ConvS5State",
           "MultiHeadScan"]
