"""Property suite over every public data reader (issue 17): a small valid file in the real format, one mutation drawn
by hypothesis, and the reader's outcome judged against a strict oracle written here.

Mutations: truncation at any byte or at a line end (a valid prefix, which must read back as that prefix), random
bytes written over the file, random bytes inserted, the text re-encoded as UTF-16 or Latin-1 (the valid files hold
non-ASCII text), an empty file; for gzip files the mutation hits either the compressed bytes or the text inside.
Each case ends one of three ways:
- named error: a ValueError / OSError (not a leaking UnicodeError, EOFError, zlib.error) whose message names the file
  and, for text formats, the line or record (or says what is wrong with the file as a whole: empty, cut, not gzip);
- read back: the reader returned, and what it returned equals the oracle's parse of the same bytes: a small strict
  parser (csv module and float(), a few-line FASTA / GenBank / GFF3 / PNG / RIFF parser, numpy for idx, zlib for
  gzip). The oracle refuses a text file that does not end with a line end (cut mid-number), a cut gzip, a bad CRC;
- anything else is a crash or a silent wrong answer, and fails the reader's test (all its failures listed).
The oracles follow each format's definition, not one parser's quirks: whitespace inside a FASTA sequence is layout,
GenBank's sequence is columns 11+ (the position number is redundant), and sequence letters and ids are data (the
DNA tokenizer checks letters later), so a damaged letter reads back as that letter on both sides.
Deterministic (`derandomize=True`, fixed `max_examples` per reader); the counts are printed at the end.
"""
from __future__ import annotations

import collections
import csv
import datetime
import gzip
import hashlib
import io
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COUNTS = collections.Counter()
PER_READER = collections.defaultdict(collections.Counter)
F32_MAX = float(np.finfo(np.float32).max)
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
LOCATOR = re.compile(r"line \d+|record \d+|:\d+:")
WHOLE_FILE = re.compile(r"empty|gzip|compressed|truncated|cut|no .* records|no rows|need at least|not UTF-8|BGZF",
                        re.I)
LEAKS = (UnicodeError, EOFError, zlib.error, IndexError, KeyError, AttributeError, AssertionError, TypeError)


class Reject(Exception):
    """The oracle's verdict: these bytes are not a valid file of the format."""


def summary() -> str:
    per = "; ".join(f"{name} {c['tried']} ({c['equal']} equal, {c['named']} named)"
                    for name, c in sorted(PER_READER.items()))
    return (f"reader property suite: {COUNTS['tried']} cases tried: {COUNTS['equal']} read back equal to the oracle, "
            f"{COUNTS['named']} named errors, {COUNTS['crash']} crashes, {COUNTS['silent']} silent wrong answers "
            f"(per reader: {per})")


class _Report:
    """Writes the counts into pytest's terminal summary (visible with output capture on)."""

    def pytest_terminal_summary(self, terminalreporter):
        if COUNTS:
            terminalreporter.write_line(summary())


@pytest.fixture(scope="module", autouse=True)
def report(request):
    if not request.config.pluginmanager.has_plugin("ssmkit-reader-properties"):
        request.config.pluginmanager.register(_Report(), "ssmkit-reader-properties")
    yield
    print(summary())


# ------------------------------------------------------------------------------------------------ oracle helpers

def gunzip(raw: bytes) -> bytes:
    """Strict gzip: one or more complete members, trailing zero padding allowed (as the gzip format does)."""
    out = []
    while raw:
        d = zlib.decompressobj(31)
        try:
            out.append(d.decompress(raw) + d.flush())
        except zlib.error as e:
            raise Reject(f"gzip: {e}")
        if not d.eof:
            raise Reject("gzip stream cut short")
        raw = d.unused_data
        if raw.strip(b"\x00") == b"":
            break
    if not out:
        raise Reject("empty gzip file")
    return b"".join(out)


def text_of(raw: bytes) -> str:
    """Strict UTF-8 text that ends with a line end (a file cut mid-line is not valid)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Reject(f"not UTF-8: {e}")
    if not text.strip():
        raise Reject("empty")
    if not text.endswith(("\n", "\r")):
        raise Reject("no final line end")
    return text


def number(cell: str) -> float:
    cell = cell.strip()
    if not NUMBER.fullmatch(cell):
        raise Reject(f"not a number: {cell!r}")
    value = float(cell)
    if not math.isfinite(value):
        raise Reject("not finite")
    return value


def integer(cell: str) -> int:
    if not re.fullmatch(r"[0-9]+", cell):
        raise Reject(f"not an integer: {cell!r}")
    return int(cell)


def same(a, b, rtol=1e-12) -> bool:
    """Equal structures; floats within `rtol` (parsers may round the last bit differently), NaN equal to NaN."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            return bool(np.allclose(a, b, rtol=rtol, atol=0, equal_nan=True))
        return a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=rtol) or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rtol) for k in a)
    return a == b


