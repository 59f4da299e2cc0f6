"""The YAML configs are exactly what `experiments.experiment_config` generates, and one runs end to end."""
import pathlib

import lightning as L
import pytest
import yaml

from ssmkit.timeseries.experiments import apply_overrides, build, config_name, experiment_config, experiments
from ssmkit.timeseries.synthetic import write_synthetic_ett

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "timeseries"


def test_ts_configs_match_generator():
    files = sorted(CONFIGS.glob("*.yaml"))
    runs = experiments()
    assert len(files) == len(runs) == 6 * 3 * 4 + 3 * 4   # 6 models x 3 datasets x 4 horizons, SpaceTime also L=336
    for model, dataset, H, L in runs:
        path = CONFIGS / f"{config_name(model, dataset, H, L)}.yaml"
        assert yaml.safe_load(path.read_text()) == experiment_config(model, dataset, H, seq_len=L), path.name
    st = yaml.safe_load((CONFIGS / "spacetime_etth1_720_l336.yaml").read_text())
    assert st["data"]["init_args"]["seq_len"] == st["model"]["init_args"]["model"]["init_args"]["seq_len"] == 336
    assert st["model"]["init_args"]["optimizer"] == "adamw" and st["data"]["init_args"]["batch_size"] == 50
    cfg = experiment_config("s_mamba", "ETTm1", 336)
    assert cfg["model"]["init_args"]["model"]["init_args"]["d_model"] == 128
    assert cfg["model"]["init_args"]["lr"] == 5e-5 and cfg["data"]["init_args"]["freq"] == "h"
    with pytest.raises(ValueError, match="model"):
        experiment_config("informer", "ETTh1", 96)


@pytest.mark.parametrize("name", ["s_mamba", "s_mamba_ridge"])
def test_ts_config_builds_and_trains(tmp_path, name):
    write_synthetic_ett(tmp_path / "ETTh1.csv")
    cfg = yaml.safe_load((CONFIGS / f"{name}_etth1_96.yaml").read_text())
    cfg["data"]["init_args"]["root"] = str(tmp_path)
    task, data, trainer_kwargs = build(cfg)
    assert [type(c).__name__ for c in trainer_kwargs["callbacks"]] == ["EarlyStopping", "ModelCheckpoint"]
    assert task.loss_name == ("mae" if name == "s_mamba_ridge" else "mse")
    assert task.closed_form_init == (name == "s_mamba_ridge")
    trainer = L.Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(task, data)
    assert data.n_windows["test"] == 2785


def test_ts_apply_overrides_changes_only_the_named_keys():
    base = experiment_config("s_mamba_ridge", "ETTh1", 96)
    cfg = apply_overrides(base, ["task.lr=1e-4", "model.d_model=32", "model.dropout=0.3", "data.batch_size=64"])
    assert cfg["model"]["init_args"]["lr"] == 1e-4 and cfg["data"]["init_args"]["batch_size"] == 64
    assert cfg["model"]["init_args"]["model"]["init_args"]["d_model"] == 32
    assert cfg["model"]["init_args"]["model"]["init_args"]["dropout"] == 0.3
    assert base == experiment_config("s_mamba_ridge", "ETTh1", 96)  # the published config is not edited
    cfg["model"]["init_args"]["lr"] = base["model"]["init_args"]["lr"]
    cfg["data"]["init_args"]["batch_size"] = base["data"]["init_args"]["batch_size"]
    model_args = cfg["model"]["init_args"]["model"]["init_args"]
    model_args["d_model"] = base["model"]["init_args"]["model"]["init_args"]["d_model"]
    del model_args["dropout"]  # not in the published config (the model's default)
    assert cfg == base  # nothing else changed
    for bad, msg in [("lr=1e-4", "task.KEY=VALUE"), ("optim.lr=1", "task.KEY=VALUE"), ("task.lr=fast", "literal")]:
        with pytest.raises(ValueError, match=msg):
            apply_overrides(base, [bad])
