"""TestAfterFit: `ssmkit fit` on a forecasting config ends by testing the best checkpoint (the protocol's model
selection), printing and logging the test metrics, so no second `ssmkit test` command is needed."""
from __future__ import annotations

import logging
from typing import Dict, List

import lightning as L

log = logging.getLogger(__name__)


class TestAfterFit(L.Callback):
    """After fit, run `trainer.test` on the fit's data module with the best checkpoint of the trainer's
    ModelCheckpoint (or the final weights when no checkpoint was kept, e.g. validation never ran); the test
    metrics go to the fit's loggers and are kept in `results`."""

    def __init__(self):
        self.results: List[Dict[str, float]] = []
        self.ckpt_path = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted or trainer.datamodule is None:
            return
        ckpt = trainer.checkpoint_callback
        self.ckpt_path = "best" if ckpt is not None and getattr(ckpt, "best_model_path", "") else None
        if self.ckpt_path is None:
            log.warning("no best checkpoint was saved (validation did not run or checkpointing is off): testing "
                        "the final weights")
        self.results = trainer.test(pl_module, datamodule=trainer.datamodule, ckpt_path=self.ckpt_path,
                                    verbose=True)