# ------------------------------------------------------------------------------------------------ mutations

INTERESTING = [b"\n", b"\r", b"\r\n", b",", b"\t", b" ", b">", b"/", b"-", b".", b"e", b"9", b"0", b'"', b"#", b"=",
               b";", b"::", b"\x00", b"\xff", b"\xc3", b"\xe9", b"\x1f\x8b"]


@dataclass(frozen=True)
class Mutation:
    kind: str
    layer: str = "file"  # "file" (the bytes on disk) or "text" (inside the gzip stream)
    offset: int = 0
    payload: bytes = b""

    def apply(self, raw: bytes) -> bytes:
        if self.kind == "truncate":
            return raw[:self.offset]
        if self.kind == "cut at line end":  # a valid prefix of a text file: must read back as that prefix
            end = raw.find(b"\n", self.offset)
            return raw if end < 0 else raw[:end + 1]
        if self.kind == "overwrite":
            return raw[:self.offset] + self.payload + raw[self.offset + len(self.payload):]
        if self.kind == "insert":
            return raw[:self.offset] + self.payload + raw[self.offset:]
        if self.kind == "empty":
            return b""
        text = raw.decode("utf-8")
        return text.encode("utf-16") if self.kind == "utf16" else text.encode("latin-1")


@st.composite
def mutations(draw, text: bool, gz: bool):
    kinds = ["truncate", "overwrite", "insert", "truncate", "overwrite", "insert", "empty"]
    kind = draw(st.sampled_from(kinds + (["utf16", "latin1", "cut at line end"] if text else [])))
    layer = "text" if kind in ("utf16", "latin1", "cut at line end") else "file"
    if gz and kind in ("truncate", "overwrite", "insert"):
        layer = draw(st.sampled_from(["file", "text"]))
    payload = draw(st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from(INTERESTING)))
    offset = draw(st.integers(0, 10_000))  # taken modulo the target's size + 1 (compressed or inner bytes)
    return Mutation(kind, layer, offset, payload)


@dataclass
class Reader:
    """One public reader: `make(dir) -> (path, valid bytes)`, `read(path) -> plain result`, `oracle(bytes) -> plain
    result or Reject`. `text`: a text format (errors must name the line or record); `gz`: the file is gzip."""
    make: Callable
    read: Callable
    oracle: Callable
    text: bool = True
    gz: bool = False
    examples: int = 40
    rtol: float = 1e-12


def mutate(reader: Reader, valid: bytes, m: Mutation) -> bytes:
    """The mutated file's bytes; an offset lands anywhere in its target (the file, or the text inside the gzip)."""
    inner = gzip.decompress(valid) if reader.gz and m.layer == "text" else valid
    m = Mutation(m.kind, m.layer, m.offset % (len(inner) + 1), m.payload)
    out = m.apply(inner)
    return gzip.compress(out, mtime=0) if reader.gz and m.layer == "text" else out


def named(e: BaseException, path, text: bool) -> bool:
    """A ValueError / OSError (not a leaking decoder error) naming the file, and for text the line, record or a
    whole-file reason."""
    if isinstance(e, LEAKS) or not isinstance(e, (ValueError, OSError)):
        return False
    msg = str(e)
    if path.name not in msg:
        return False
    return not text or bool(LOCATOR.search(msg) or WHOLE_FILE.search(msg))


