"""Readers for genome files with Biopython: FASTA and GenBank (plain, gzip or BGZF) and GFF3 annotation.

Every problem raises a named error (`ssmkit.genomics.errors`) that names the file and the record or line:
text before the first '>', an empty record, a truncated gzip/BGZF stream, a GFF line without 9 columns.
Sequences are returned as text; `DNATokenizer.encode` checks the letters.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import pathlib
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

from .errors import EmptyRecordError, FastaFormatError, GFFFormatError, TruncatedFileError

GENBANK_SUFFIXES = (".gb", ".gbk", ".gbff", ".genbank")
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".faa", ".frn", ".mfa")


def compression(path) -> str:
    """'bgzf', 'gzip' or 'none', from the file's first bytes (BGZF is gzip with a 'BC' extra subfield)."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] != b"\x1f\x8b":
        return "none"
    return "bgzf" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


@contextlib.contextmanager
def open_text(path):
    """Open a plain, gzip or BGZF file as text; a truncated compressed stream raises TruncatedFileError."""
    from Bio import bgzf

    path = pathlib.Path(path)
    kind = compression(path)
    if kind == "bgzf":
        with open(path, "rb") as f:
            f.seek(0, io.SEEK_END)
            f.seek(max(0, f.tell() - len(bgzf._bgzf_eof)))
            if f.read() != bgzf._bgzf_eof:
                raise TruncatedFileError(f"{path}: BGZF file has no end-of-file marker block (truncated?)")
        handle = bgzf.BgzfReader(str(path), "rt")
    elif kind == "gzip":
        handle = gzip.open(path, "rt")
    else:
        handle = open(path, "rt")
    try:
        yield handle
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TruncatedFileError(f"{path}: compressed stream is damaged or ends early ({e})") from e
    finally:
        handle.close()


def sniff_format(path) -> str:
    """'genbank' or 'fasta' from the suffix (ignoring .gz/.bgz), else from the first non-blank line."""
    path = pathlib.Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bgz", ".bgzf")]
    if suffixes and suffixes[-1] in GENBANK_SUFFIXES:
        return "genbank"
    if suffixes and suffixes[-1] in FASTA_SUFFIXES:
        return "fasta"
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return "genbank" if line.startswith("LOCUS") else "fasta"
    return "fasta"


def _check_fasta_start(path, handle) -> None:
    for lineno, line in enumerate(handle, 1):
        if not line.strip():
            continue
        if not line.startswith(">"):
            raise FastaFormatError(f"{path}, line {lineno}: text before the first '>' ({line.strip()[:40]!r}); "
                                   f"a FASTA file starts with a '>' header line")
        return


def iter_records(path) -> Iterator[Tuple[str, str]]:
    """Yield (record name, sequence text) from a FASTA or GenBank file, plain, gzip or BGZF.

    Raises FastaFormatError (text before the first '>'), EmptyRecordError (a record with no sequence),
    TruncatedFileError (compressed stream cut short); each names the file and the record.
    """
    from Bio import SeqIO
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    path = pathlib.Path(path)
    fmt = sniff_format(path)
    with open_text(path) as handle:
        if fmt == "fasta":
            _check_fasta_start(path, handle)
            handle.seek(0)
            records = ((title, seq) for title, seq in SimpleFastaParser(handle))
        else:
            records = ((rec.id, rec.seq) for rec in SeqIO.parse(handle, "genbank"))
        index = 0
        for index, (title, seq) in enumerate(records, 1):
            name = title.split(None, 1)[0] if title.strip() else f"record{index}"
            try:
                text = str(seq)
            except Exception as e:  # Bio.Seq.UndefinedSequenceError: a GenBank record without ORIGIN
                raise EmptyRecordError(f"{path}, record {index} ({name!r}): no sequence ({e})") from e
            if not text:
                raise EmptyRecordError(f"{path}, record {index} ({name!r}): empty sequence")
            yield name, text
        if index == 0:
            raise EmptyRecordError(f"{path}: no {fmt} records found")


def sha256(path) -> str:
    """sha256 of a file's bytes (as stored, compressed or not)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Feature:
    """One annotation feature, 0-based half-open [start, end); strand +1, -1 or 0."""
    seqid: str
    type: str
    start: int
    end: int
    strand: int
    attributes: Tuple[Tuple[str, str], ...] = ()

    def attr(self, key: str, default: str = "") -> str:
        return dict(self.attributes).get(key, default)


def read_gff3(path) -> List[Feature]:
    """GFF3 features (plain or gzip); comment lines and a trailing ##FASTA section are skipped.

    A feature line without 9 tab-separated columns, or with non-integer / reversed coordinates, raises
    GFFFormatError naming the file and line.
    """
    features = []
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.rstrip("\n\r")
            if line.startswith("##FASTA"):
                break
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 9:
                raise GFFFormatError(f"{path}, line {lineno}: expected 9 tab-separated columns, got {len(cols)}")
            try:
                start, end = int(cols[3]), int(cols[4])
            except ValueError:
                raise GFFFormatError(f"{path}, line {lineno}: start/end {cols[3]!r}, {cols[4]!r} are not integers")
            if start < 1 or end < start:
                raise GFFFormatError(f"{path}, line {lineno}: bad coordinates start={start}, end={end}")
            attrs = tuple(tuple(kv.split("=", 1)) for kv in cols[8].strip().split(";") if "=" in kv)
            strand = {"+": 1, "-": -1}.get(cols[6], 0)
            features.append(Feature(cols[0], cols[2], start - 1, end, strand, attrs))
    return features


def read_genbank_features(path) -> Tuple[Dict[str, str], List[Feature]]:
    """(sequences by record id, features) of a GenBank file; compound locations give one Feature per part."""
    from Bio import SeqIO

    seqs, features = {}, []
    with open_text(path) as handle:
        for rec in SeqIO.parse(handle, "genbank"):
            seqs[rec.id] = str(rec.seq)
            for f in rec.features:
                for part in f.location.parts:
                    attrs = tuple((k, v[0]) for k, v in f.qualifiers.items() if v)
                    features.append(Feature(rec.id, f.type, int(part.start), int(part.end), part.strand or 0, attrs))
    return seqs, features
