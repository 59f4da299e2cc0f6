"""Tokenized genome store (zarr v3): one uint8 id array and one uint8 flag array per contig, plus the splits.

Layout of `genome.zarr`:
    ids/<i>    uint8 token ids of contig i (64 Ki chunks, Zstd; sharded when the contig is long)
    flags/<i>  uint8 per-base flags (bit 0 soft-masked, bit 1 IUPAC code stored as N)
attributes: format, vocab, contigs [{name, length, array, source, n_ambiguous, n_soft_masked}], sources
[{path, sha256, compression}], splits {contig name: {train|val|test: [[start, end], ...]}}, val/test fractions.

Held-out regions are contiguous: per contig the last `test_fraction` is test and the `val_fraction` before it
is validation (E. coli protocol: last 10% test, the 10% before it validation).
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import numpy as np

from .errors import GenomeDataError
from .io import FASTA_SUFFIXES, GENBANK_SUFFIXES, compression, iter_records, sha256
from .tokenizer import BASES, DNATokenizer, SOFT_MASK_BIT, SPECIALS

FORMAT = "ssmkit-genome/1"
CHUNK = 1 << 16
SHARD = 1 << 24
SPLITS = ("train", "val", "test")


def split_intervals(length: int, val_fraction: float, test_fraction: float) -> Dict[str, List[List[int]]]:
    """[train | val | test] as contiguous intervals of one contig (rounded down to whole bases)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, test_fraction, val + test < 1; got {val_fraction}, {test_fraction}")
    test_start = length - int(length * test_fraction)
    val_start = test_start - int(length * val_fraction)
    return {"train": [[0, val_start]], "val": [[val_start, test_start]], "test": [[test_start, length]]}