def run_reader(name: str, reader: Reader, tmp_path):
    """Every drawn mutation of the reader's valid file, judged; returns the list of failures."""
    path, valid = reader.make(tmp_path)
    assert same(reader.read(path), reader.oracle(valid), reader.rtol), f"{name}: the valid file does not read back"
    failures = []

    @settings(max_examples=reader.examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(m=mutations(reader.text, reader.gz))
    def cases(m):
        raw = mutate(reader, valid, m)
        path.write_bytes(raw)
        try:
            expected = reader.oracle(raw)
        except Reject as r:
            expected = r
        PER_READER[name]["tried"] += 1
        COUNTS["tried"] += 1
        try:
            got = reader.read(path)
        except Exception as e:  # judged below: a named error or a crash
            if named(e, path, reader.text):
                COUNTS["named"] += 1
                PER_READER[name]["named"] += 1
                return
            COUNTS["crash"] += 1
            failures.append(f"crash on {m}: {type(e).__name__}: {e}")
            return
        if isinstance(expected, Reject):
            COUNTS["silent"] += 1
            failures.append(f"silent: read {m} although it is invalid ({expected})")
        elif not same(got, expected, reader.rtol):
            COUNTS["silent"] += 1
            failures.append(f"silent: read {m} as {str(got)[:200]}, oracle {str(expected)[:200]}")
        else:
            COUNTS["equal"] += 1
            PER_READER[name]["equal"] += 1

    cases()
    path.write_bytes(valid)
    return failures


def lines_of(text: str):
    """Lines as universal-newline text readers see them (\\n, \\r\\n and \\r end a line)."""
    return re.split(r"\r\n|\r|\n", text)[:-1]


def gz_variant(make, name):
    """The same valid file, gzip-compressed, under `name`."""
    def make_gz(d):
        path, raw = make(d)
        path.unlink()
        return written(d / name, gzip.compress(raw, mtime=0))
    return make_gz


def written(path, raw: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path, raw


# ------------------------------------------------------------------------------------------------ timeseries

def ts_make(d):
    rows = [f"2016-07-01 {h:02d}:00:00,{5.827 + 0.25 * h:.3f},{-1.5 + h:.2f},{30.531 - 1.1 * h:.3f}" for h in range(6)]
    return written(d / "ETTh1.csv", ("date,HUFL,température,OT\n" + "\n".join(rows) + "\n").encode())


def ts_read(path):
    from ssmkit.timeseries.data import read_series_csv
    df = read_series_csv(path)
    return (list(df.columns), [str(t) for t in df["date"]], df.drop(columns="date").to_numpy(np.float64),
            df.attrs["step"].total_seconds())


def ts_oracle(raw):
    rows = [r for r in csv.reader(io.StringIO(text_of(raw), newline="")) if r]
    header, body = rows[0], rows[1:]
    if header.count("date") != 1 or len(set(header)) != len(header) or "" in header or len(header) < 2:
        raise Reject(f"header {header}")
    if len(body) < 2 or any(len(r) != len(header) for r in body):
        raise Reject("ragged rows or fewer than two")
    di = header.index("date")
    try:
        dates = [datetime.datetime.strptime(r[di], "%Y-%m-%d %H:%M:%S") for r in body]
    except ValueError as e:
        raise Reject(str(e))
    steps = {(b - a).total_seconds() for a, b in zip(dates, dates[1:])}
    if len(steps) != 1 or min(steps) <= 0:
        raise Reject(f"steps {steps}")
    cols = [i for i in range(len(header)) if i != di]
    values = np.array([[number(r[i]) for i in cols] for r in body], dtype=np.float64)
    if (np.abs(values) > F32_MAX).any():
        raise Reject("beyond float32")
    return (["date"] + [header[i] for i in cols], [str(t) for t in dates], values, steps.pop())


def solar_make(d):
    rows = [f"{0.5 * h:.1f},{h * 1.25:.2f},{-h}" for h in range(5)]
    return written(d / "solar_AL.txt", ("\n".join(rows) + "\n").encode())


def solar_read(path):
    from ssmkit.timeseries.data import read_series_csv
    df = read_series_csv(path, date_col=None)
    return list(df.columns), df.to_numpy(np.float64)


def solar_oracle(raw):
    rows = [r for r in csv.reader(io.StringIO(text_of(raw), newline="")) if r]
    if any(len(r) != len(rows[0]) for r in rows):
        raise Reject("ragged")
    values = np.array([[number(c) for c in r] for r in rows], dtype=np.float64)
    if (np.abs(values) > F32_MAX).any():
        raise Reject("beyond float32")
    return [str(i) for i in range(len(rows[0]))], values


# ------------------------------------------------------------------------------------------------ vision

IDX_CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(a: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(IDX_CODES[code]).tobytes()


def idx_make(d):
    a = np.random.default_rng(0).integers(0, 256, (3, 4, 5))
    return written(d / "images-idx3-ubyte", idx_bytes(a, 0x08))


def idx_gz_make(d):
    a = np.random.default_rng(1).integers(-300, 300, (7,))
    return written(d / "values-idx1-ubyte.gz", gzip.compress(idx_bytes(a, 0x0B), mtime=0))


def idx_read(path):
    from ssmkit.vision.data import read_idx
    return read_idx(path)


def idx_oracle(raw, gz=False):
    raw = gunzip(raw) if gz else raw
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_CODES:
        raise Reject("magic")
    ndim, dtype = raw[3], np.dtype(IDX_CODES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise Reject("header cut")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    if len(raw) != 4 + 4 * ndim + math.prod(shape) * dtype.itemsize:
        raise Reject("size")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


MNIST_IMAGES = np.random.default_rng(2).integers(0, 256, (6, 4, 4))


def mnist_make(d):
    written(d / "img-idx3-ubyte.gz", gzip.compress(idx_bytes(MNIST_IMAGES, 0x08), mtime=0))
    return written(d / "lab-idx1-ubyte.gz", gzip.compress(idx_bytes(np.array([3, 0, 9, 1, 1, 7]), 0x08), mtime=0))


def mnist_read(path):
    from ssmkit.vision.data import MNISTDataModule
    x, y = MNISTDataModule(str(path.parent), images="img-idx3-ubyte.gz", labels=path.name, split=(6, 0, 0)).load()
    return x.numpy().astype(np.float64), y.numpy()


def mnist_oracle(raw):
    labels = idx_oracle(raw, gz=True)
    if labels.shape != (6,) or labels.dtype.kind not in "iu" or ((labels < 0) | (labels > 9)).any():
        raise Reject(f"labels {labels}")
    x = (MNIST_IMAGES[:, None] / 255.0 - 0.1307) / 0.3081
    return x.astype(np.float32).astype(np.float64), labels.astype(np.int64)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_make(d):
    img = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    rows = b"".join(b"\0" + r.tobytes() for r in img)
    raw = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0))
           + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))
    return written(d / "train" / "cat" / "img0.png", raw)


