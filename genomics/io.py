"""Readers for genome files with Biopython: FASTA and GenBank (plain, gzip or BGZF) and GFF3 annotation.

Every problem raises a named error (`ssmkit.genomics.errors`) that names the file and the record or line:
text before the first '>', an empty record, a truncated gzip/BGZF stream, text that is not UTF-8, a file that ends
inside a line (cut short), a GenBank record Biopython only warns about (cut, wrong length), a GFF line without 9
columns. Sequences are returned as text; `DNATokenizer.encode` checks the letters.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import pathlib
import re
import warnings
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

from ssmkit.textfiles import non_utf8_line

from .errors import EmptyRecordError, FastaFormatError, GenomeDataError, GFFFormatError, TruncatedFileError

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
        handle = open(path, "rt", encoding="utf-8")
    try:
        yield handle
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TruncatedFileError(f"{path}: compressed stream is damaged or ends early ({e})") from e
    except UnicodeDecodeError as e:
        line = non_utf8_line(path, gzipped=kind != "none")
        raise GenomeDataError(f"{path}, line {line}: not UTF-8 text ({e.reason}, byte "
                              f"{e.object[e.start]:#04x}); convert the file to UTF-8") from None
    finally:
        handle.close()


def checked_lines(path, handle) -> Iterator[str]:
    """The handle's lines; a last line without its line end (a file cut short) raises TruncatedFileError."""
    lineno, line = 0, "\n"
    for lineno, line in enumerate(handle, 1):
        yield line
    if not line.endswith("\n"):
        raise TruncatedFileError(f"{path}, line {lineno}: the file ends inside a line ({line[-30:]!r} has no line "
                                 f"end), so it looks cut off; if that line is complete, end the file with a newline")


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


def fasta_records(path, handle) -> Iterator[Tuple[str, str]]:
    """(title, sequence) pairs of a FASTA handle (Biopython's parser) over `checked_lines`; text before the first
    '>' raises FastaFormatError naming the line."""
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    lines = checked_lines(path, handle)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not line.startswith(">"):
            raise FastaFormatError(f"{path}, line {lineno}: text before the first '>' ({line.strip()[:40]!r}); "
                                   f"a FASTA file starts with a '>' header line")
        for title, seq in SimpleFastaParser(itertools.chain([line], lines)):
            yield title, "".join(seq.split())  # whitespace is layout (Biopython keeps inner tabs)
        return


def _genbank_records(path, handle):
    """Biopython's GenBank records; its parse errors and warnings (a cut record, a sequence shorter than the LOCUS
    length) raise FastaFormatError naming the file and record instead of passing a shortened record on."""
    from Bio import BiopythonParserWarning, SeqIO

    records = SeqIO.parse(handle, "genbank")
    for index in itertools.count(1):
        with warnings.catch_warnings():
            warnings.simplefilter("error", BiopythonParserWarning)
            try:
                rec = next(records)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise
            except (ValueError, AssertionError, IndexError, KeyError, BiopythonParserWarning) as e:
                raise FastaFormatError(f"{path}, record {index}: not a valid GenBank record ({e})") from None
        yield rec


