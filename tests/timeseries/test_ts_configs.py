"""The YAML configs are exactly what configs/timeseries/make_configs.py generates, none states the data's
dimensions, and `ssmkit fit` on a config without `enc_in` trains on a 21-column CSV the test writes and ends
with the test metrics of the best checkpoint (printed and logged)."""
import csv
import importlib.util
import pathlib

import numpy as np
import pandas as pd
import pytest
import yaml

from ssmkit.cli import lightning_cli
from ssmkit.timeseries.synthetic import write_synthetic_ett

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "timeseries"


def _make_configs():
    spec = importlib.util.spec_from_file_location("make_configs", CONFIGS / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ts_configs_match_generator_and_state_no_dimensions():
    mc = _make_configs()
    files = sorted(CONFIGS.glob("*.yaml"))
    runs = mc.experiments()
    assert len(mc.DATASETS) == 10 and len(files) == len(runs) == 6 * 10 * 4 + 4 * 4   # + SpaceTime L=336 on ETT
    for model, dataset, H, seq_len in runs:
        path = CONFIGS / f"{mc.config_name(model, dataset, H, seq_len)}.yaml"
        cfg = yaml.safe_load(path.read_text())
        assert cfg == mc.experiment_config(model, dataset, H, seq_len), path.name
        assert not set(cfg["model"]["init_args"]["model"]["init_args"]) & {"enc_in", "seq_len", "pred_len"}
        assert cfg["data"]["init_args"]["path"] == mc.DATASETS[dataset]["path"]
        assert f"expects {mc.DATASETS[dataset]['path']}" in path.read_text().splitlines()[0]
    # spot checks against the official scripts
    ecl = yaml.safe_load((CONFIGS / "s_mamba_electricity_96.yaml").read_text())
    assert ecl["model"]["init_args"]["model"]["init_args"] == {"d_model": 512, "d_ff": 512, "e_layers": 3,
                                                                "d_state": 16}
    assert ecl["model"]["init_args"]["lr"] == 1e-3 and ecl["trainer"]["max_epochs"] == 5
    assert ecl["data"]["init_args"]["batch_size"] == 16
    m2 = yaml.safe_load((CONFIGS / "s_mamba_ettm2_336.yaml").read_text())
    assert m2["model"]["init_args"]["lr"] == 3e-5 and m2["model"]["init_args"]["model"]["init_args"]["d_model"] == 128
    ili = yaml.safe_load((CONFIGS / "dlinear_ili_60.yaml").read_text())
    assert ili["data"]["init_args"]["seq_len"] == 36 and ili["model"]["init_args"]["lr"] == 1e-2


def _fit(config, *overrides):
    return lightning_cli(["fit", "--config", str(CONFIGS / config), "--trainer.max_epochs=1",
                          "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
                          "--trainer.limit_test_batches=3", "--trainer.enable_progress_bar=false",
                          "--trainer.enable_model_summary=false", *overrides])


def test_ts_fit_on_a_config_without_enc_in_ends_with_test_metrics(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 1000
    dates = pd.date_range("2020-01-01 00:10", periods=n, freq="10min").strftime("%Y-%m-%d %H:%M:%S")
    frame = pd.DataFrame({"date": dates, **{f"x{i}": np.round(rng.normal(size=n).cumsum(), 3) for i in range(20)},
                          "OT": np.round(rng.normal(size=n), 3)})
    frame.to_csv(tmp_path / "weather.csv", index=False)
    logger = ('{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "%s", "name": "run", '
              '"version": ""}}' % tmp_path)
    cli = _fit("s_mamba_weather_96.yaml", f"--data.init_args.path={tmp_path / 'weather.csv'}",
               "--model.init_args.model.init_args.d_model=16", "--model.init_args.model.init_args.d_ff=16",
               "--model.init_args.model.init_args.e_layers=1", f"--trainer.default_root_dir={tmp_path}",
               f"--trainer.logger={logger}")
    model = cli.model.model
    assert cli.datamodule.protocol == "ratio" and model.enc_in == 21
    assert model.enc_embedding.value_embedding.out_features == 16
    assert cli.model.hparams["dims"] == {"seq_len": 96, "pred_len": 96, "enc_in": 21}
    out = capsys.readouterr().out
    assert "test/mse" in out and "test/mae" in out          # the test table is printed after fit
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    tested = [r for r in rows if r.get("test/mse")]
    assert len(tested) == 1 and float(tested[0]["test/n_windows"]) == 3 * 32   # three test batches, logged
    assert np.isfinite(float(tested[0]["test/mse"]))


@pytest.mark.parametrize("name", ["s_mamba_ridge_etth1_96.yaml"])
def test_ts_ett_config_trains_on_the_ett_protocol(tmp_path, name):
    csv_path = write_synthetic_ett(tmp_path / "ETTh1.csv")
    cli = _fit(name, f"--data.init_args.path={csv_path}", f"--trainer.default_root_dir={tmp_path}",
               "--trainer.logger=false")
    assert cli.model.loss_name == "mae" and cli.model.closed_form_init
    assert cli.datamodule.protocol == "ett" and cli.datamodule.n_windows["test"] == 2785
    assert cli.model.model.enc_in == 7
