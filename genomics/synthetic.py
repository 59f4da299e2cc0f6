"""A built-in synthetic genome with planted motifs, and a motif-presence labelled set, for demos and smoke runs."""
from __future__ import annotations

import pathlib

import numpy as np

MOTIF = "TATAATGCGCAT"


def synthetic_genome(length: int = 60_000, motif: str = MOTIF, every: int = 60, seed: int = 0) -> str:
    """Random bases (GC 0.5) with `motif` planted about once per `every` bases: a model that learns the motif
    predicts its tail and so beats the 2-bit uniform rate."""
    rng = np.random.default_rng(seed)
    seq = rng.choice(np.array(list("ACGT")), length)
    for start in rng.integers(0, length - len(motif), length // every):
        seq[start:start + len(motif)] = list(motif)
    return "".join(seq)


def write_synthetic_fasta(path, length: int = 60_000, seed: int = 0) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seq = synthetic_genome(length, seed=seed)
    path.write_text(">synthetic_chr1 planted motif " + MOTIF + "\n"
                    + "\n".join(seq[i:i + 80] for i in range(0, len(seq), 80)) + "\n")
    return path


def write_motif_csv(path, n: int = 600, length: int = 100, seed: int = 1) -> pathlib.Path:
    """GenomicBenchmarks-style `seq,label` CSV: label 1 iff the (single) planted motif is present."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seq = list(rng.choice(np.array(list("ACGT")), length))
        label = i % 2
        if label:
            s = int(rng.integers(0, length - len(MOTIF)))
            seq[s:s + len(MOTIF)] = list(MOTIF)
        text = "".join(seq)
        if not label and MOTIF in text:  # a random negative that happens to contain the motif
            continue
        rows.append(f"{text},{label}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("seq,label\n" + "\n".join(rows) + "\n")
    return path
