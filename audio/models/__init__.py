"""ssmkit.audio models: one file per published model."""
from .sashimi import SaShiMi, SaShiMiState
from .wavenet import WaveNet

__all__ = ["SaShiMi", "SaShiMiState", "WaveNet"]
