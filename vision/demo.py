"""`ssmkit demo` stop: a tiny Vision Mamba (via timm.create_model) learns scikit-learn's built-in digits."""
from __future__ import annotations

import pathlib
import time

from ssmkit.train import DemoResult, LossHistory, demo_trainer, seed, smoothed
from ssmkit.vision.data import DigitsDataModule
from ssmkit.vision.task import ImageClassificationTask

MODEL_KWARGS = dict(img_size=16, patch_size=4, embed_dim=48, depth=2, d_state=8)


def demo(out_dir: pathlib.Path, steps: int = 60) -> DemoResult:
    """Train a 2-block Vim (16 px digits, 4x4 patches) for `steps` steps; report the held-out top-1."""
    seed(0)
    data = DigitsDataModule(img_size=16, batch_size=64)
    task = ImageClassificationTask("vim_tiny_patch16_224", num_classes=10, in_chans=1, model_kwargs=MODEL_KWARGS,
                                   lr=3e-3, weight_decay=0.05, scheduler="cosine", warmup_steps=5)
    history = LossHistory()
    trainer = demo_trainer(out_dir, steps, [history], val_check_interval=None, check_val_every_n_epoch=None,
                           limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    seconds = time.perf_counter() - start
    top1 = float(trainer.test(task, datamodule=data, verbose=False)[0]["test/top1"])
    first, last = smoothed(history.losses)
    return DemoResult("Vim (2 blocks, d=48, timm)", "digits classification", len(history.losses), first, last,
                      "test top-1", top1, seconds,
                      [pathlib.Path(trainer.checkpoint_callback.best_model_path or trainer.log_dir)])
