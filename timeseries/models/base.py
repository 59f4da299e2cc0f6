"""Base of the forecasting models: the shape contract the task relies on."""
from __future__ import annotations

import torch.nn as nn


class Forecaster(nn.Module):
    """x (B, L, C) [+ x_mark (B, L, K)] -> (B, H, C). Subclasses take `(seq_len, pred_len, enc_in, ...)` first,
    which the task fills in from the data, and keep them as attributes of the same names."""