def png_read(path):
    from ssmkit.vision.data import load_rgb
    return np.asarray(load_rgb(str(path)))


def png_oracle(raw):
    """8-bit RGB, non-interlaced, every chunk's CRC right, IDAT a complete zlib stream, rows with filter 0."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise Reject("signature")
    pos, chunks = 8, []
    while not chunks or chunks[-1][0] != b"IEND":
        if pos + 12 > len(raw):
            raise Reject("cut in a chunk")
        (n,), kind = struct.unpack(">I", raw[pos:pos + 4]), raw[pos + 4:pos + 8]
        data, crc = raw[pos + 8:pos + 8 + n], raw[pos + 8 + n:pos + 12 + n]
        if len(crc) < 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
            raise Reject(f"CRC of {kind}")
        chunks.append((kind, data))
        pos += 12 + n
    if chunks[0][0] != b"IHDR" or chunks[0][1] != struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0):
        raise Reject("IHDR")
    if any(k[:1].isupper() and k not in (b"IHDR", b"IDAT", b"IEND") for k, _ in chunks):
        raise Reject("unknown critical chunk")
    d = zlib.decompressobj()
    rows = d.decompress(b"".join(data for k, data in chunks if k == b"IDAT"))
    if not d.eof or d.unused_data or len(rows) != 4 * 16 or any(rows[i * 16] for i in range(4)):
        raise Reject("IDAT")
    return np.frombuffer(rows, np.uint8).reshape(4, 16)[:, 1:].reshape(4, 5, 3)


# ------------------------------------------------------------------------------------------------ genomics

FASTA = ">chr1 première séquence\nACGTACGTNNACGT\nacgtac\n>chr2 deux\nGGCCAATTGG\n\n>chr3\nTTTT\n"


def fasta_make(d):
    return written(d / "genome.fa", FASTA.encode())


def fasta_read(path):
    from ssmkit.genomics.io import iter_records
    return list(iter_records(path))


def fasta_parse(text: str):
    """(title, sequence) per record: a '>' line starts one; sequence = the following lines without whitespace."""
    lines = lines_of(text)
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines or not lines[0].startswith(">"):
        raise Reject("text before the first '>'")
    records = []
    for line in lines:
        if line.startswith(">"):
            records.append([line[1:], ""])
        else:
            records[-1][1] += "".join(line.split())
    if any(not seq for _, seq in records):
        raise Reject("empty record")
    return records


def fasta_oracle(raw, gz=False):
    records = fasta_parse(text_of(gunzip(raw) if gz else raw))
    return [(t.split()[0] if t.strip() else f"record{i}", s) for i, (t, s) in enumerate(records, 1)]


GENBANK = """LOCUS       TEST1                     24 bp    DNA     linear   BCT 01-JAN-2000
DEFINITION  test séquence.
ACCESSION   TEST1
VERSION     TEST1.1
FEATURES             Location/Qualifiers
     CDS             3..11
                     /gene="abc"
     gene            complement(5..20)
                     /note="x"
ORIGIN
        1 acgtacgtac gtacgtacgt
       21 acgt
