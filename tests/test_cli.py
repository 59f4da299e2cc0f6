"""The `ssmkit` command: `--version`, errors stated on the first line before the usage text, and configs that run
under any trainer limit (EarlyStopping does not crash when training stops before any validation)."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from ssmkit import __version__
from ssmkit.cli import main

_spec = importlib.util.spec_from_file_location("_fit_runs", pathlib.Path(__file__).resolve().with_name("_fit_runs.py"))
runs = sys.modules.setdefault("_fit_runs", importlib.util.module_from_spec(_spec))
if not hasattr(runs, "fit_args"):
    _spec.loader.exec_module(runs)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ssmkit {__version__}"
    out = subprocess.run([str(runs.SSMKIT), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"ssmkit {__version__}"


def test_unknown_command_states_the_error_first(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "ssmkit: error: unknown command 'fitt'" and any(line.startswith("usage:") for line in err[1:])


@pytest.mark.parametrize("args, message", [
    (["--config", "/no/such/config.yaml"], "File does not exist: '/no/such/config.yaml'"),
    (["--config", str(runs.REPO / "configs/core/selective_copy.yaml"), "--trainer.max_stepz=3"],
     "unrecognized arguments: --trainer.max_stepz=3"),
])
def test_lightning_cli_errors_come_before_the_usage(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ssmkit fit: error: ") and message in "\n".join(err[:3]), err[:3]
    usage = next(i for i, line in enumerate(err) if line.startswith("usage:"))
    assert usage > 0 and "error" not in "\n".join(err[usage:])


@pytest.mark.parametrize("content, reason", [
    (None, "no such checkpoint file"), (b"", "empty checkpoint file"),
    (b"\x80\x02garbage" * 50, "not a readable checkpoint, truncated or corrupt"),
    ("truncated", "not a readable checkpoint, truncated or corrupt"),
])
def test_bad_ckpt_path_is_named_with_the_reason(tmp_path, capsys, content, reason):
    ckpt = tmp_path / "model.ckpt"
    if content == "truncated":
        import torch
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:2000])
    elif content is not None:
        ckpt.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--config", str(runs.REPO / "configs/core/selective_copy.yaml"), f"--ckpt_path={ckpt}"])
    assert exit_info.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"ssmkit validate: error: --ckpt_path {ckpt}: {reason}"), first


def test_timeseries_config_with_max_steps_2_stops_before_validation_without_crashing(tmp_path):
    """EarlyStopping(monitor=val/loss) in the config used to raise 'val/loss not available' when max_steps ended
    the fit before the epoch's validation."""
    runs.write_ett(tmp_path)
    model = "--model.init_args.model.init_args."
    assert main(["fit", "--config", str(runs.REPO / "configs/timeseries/s_mamba_etth1_96.yaml"),
                 f"--data.path={tmp_path / 'ETTh1.csv'}", "--trainer.max_steps=2", "--trainer.limit_test_batches=1",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                 "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", f"{model}d_model=8",
                 f"{model}d_ff=8"]) == 0
