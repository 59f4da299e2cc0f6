"""Base of the forecasting models: records the constructor arguments so a checkpoint can rebuild the model."""
from __future__ import annotations

import inspect
from typing import Dict

import torch.nn as nn


class Forecaster(nn.Module):
    """x (B, L, C) [+ x_mark (B, L, K)] -> (B, H, C). Subclasses set seq_len, pred_len, enc_in."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        obj.__dict__["_init_args"] = {k: v for k, v in list(bound.arguments.items())[1:]}
        return obj

    def spec(self) -> Dict:
        """{class_path, init_args}: enough to rebuild this model (weights come from the state dict)."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": dict(self._init_args)}
