"""Short CPU runs of the ImageNet recipe configs (configs/vision/*_imagenet.yaml) on an ImageFolder of MNIST digits.

The MNIST idx files (the 10k test split, the only one shipped: a seeded train / val split of it) are written as PNG
class folders under --folder (outside the checkout), then each config is trained with `ssmkit fit` for --steps
steps with the recipe unchanged (Mixup/CutMix + label smoothing, RandAugment, random erasing, drop path, AdamW +
warm-up cosine, EMA) except what a CPU run of a few hundred steps needs: 32 px images (Vim with 8 px patches), a
shrunk architecture (SMALL_MODELS; --full-size keeps the preset), batch 32, 20 warm-up steps, EMA decay warm-up
(timm's 1 - (1 + step)^(-2/3), capped at the paper's decay), one device, fp32. Prints first / last training loss
and the val top-1 of the weights and of their EMA (chance 10%) at the last step, and writes JSON.
    python benchmarks/vision_recipes.py --mnist /path/to/mnist [--steps 200] [--configs vim_tiny_imagenet ...]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "vision"
# CPU-sized architectures (the recipe is the config's; only the model is shrunk so a run takes minutes on a busy
# CPU): the full tiny presets take 5-13 s per step of 32 images at 32 px on one loaded thread.
SMALL_MODELS = {"vim": dict(img_size=32, patch_size=8, embed_dim=64, depth=4, d_state=8),
                "vssd": dict(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], d_state=16),
                "spatialmamba": dict(embed_dim=32, depths=[1, 1, 2, 1])}
RECIPES = ["vim_tiny_imagenet", "vssd_tiny_imagenet", "spatialmamba_tiny_imagenet", "vim_small_imagenet",
           "vssd_small_imagenet", "spatialmamba_small_imagenet"]


def write_mnist_folder(mnist: pathlib.Path, out: pathlib.Path, n_train: int, n_val: int, seed: int = 0) -> None:
    """out/{train,val}/<digit>/<index>.png from the idx files, a seeded disjoint split."""
    import numpy as np
    from PIL import Image

    from ssmkit.vision.data import read_idx

    images = read_idx(mnist / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist / "t10k-labels-idx1-ubyte.gz")
    order = np.random.default_rng(seed).permutation(len(labels))
    for split, idx in (("train", order[:n_train]), ("val", order[n_train:n_train + n_val])):
        for i in idx:
            folder = out / split / str(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i}.png")


def run(config: str, folder: pathlib.Path, out: pathlib.Path, steps: int, batch: int, full_size: bool) -> dict:
    import yaml

    cfg = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    model_kwargs = dict(cfg["model"]["init_args"]["model_kwargs"])  # the recipe's drop path
    if full_size:
        model_kwargs.update(dict(img_size=32, patch_size=8) if config.startswith("vim") else {})
    else:
        model_kwargs.update(SMALL_MODELS[config.split("_")[0]])
    args = [sys.executable, "-m", "ssmkit.cli", "fit", "--config", str(CONFIGS / f"{config}.yaml"),
            "--model.model_kwargs", json.dumps(model_kwargs), "--model.num_classes", "10",
            "--model.warmup_steps", "20", "--model.ema_warmup", "true",
            "--data.root", str(folder), "--data.img_size", "32", "--data.batch_size", str(batch),
            "--data.num_workers", "0", "--data.mean", "[0.1307,0.1307,0.1307]", "--data.std", "[0.3081,0.3081,0.3081]",
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.devices", "1",
            "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", str(steps),
            "--trainer.strategy", "auto", "--trainer.precision", "32", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "5",
            "--trainer.default_root_dir", str(out / config), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(out / config)]
    start = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{proc.stderr[-3000:]}")
    rows = list(csv.DictReader(open(next((out / config).rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    val = [r for r in rows if r.get("val/top1")][-1]
    n = max(1, len(losses) // 10)
    return dict(config=config, model_kwargs=model_kwargs, steps=steps, batch=batch, minutes=(time.time() - start) / 60,
                first_loss=sum(losses[:n]) / n, last_loss=sum(losses[-n:]) / n,
                val_top1=float(val["val/top1"]), val_ema_top1=float(val["val_ema/top1"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", required=True, help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    p.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "ssmkit_mnist_folder"))
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ssmkit_vision_recipes"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--configs", nargs="+", default=RECIPES, choices=RECIPES)
    p.add_argument("--full-size", action="store_true", help="train the configs' own presets (slow on CPU)")
    a = p.parse_args()
    folder, out = pathlib.Path(a.folder), pathlib.Path(a.out)
    if not (folder / "train").is_dir():
        write_mnist_folder(pathlib.Path(a.mnist), folder, n_train=2000, n_val=500)
    results = []
    for config in a.configs:
        results.append(run(config, folder, out, a.steps, a.batch, a.full_size))
        r = results[-1]
        print(f"{r['config']:<30} loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}  val top-1 {r['val_top1']:.3f}"
              f"  EMA {r['val_ema_top1']:.3f}  ({r['minutes']:.1f} min)", flush=True)
        (out / "recipes.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'recipes.json'}")


if __name__ == "__main__":
    main()
