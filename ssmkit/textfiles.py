"""Helpers shared by the domains' text readers (FASTA / GFF3 / labelled CSV in genomics, interaction logs in recsys)."""
from __future__ import annotations

import contextlib
import gzip
import pathlib
import zlib


def non_utf8_line(path, gzipped: bool) -> int:
    """The 1-based line of the first byte of `path` that is not UTF-8, for an error message: a text decoder only knows
    its position inside a buffered chunk. A gzip file is decompressed first (as far as it goes); 1 if none is found."""
    raw = pathlib.Path(path).read_bytes()
    if gzipped:
        with contextlib.suppress(EOFError, zlib.error, gzip.BadGzipFile):
            raw = gzip.decompress(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return raw[:e.start].count(b"\n") + 1
    return 1