//
"""


def genbank_make(d):
    return written(d / "ecoli.gb", GENBANK.encode())


def genbank_read(path):
    from ssmkit.genomics.io import iter_records, read_genbank_features
    seqs, features = read_genbank_features(path)
    return list(iter_records(path)), seqs, [(f.seqid, f.type, f.start, f.end, f.strand, f.attributes)
                                            for f in features]


def genbank_oracle(raw):
    lines = lines_of(text_of(raw))
    while lines and not lines[0].strip():  # blank lines before the record
        lines.pop(0)
    head = lines[0].split() if lines else []
    if len(head) < 4 or head[0] != "LOCUS" or not head[2].isdigit() or head[3] != "bp":
        raise Reject("LOCUS line")
    length, rid, acc, features, seq, section = int(head[2]), None, None, [], "", None
    for line in lines[1:]:
        if section == "end":
            if line.strip():
                raise Reject("text after //")
        elif line == "//":
            section = "end"
        elif section == "origin":  # columns 1-9 the position (redundant), 10 blank, then blocks of bases
            if len(line) < 11 or line[9] != " ":  # the letters are checked by the tokenizer
                raise Reject(f"sequence line {line!r}")
            seq += "".join(line[10:].split()).upper()
        elif section is None and line[:1].isspace() or not line:  # a continuation (of DEFINITION) or blank
            pass
        elif line.startswith("VERSION "):  # the record id; it must be the ACCESSION's, when there is one
            ok = len(line.split()) == 2 and (acc is None or line.split()[1] in (acc, acc + ".1"))
            rid = line.split()[1] if ok else Reject
        elif line.startswith("ACCESSION "):
            acc = line.split()[1] if len(line.split()) == 2 else "?"
        elif line.startswith("FEATURES "):
            section = "features"
        elif line.rstrip() == "ORIGIN":
            section = "origin"
        elif section == "features" and line.startswith(" " * 21 + "/") and features:
            key, eq, value = line[22:].partition("=")
            quoted = len(value) >= 2 and value[0] == value[-1] == '"' and '"' not in value[1:-1]
            if not re.fullmatch(r"[A-Za-z0-9_]+", key) or eq and not (quoted or re.fullmatch(r"[0-9]+", value)):
                raise Reject(f"qualifier {line!r}")
            features[-1][5].append((key, value[1:-1] if quoted else value))
        elif section == "features" and line[:5] == " " * 5 and line[5:21].strip() and line[5] != " ":
            m = re.fullmatch(r"(complement\()?(\d+)\.\.(\d+)(\))?", "".join(line[21:].split()))  # spaces: layout
            if line[5:21].rstrip() != line[5:21].strip() or not m or bool(m[1]) != bool(m[4]):
                raise Reject(f"feature {line!r}")
            start, end = int(m[2]), int(m[3])
            if not 1 <= start <= end <= length:
                raise Reject("location")
            features.append([None, line[5:21].strip(), start - 1, end, -1 if m[1] else 1, []])
        elif not (line.startswith("DEFINITION ") and section is None):
            raise Reject(f"line {line!r}")
    if rid is None or rid is Reject or section != "end" or len(seq) != length or not seq:
        raise Reject("record")
    return [(rid, seq)], {rid: seq}, [(rid, t, s, e, sd, tuple(q)) for _, t, s, e, sd, q in features]


GFF = ("##gff-version 3\nchr1\tsrc\tgene\t1\t20\t.\t+\t.\tID=g1;Name=gène\n"
       "chr1\tsrc\tCDS\t3\t11\t.\t-\t0\tID=c1;Parent=g1\n# note\nchr2\tsrc\tgene\t5\t9\t.\t.\t.\tID=g2\n")


def gff_make(d):
    return written(d / "genes.gff3", GFF.encode())


def gff_read(path):
    from ssmkit.genomics.io import read_gff3
    return [(f.seqid, f.type, f.start, f.end, f.strand, f.attributes) for f in read_gff3(path)]


def gff_oracle(raw):
    out = []
    for line in lines_of(text_of(raw)):
        if line.startswith("##FASTA"):
            break
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 9 or cols[6] not in ("+", "-", ".", "?"):
            raise Reject("columns")
        start, end = integer(cols[3].strip()), integer(cols[4].strip())
        if not 1 <= start <= end:
            raise Reject("coordinates")
        pairs = [kv for kv in cols[8].strip().split(";") if kv.strip()]
        if any("=" not in kv for kv in pairs):
            raise Reject("attribute without '='")
        out.append((cols[0], cols[2], start - 1, end, {"+": 1, "-": -1}.get(cols[6], 0),
                    tuple(tuple(kv.split("=", 1)) for kv in pairs)))
    return out


LABELLED_CSV = "seq,label\nACGTTGCA,0\nGGGCCCAAAT,1\n\"ACGT\",1\nTTAGGé,0\n"


def labelled_csv_make(d):
    return written(d / "train.csv", LABELLED_CSV.encode())


def labelled_csv_read(path):
    from ssmkit.genomics.labelled import read_labelled_csv
    return read_labelled_csv(path)


def labelled_csv_oracle(raw, gz=False):
    rows = list(csv.reader(io.StringIO(text_of(gunzip(raw) if gz else raw), newline="")))
    header, body = rows[0], [r for r in rows[1:] if r]
    if "seq" not in header or "label" not in header or len(set(header)) != len(header) or not body:
        raise Reject("header")
    out = []
    for r in body:
        if len(r) != len(header) or not r[header.index("seq")].strip():
            raise Reject("row")
        label = r[header.index("label")].strip()
        if not re.fullmatch(r"\+?[0-9]+", label):
            raise Reject("label")
        out.append((r[header.index("seq")].strip(), int(label)))
    return out


LABELLED_FASTA = ">s1 label=1\nACGTAC\nGT\n>s2 promoter 0\nTTGACA\n>s3 é label=0\nGGCC\n"


def labelled_fasta_make(d):
    return written(d / "train.fa", LABELLED_FASTA.encode())


def labelled_fasta_read(path):
    from ssmkit.genomics.labelled import read_labelled_fasta
    return read_labelled_fasta(path)


def labelled_fasta_oracle(raw):
    out = []
    for title, seq in fasta_parse(text_of(raw)):
        words = title.split()
        tags = [w[6:] for w in words if w.startswith("label=")]
        label = tags[0] if tags else (words[-1] if len(words) > 1 else "")
        if not re.fullmatch(r"\+?[0-9]+", label):
            raise Reject("label")
        out.append((seq, int(label)))
    return out


# ------------------------------------------------------------------------------------------------ audio

SAMPLES = (np.sin(np.arange(40) * 0.7) * 20000).astype("<i2")


def wav_bytes(samples, rate=8000) -> bytes:
    data = samples.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_make(d):
    return written(d / "0_jackson_0.wav", wav_bytes(SAMPLES))


def audio_read(path):
    from ssmkit.audio.data import read_audio
    return read_audio(path, 8000, require_rate=True).numpy()


def wav_oracle(raw):
    """RIFF/WAVE with a PCM-16 mono or multi-channel fmt chunk whose sizes agree, and one complete data chunk."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE" or len(raw) < 12 or struct.unpack("<I", raw[4:8])[0] != len(raw) - 8:
        raise Reject("RIFF header")
    pos, fmt, data = 12, None, None
    while pos < len(raw):
        if pos + 8 > len(raw):
            raise Reject("cut chunk header")
        kind, (n,) = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])
        body = raw[pos + 8:pos + 8 + n]
        if len(body) != n:
            raise Reject("cut chunk")
        if kind == b"fmt ":
            fmt = body
        elif kind == b"data":
            data = body
        pos += 8 + n + (n & 1)
    if fmt is None or data is None or len(fmt) != 16:
        raise Reject("chunks")
    tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", fmt)
    if (tag, bits, rate) != (1, 16, 8000) or channels < 1 or align != 2 * channels or byte_rate != rate * align:
        raise Reject("fmt")
    if not data or len(data) % align:
        raise Reject("data size")
    return (np.frombuffer(data, "<i2").reshape(-1, channels) / 32768.0).astype(np.float32).mean(1)


