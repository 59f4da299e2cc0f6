"""ssmkit.genomics models: one file per published model, plus the RC treatments and the baselines."""
from .baselines import CNN, TransformerLM
from .caduceus import Caduceus, CaduceusPS
from .dnaxlstm import DNAxLSTM
from .hyenadna import HyenaDNA
from .rc import RCPS

__all__ = ["HyenaDNA", "DNAxLSTM", "Caduceus", "CaduceusPS", "RCPS", "CNN", "TransformerLM"]
