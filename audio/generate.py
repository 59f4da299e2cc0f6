"""Autoregressive generation with a model's recurrent step, and `ssmkit generate` (WAV + log-mel PNG per sample).

    ssmkit generate --checkpoint CKPT --seconds 1 --n 8 --out samples/ [--temperature 1 --top-p 1 --batch-size 16]

Samples start from the silence code 128 and are drawn one sample at a time with the model's in-place `stepper`
(SaShiMi; else `initial_state` / `step`), batched, from the softmax of logits / temperature restricted to the top-p
nucleus (by the Gumbel-max trick: two ops per step at T = 1, p = 1). Each sample's own log-likelihood under the model
(temperature 1, no nucleus) is summed per chunk of steps from the kept logits; files are
ranked by it (best first, as SaShiMi's `generate.py` does) and written as `rank{k}_nll{bits}.wav` (PCM 16-bit at the
model's sample rate) and `.png`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import pathlib
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from rich.progress import Progress

from .quantize import N_CLASSES, SILENCE, decode

GUMBEL_CHUNK = 1024  # steps of sampling noise drawn at once


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits with every token outside the smallest set of probability mass >= top_p set to -inf."""
    if top_p >= 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs >= top_p  # mass strictly before a token already reaches top_p
    return logits.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float("-inf"))


