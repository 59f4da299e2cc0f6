"""ForecastTask: train and score any forecaster x (B, L, C) [+ x_mark] -> (B, H, C) under the ETT protocol.

The model is given as a class_path config (`{"class_path": ..., "init_args": {...}}`, or the callable
LightningCLI makes of it); the task builds it once the data is known, passing `seq_len`, `pred_len` and
`enc_in` (the file's channel count), so configs never state them. The dimensions are saved as the `dims`
hyper-parameter, and Lightning's `load_from_checkpoint` rebuilds the model from the saved hyper-parameters.
Training loss on the last H steps of y: MSE (the protocol's), or `loss="mae"` / `"huber"`; Adam with the
harness's `type1` schedule (two epochs at lr, then halving every epoch) or the shared cosine / linear schedules;
MSE, MAE and RMSE over every window x H x channel on the standardised scale, optionally also in the CSV's units.
Early stopping (patience 3 on val/loss) and the best checkpoint come from Lightning callbacks in the configs;
with `test_after_fit` (default) fit ends by testing the best checkpoint (`TestAfterFit`).
A model with a `loss(x, y, x_mark)` method (e.g. SpaceTime's three-term loss) trains on that instead.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.cli import instantiate_class
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from ssmkit.train import TaskBase

from .callbacks import TestAfterFit

# training losses on the standardised scale; validation and test always score MSE / MAE
_LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}
# what the task passes to the model class from the data
DIMS = ("seq_len", "pred_len", "enc_in")


def model_spec(model) -> Dict[str, Any]:
    """`{class_path, init_args}` of a model given as such a dict, a class, or a partial of a class (also the
    partial jsonargparse makes of a class_path config)."""
    if isinstance(model, dict):
        if "class_path" not in model:
            raise ValueError(f"model must be a {{class_path, init_args}} config, got keys {sorted(model)}")
        return {"class_path": model["class_path"], "init_args": dict(model.get("init_args") or {})}
    kwargs = {}
    if isinstance(model, functools.partial):
        kwargs = dict(model.keywords)
        classes = [a for a in (model.func, *model.args) if isinstance(a, type)]
        model = classes[-1] if classes else model
    if not isinstance(model, type) or not issubclass(model, nn.Module):
        raise TypeError(f"model must be a class_path config, an nn.Module class or a partial of one, got {model!r}")
    return {"class_path": f"{model.__module__}.{model.__qualname__}", "init_args": kwargs}


class ForecastTask(TaskBase):
    """LightningModule around a forecasting model built from its class_path config and the data's dimensions.

    Checkpoints keep the model config, its `dims` and the data's scaler and columns, so `load_from_checkpoint`
    rebuilds the model and `forecast` can score a new CSV in the training units.
    """

    def __init__(self, model: Union[Callable[[int, int, int], nn.Module], Dict[str, Any]], lr: float = 1e-4,
                 weight_decay: float = 0.0, optimizer: str = "adam", scheduler: Optional[str] = "type1",
                 warmup_steps: int = 0, betas: Tuple[float, float] = (0.9, 0.999), inverse_metrics: bool = False,
                 closed_form_init: bool = False, loss: str = "mse", dims: Optional[Dict[str, int]] = None,
                 test_after_fit: bool = True):
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        if scheduler == "type1" and warmup_steps:
            raise ValueError(f"warmup_steps must be 0 with scheduler='type1', got {warmup_steps}")
        self.schedule = scheduler
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                         scheduler=None if scheduler == "type1" else scheduler, warmup_steps=warmup_steps, betas=betas)
        self.save_hyperparameters()
        # under LightningCLI the saved hyper-parameter is the config dict itself; elsewhere the argument
        spec = model_spec(self.hparams["model"] if isinstance(self.hparams["model"], dict) else model)
        given = {k: spec["init_args"].pop(k) for k in DIMS if k in spec["init_args"]}
        if dims is None and len(given) == len(DIMS):  # a config (or an older checkpoint) that states all three
            dims = given
        self.hparams["model"] = spec
        self._given_dims = given
        self.inverse_metrics, self.loss_name, self.closed_form_init = inverse_metrics, loss, closed_form_init
        self.test_after_fit = test_after_fit
        self.model: Optional[nn.Module] = None
        if dims is not None:
            self._build(dims)
        self.metrics = nn.ModuleDict({f"{stage}_{kind}": cls() for stage in ("val", "test")
                                      for kind, cls in (("mse", MeanSquaredError), ("mae", MeanAbsoluteError))})
        if inverse_metrics:
            self.metrics.update({f"test_{kind}_orig": cls() for kind, cls in
                                 (("mse", MeanSquaredError), ("mae", MeanAbsoluteError))})
        self.n_windows = {"val": 0, "test": 0}
        self.data_info: Optional[dict] = None

    def _build(self, dims: Dict[str, int]) -> None:
        """Instantiate the model config with the data's dimensions (Lightning's `instantiate_class`)."""
        dims = {k: int(dims[k]) for k in DIMS}
        clash = {k: v for k, v in self._given_dims.items() if v != dims[k]}
        if clash:
            raise ValueError(f"the model config sets {clash} but the data gives {dims}; leave these out of the "
                             f"model's init_args, the task takes them from the data")
        spec = self.hparams["model"]
        self.model = instantiate_class((), {"class_path": spec["class_path"],
                                            "init_args": {**spec["init_args"], **dims}})
        self.hparams["dims"] = dims
        if self.loss_name != "mse" and hasattr(self.model, "loss"):
            raise ValueError(f"{type(self.model).__name__} trains on its own loss(); loss={self.loss_name!r} applies "
                             f"only to models without one")
        if self.closed_form_init and not hasattr(self.model, "fit_closed_form"):
            raise ValueError(f"closed_form_init=True needs a model with fit_closed_form; "
                             f"{type(self.model).__name__} has none")

    def configure_callbacks(self):
        # one instance for the task's lifetime: Lightning re-merges these on every trainer entry (also the test
        # that TestAfterFit itself starts), and the instance keeps the results
        if self.test_after_fit and not hasattr(self, "_test_after_fit"):
            self._test_after_fit = TestAfterFit()
        return super().configure_callbacks() + ([self._test_after_fit] if self.test_after_fit else [])

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            if self.model is None:
                raise RuntimeError("the model is built from the data's dimensions: pass a forecasting data module "
                                   "to the trainer, or `dims` to the task")
            return
        dm.setup(stage)
        self.data_info = dm.describe()
        want = {"seq_len": dm.seq_len, "pred_len": dm.pred_len, "enc_in": dm.n_inputs}
        if self.model is None:
            self._build(want)
        elif self.hparams["dims"] != want:
            raise ValueError(f"model {type(self.model).__name__} was built for {self.hparams['dims']} but the data "
                             f"gives {want}")

    def on_fit_start(self) -> None:
        """With `closed_form_init`, fit the model's closed-form part on every training window first (not when
        resuming from a checkpoint, whose weights Lightning has already restored)."""
        if not self.closed_form_init or self.trainer.ckpt_path:
            return
        dm = self.trainer.datamodule
        if dm.n_targets != dm.n_inputs:
            raise ValueError(f"closed_form_init needs every input channel forecast (features 'M' or 'S'), "
                             f"got features={dm.features!r}")
        x, y = dm.datasets["train"].all_windows()
        self.model.fit_closed_form(x.to(self.device), y.to(self.device))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.data_info is not None:
            checkpoint["forecast_data"] = self.data_info

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_info = checkpoint.get("forecast_data")

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("the model is built in setup() from the data's dimensions (or from `dims`)")
        return self.model(x, x_mark)

    def _forecast(self, batch):
        """Forecast of the scored channels (the last y.shape[-1] of the model's output) and the truth."""
        x, y, x_mark, _ = batch
        H = self.model.pred_len
        pred = self(x, x_mark)[..., -y.shape[-1]:]
        return pred, y[:, -H:]

    def training_step(self, batch, batch_idx):
        x, y, x_mark, _ = batch
        if hasattr(self.model, "loss"):
            loss = self.model.loss(x, y[:, -self.model.pred_len:], x_mark, n_targets=y.shape[-1])
        else:
            pred, true = self._forecast(batch)
            loss = _LOSSES[self.loss_name](pred, true)
        self.log_metrics("train", {"loss": loss})
        return loss

    def _score(self, stage: str, batch):
        pred, true = self._forecast(batch)
        flat_p, flat_t = pred.reshape(-1), true.reshape(-1)
        self.metrics[f"{stage}_mse"].update(flat_p, flat_t)
        self.metrics[f"{stage}_mae"].update(flat_p, flat_t)
        self.n_windows[stage] += len(pred)
        if stage == "test" and self.inverse_metrics:
            dm = self.trainer.datamodule
            p, t = dm.inverse_transform(pred.double()).reshape(-1), dm.inverse_transform(true.double()).reshape(-1)
            self.metrics["test_mse_orig"].update(p, t)
            self.metrics["test_mae_orig"].update(p, t)

    def validation_step(self, batch, batch_idx):
        self._score("val", batch)

    def test_step(self, batch, batch_idx):
        self._score("test", batch)

    def predict_step(self, batch, batch_idx):
        return self._forecast(batch)[0]

    def on_validation_epoch_start(self):
        self.n_windows["val"] = 0

    def on_test_epoch_start(self):
        self.n_windows["test"] = 0

    def _log_epoch(self, stage: str):
        mse, mae = self.metrics[f"{stage}_mse"].compute(), self.metrics[f"{stage}_mae"].compute()
        out = {"loss": mse, "mse": mse, "mae": mae, "rmse": mse.sqrt(),
               "n_windows": torch.tensor(float(self.n_windows[stage]))}
        if stage == "test" and self.inverse_metrics:
            out["mse_orig"] = self.metrics["test_mse_orig"].compute()
            out["mae_orig"] = self.metrics["test_mae_orig"].compute()
        for m in self.metrics.values():
            m.reset()
        self.log_metrics(stage, out)

    def on_validation_epoch_end(self):
        self._log_epoch("val")

    def on_test_epoch_end(self):
        self._log_epoch("test")

    def configure_optimizers(self):
        if self.schedule != "type1":
            return super().configure_optimizers()
        opt = super().configure_optimizers()
        # the harness calls adjust_learning_rate(epoch + 1) after each 0-based epoch, setting lr0 * 0.5 ** epoch for the
        # next one: epochs 0 and 1 both run at lr0, epoch e >= 1 at lr0 * 0.5 ** (e - 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** max(epoch - 1, 0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
