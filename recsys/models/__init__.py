"""Sequential recommenders: SASRec, GRU4Rec, Mamba4Rec, SIGMA, TiM4Rec (one file each)."""
from .base import SequentialRecommender
from .gru4rec import GRU4Rec
from .mamba4rec import Mamba4Rec
from .sasrec import SASRec
from .sigma import SIGMA
from .tim4rec import TiM4Rec

__all__ = ["SequentialRecommender", "SASRec", "GRU4Rec", "Mamba4Rec", "SIGMA", "TiM4Rec"]