def flac_make(d):
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, SAMPLES, 8000, format="FLAC", subtype="PCM_16")
    return written(d / "clip.flac", buf.getvalue())


def flac_oracle(raw):
    """fLaC with STREAMINFO first; decoded (soundfile) samples must be as many as STREAMINFO says and match its MD5."""
    import soundfile as sf
    if raw[:4] != b"fLaC" or len(raw) < 42 or raw[4] & 0x7F != 0 or raw[5:8] != b"\0\0\x22":
        raise Reject("header")
    info = raw[8:42]
    rate = int.from_bytes(info[10:13], "big") >> 4
    channels = ((info[12] >> 1) & 7) + 1
    total = int.from_bytes(info[13:18], "big") & ((1 << 36) - 1)
    if rate != 8000 or total == 0:
        raise Reject("streaminfo")
    try:
        x = sf.read(io.BytesIO(raw), dtype="int16", always_2d=True)[0]
    except Exception as e:
        raise Reject(f"decode: {e}")
    if x.shape != (total, channels) or hashlib.md5(x.astype("<i2").tobytes()).digest() != info[18:34]:
        raise Reject("samples or MD5")
    return (x / 32768.0).astype(np.float32).mean(1)


def sc09_make(d):
    for rel in ("zero/a.wav", "one/b.wav", "two/c.wav", "two/d.wav"):
        written(d / rel, wav_bytes(SAMPLES))
    written(d / "testing_list.txt", b"one/b.wav\n")
    return written(d / "validation_list.txt", "zero/a.wav\n\ntwo/c.wav\n".encode())


