"""Labelled sequence sets and their DataModule: GenomicBenchmarks CSV, labelled FASTA, and tasks derived from
annotation (E. coli CDS vs intergenic, splice donor/acceptor windows, species of origin).

Splits are seeded and stratified (each class split in the same proportions); the seed and the split sizes are
recorded in the module's hyperparameters and `split_info`. Sequences are left-padded with [PAD] per batch
(causal models read the real bases last).
"""
from __future__ import annotations

import csv
import pathlib
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssmkit.data import ResumableDataModule

from .errors import LabelledDataError
from .io import (Feature, checked_lines, fasta_records, iter_records, open_text, read_genbank_features, read_gff3,
                 sniff_format)
from .tokenizer import COMPLEMENT, PAD, DNATokenizer

Example = Tuple[str, int]
_LABEL = re.compile(r"\+?[0-9]+")  # a class index; int() would also take '-1', '1_0' and non-ASCII digits


def read_labelled_csv(path) -> List[Example]:
    """GenomicBenchmarks `seq,label` CSV (plain or gzip); integer labels. Bad rows name the file and line."""
    out = []
    with open_text(path) as f:
        reader = csv.DictReader(checked_lines(path, f))
        if reader.fieldnames is None or not {"seq", "label"} <= set(reader.fieldnames):
            raise LabelledDataError(f"{path}, line 1: expected columns 'seq' and 'label', got {reader.fieldnames}")
        if len(set(reader.fieldnames)) != len(reader.fieldnames):
            raise LabelledDataError(f"{path}, line 1: repeated column name in {reader.fieldnames}")
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():  # DictReader's marks of a longer / shorter row
                got = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, ()))
                raise LabelledDataError(f"{path}, line {line}: expected {len(reader.fieldnames)} comma-separated "
                                        f"fields like the header, got {got}")
            seq, label = (row.get("seq") or "").strip(), (row.get("label") or "").strip()
            if not seq:
                raise LabelledDataError(f"{path}, line {line}: empty sequence")
            if not _LABEL.fullmatch(label):
                raise LabelledDataError(f"{path}, line {line}: label {label!r} is not a class index (0, 1, ...)")
            out.append((seq, int(label)))
    if not out:
        raise LabelledDataError(f"{path}: no rows")
    return out


def read_labelled_fasta(path) -> List[Example]:
    """FASTA whose headers carry the label: `>id label=1` or `>id ... 1` (last word). Names file and record."""
    out = []
    with open_text(path) as f:
        for i, (title, seq) in enumerate(fasta_records(path, f), 1):
            words = title.split()
            tags = [w.split("=", 1)[1] for w in words if w.startswith("label=")]
            label = tags[0] if tags else (words[-1] if len(words) > 1 else "")
            if not _LABEL.fullmatch(label):
                raise LabelledDataError(f"{path}, record {i} ({title[:40]!r}): no class index (0, 1, ...) as label "
                                        "in the header (use 'label=K' or end the header with the label)")
            label = int(label)
            if not seq:
                raise LabelledDataError(f"{path}, record {i} ({title[:40]!r}): empty sequence")
            out.append((seq, label))
    if not out:
        raise LabelledDataError(f"{path}: no FASTA records")
    return out


def _annotations(sequence_path, annotation_path) -> Tuple[Dict[str, str], List[Feature]]:
    if annotation_path is None:
        if sniff_format(sequence_path) != "genbank":
            raise ValueError(f"{sequence_path}: give a GFF3 file for a FASTA sequence (or use a GenBank file)")
        return read_genbank_features(sequence_path)
    return dict(iter_records(sequence_path)), read_gff3(annotation_path)


def _tile(intervals, window: int):
    return [(c, s) for c, a, b in intervals for s in range(a, b - window + 1, window)]


