"""HyenaDNA's character vocabulary as lookup tables: bytes -> ids, soft-mask and IUPAC bookkeeping, reverse complement.

Ids: [CLS]=0 [SEP]=1 [BOS]=2 [MASK]=3 [PAD]=4 [RESERVED]=5 [UNK]=6, A=7 C=8 G=9 T=10 N=11; the embedding table
is padded to 16 rows. Lower-case letters (soft-masked repeats) give the same ids as upper case and set a mask
bit; IUPAC ambiguity codes other than N (R Y S W K M B D H V, and U) become N and set another bit, so a genome
can be written back exactly; any other character is an error naming where it occurred.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .errors import InvalidBaseError

SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
CLS, SEP, BOS, MASK, PAD, RESERVED, UNK = range(7)
A, C, G, T, N = 7, 8, 9, 10, 11
BASES = "ACGTN"
VOCAB_SIZE = 12
PADDED_VOCAB_SIZE = 16
SOFT_MASK_BIT = 1  # the base was lower case in the source
AMBIGUOUS_BIT = 2  # the base was an IUPAC code other than ACGTN, stored as N
IUPAC_AMBIGUOUS = "RYSWKMBDHVU"

_INVALID = 255


def _tables():
    ids = np.full(256, _INVALID, dtype=np.uint8)
    flags = np.zeros(256, dtype=np.uint8)
    for i, b in enumerate(BASES):
        for ch, soft in ((b, 0), (b.lower(), SOFT_MASK_BIT)):
            ids[ord(ch)], flags[ord(ch)] = A + i, soft
    for b in IUPAC_AMBIGUOUS:
        for ch, soft in ((b, 0), (b.lower(), SOFT_MASK_BIT)):
            ids[ord(ch)], flags[ord(ch)] = N, soft | AMBIGUOUS_BIT
    complement = np.arange(PADDED_VOCAB_SIZE, dtype=np.uint8)
    complement[[A, C, G, T]] = [T, G, C, A]
    upper = np.frombuffer(b"??????" + b"?" + BASES.encode() + b"????", dtype=np.uint8).copy()
    return ids, flags, complement, upper


ENCODE_LUT, FLAG_LUT, COMPLEMENT, _UPPER = _tables()
_LOWER = np.frombuffer(bytes(_UPPER).lower(), dtype=np.uint8)


@dataclass
class Encoded:
    """Token ids (uint8), per-base flags (uint8: SOFT_MASK_BIT | AMBIGUOUS_BIT) and the number of IUPAC codes
    that became N."""
    ids: np.ndarray
    flags: np.ndarray
    n_ambiguous: int


class DNATokenizer:
    """Vectorised DNA tokenizer (one table lookup per call, no per-base Python)."""

    vocab_size = PADDED_VOCAB_SIZE
    pad_id, mask_id, unk_id, cls_id, sep_id, bos_id = PAD, MASK, UNK, CLS, SEP, BOS

    def encode(self, seq: Union[str, bytes], where: str = "sequence") -> Encoded:
        """Sequence text -> ids, flags and the ambiguous count; raises InvalidBaseError naming `where` and the
        position of the first character outside IUPAC."""
        raw = np.frombuffer(seq.encode("ascii", "replace") if isinstance(seq, str) else seq, dtype=np.uint8)
        ids = ENCODE_LUT[raw]
        bad = np.flatnonzero(ids == _INVALID)
        if bad.size:
            i = int(bad[0])
            raise InvalidBaseError(f"{where}: character {chr(raw[i])!r} at position {i + 1} is not an IUPAC "
                                   f"nucleotide code ({bad.size} such characters in total)")
        flags = FLAG_LUT[raw]
        return Encoded(ids, flags, int(np.count_nonzero(flags & AMBIGUOUS_BIT)))

    def __call__(self, seq: Union[str, bytes]) -> np.ndarray:
        return self.encode(seq).ids.astype(np.int64)

    def decode(self, ids, flags=None) -> str:
        """Ids (and optionally flags) -> text; soft-masked bases come back lower case. Specials decode as '?'."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= PADDED_VOCAB_SIZE):
            raise ValueError(f"ids must lie in [0, {PADDED_VOCAB_SIZE}), got range [{ids.min()}, {ids.max()}]")
        ids = ids.astype(np.intp)
        text = _UPPER[ids]
        if flags is not None:
            text = np.where(np.asarray(flags) & SOFT_MASK_BIT, _LOWER[ids], text)
        return text.astype(np.uint8).tobytes().decode("ascii")

    @staticmethod
    def reverse_complement(ids):
        """Reverse complement on ids (numpy array or torch tensor), along the last axis; specials stay as they are."""
        if isinstance(ids, np.ndarray):
            return COMPLEMENT[ids[..., ::-1]]
        import torch
        lut = torch.as_tensor(COMPLEMENT, device=ids.device).to(ids.dtype)
        return lut[ids.flip(-1).long()]


def complement_ids():
    """The complement permutation of the padded vocabulary as an int64 numpy array (A<->T, C<->G, others fixed)."""
    return COMPLEMENT.astype(np.int64)
