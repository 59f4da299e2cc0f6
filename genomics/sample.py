"""`ssmkit dna sample`: sample DNA from a causal DNA LM checkpoint, write FASTA, and compare the samples' GC
content and k-mer spectrum with the genome they were trained on.

Models with `step` (DNA-xLSTM) decode token by token; others (HyenaDNA) recompute the forward pass on the last
`l_max - 1` bases for each new base. Only A, C, G, T are sampled.
"""
from __future__ import annotations

import importlib
import inspect
import pathlib
import sys
from typing import Dict, List

import numpy as np
import torch

from .tokenizer import A, T, DNATokenizer


def _instantiate(value):
    """LightningCLI stores init arguments as {class_path, init_args} (nested); build the objects."""
    if isinstance(value, dict) and "class_path" in value:
        module, name = value["class_path"].rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: _instantiate(v) for k, v in (value.get("init_args") or {}).items()})
    return value


def load_pretrain_checkpoint(path):
    """A DNAPretrainTask from its checkpoint (the model is in the hyperparameters, as an object or, from
    `ssmkit fit`, as a class_path config), in eval mode."""
    from .task import DNAPretrainTask
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    params = inspect.signature(DNAPretrainTask.__init__).parameters
    kwargs = {k: _instantiate(v) for k, v in ckpt.get("hyper_parameters", {}).items() if k in params}
    if not isinstance(kwargs.get("model"), torch.nn.Module):
        raise ValueError(f"{path}: not a DNAPretrainTask checkpoint (no model in its hyperparameters)")
    task = DNAPretrainTask(**kwargs)
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()


@torch.no_grad()
def sample(model, length: int, n: int, prompt: str = "", temperature: float = 1.0, seed: int = 0,
           progress: bool = False) -> List[str]:
    """n sequences of `length` new bases from a causal model (after `prompt`, or one uniform random base)."""
    if not getattr(model, "causal", False):
        raise ValueError(f"{type(model).__name__} is not causal: sampling needs a CLM-trained model")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    gen = torch.Generator().manual_seed(seed)
    tok = DNATokenizer()
    start = torch.as_tensor(tok(prompt)) if prompt else torch.randint(A, T + 1, (1,), generator=gen)
    seqs = start.repeat(n, 1)
    window = getattr(model, "l_max", None)
    state, logits = None, None
    if hasattr(model, "step"):
        for t in range(seqs.shape[1]):
            logits, state = model.step(seqs[:, t], state)
    from rich.progress import Progress
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("sampling", total=length)
        for _ in range(length):
            if state is None:
                context = seqs if window is None else seqs[:, -(window - 1):]
                logits = model(context)[:, -1]
            probs = torch.softmax(logits[:, A:T + 1].double() / temperature, -1)
            nxt = A + torch.multinomial(probs, 1, generator=gen)
            seqs = torch.cat([seqs, nxt], 1)
            if state is not None:
                logits, state = model.step(nxt[:, 0], state)
            bar.advance(task)
    return [tok.decode(row[len(start):].numpy()) for row in seqs]


def kmer_spectrum(ids: np.ndarray, k: int) -> np.ndarray:
    """Normalised counts of the 4^k k-mers of A/C/G/T ids (windows containing other ids are skipped)."""
    base = ids.astype(np.int64) - A
    ok = (base >= 0) & (base < 4)
    code = np.zeros(len(ids) - k + 1, dtype=np.int64)
    valid = np.ones(len(ids) - k + 1, dtype=bool)
    for j in range(k):
        code = code * 4 + np.where(ok, base, 0)[j:len(ids) - k + 1 + j]
        valid &= ok[j:len(ids) - k + 1 + j]
    counts = np.bincount(code[valid], minlength=4 ** k).astype(np.float64)
    return counts / max(counts.sum(), 1)


def spectrum_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between two k-mer spectra (0 = identical, 1 = disjoint)."""
    return float(0.5 * np.abs(a - b).sum())


def compare_with_genome(samples: List[str], store_path, k: int) -> Dict[str, float]:
    """GC and k-mer distance of the samples, and of an equally long stretch of the test split, to the train split
    (the test stretch gives the scale of distance between two real pieces of the same genome)."""
    from .store import GenomeStore
    store = GenomeStore(store_path)
    train = np.concatenate([store.ids(c, s, e) for c, s, e in store.intervals("train")])
    test = np.concatenate([store.ids(c, s, e) for c, s, e in store.intervals("test")])
    ids = [DNATokenizer()(s) for s in samples]
    total = sum(len(i) for i in ids)
    ref = kmer_spectrum(train, k)
    gc = lambda x: float(np.isin(x, (8, 9)).mean())  # noqa: E731
    sample_spec = sum(kmer_spectrum(i, k) * (len(i) - k + 1) for i in ids)
    return {"gc_samples": float(np.mean([gc(i) for i in ids])), "gc_train": gc(train),
            f"kmer{k}_tv_samples": spectrum_distance(sample_spec / sample_spec.sum(), ref),
            f"kmer{k}_tv_test_stretch": spectrum_distance(kmer_spectrum(test[:total], k), ref)}


def write_fasta(samples: List[str], path, description: str) -> pathlib.Path:
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    SeqIO.write([SeqRecord(Seq(s), id=f"sample{i + 1}", description=description) for i, s in enumerate(samples)],
                path, "fasta")
    return path


def sample_main(args) -> int:
    task = load_pretrain_checkpoint(args.checkpoint)
    samples = sample(task.model, args.length, args.n, args.prompt, args.temperature, args.seed, progress=True)
    out = write_fasta(samples, args.out, f"sampled from {pathlib.Path(args.checkpoint).name} "
                                         f"T={args.temperature} seed={args.seed}")
    print(f"wrote {len(samples)} x {args.length} bp to {out.resolve()}")
    gcs = [s.count("G") + s.count("C") for s in samples]
    print(f"GC content of the samples: {sum(gcs) / max(1, sum(map(len, samples))):.4f}")
    if args.genome:
        for name, value in compare_with_genome(samples, args.genome, args.k).items():
            print(f"  {name}: {value:.4f}")
    sys.stdout.flush()
    return 0