def sc09_read(path):
    from ssmkit.audio.data import sc09_split
    return {k: sorted(p.resolve() for p in v) for k, v in sc09_split(path.parent).items()}


def sc09_oracle(raw, root):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject("not UTF-8")
    val = [(root / line.strip()) for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    if any(not p.is_file() for p in val):
        raise Reject("missing file")
    val, test = sorted(p.resolve() for p in val), [(root / "one/b.wav").resolve()]
    files = [p.resolve() for p in root.rglob("*.wav")]
    return {"train": sorted(p for p in files if p not in set(val) | set(test)), "val": val, "test": test}


# ------------------------------------------------------------------------------------------------ recsys

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "usér1\titem1\t4\t881250949\nu2\titem2\t3.5\t881250950\n\nusér1\titem3\t5\t881250951\n")


def log_read(path):
    from ssmkit.recsys.data import read_log
    log = read_log(path)
    return list(log.users), list(log.items), np.asarray(log.times, dtype=np.float64)


def inter_make(d):
    return written(d / "ml.inter", INTER.encode())


def inter_oracle(raw, gz=False):
    rows = [line.split("\t") for line in lines_of(text_of(gunzip(raw) if gz else raw)) if line.strip()]
    header = rows[0]
    types = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
    names = [f.partition(":")[0] for f in header]
    if any(types.get(n) != f.partition(":")[2] for n, f in zip(names, header)) or len(set(names)) != len(names) \
            or not {"user_id", "item_id"} <= set(names):
        raise Reject("header")
    users, items, times = [], [], []
    for r in rows[1:]:
        if len(r) != len(header) or not r[names.index("user_id")] or not r[names.index("item_id")]:
            raise Reject("row")
        if "rating" in names:
            number(r[names.index("rating")])
        users.append(r[names.index("user_id")])
        items.append(r[names.index("item_id")])
        times.append(number(r[names.index("timestamp")]) if "timestamp" in names else float(len(times)))
    return users, items, np.array(times, dtype=np.float64)


def movielens_make(name, sep):
    def make(d):
        rows = [("196", "242", "3", "881250949"), ("186", "302", "3", "891717742"), ("22", "377", "1", "878887116")]
        return written(d / name, "".join(sep.join(r) + "\n" for r in rows).encode())
    return make


def movielens_oracle(raw, sep):
    users, items, times = [], [], []
    for line in lines_of(text_of(raw)):
        if not line.strip():
            continue
        f = line.split(sep)
        if len(f) != 4 or not f[0] or not f[1]:
            raise Reject("fields")
        number(f[2])
        users.append(f[0])
        items.append(f[1])
        times.append(number(f[3]))
    return users, items, np.array(times, dtype=np.float64)


TIME_INTERVAL = "usér1 i1 i2 i3\t0 5 10.5\nu2 i4 i5\n\nu3 i6\t0\n"


def time_interval_make(d):
    return written(d / "beauty.txt", TIME_INTERVAL.encode())


def time_interval_oracle(raw, gz=False):
    users, items, times = [], [], []
    for line in lines_of(text_of(gunzip(raw) if gz else raw)):
        if not line.strip():
            continue
        seq, _, gaps = line.partition("\t")
        tokens = seq.split()
        if len(tokens) < 2:
            raise Reject("no items")
        if gaps.strip():
            values = [number(g) for g in gaps.split()]
            if len(values) != len(tokens) - 1 or min(values) < 0:
                raise Reject("gaps")
            stamps = np.cumsum(values).tolist()
        else:
            stamps = [float(i) for i in range(len(tokens) - 1)]
        users += [tokens[0]] * (len(tokens) - 1)
        items += tokens[1:]
        times += stamps
    return users, items, np.array(times, dtype=np.float64)


HISTORIES = "user,item,timestamp\nusér1,i1,10\nu2,i9,3\nusér1,i2,5\n\nu2,i4,3.5\n"


def histories_make(d):
    return written(d / "histories.csv", HISTORIES.encode())


def histories_read(path):
    from ssmkit.recsys.recommend import read_histories
    return read_histories(str(path))


