"""A built-in synthetic genome with planted motifs, and a motif-presence labelled set, for demos and smoke runs."""
from __future__ import annotations

import pathlib

import numpy as np

MOTIF = "TATAATGCGCAT"


# order-1 transitions (rows: previous base A, C, G, T): a learnable background below the 2-bit uniform rate
TRANSITIONS = np.array([[0.6, 0.1, 0.2, 0.1], [0.1, 0.3, 0.5, 0.1], [0.2, 0.4, 0.3, 0.1], [0.1, 0.1, 0.1, 0.7]])


def synthetic_genome(length: int = 60_000, motif: str = MOTIF, every: int = 100, seed: int = 0) -> str:
    """An order-1 Markov background (`TRANSITIONS`) with `motif` planted about once per `every` bases: a model
    learns the background within a few dozen steps, and the motif's tail after seeing its head."""
    rng = np.random.default_rng(seed)
    u = rng.random(length)
    cumulative = TRANSITIONS.cumsum(1)
    states = np.empty(length, dtype=np.int64)
    states[0] = 0
    for i in range(1, length):
        states[i] = np.searchsorted(cumulative[states[i - 1]], u[i])
    seq = np.array(list("ACGT"))[np.minimum(states, 3)]
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
    """GenomicBenchmarks-style `seq,label` CSV: uniform random bases, label 1 iff the motif is planted (twice)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seq = list(rng.choice(np.array(list("ACGT")), length))
        label = i % 2
        if label:
            for s in rng.integers(0, length - len(MOTIF), 2):
                seq[s:s + len(MOTIF)] = list(MOTIF)
        text = "".join(seq)
        if not label and MOTIF in text:  # a random negative that happens to contain the motif
            continue
        rows.append(f"{text},{label}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("seq,label\n" + "\n".join(rows) + "\n")
    return path