def iter_records(path) -> Iterator[Tuple[str, str]]:
    """Yield (record name, sequence text) from a FASTA or GenBank file, plain, gzip or BGZF.

    Raises FastaFormatError (text before the first '>'), EmptyRecordError (a record with no sequence),
    TruncatedFileError (compressed stream cut short); each names the file and the record.
    """
    path = pathlib.Path(path)
    fmt = sniff_format(path)
    with open_text(path) as handle:
        if fmt == "fasta":
            records = fasta_records(path, handle)
        else:
            _genbank_layout(path)
            records = ((rec.id, rec.seq) for rec in _genbank_records(path, handle))
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

    A feature line without 9 tab-separated columns, with non-integer / reversed coordinates, a strand other than
    + - . ?, or an attribute without '=' raises GFFFormatError naming the file and line.
    """
    features, lineno = [], 0
    with open_text(path) as handle:
        for lineno, line in enumerate(checked_lines(path, handle), 1):
            line = line.rstrip("\n\r")
            if line.startswith("##FASTA"):
                break
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 9:
                raise GFFFormatError(f"{path}, line {lineno}: expected 9 tab-separated columns, got {len(cols)}")
            if not (_INTEGER.fullmatch(cols[3]) and _INTEGER.fullmatch(cols[4])):  # int() takes '1_0' as 10
                raise GFFFormatError(f"{path}, line {lineno}: start/end {cols[3]!r}, {cols[4]!r} are not integers")
            start, end = int(cols[3]), int(cols[4])
            if start < 1 or end < start:
                raise GFFFormatError(f"{path}, line {lineno}: bad coordinates start={start}, end={end}")
            if cols[6] not in ("+", "-", ".", "?"):
                raise GFFFormatError(f"{path}, line {lineno}: strand {cols[6]!r} is not one of + - . ?")
            pairs = [kv for kv in cols[8].strip().split(";") if kv.strip()]
            if any("=" not in kv for kv in pairs):
                raise GFFFormatError(f"{path}, line {lineno}: attribute without '=' in {cols[8][:60]!r}")
            attrs = tuple(tuple(kv.split("=", 1)) for kv in pairs)
            strand = {"+": 1, "-": -1}.get(cols[6], 0)
            features.append(Feature(cols[0], cols[2], start - 1, end, strand, attrs))
    if lineno == 0:
        raise GFFFormatError(f"{path}: empty file")
    return features


_INTEGER = re.compile(r"\s*[0-9]+\s*")
_FEATURE_KEY = re.compile(r" {5}[A-Za-z0-9_'*-]+ *")
_QUALIFIER = re.compile(r"/[A-Za-z0-9_]+(=.*)?")


_GENBANK_KEYWORDS = {"LOCUS", "DEFINITION", "ACCESSION", "VERSION", "DBLINK", "KEYWORDS", "SEGMENT", "SOURCE",
                     "REFERENCE", "COMMENT", "PRIMARY", "PROJECT", "NID", "GI", "BASE", "FEATURES", "ORIGIN", "CONTIG",
                     "WGS", "WGS_SCAFLD", "TSA", "TLS", "MEDLINE"}


def _genbank_layout(path) -> List[int]:
    """Feature count per record from the layout of the file, which Biopython reads leniently: a damaged keyword
    drops its line (a damaged FEATURES drops the whole table, a damaged VERSION changes the record id), a shifted key
    line is taken as a key with spaces, text after the last '//' (a cut next record) is skipped. Raises
    GenomeDataError naming the file and line for a LOCUS line without the length, text between records, a header
    line that does not start with a GenBank keyword or a space, a VERSION that is not the ACCESSION's or continues on
    a second line, and a feature-table line that is neither a key line (5 spaces, the key, the location from column
    22) nor a qualifier line (21 spaces, '/name[=value]', or the rest of a quoted value); a file cut mid-line raises
    TruncatedFileError."""
    counts, section, accession, quoted = [], None, None, False
    with open_text(path) as handle:
        for lineno, line in enumerate(checked_lines(path, handle), 1):
            line = line.rstrip("\r\n")
            words = line.split()
            if section is None and counts and line.strip() and not line.startswith("LOCUS"):
                raise GenomeDataError(f"{path}, line {lineno}: text after the end ('//') of record {len(counts)} "
                                      f"({line[:20]!r}): a damaged or cut record?")
            if line.startswith("LOCUS"):
                if not re.search(r"\s\d+ (bp|aa)\b", line):  # without it Biopython cannot check the length
                    raise GenomeDataError(f"{path}, line {lineno}: LOCUS line without the sequence length "
                                          f"('<n> bp'): {line[:60]!r}")
                counts.append(0)
                section, accession, keyword = "header", None, "LOCUS"
            elif line.startswith("//"):
                section = None
            elif section in (None, "sequence"):  # before the first record (release notes) or in the sequence
                continue
            elif line[:1].strip():  # a keyword line
                if words[0] not in _GENBANK_KEYWORDS:
                    raise GenomeDataError(f"{path}, line {lineno}: {words[0][:20]!r} is not a GenBank keyword "
                                          f"(damaged line?)")
                section = {"FEATURES": "features", "ORIGIN": "sequence", "CONTIG": "sequence"}.get(words[0], "header")
                keyword = words[0]
                if keyword == "ACCESSION" and len(words) > 1:
                    accession = words[1]
                if keyword == "VERSION" and len(words) > 1 and accession and not re.fullmatch(
                        re.escape(accession) + r"(\.[0-9]+)?", words[1]):
                    raise GenomeDataError(f"{path}, line {lineno}: VERSION {words[1]!r} is not the ACCESSION "
                                          f"{accession!r} or '<ACCESSION>.<n>'")
            elif section == "header" and keyword in ("LOCUS", "VERSION"):  # one-line keywords: no continuation
                raise GenomeDataError(f"{path}, line {lineno}: a continuation of the one-line {keyword} line "
                                      f"({line.strip()[:30]!r}): a damaged line?")
            elif section == "features" and quoted and line.startswith(" " * 21):  # inside a "..." value
                quoted ^= line.count('"') % 2 == 1
            elif section == "features" and _FEATURE_KEY.fullmatch(line[:21]) and line[21:22].strip():
                counts[-1] += 1
                quoted = False
            elif section == "features" and line.startswith(" " * 21 + "/"):
                if not _QUALIFIER.fullmatch(line[21:]):
                    raise GenomeDataError(f"{path}, line {lineno}: not a qualifier ('/name' or '/name=value'): "
                                          f"{line[21:60]!r}")
                quoted = line.count('"') % 2 == 1
            elif section == "features" and not re.match(r" {21}\S", line) or re.match(r" {5}\S", line):
                raise GenomeDataError(f"{path}, line {lineno}: not a GenBank feature table line ({line[:40]!r}): "
                                      f"a key line is 5 spaces, the key, and the location from column 22")
    return counts


def read_genbank_features(path) -> Tuple[Dict[str, str], List[Feature]]:
    """(sequences by record id, features) of a GenBank file; compound locations give one Feature per part. A feature
    table whose layout Biopython would read only in part, or a location outside the sequence, raises
    GenomeDataError naming the file and the record or line."""
    seqs, features, counts = {}, [], _genbank_layout(path)
    with open_text(path) as handle:
        for index, rec in enumerate(_genbank_records(path, handle)):
            seqs[rec.id] = str(rec.seq)
            if index >= len(counts) or len(rec.features) != counts[index]:
                raise GenomeDataError(f"{path}, record {index + 1} ({rec.id}): {len(rec.features)} features parsed, "
                                      f"the table has {counts[index] if index < len(counts) else 0} key lines")
            for f in rec.features:
                if any(not 0 <= p.start < p.end <= len(rec.seq) for p in f.location.parts):
                    raise GenomeDataError(f"{path}, record {index + 1} ({rec.id}): {f.type} location {f.location} "
                                          f"is outside the {len(rec.seq)} bp sequence")
                for part in f.location.parts:
                    attrs = tuple((k, v[0]) for k, v in f.qualifiers.items() if v)
                    features.append(Feature(rec.id, f.type, int(part.start), int(part.end), part.strand or 0, attrs))
    return seqs, features