def histories_oracle(raw):
    rows = list(csv.reader(io.StringIO(text_of(raw), newline="")))
    body = [(n, r) for n, r in enumerate(rows, 1) if "".join(r).strip() and not (n == 1 and r[0].strip() == "user")]
    if not body or len({len(r) for _, r in body}) != 1 or len(body[0][1]) not in (2, 3):
        raise Reject("fields")
    seen = {}
    for n, r in body:
        if not r[0].strip() or not r[1].strip():
            raise Reject("empty id")
        seen.setdefault(r[0].strip(), []).append((number(r[2]) if len(r) == 3 else 0.0, n, r[1].strip()))
    for v in seen.values():
        v.sort()
    times = {u: [t for t, _, _ in v] for u, v in seen.items()} if len(body[0][1]) == 3 else None
    return {u: [i for _, _, i in v] for u, v in seen.items()}, times


# ------------------------------------------------------------------------------------------------ the suite

READERS = {
    "timeseries csv": Reader(ts_make, ts_read, ts_oracle, examples=60),
    "timeseries headerless (Solar)": Reader(solar_make, solar_read, solar_oracle, examples=30),
    "idx": Reader(idx_make, idx_read, idx_oracle, text=False),
    "idx gzip": Reader(idx_gz_make, idx_read, lambda raw: idx_oracle(raw, gz=True), text=False, gz=True),
    "mnist labels": Reader(mnist_make, mnist_read, mnist_oracle, text=False, gz=True, examples=30, rtol=1e-6),
    "imagefolder png": Reader(png_make, png_read, png_oracle, text=False),
    "fasta": Reader(fasta_make, fasta_read, fasta_oracle, examples=50),
    "fasta gzip": Reader(gz_variant(fasta_make, "genome.fa.gz"), fasta_read, lambda raw: fasta_oracle(raw, True),
                         gz=True),
    "genbank": Reader(genbank_make, genbank_read, genbank_oracle, examples=50),
    "gff3": Reader(gff_make, gff_read, gff_oracle),
    "genomic benchmarks csv": Reader(labelled_csv_make, labelled_csv_read, labelled_csv_oracle),
    "genomic benchmarks csv gzip": Reader(gz_variant(labelled_csv_make, "train.csv.gz"), labelled_csv_read,
                                          lambda raw: labelled_csv_oracle(raw, True), gz=True),
    "labelled fasta": Reader(labelled_fasta_make, labelled_fasta_read, labelled_fasta_oracle),
    "wav": Reader(wav_make, audio_read, wav_oracle, text=False),
    "flac": Reader(flac_make, audio_read, flac_oracle, text=False),
    "sc09 lists": Reader(sc09_make, sc09_read, None, examples=30),
    "recbole inter": Reader(inter_make, log_read, inter_oracle),
    "recbole inter gzip": Reader(gz_variant(inter_make, "ml.inter.gz"), log_read, lambda raw: inter_oracle(raw, True),
                                 gz=True),
    "movielens u.data": Reader(movielens_make("u.data", "\t"), log_read, lambda raw: movielens_oracle(raw, "\t")),
    "movielens ratings.dat": Reader(movielens_make("ratings.dat", "::"), log_read,
                                    lambda raw: movielens_oracle(raw, "::"), examples=30),
    "recommend histories csv": Reader(histories_make, histories_read, histories_oracle),
    "amazon time-interval": Reader(time_interval_make, log_read, time_interval_oracle),
    "amazon time-interval gzip": Reader(gz_variant(time_interval_make, "beauty.txt.gz"), log_read,
                                        lambda raw: time_interval_oracle(raw, True), gz=True),
}


def needs(name: str) -> str:
    """The optional package a reader's domain needs (its test is skipped without it)."""
    if name.startswith(("timeseries", "recbole", "movielens", "amazon", "recommend", "idx", "mnist")):
        return "pandas" if name.startswith("timeseries") else "numpy"
    if name in ("wav", "flac", "sc09 lists"):
        return "soundfile"
    return "PIL" if name.startswith("imagefolder") else "Bio"


@pytest.mark.parametrize("name", list(READERS))
def test_reader(name, tmp_path):
    pytest.importorskip(needs(name))
    reader = READERS[name]
    if name == "sc09 lists":  # the oracle checks the listed files exist under this test's folder
        reader = Reader(sc09_make, sc09_read, lambda raw: sc09_oracle(raw, tmp_path), examples=30)
    failures = run_reader(name, reader, tmp_path)
    assert not failures, f"{name}: {len(failures)} crashes / silent wrong answers:\n" + "\n".join(failures[:15])
