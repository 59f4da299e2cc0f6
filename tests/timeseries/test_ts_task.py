"""ForecastTask: the protocol's metrics over every test window against a direct computation, the type1
schedule, early stopping wiring, the model built from its class_path config with the data's dimensions, and
model/data mismatch errors."""
import lightning as L
import numpy as np
import pytest
import torch

from ssmkit.timeseries.data import CSVDataModule
from ssmkit.timeseries.models import NLinear
from ssmkit.timeseries.synthetic import synthetic_ett_frame
from ssmkit.timeseries.task import ForecastTask


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "series.csv"
    synthetic_ett_frame(600, seed=4).to_csv(path, index=False)
    return path


NLINEAR = {"class_path": "ssmkit.timeseries.models.NLinear"}
SMAMBA8 = {"class_path": "ssmkit.timeseries.models.SMamba", "init_args": {"d_model": 8, "d_ff": 8, "e_layers": 1}}


def _trainer(tmp_path, epochs, **kw):
    return L.Trainer(max_epochs=epochs, default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kw)


def _harness_type1_lrs(lr0, epochs):
    """The lr each epoch trains with in the harness: after 0-based epoch e it calls adjust_learning_rate(e + 1),
    which sets lr0 * 0.5 ** ((e + 1 - 1) // 1) for the next epoch."""
    lrs, lr = [], lr0
    for epoch in range(epochs):
        lrs.append(lr)
        lr = lr0 * 0.5 ** ((epoch + 1 - 1) // 1)
    return lrs


class _RecordLR(L.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_ts_task_type1_matches_the_harness(csv_path, tmp_path):
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, batch_size=64)
    record = _RecordLR()
    _trainer(tmp_path, 5, callbacks=[record], limit_train_batches=1, limit_val_batches=1).fit(
        ForecastTask(NLINEAR, lr=1e-3, test_after_fit=False), dm)
    assert record.lrs == pytest.approx(_harness_type1_lrs(1e-3, 5))
    assert record.lrs == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4])


@pytest.mark.parametrize("features", ["M", "MS"])
def test_ts_task_metrics_every_window(csv_path, tmp_path, features):
    torch.manual_seed(0)
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, features=features, batch_size=16,
                       eval_batch_size=7)
    task = ForecastTask(NLINEAR, lr=1e-2, inverse_metrics=True, test_after_fit=False)
    trainer = _trainer(tmp_path, 2)
    trainer.fit(task, dm)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5)  # lr for a third epoch
    res = trainer.test(task, dm, verbose=False)[0]
    # direct computation over all test windows on the standardised scale (numpy, float64)
    W = task.model.head.linear.weight.detach().double().numpy()
    b = task.model.head.linear.bias.detach().double().numpy()
    data, ends, starts = dm.splits.data, dm.splits.ends, dm.splits.starts
    test = data[starts[2]:ends[2]]
    n = len(test) - 24 - 8 + 1
    errs = []
    for s in range(n):
        x = test[s:s + 24]
        pred = (x - x[-1]).T @ W.T + b + x[-1][:, None]    # (C, H)
        errs.append(pred.T[:, -dm.n_targets:] - test[s + 24:s + 32, -dm.n_targets:])
    errs = np.stack(errs)
    assert res["test/n_windows"] == n == dm.n_windows["test"]
    assert res["test/mse"] == pytest.approx((errs ** 2).mean(), rel=1e-4)
    assert res["test/mae"] == pytest.approx(np.abs(errs).mean(), rel=1e-4)
    assert res["test/rmse"] == pytest.approx(np.sqrt((errs ** 2).mean()), rel=1e-4)
    scale = dm.splits.scaler.scale[-dm.n_targets:]
    assert res["test/mse_orig"] == pytest.approx((errs ** 2 * scale ** 2).mean(), rel=1e-4)


def test_ts_task_early_stopping_and_best_checkpoint(csv_path, tmp_path):
    torch.manual_seed(0)
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, batch_size=32)
    task = ForecastTask(SMAMBA8, lr=1e-3, scheduler="cosine", test_after_fit=False)
    stop = L.pytorch.callbacks.EarlyStopping("val/loss", patience=1)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(str(tmp_path), monitor="val/loss", mode="min")
    trainer = _trainer(tmp_path, 3, callbacks=[stop, ckpt], limit_train_batches=2)
    trainer.fit(task, dm)
    assert ckpt.best_model_score is not None and ckpt.best_model_path
    res = trainer.test(task, dm, ckpt_path="best", verbose=False)[0]
    assert res["test/n_windows"] == dm.n_windows["test"]
    assert res["test/mse"] > 0


