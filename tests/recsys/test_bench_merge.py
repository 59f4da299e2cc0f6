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
    assert merged["summary"]["sigma"]["hr@10"] == [0.20, 0.0]
    table = capsys.readouterr().out
    assert "| MostPop | - | 0.0100" in table and "| 3/3* |" in table  # seed 2 was stopped by its cap