def _subsample(items, n, rng):
    if n is None or len(items) <= n:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def cds_vs_intergenic(sequence_path, annotation_path=None, window: int = 200, max_per_class: Optional[int] = None,
                      seed: int = 0) -> List[Example]:
    """Non-overlapping windows inside CDS features (label 1, read on the coding strand) vs windows touching no
    gene, CDS, RNA, pseudogene or mobile element (label 0, forward strand). Classes balanced to the smaller."""
    seqs, feats = _annotations(sequence_path, annotation_path)
    rng = np.random.default_rng(seed)
    genic_types = {"gene", "CDS", "tRNA", "rRNA", "ncRNA", "pseudogene", "mobile_element", "mRNA", "exon",
                   "tmRNA", "misc_RNA", "repeat_region"}
    coding = [(f.seqid, f.start, f.end, f.strand) for f in feats if f.type == "CDS" and f.seqid in seqs]
    pos = [(c, s, strand) for c, a, b, strand in coding for s in range(a, b - window + 1, window)]
    neg = []
    for name, seq in seqs.items():
        covered = np.zeros(len(seq) + 1, dtype=np.int32)
        for f in feats:
            if f.seqid == name and f.type in genic_types:
                covered[f.start] += 1
                covered[f.end] -= 1
        free = np.cumsum(covered[:-1]) == 0
        edges = np.flatnonzero(np.diff(np.concatenate([[0], free.astype(np.int8), [0]])))
        neg += [(name, s, 1) for s in (x[1] for x in _tile([(name, a, b) for a, b in edges.reshape(-1, 2)], window))]
    n = min(len(pos), len(neg), max_per_class or 1 << 62)
    if n == 0:
        raise ValueError(f"{sequence_path}: found {len(pos)} CDS and {len(neg)} intergenic windows of {window} bp")
    out = []
    for label, items in ((1, _subsample(pos, n, rng)), (0, _subsample(neg, n, rng))):
        for c, s, strand in items:
            out.append((_oriented(seqs[c][s:s + window], strand), label))
    return out


def _oriented(seq: str, strand: int) -> str:
    if strand >= 0:
        return seq
    tok = DNATokenizer()
    enc = tok.encode(seq)
    return tok.decode(COMPLEMENT[enc.ids[::-1]], enc.flags[::-1])


def splice_sites(sequence_path, annotation_path, window: int = 200, max_per_class: Optional[int] = None,
                 seed: int = 0) -> List[Example]:
    """Windows centred on intron boundaries, read on the transcript strand: 1 = donor (exon|intron), 2 = acceptor
    (intron|exon), 0 = windows centred on random non-boundary positions of the same contigs (GFF 'intron'
    features, or gaps between consecutive exons of one transcript when the GFF lists none)."""
    seqs, feats = _annotations(sequence_path, annotation_path)
    rng = np.random.default_rng(seed)
    introns = [(f.seqid, f.start, f.end, f.strand) for f in feats if f.type == "intron" and f.seqid in seqs]
    if not introns:
        exons: Dict[str, List[Feature]] = {}
        for f in feats:
            if f.type == "exon" and f.seqid in seqs:
                exons.setdefault(f.attr("Parent"), []).append(f)
        for parts in exons.values():
            parts.sort(key=lambda f: f.start)
            introns += [(a.seqid, a.end, b.start, a.strand) for a, b in zip(parts, parts[1:]) if b.start > a.end]
    half = window // 2
    sites = {1: [], 2: []}
    boundaries = set()
    for c, a, b, strand in set(introns):
        donor, acceptor = (a, b) if strand >= 0 else (b, a)
        for label, pos in ((1, donor), (2, acceptor)):
            if half <= pos <= len(seqs[c]) - (window - half):
                sites[label].append((c, pos, strand))
                boundaries.add((c, pos))
    n = min(len(sites[1]), len(sites[2]), max_per_class or 1 << 62)
    if n == 0:
        raise ValueError(f"{annotation_path}: no intron boundaries with a full {window}-bp window")
    names = [c for c in seqs if len(seqs[c]) >= window]
    negatives = []
    while len(negatives) < n:
        c = names[rng.integers(len(names))]
        pos = int(rng.integers(half, len(seqs[c]) - (window - half) + 1))
        if all((c, p) not in boundaries for p in range(pos - 10, pos + 11)):
            negatives.append((c, pos, 1))
    out = []
    for label, items in ((1, _subsample(sites[1], n, rng)), (2, _subsample(sites[2], n, rng)), (0, negatives)):
        out += [(_oriented(seqs[c][p - half:p - half + window], s), label) for c, p, s in items]
    return out


def species_windows(paths: Sequence, window: int = 200, per_class: int = 1000, seed: int = 0) -> List[Example]:
    """Random windows (forward strand) from each genome file; label = the file's index in `paths`."""
    rng = np.random.default_rng(seed)
    out = []
    for label, path in enumerate(paths):
        records = [s for _, s in iter_records(path) if len(s) >= window]
        if not records:
            raise ValueError(f"{path}: no record of at least {window} bp")
        lengths = np.array([len(s) - window + 1 for s in records], dtype=np.float64)
        for _ in range(per_class):
            r = int(rng.choice(len(records), p=lengths / lengths.sum()))
            s = int(rng.integers(len(records[r]) - window + 1))
            out.append((records[r][s:s + window], label))
    return out