def test_ts_task_model_data_mismatch(csv_path, tmp_path):
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, features="S")
    with pytest.raises(ValueError, match=r"built for .*'enc_in': 7.* data gives .*'enc_in': 1"):
        _trainer(tmp_path, 1).fit(ForecastTask(NLINEAR, dims={"seq_len": 24, "pred_len": 8, "enc_in": 7}), dm)
    stated = {"class_path": "ssmkit.timeseries.models.NLinear", "init_args": {"enc_in": 7}}
    with pytest.raises(ValueError, match=r"model config sets \{'enc_in': 7\} but the data gives .*'enc_in': 1"):
        _trainer(tmp_path, 1).fit(ForecastTask(stated), dm)
    with pytest.raises(ValueError, match="warmup_steps"):
        ForecastTask(NLINEAR, warmup_steps=10)
    with pytest.raises(RuntimeError, match="built in setup"):
        ForecastTask(NLINEAR)(torch.randn(1, 24, 7))


def test_ts_task_builds_the_model_from_the_file_and_checkpoint(csv_path, tmp_path):
    """No channel count anywhere: the task builds NLinear for the file's 7 columns; the checkpoint records the
    dimensions and Lightning's load_from_checkpoint rebuilds the same model from the hyper-parameters."""
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8)
    task = ForecastTask(NLINEAR, lr=1e-2, test_after_fit=False)
    trainer = _trainer(tmp_path, 1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(task, dm)
    assert task.model.head.linear.weight.shape == (8, 24) and task.model.enc_in == 7
    assert task.hparams["dims"] == {"seq_len": 24, "pred_len": 8, "enc_in": 7}
    ckpt = tmp_path / "t.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = ForecastTask.load_from_checkpoint(ckpt)
    assert type(loaded.model) is NLinear and loaded.model.enc_in == 7
    assert torch.equal(loaded.model.head.linear.weight, task.model.head.linear.weight)


def test_ts_task_closed_form_init_fits_every_training_window(csv_path, tmp_path):
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, batch_size=32)
    task = ForecastTask(NLINEAR, lr=0.0, closed_form_init=True, test_after_fit=False)
    _trainer(tmp_path, 1, limit_train_batches=1).fit(task, dm)
    train = dm.datasets["train"]
    xs, ys = zip(*[(x, y[-8:]) for x, y, _, _ in (train[s] for s in range(len(train)))])
    x, y = train.all_windows()
    assert torch.equal(x, torch.stack(xs)) and torch.equal(y, torch.stack(ys))
    expected = NLinear(24, 8, 7)
    expected.fit_closed_form(x, y)
    assert torch.allclose(task.model.head.linear.weight, expected.head.linear.weight)
    with pytest.raises(ValueError, match="closed_form_init=True needs a model with fit_closed_form"):
        ForecastTask({"class_path": "ssmkit.timeseries.models.DLinear"},
                     dims={"seq_len": 24, "pred_len": 8, "enc_in": 7}, closed_form_init=True)
    ms = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, features="MS")
    with pytest.raises(ValueError, match="features 'M' or 'S'"):
        _trainer(tmp_path, 1).fit(ForecastTask(NLINEAR, closed_form_init=True), ms)


def test_ts_task_closed_form_init_keeps_resumed_weights(csv_path, tmp_path):
    torch.manual_seed(0)
    dm = CSVDataModule(str(csv_path), seq_len=24, label_len=12, pred_len=8, batch_size=32)
    task = ForecastTask(NLINEAR, lr=1e-2, closed_form_init=True, test_after_fit=False)
    trainer = _trainer(tmp_path, 1, limit_train_batches=2)
    trainer.fit(task, dm)
    ckpt = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(ckpt)
    trained = task.model.head.linear.weight.detach().clone()
    resumed = ForecastTask(NLINEAR, lr=1e-2, closed_form_init=True, test_after_fit=False)
    _trainer(tmp_path, 1, limit_train_batches=2).fit(resumed, dm, ckpt_path=str(ckpt))
    assert torch.equal(resumed.model.head.linear.weight, trained)   # not re-fitted over the restored weights


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_ts_task_training_loss_matches_a_direct_computation(loss):
    """training_step's loss equals the chosen error of the forecast against y's last H steps, in fp64 numpy."""
    torch.manual_seed(0)
    task = ForecastTask(NLINEAR, loss=loss, dims={"seq_len": 24, "pred_len": 8, "enc_in": 3})
    x, y, x_mark = torch.randn(5, 24, 3), torch.randn(5, 20, 3), torch.randn(5, 24, 4)
    got = task.training_step((x, y, x_mark, None), 0).item()
    err = task.model(x).detach().double().numpy() - y[:, -8:].double().numpy()
    want = {"mse": np.mean(err ** 2), "mae": np.mean(np.abs(err)),
            "huber": np.mean(np.where(np.abs(err) <= 1, 0.5 * err ** 2, np.abs(err) - 0.5))}[loss]
    assert got == pytest.approx(want, rel=1e-5)


def test_ts_task_loss_errors():
    with pytest.raises(ValueError, match="loss must be one of"):
        ForecastTask(NLINEAR, loss="l2")
    with pytest.raises(ValueError, match="SpaceTime trains on its own loss"):
        ForecastTask({"class_path": "ssmkit.timeseries.models.SpaceTime",
                      "init_args": {"d_model": 16, "n_blocks": 1, "kernel_dim": 8, "n_kernels": 4}},
                     loss="mae", dims={"seq_len": 24, "pred_len": 8, "enc_in": 3})
