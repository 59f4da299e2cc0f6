"""`ssmkit demo` step: a tiny SaShiMi learns synthetic tones through the real WAV-folder path, then generates audio
in step mode (WAV + log-mel spectrogram)."""
from __future__ import annotations

import math
import pathlib
import time
from typing import List

import numpy as np
import soundfile as sf
import torch

from ssmkit.train import DemoResult, LossHistory, demo_trainer, seed, smoothed

from .data import AudioFolderDataModule
from .generate import generate, write_samples
from .task import AutoregressiveAudioTask

RATE = 8000


def write_tones(folder: pathlib.Path, n_files: int = 8, seconds: float = 1.0,
                seed_value: int = 0) -> List[pathlib.Path]:
    """Write `n_files` mono 16-bit WAVs of decaying harmonic tones (random pitch per note) at 8 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed_value)
    t = np.arange(int(RATE * seconds)) / RATE
    paths = []
    for i in range(n_files):
        note = np.zeros_like(t)
        for start in np.arange(0, seconds, 0.25):  # four notes per second
            f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
            env = np.where(t >= start, np.exp(-(t - start) * 12), 0.0)
            note += env * sum(np.sin(2 * math.pi * k * f0 * t) / k for k in (1, 2, 3))
        path = folder / f"tones_{i:02d}.wav"
        sf.write(path, (0.8 * note / np.abs(note).max()).astype(np.float32), RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def demo(out_dir: pathlib.Path, steps: int = 60) -> DemoResult:
    """Train a tiny SaShiMi (S4, d_model 16) for `steps` steps on synthetic tones, report the test NLL in bits per
    sample, and write one generated quarter second as WAV + spectrogram; returns the summary row."""
    out_dir = pathlib.Path(out_dir)
    t0 = time.perf_counter()
    seed(0)
    write_tones(out_dir / "data")
    data = AudioFolderDataModule(str(out_dir / "data"), layout="folder", sample_rate=RATE, window=512, batch_size=8,
                                 val_fraction=0.15, test_fraction=0.15)
    model = {"class_path": "ssmkit.audio.SaShiMi", "init_args": {"d_model": 16, "n_layers": 1, "d_state": 16}}
    task = AutoregressiveAudioTask(model, lr=1e-2, scheduler="cosine")
    history = LossHistory()
    trainer = demo_trainer(out_dir, steps, [history], limit_val_batches=2)
    trainer.fit(task, data)
    bits = trainer.test(task, data, verbose=False)[0]["test/bits_per_sample"]
    codes, ll = generate(task.model, 1, RATE // 4, seed=0, progress=False)
    outputs = [p for p in write_samples(codes, ll, out_dir / "samples", RATE) if p.suffix in (".wav", ".png")]
    first, last = smoothed(history.losses)
    return DemoResult(model="SaShiMi (S4, d_model 16)", task="8-bit AR on synthetic tones, 8 kHz",
                      steps=len(history.losses), first_loss=first, last_loss=last, metric_name="test bits/sample",
                      metric=float(bits), seconds=time.perf_counter() - t0, outputs=outputs)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(demo(pathlib.Path("outputs/demo/audio")))