def stratified_split(labels: Sequence[int], fractions=(0.7, 0.1, 0.2), seed: int = 0) -> List[np.ndarray]:
    """Index arrays (train, val, test): every class permuted with `seed` and cut in the given proportions."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a = int(round(fractions[0] * len(idx)))
        b = a + int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


class TokenizedSequences(Dataset):
    def __init__(self, examples: Sequence[Example], rc_aug: bool = False, where: str = "sequence"):
        tok = DNATokenizer()
        self.ids = [tok.encode(s, where=f"{where}, example {i}").ids for i, (s, _) in enumerate(examples)]
        self.labels = [y for _, y in examples]
        self.rc_aug = rc_aug

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        if self.rc_aug and torch.rand(()) < 0.5:
            ids = COMPLEMENT[ids[::-1]]
        return torch.from_numpy(ids.astype(np.int64)), self.labels[i]


def collate_left_padded(batch):
    """[(ids (L_i,), label)] -> (ids (B, max L) left-padded with [PAD], labels (B,))."""
    L_max = max(len(ids) for ids, _ in batch)
    out = torch.full((len(batch), L_max), PAD, dtype=torch.long)
    for row, (ids, _) in zip(out, batch):
        row[L_max - len(ids):] = ids
    return out, torch.tensor([y for _, y in batch], dtype=torch.long)


KINDS = ("csv", "fasta", "cds_vs_intergenic", "splice_sites", "species")


class SequenceDataModule(ResumableDataModule):
    """Labelled DNA sequences for classification, split with a seeded stratified split.

    kind: "csv" (GenomicBenchmarks `seq,label`, plain or gzip), "fasta" (label in the header), or a task
    derived from annotation: "cds_vs_intergenic" (paths: [GenBank] or [FASTA] + annotations [GFF3]),
    "splice_sites" ([FASTA] + [GFF3]), "species" (one FASTA per species). Several csv/fasta paths are pooled.
    split: (train, val, test) fractions of the pooled examples, stratified by label, permuted with `seed`.
    """

    def __init__(self, paths: List[str], kind: str = "csv", annotations: Optional[List[str]] = None,
                 window: int = 200, max_per_class: Optional[int] = None, split: Sequence[float] = (0.7, 0.1, 0.2),
                 seed: int = 0, batch_size: int = 64, eval_batch_size: Optional[int] = None, rc_aug: bool = False,
                 num_workers: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.save_hyperparameters()
        self.paths = [pathlib.Path(p) for p in ([paths] if isinstance(paths, (str, pathlib.Path)) else paths)]
        self.kind, self.annotations, self.window, self.max_per_class = kind, annotations, window, max_per_class
        self.split, self.seed, self.rc_aug = tuple(split), seed, rc_aug
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size or batch_size, num_workers
        self.datasets: Dict[str, TokenizedSequences] = {}
        self.split_info: Dict[str, object] = {}

    def examples(self) -> List[Example]:
        if self.kind == "csv":
            return [e for p in self.paths for e in read_labelled_csv(p)]
        if self.kind == "fasta":
            return [e for p in self.paths for e in read_labelled_fasta(p)]
        if self.kind == "species":
            return species_windows(self.paths, self.window, self.max_per_class or 1000, self.seed)
        ann = (self.annotations or [None])[0]
        fn = cds_vs_intergenic if self.kind == "cds_vs_intergenic" else splice_sites
        return fn(self.paths[0], ann, self.window, self.max_per_class, self.seed)

    @property
    def num_classes(self) -> int:
        return int(max(self.datasets["train"].labels + self.datasets["test"].labels)) + 1

    def setup(self, stage=None):
        if self.datasets:
            return
        examples = self.examples()
        parts = stratified_split([y for _, y in examples], self.split, self.seed)
        where = ", ".join(str(p) for p in self.paths)
        for name, idx in zip(("train", "val", "test"), parts):
            self.datasets[name] = TokenizedSequences([examples[i] for i in idx], self.rc_aug and name == "train",
                                                     where)
        self.split_info = {"seed": self.seed, "fractions": list(self.split),
                           **{f"n_{k}": len(v) for k, v in self.datasets.items()}}

    def loader(self, split: str) -> DataLoader:
        return self.split_loader(self.datasets[split], split == "train", self.batch_size, self.seed, self.num_workers,
                                 eval_batch_size=self.eval_batch_size, collate_fn=collate_left_padded)
