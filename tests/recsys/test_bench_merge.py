"""benchmarks/recsys.py --merge: runs split over processes (one JSON each) give one table whose means and sample
standard deviations are those of the runs, with the MostPop row carried over."""
import importlib.util
import json
import pathlib
import statistics

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "recsys.py"
METRICS = ["hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20"]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_recsys", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(path, model, seed, value, mostpop=None):
    row = {"model": model, "seed": seed, "epochs": 3, "early_stopped": seed != 2, "val_ndcg@10": value,
           "sec_per_epoch": 1.5, **{m: value + i / 100 for i, m in enumerate(METRICS)}}
    path.write_text(json.dumps({"machine": "test", "runs": [row], "mostpop": mostpop}))
    return path


def test_merge_means_and_stds_over_runs_from_several_files(tmp_path, capsys):
    pop = {m: 0.01 for m in METRICS}
    files = [write_run(tmp_path / "a.json", "sasrec", 1, 0.10, pop), write_run(tmp_path / "b.json", "sasrec", 2, 0.30),
             write_run(tmp_path / "c.json", "sigma", 1, 0.20)]
    load_script().main(["--merge", *map(str, files), "--out", str(tmp_path / "merged.json")])
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["mostpop"] == pop and len(merged["runs"]) == 3
    mean, std = merged["summary"]["sasrec"]["ndcg@10"]
    assert abs(mean - 0.21) < 1e-12 and abs(std - statistics.stdev([0.11, 0.31])) < 1e-12
    assert merged["summary"]["sigma"]["hr@10"] == [0.20, None]  # one run: no spread
    table = capsys.readouterr().out
    assert "| MostPop | - | 0.0100" in table and "| 3/3* |" in table  # seed 2 was stopped by its cap
    assert "| sigma | 1 | 0.2000 | 0.2100 |" in table


def test_an_earlier_merge_merges_again_with_new_runs(tmp_path):
    pop = {m: 0.01 for m in METRICS}
    bench = load_script()
    first = [write_run(tmp_path / "a.json", "sasrec", 1, 0.10, pop), write_run(tmp_path / "b.json", "sasrec", 2, 0.30)]
    bench.main(["--merge", *map(str, first), "--out", str(tmp_path / "m1.json")])
    m1 = json.loads((tmp_path / "m1.json").read_text())
    (tmp_path / "m1.json").write_text(json.dumps({**m1, "note": "how runs 1-2 stopped", "commands": ["cmd 1-2"]}))
    new = write_run(tmp_path / "c.json", "sasrec", 3, 0.50)
    new.write_text(new.read_text().replace('"test"', '"other"'))
    bench.main(["--merge", str(tmp_path / "m1.json"), str(new), "--out", str(tmp_path / "m2.json")])
    merged = json.loads((tmp_path / "m2.json").read_text())
    assert [r["seed"] for r in merged["runs"]] == [1, 2, 3] and merged["machines"] == ["other", "test"]
    assert merged["merged"] == [str(first[0]), str(first[1]), str(new)]
    assert merged["note"] == "how runs 1-2 stopped" and merged["commands"] == ["cmd 1-2"]
    mean, std = merged["summary"]["sasrec"]["hr@10"]
    assert abs(mean - 0.30) < 1e-12 and abs(std - statistics.stdev([0.10, 0.30, 0.50])) < 1e-12


def test_a_run_records_why_it_stopped_before_testing_restores_the_best_checkpoint(inter_file, tmp_path, monkeypatch):
    """Testing the best checkpoint restores EarlyStopping's state as it was at the best epoch (not yet stopped), so
    the stop has to be read right after fit: an early-stopped run must say so."""
    bench = load_script()
    real = bench.load_config

    def tiny(model, dataset):  # the config's model, patience 1, every user and item of the toy log kept
        spec, task_args, _, data = real(model, dataset)
        return spec, task_args, 1, {**data, "batch_size": 16, "user_min": 1, "item_min": 1}

    monkeypatch.setattr(bench, "load_config", tiny)
    row, _ = bench.run_one("gru4rec", "beauty", str(inter_file), 0, 40, str(tmp_path / "work"), latency=False)
    assert row["early_stopped"] and row["stopped_by"] == "early stopping" and 2 <= row["epochs"] < 40
    row, _ = bench.run_one("gru4rec", "beauty", str(inter_file), 0, 1, str(tmp_path / "one"), latency=False)
    assert not row["early_stopped"] and row["stopped_by"] == "max_epochs" and row["epochs"] == 1


def test_model_args_override_the_config_and_name_the_run(inter_file, tmp_path, monkeypatch):
    """An ablation (--model-args n_layers=2 dropout=0.4) trains the config's model with those arguments, and its
    rows carry them in the name, so a summary never mixes it with the config's runs."""
    bench = load_script()
    assert bench.parse_model_args(["n_layers=2", "dropout=0.4"]) == {"n_layers": 2, "dropout": 0.4}
    for bad in (["n_layers"], ["=2"]):
        try:
            bench.parse_model_args(bad)
        except ValueError as err:
            assert "KEY=VALUE" in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")
    real = bench.load_config

    def tiny(model, dataset):
        spec, task_args, _, data = real(model, dataset)
        return spec, task_args, 1, {**data, "batch_size": 16, "user_min": 1, "item_min": 1}

    monkeypatch.setattr(bench, "load_config", tiny)
    base, _ = bench.run_one("sigma", "beauty", str(inter_file), 0, 1, str(tmp_path / "a"), latency=False)
    two, _ = bench.run_one("sigma", "beauty", str(inter_file), 0, 1, str(tmp_path / "b"), latency=False,
                           model_args={"n_layers": 2, "dropout": 0.4})
    assert base["model"] == "sigma" and two["model"] == "sigma[n_layers=2,dropout=0.4]"
    assert two["params"] > base["params"]  # a second G-Mamba layer was built
    assert set(bench.summarise([base, two])) == {"sigma", "sigma[n_layers=2,dropout=0.4]"}