def build_genome_store(paths: Iterable, out, val_fraction: float = 0.1, test_fraction: float = 0.1,
                       chunk: int = CHUNK, shard: Optional[int] = SHARD, progress: bool = False,
                       zstd_level: int = 3, prefix_names: bool = False) -> "GenomeStore":
    """Read FASTA/GenBank files (plain, gzip, BGZF), tokenize and write a zarr v3 store at `out`.

    Contigs longer than `shard` are written sharded (shard a multiple of chunk; None: never). With
    `prefix_names`, contigs are named `<file name without suffixes>:<record>` (several genomes in one store);
    otherwise a name seen twice raises GenomeDataError. Returns the store.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise ValueError("build_genome_store needs at least one FASTA/GenBank file")
    if shard is not None and shard % chunk:
        raise ValueError(f"shard ({shard}) must be a multiple of chunk ({chunk})")
    tok = DNATokenizer()
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    contigs, splits, sources, seen = [], {}, [], set()
    bar = _progress(progress)
    with bar:
        for path in paths:
            task = bar.add_task(f"{path.name}", total=None) if progress else None
            sources.append({"path": str(path.resolve()), "sha256": sha256(path), "compression": compression(path)})
            n_file = 0
            for name, text in iter_records(path):
                if prefix_names:
                    name = f"{_stem(path)}:{name}"
                if name in seen:
                    raise GenomeDataError(f"{path}: contig name {name!r} occurs twice in the inputs "
                                          "(prefix_names / --prefix-names qualifies names by file)")
                seen.add(name)
                enc = tok.encode(text, where=f"{path}, record {name!r}")
                i = len(contigs)
                n = len(enc.ids)
                kwargs = dict(shape=(n,), dtype="uint8", chunks=(min(chunk, n),), dimension_names=["pos"],
                              compressors=[ZstdCodec(level=zstd_level)])
                if shard is not None and n > shard:
                    kwargs["shards"] = (shard,)
                root.create_array(name=f"ids/{i}", **kwargs)[:] = enc.ids
                root.create_array(name=f"flags/{i}", **kwargs)[:] = enc.flags
                contigs.append({"name": name, "length": n, "array": str(i), "source": str(path.name),
                                "n_ambiguous": enc.n_ambiguous,
                                "n_soft_masked": int(np.count_nonzero(enc.flags & SOFT_MASK_BIT)),
                                "n_N": int(np.count_nonzero(enc.ids == 11)),
                                "gc": float(np.isin(enc.ids, (8, 9)).mean())})
                splits[name] = split_intervals(n, val_fraction, test_fraction)
                if progress:
                    n_file += 1
                    bar.update(task, advance=n, description=f"{path.name}: {n_file} contigs")
    root.attrs.update({"format": FORMAT, "vocab": list(SPECIALS) + list(BASES), "contigs": contigs,
                       "sources": sources, "splits": splits, "val_fraction": val_fraction,
                       "test_fraction": test_fraction})
    return GenomeStore(out)


def _stem(path: pathlib.Path) -> str:
    """File name without compression and sequence-format suffixes: A.thaliana.fa.gz -> A.thaliana."""
    name = path.name
    for suffix in (".gz", ".bgz", ".bgzf") + FASTA_SUFFIXES + GENBANK_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,} bp"),
                    TimeElapsedColumn(), disable=not enabled)


@dataclass
class Contig:
    name: str
    length: int
    array: str


class GenomeStore:
    """Read access to a store written by `build_genome_store`; opens zarr lazily (safe to pickle to workers)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._root = None
        attrs = self.root.attrs.asdict()
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not an ssmkit genome store (format {attrs.get('format')!r})")
        self.attrs = attrs
        self.contigs = [Contig(c["name"], c["length"], c["array"]) for c in attrs["contigs"]]
        self.splits = attrs["splits"]

    @property
    def root(self):
        if self._root is None:
            import zarr
            self._root = zarr.open_group(str(self.path), mode="r")
        return self._root

    def __getstate__(self):
        return {**self.__dict__, "_root": None}

    def contig(self, name: str) -> Contig:
        for c in self.contigs:
            if c.name == name:
                return c
        raise KeyError(f"{self.path}: no contig {name!r}; contigs: {[c.name for c in self.contigs][:10]}")

    def ids(self, name: str, start: int = 0, end: Optional[int] = None) -> np.ndarray:
        return self.root[f"ids/{self.contig(name).array}"][start:end]

    def flags(self, name: str, start: int = 0, end: Optional[int] = None) -> np.ndarray:
        return self.root[f"flags/{self.contig(name).array}"][start:end]

    def sequence(self, name: str, start: int = 0, end: Optional[int] = None) -> str:
        """The original text of a region (soft-mask as lower case; IUPAC codes other than N come back as N)."""
        return DNATokenizer().decode(self.ids(name, start, end), self.flags(name, start, end))

    def intervals(self, split: str):
        """[(contig, start, end)] of a split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [(c.name, s, e) for c in self.contigs for s, e in self.splits[c.name][split] if e > s]

    def info(self) -> str:
        """A readable summary: sources, contigs with lengths, GC, N, soft-mask and IUPAC counts, split sizes."""
        lines = [f"genome store {self.path}", "sources:"]
        for s in self.attrs["sources"]:
            lines.append(f"  {s['path']}  ({s['compression']}, sha256 {s['sha256'][:16]}...)")
        total = sum(c.length for c in self.contigs)
        lines.append(f"{len(self.contigs)} contigs, {total:,} bp; val {self.attrs['val_fraction']}, "
                     f"test {self.attrs['test_fraction']} per contig (contiguous, at the end)")
        lines.append(f"  {'contig':<24} {'length':>12} {'GC':>6} {'N':>8} {'soft':>8} {'IUPAC->N':>8}  "
                     "train / val / test")
        for c in self.attrs["contigs"]:
            sp = self.splits[c["name"]]
            ranges = " / ".join(f"{sp[k][0][0]:,}-{sp[k][0][1]:,}" for k in SPLITS)
            lines.append(f"  {c['name'][:24]:<24} {c['length']:>12,} {c['gc']:>6.3f} {c['n_N']:>8,} "
                         f"{c['n_soft_masked']:>8,} {c['n_ambiguous']:>8,}  {ranges}")
        for split in SPLITS:
            size = sum(e - s for _, s, e in self.intervals(split))
            lines.append(f"{split}: {size:,} bp")
        return "\n".join(lines)
