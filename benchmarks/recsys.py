"""Sequential recommenders under the RecBole protocol on real data: test HR / NDCG / MRR @ {10, 20} (model chosen on
validation NDCG@10, early stopping) per model and seed, MostPop in the same run, training seconds per epoch,
inference latency per evaluation batch, and the streaming update latency per interaction with `step` against
re-encoding a 50-item history. Prints a table, writes JSON (default under /tmp).

  python benchmarks/recsys.py --data ../shared/data/recsys/amazon-beauty-5core/amazon-beauty.inter.gz \
      --dataset beauty --models sasrec mamba4rec sigma tim4rec gru4rec --seeds 2020 2021 2022

Each model's hyper-parameters come from configs/recsys/<model>_<dataset>.yaml (model, task lr, early-stopping
patience, max_len, batch size); --model-args KEY=VALUE ... overrides the model's arguments for an ablation (the run
is then named e.g. `sigma[n_layers=2,dropout=0.4]`, so it is summarised apart). --max-epochs caps training
(reported; the configs allow 300).
--latency-only skips training: it times one training step (and scales it to seconds per epoch), inference per
evaluation batch and streaming, on freshly initialised models (timings do not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import tempfile
import time

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ssmkit.recsys.data import SequentialDataModule
from ssmkit.recsys.task import SequentialRecTask, build_model, full_sort_ranks, rank_metrics

cpu_clock = time.thread_time  # CPU seconds of this thread: other processes on a shared core do not count
CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs" / "recsys"
METRICS = [f"{m}@{k}" for k in (10, 20) for m in ("hr", "ndcg", "mrr")]


def load_config(model: str, dataset: str):
    cfg = yaml.safe_load((CONFIGS / f"{model}_{dataset}.yaml").read_text())
    task_args = dict(cfg["model"]["init_args"])
    spec = task_args.pop("model")
    patience = next(c["init_args"]["patience"] for c in cfg["trainer"]["callbacks"]
                    if c["class_path"].endswith("EarlyStopping"))
    return spec, task_args, patience, cfg["data"]["init_args"]


class EpochTimer(L.Callback):
    """Wall-clock seconds of each training epoch (validation excluded)."""

    def __init__(self):
        self.seconds = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(time.perf_counter() - self._t0)


def most_pop(dm: SequentialDataModule):
    """Rank every test target by its number of training interactions (each user's items but the last two);
    ties count in the target's favour (as for every model here)."""
    seqs = dm.sequences
    ends = seqs.offsets[1:] - np.minimum(2, seqs.offsets[1:] - seqs.offsets[:-1] - 2).clip(min=0)
    train_items = np.concatenate([seqs.items[a:b] for a, b in zip(seqs.offsets[:-1], ends)])
    counts = np.bincount(train_items, minlength=dm.n_items + 1)
    test = dm.samples["test"]
    targets = torch.from_numpy(seqs.items[seqs.offsets[test[:, 0]] + test[:, 1]])
    scores = torch.from_numpy(counts).double().expand(len(targets), -1)
    return {k: float(v.mean()) for k, v in rank_metrics(full_sort_ranks(scores, targets)).items()}


def inference_latency(task, dm, repeats: int = 3) -> float:
    """Mean seconds to score one evaluation batch against all items (encode + full-sort scores)."""
    batch = next(iter(dm.test_dataloader()))
    model = task.model.eval()
    with torch.no_grad():
        model(batch["items"], batch["length"], batch["times"])
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(batch["items"], batch["length"], batch["times"])
    return (time.perf_counter() - t0) / repeats


def streaming_latency(model, users: int = 1, history: int = 50, rounds: int = 40, score: bool = True, step=None):
    """Seconds per new interaction when `users` users each get one: `step` vs re-encoding each user's whole
    `history`-item history, both followed by scores over all items when `score`; divided by `users`.
    Each is the fastest of `rounds` single calls (5 step calls per encode call), interleaved, timed in this
    thread's CPU time (`cpu_clock`), so that a shared core's time slicing does not count against the longer call
    and the ratio is a same-run ratio. `step`: the step function to time (default `model.step`)."""
    model = model.eval()
    step = step or model.step
    items = torch.randint(1, model.n_items + 1, (users, history))
    times = torch.cumsum(torch.rand(users, history, dtype=torch.float64) * 86400 * 30, 1)
    lengths = torch.full((users,), history)
    finish = model.scores if score else (lambda h: h)
    with torch.inference_mode():
        state = model.initial_state(users)
        for t in range(history - 1):
            _, state = model.step(items[:, t], state, times[:, t])
        last, last_time = items[:, -1], times[:, -1]
        calls = {"step": lambda: finish(step(last, state, last_time)[0]),
                 "encode": lambda: finish(model.encode(items, lengths, times))}
        best = {"step": float("inf"), "encode": float("inf")}
        for _ in range(rounds):
            for name, repeat in (("step", 5), ("encode", 1)):
                for _ in range(repeat):
                    t0 = cpu_clock()
                    calls[name]()
                    best[name] = min(best[name], cpu_clock() - t0)
    return best["step"] / users, best["encode"] / users


def streaming_row(model, compiled: bool = False) -> dict:
    """Per-interaction streaming latency (ms) for 1 user and for 256 users updated together, with the top-k
    scoring over all items (`_scored`, what a server returns) and for the state update alone. With `compiled`, also
    one user with `torch.compile(model.step)` (tags `1uc`; an experiment: the library's `step` runs eagerly)."""
    row = {}
    runs = [(1, None, ""), (256, None, "")]
    if compiled:
        with torch.inference_mode():
            runs.append((1, torch.compile(model.eval().step, dynamic=False), "c"))
    for users, step_fn, suffix in runs:
        for score in (True, False):
            step, encode = streaming_latency(model, users, score=score, step=step_fn)
            tag = f"{users}u{suffix}" + ("_scored" if score else "")
            row.update({f"step_ms_{tag}": 1e3 * step, f"reencode50_ms_{tag}": 1e3 * encode,
                        f"speedup_{tag}": encode / step})
    return row


def full_logits_loss(task, batch):
    """The loss as `F.cross_entropy` on the whole (batch, n_items + 1) score matrix (what `tied_cross_entropy`
    replaces in training; the same value), to time against it."""
    scores = task(batch)
    scores[:, 0] = float("-inf")
    return F.cross_entropy(scores, batch["target"])


def train_step_seconds(task, dm, repeats: int = 2) -> dict:
    """Seconds of one optimiser step (forward, CE over all items, backward, Adam) on a training batch, the model
    encoding histories in length groups (as training runs) and, interleaved in the same run, as one call padded to
    the batch's longest history (`group_by_length = False`, the same math) and with the loss taken on the full
    score matrix (`full_logits_loss`); fastest of `repeats` after a warm-up, in this thread's CPU time
    (`cpu_clock`; run with OMP_NUM_THREADS=1, where it equals wall time on an idle core)."""
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    task.train()
    variants = {"grouped": (True, task.training_step), "padded": (False, task.training_step),
                "full_logits": (True, lambda b, i: full_logits_loss(task, b))}
    best = dict.fromkeys(variants, float("inf"))
    for i in range(repeats + 1):
        for name, (grouped, loss_fn) in variants.items():
            task.model.group_by_length = grouped
            t0 = cpu_clock()
            loss = loss_fn(batch, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                best[name] = min(best[name], cpu_clock() - t0)
    task.model.group_by_length = True
    return {"sec_per_train_step": best["grouped"], "sec_per_train_step_padded": best["padded"],
            "train_speedup_vs_padded": best["padded"] / best["grouped"],
            "sec_per_train_step_full_logits": best["full_logits"],
            "train_speedup_vs_full_logits": best["full_logits"] / best["grouped"]}


def latency_one(model_name, dataset, data_path, batch_size=None, streaming_only=False, compiled=False):
    """Timings only (no training): s/step -> s/epoch, inference s/batch, streaming step vs re-encoding."""
    spec, task_args, _, data_args = load_config(model_name, dataset)
    L.seed_everything(0, verbose=False)
    dm = SequentialDataModule(data_path, max_len=data_args["max_len"],
                              batch_size=batch_size or data_args["batch_size"], eval_batch_size=2048,
                              user_min=data_args["user_min"], item_min=data_args["item_min"])
    dm.setup()
    task = SequentialRecTask(build_model(spec), **task_args)
    task.model.grow_items(dm.n_items)
    task.log = lambda *a, **k: None  # no trainer attached
    row = {"model": model_name, "params": sum(p.numel() for p in task.parameters())}
    if streaming_only:
        return {**row, **(streaming_row(task.model, compiled) if task.model.streamable else {})}, dm
    steps = len(dm.train_dataloader())
    timing = train_step_seconds(task, dm)
    row.update({**timing, "train_steps_per_epoch": steps, "sec_per_epoch_est": timing["sec_per_train_step"] * steps,
                "sec_per_epoch_est_padded": timing["sec_per_train_step_padded"] * steps,
                "inference_sec_per_batch": inference_latency(task, dm)})
    if task.model.streamable:
        row.update(streaming_row(task.model))
    return row, dm


def parse_model_args(pairs) -> dict:
    """["n_layers=2", "dropout=0.4"] -> {"n_layers": 2, "dropout": 0.4} (values read as YAML scalars)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-args takes KEY=VALUE pairs, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def run_name(model_name: str, model_args: dict) -> str:
    """The model's name in the results, with its overrides: sigma[n_layers=2,dropout=0.4]."""
    return model_name + ("[" + ",".join(f"{k}={v}" for k, v in model_args.items()) + "]" if model_args else "")


def run_one(model_name, dataset, data_path, seed, max_epochs, workdir, batch_size=None, max_time=None,
            limit_train_batches=None, latency=True, model_args=None):
    spec, task_args, patience, data_args = load_config(model_name, dataset)
    model_args = dict(model_args or {})
    spec = {**spec, "init_args": {**spec.get("init_args", {}), **model_args}}
    L.seed_everything(seed, workers=True, verbose=False)
    dm = SequentialDataModule(data_path, max_len=data_args["max_len"],
                              batch_size=batch_size or data_args["batch_size"], eval_batch_size=2048,
                              user_min=data_args["user_min"], item_min=data_args["item_min"])
    task = SequentialRecTask(build_model(spec), **task_args)
    timer = EpochTimer()
    best = ModelCheckpoint(dirpath=f"{workdir}/{model_name}_{seed}", monitor="val/ndcg@10", mode="max", filename="best")
    trainer = L.Trainer(max_epochs=max_epochs, default_root_dir=workdir, logger=CSVLogger(workdir, name=model_name),
                        callbacks=[EarlyStopping("val/ndcg@10", mode="max", patience=patience), best, timer],
                        enable_model_summary=False, num_sanity_val_steps=0, max_time=max_time,
                        limit_train_batches=limit_train_batches)
    trainer.fit(task, dm)
    # read before testing: trainer.test restores the callbacks' state from the best checkpoint, which predates the stop
    epochs, early = trainer.current_epoch, bool(trainer.early_stopping_callback.stopped_epoch)
    stop = "early stopping" if early else "max_epochs" if epochs >= max_epochs else "max_time"
    if not best.best_model_path:  # stopped by max_time before the first validation
        trainer.validate(task, dm, verbose=False)
        trainer.save_checkpoint(f"{workdir}/{model_name}_{seed}/last.ckpt")
        best.best_model_path, best.best_model_score = f"{workdir}/{model_name}_{seed}/last.ckpt", \
            trainer.callback_metrics["val/ndcg@10"]
    test = trainer.test(task, dm, ckpt_path=best.best_model_path, verbose=False)[0]
    row = {"model": run_name(model_name, model_args), "seed": seed, "epochs": epochs, "early_stopped": early,
           "stopped_by": stop,
           "val_ndcg@10": float(best.best_model_score), **{m: float(test[f"test/{m}"]) for m in METRICS},
           "sec_per_epoch": statistics.mean(timer.seconds[1:] or timer.seconds),
           "params": sum(p.numel() for p in task.parameters()), "device": device_name()}
    if latency:
        row["inference_sec_per_batch"] = inference_latency(task, dm)
        if task.model.streamable:
            row.update(streaming_row(task.model))
    return row, dm


def device_name() -> str:
    """Where Lightning trains by default here: the CUDA device's name, else "cpu"."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="interaction file (.inter[.gz], u.data, *.txt[.gz])")
    parser.add_argument("--dataset", choices=["beauty", "ml100k"], help="config suffix")
    parser.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "mamba4rec", "sigma", "tim4rec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020])
    parser.add_argument("--model-args", nargs="+", metavar="KEY=VALUE",
                        help="override the configs' model arguments (an ablation), e.g. n_layers=2 dropout=0.4")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, help="override the configs' training batch size")
    parser.add_argument("--max-time", help="stop each training run after DD:HH:MM:SS (reported in the JSON)")
    parser.add_argument("--limit-train-batches", type=int, help="training batches per epoch (smoke runs)")
    parser.add_argument("--no-latency", action="store_true",
                        help="after training, skip the inference and streaming timings (measured apart with "
                             "--latency-only / --streaming-only)")
    parser.add_argument("--latency-only", action="store_true", help="time training, inference, streaming only")
    parser.add_argument("--streaming-only", action="store_true", help="time streaming step vs re-encoding only")
    parser.add_argument("--compiled-step", action="store_true",
                        help="with --streaming-only: also time torch.compile(model.step) for one user")
    parser.add_argument("--merge", nargs="+", type=pathlib.Path,
                        help="tabulate the runs of these JSON outputs together (runs split over processes)")
    parser.add_argument("--out", default="/tmp/recsys_bench.json")
    args = parser.parse_args(argv)
    if args.merge:
        return merge_main(args)
    if not (args.data and args.dataset):
        parser.error("--data and --dataset are required (except with --merge)")
    if args.latency_only or args.streaming_only:
        return latency_main(args)
    rows, pop = [], None
    model_args = parse_model_args(args.model_args)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            for seed in args.seeds:
                row, dm = run_one(model, args.dataset, args.data, seed, args.max_epochs, workdir, args.batch_size,
                                  args.max_time, args.limit_train_batches, latency=not args.no_latency,
                                  model_args=model_args)
                rows.append(row)
                pop = pop or most_pop(dm)
                print(json.dumps(row), flush=True)
                write_results(out, args, rows, pop)  # after every run: an interrupted sweep keeps what finished
    print_table(rows, pop)
    print(f"wrote {out}")


def write_results(out: pathlib.Path, args, rows, pop):
    out.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, pathlib.Path) else v)
                                        for k, v in vars(args).items()},
                               "machine": platform.platform(), "threads": torch.get_num_threads(),
                               "runs": rows, "mostpop": pop, "summary": summarise(rows)}, indent=1))


def summarise(rows) -> dict:
    """Per model: each metric's mean and sample standard deviation over its runs (None for one run: a single
    seed has no spread to report)."""
    summary = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        summary[model] = {m: (statistics.mean(r[m] for r in mine),
                              statistics.stdev(r[m] for r in mine) if len(mine) > 1 else None) for m in METRICS}
    return summary


def print_table(rows, pop):
    summary = summarise(rows)
    header = ("| model | seeds | " + " | ".join(METRICS)
              + " | s/epoch | epochs (* = capped) | infer s/batch | step+scores ms (1 user) "
              "| re-encode 50+scores ms (1 user) |")
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    print("| MostPop | - | " + " | ".join(f"{pop[m]:.4f}" for m in METRICS) + " | - | - | - | - | - |")
    mean = lambda mine, key: (f"{statistics.mean(r[key] for r in mine):.3f}"  # noqa: E731
                              if all(key in r for r in mine) else "-")
    for model, stats in summary.items():
        mine = [r for r in rows if r["model"] == model]
        cells = [f"{mean_:.4f}" + ("" if std is None else f" ± {std:.4f}") for mean_, std in map(stats.get, METRICS)]
        epochs = "/".join(f"{r['epochs']}{'' if r.get('early_stopped', True) else '*'}" for r in mine)
        print(f"| {model} | {len(mine)} | " + " | ".join(cells)
              + f" | {statistics.mean(r['sec_per_epoch'] for r in mine):.1f} | {epochs}"
              + f" | {mean(mine, 'inference_sec_per_batch')} | {mean(mine, 'step_ms_1u_scored')}"
              + f" | {mean(mine, 'reencode50_ms_1u_scored')} |")


def merge_main(args):
    """One table from the JSON outputs of several processes (e.g. one per model and seed, run side by side), or
    from an earlier merge plus new runs."""
    loaded = [json.loads(path.read_text()) for path in args.merge]
    rows = [row for data in loaded for row in data["runs"]]
    pop = next(data["mostpop"] for data in loaded if data.get("mostpop"))
    print_table(rows, pop)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = {"merged": [m for p, d in zip(args.merge, loaded) for m in d.get("merged", [str(p)])],
              "machines": sorted({m for d in loaded for m in d.get("machines", [d.get("machine")])}),
              "runs": rows, "mostpop": pop, "summary": summarise(rows)}
    notes = [d["note"] for d in loaded if d.get("note")]  # an earlier merge's provenance is carried over
    commands = [c for d in loaded for c in d.get("commands", [])]
    if notes:
        merged["note"] = " ".join(notes)
    if commands:
        merged["commands"] = commands
    out.write_text(json.dumps(merged, indent=1))
    print(f"wrote {out}")


def latency_main(args):
    rows = []
    for model in args.models:
        row, dm = latency_one(model, args.dataset, args.data, args.batch_size, args.streaming_only,
                              args.compiled_step)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if not args.streaming_only:
        print("| model | params | s/train step | steps/epoch | s/epoch (est.) | s/epoch one padded call (est.) "
              "| speed-up | s/train step, CE on full logits | speed-up | infer s/batch (2048) |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['params']} | {r['sec_per_train_step']:.2f} | {r['train_steps_per_epoch']} "
                  f"| {r['sec_per_epoch_est']:.0f} | {r['sec_per_epoch_est_padded']:.0f} "
                  f"| {r['train_speedup_vs_padded']:.1f}x | {r['sec_per_train_step_full_logits']:.2f} "
                  f"| {r['train_speedup_vs_full_logits']:.2f}x | {r['inference_sec_per_batch']:.2f} |")
    print("| model | users updated together | scores over all items | step ms / interaction "
          "| re-encode 50 ms / interaction | speed-up |\n|---|---|---|---|---|---|")
    for r in rows:
        for tag in ("1u_scored", "1u", "1uc_scored", "1uc", "256u_scored", "256u"):
            if f"step_ms_{tag}" in r:
                users = tag.split('u')[0] + (" (torch.compile)" if "uc" in tag else "")
                print(f"| {r['model']} | {users} | {'yes' if 'scored' in tag else 'no'} "
                      f"| {r[f'step_ms_{tag}']:.3f} | {r[f'reencode50_ms_{tag}']:.3f} | {r[f'speedup_{tag}']:.1f}x |")
    pop = most_pop(dm)
    print("MostPop test: " + ", ".join(f"{m} {pop[m]:.4f}" for m in METRICS))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": platform.platform(), "threads": torch.get_num_threads(),
                               "latency": rows, "mostpop": pop}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
