"""ssmkit.recsys: sequential recommenders (SASRec, GRU4Rec, Mamba4Rec, SIGMA, TiM4Rec) under the RecBole
leave-one-out protocol, with full-sort evaluation, fine-tuning on new items and streaming inference.
Needs the `recsys` extra."""
from ssmkit.extras import require_extra

require_extra("recsys", ["pandas"])

from .data import SequentialDataModule  # noqa: E402
from .models import GRU4Rec, Mamba4Rec, SASRec, SIGMA, TiM4Rec  # noqa: E402
from .recommend import recommend  # noqa: E402
from .task import SequentialRecTask  # noqa: E402

__all__ = ["SequentialDataModule", "SIGMA", "TiM4Rec", "SASRec", "GRU4Rec", "Mamba4Rec", "SequentialRecTask",
           "recommend"]