def _advance(model, batch_size: int):
    """`advance(code_t, out)`: writes the logits for the next sample into `out` and moves the model's state on.
    The model's in-place `stepper(batch_size)` when it has one (SaShiMi), else its `initial_state` / `step`."""
    if callable(getattr(model, "stepper", None)):
        return model.stepper(batch_size)
    state = model.initial_state(batch_size)

    def advance(code: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        nonlocal state
        logits, state = model.step(code, state)
        return out.copy_(logits)
    return advance


@contextlib.contextmanager
def _onednn_off():
    """oneDNN off while stepping: PyTorch sends a contiguous fp32 GELU on CPU to oneDNN, whose per-call setup
    (~10 us) dwarfs the arithmetic on a (B, 2 d) tensor; the native kernel computes the same exact GELU."""
    saved = torch.backends.mkldnn.set_flags(_enabled=False)
    try:
        yield
    finally:
        torch.backends.mkldnn.set_flags(*saved)


@torch.inference_mode()
def generate(model, n: int, length: int, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 16,
             seed: Optional[int] = None, progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw `n` sequences of `length` codes with the model's `stepper` (or `initial_state` / `step`).

    Returns (codes (n, length) int64, log-likelihood per sample in bits, (n,) float64: mean log2 p(code_t | past)
    under the untempered model). Raises ValueError for a model without a step mode or bad arguments.
    """
    if not (callable(getattr(model, "step", None)) and callable(getattr(model, "initial_state", None))):
        raise ValueError(f"{type(model).__name__} has no step mode (initial_state/step); generation needs one")
    if n < 1 or length < 1 or batch_size < 1:
        raise ValueError(f"n, length and batch_size must be >= 1, got n={n}, length={length}, batch_size={batch_size}")
    if temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got temperature={temperature}, top_p={top_p}")
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    param = next(model.parameters())
    plain = temperature == 1 and top_p >= 1
    all_codes, all_ll = [], []
    with Progress(disable=not progress, transient=True) as bar, _onednn_off():
        task = bar.add_task("generating", total=n * length)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            advance = _advance(model, b)
            code = torch.full((b,), SILENCE, dtype=torch.long, device=param.device)
            codes = torch.empty(length, b, dtype=torch.long, device=param.device)
            ll = torch.zeros(b, dtype=torch.float64, device=param.device)
            for c0 in range(0, length, GUMBEL_CHUNK):  # per chunk: noise, logits and codes buffers, one view per step
                m = min(GUMBEL_CHUNK, length - c0)
                u = torch.rand(m, b, N_CLASSES, generator=gen)  # Gumbel-max: argmax(logits / T + G) ~ softmax(.. / T)
                gumbel = (-torch.log(-torch.log(u))).to(param.device)
                logits = torch.empty(m, b, N_CLASSES, dtype=param.dtype, device=param.device)
                for t, (out, noise, code_out) in enumerate(zip(logits.unbind(0), gumbel.unbind(0),
                                                               codes[c0:c0 + m].unbind(0))):
                    advance(code, out)
                    scores = out if plain else _nucleus(out.float() / temperature, top_p)
                    code = torch.argmax(scores + noise, -1, out=code_out)
                    if t % 64 == 63:
                        bar.update(task, completed=start * length + b * (c0 + t + 1))
                # the model's own log-likelihood of what was drawn, for the whole chunk at once
                ll += F.log_softmax(logits.float(), -1).gather(-1, codes[c0:c0 + m, :, None])[..., 0].double().sum(0)
            bar.update(task, completed=(start + b) * length)
            all_codes.append(codes.t())
            all_ll.append(ll / (length * math.log(2)))
    model.train(was_training)
    return torch.cat(all_codes).cpu(), torch.cat(all_ll).cpu()


def save_spectrogram(wave: torch.Tensor, sample_rate: int, path: pathlib.Path, title: str = "") -> pathlib.Path:
    """Log-mel spectrogram (torchaudio MelSpectrogram, 64 mels, dB) of a waveform as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchaudio.transforms import AmplitudeToDB, MelSpectrogram

    n_fft = min(1024 if sample_rate >= 16000 else 512, 2 ** max(1, int(math.log2(wave.shape[-1]))))  # short clips
    mel = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=max(1, n_fft // 4), n_mels=min(64, n_fft // 4))
    mel = mel(wave.float())
    db = AmplitudeToDB(top_db=80)(mel)
    fig, ax = plt.subplots(figsize=(6, 3))
    im = ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
                   extent=(0, wave.shape[-1] / sample_rate, 0, db.shape[0]))
    ax.set(xlabel="time (s)", ylabel="mel bin", title=title)
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_samples(codes: torch.Tensor, bits: torch.Tensor, out_dir, sample_rate: int,
                  quantization: str = "mu-law") -> List[pathlib.Path]:
    """Write each sequence, best log-likelihood first, as WAV (PCM 16) + log-mel PNG, and `samples.json`
    (rank, files, NLL in bits per sample). Returns the written paths."""
    import soundfile as sf

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, record = [], []
    for rank, i in enumerate(torch.argsort(bits, descending=True).tolist()):
        nll = -float(bits[i])
        stem = f"rank{rank:03d}_nll{nll:.3f}"
        wave = decode(codes[i], quantization)
        wav = out / f"{stem}.wav"
        sf.write(str(wav), wave.numpy(), sample_rate, subtype="PCM_16")
        png = save_spectrogram(wave, sample_rate, out / f"{stem}.png", f"rank {rank}: {nll:.3f} bits/sample")
        paths += [wav, png]
        record.append({"rank": rank, "wav": wav.name, "png": png.name, "nll_bits_per_sample": nll})
    (out / "samples.json").write_text(json.dumps(record, indent=1))
    return paths + [out / "samples.json"]


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssmkit generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=pathlib.Path, help="AutoregressiveAudioTask checkpoint")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each sample in seconds")
    parser.add_argument("--n", type=int, default=4, help="number of samples")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("samples"), help="output folder")
    parser.add_argument("--batch-size", type=int, default=16, help="samples generated together")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from .task import AutoregressiveAudioTask

    path = args.checkpoint
    if not path.is_file():
        parser.error(f"--checkpoint: {path} not found")
    try:
        task = AutoregressiveAudioTask.load_from_checkpoint(path, map_location="cpu")
    except Exception as e:  # torch / zip / pickle / Lightning each raise their own type for a bad file
        raise ValueError(f"{path}: not a readable AutoregressiveAudioTask checkpoint: {type(e).__name__}: {e}") from e
    rate, quantization = task.hparams.audio_sample_rate, task.hparams.audio_quantization
    if rate is None or quantization is None:
        raise ValueError(f"{path}: the checkpoint records no sample rate / quantisation (train it on an audio data "
                         f"module)")
    length = round(args.seconds * rate)
    if length < 1:
        parser.error(f"--seconds {args.seconds} is shorter than one sample at {rate} Hz")
    codes, bits = generate(task.model, args.n, length, args.temperature, args.top_p, args.batch_size, args.seed,
                           progress=not args.no_progress)
    for p in write_samples(codes, bits, args.out, rate, quantization):
        print(p.resolve())
    return 0
