"""8-bit waveform quantisation: mu-law (SC09, YouTubeMix) and linear (Beethoven), one convention for both.

Convention (torchaudio's, used by `mu_law_encode` / `mu_law_decode` through `torchaudio.functional`):
a waveform x in [-1, 1] is companded (mu-law: y = sign(x) ln(1 + mu|x|) / ln(1 + mu), mu = 255; linear: y = x),
then mapped to q = floor((y + 1) / 2 * 255 + 0.5) in {0, ..., 255}; decoding maps q back to y = 2 q / 255 - 1
and expands it. Silence encodes to 128 (`SILENCE`), which is also the start-of-sequence and padding input token.
Unlike the SaShiMi code base, encoding does NOT min-max rescale each clip: normalise first (`peak_normalize`);
an input outside [-1, 1] is an error, never clipped silently.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF

N_CLASSES = 256
SILENCE = 128
QUANTIZATIONS = ("mu-law", "linear")


def _check_waveform(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise TypeError(f"waveform must be a float tensor, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("waveform has non-finite values (NaN/inf)")
    if x.numel() and x.abs().max() > 1:
        raise ValueError(f"waveform must lie in [-1, 1] (peak-normalise it first), got peak {float(x.abs().max()):.4g}")


def _check_codes(q: torch.Tensor) -> None:
    if torch.is_floating_point(q) or torch.is_complex(q):
        raise TypeError(f"codes must be an integer tensor, got dtype {q.dtype}")
    if q.numel() and (q.min() < 0 or q.max() >= N_CLASSES):
        raise ValueError(f"codes must lie in [0, {N_CLASSES - 1}], got [{int(q.min())}, {int(q.max())}]")


def mu_law_encode(x: torch.Tensor) -> torch.Tensor:
    """Waveform in [-1, 1] -> 8-bit mu-law codes (int64, same shape); see the module docstring."""
    _check_waveform(x)
    return AF.mu_law_encoding(x, N_CLASSES).long()


def mu_law_decode(q: torch.Tensor) -> torch.Tensor:
    """8-bit mu-law codes -> waveform in [-1, 1] (float32); the inverse of `mu_law_encode` up to quantisation."""
    _check_codes(q)
    return AF.mu_law_decoding(q.long(), N_CLASSES).float()


def linear_encode(x: torch.Tensor) -> torch.Tensor:
    """Waveform in [-1, 1] -> 8-bit linear codes on the same grid as mu-law (q = floor((x+1)/2*255 + 0.5))."""
    _check_waveform(x)
    return torch.floor((x.double() + 1) / 2 * (N_CLASSES - 1) + 0.5).long()


def linear_decode(q: torch.Tensor) -> torch.Tensor:
    """8-bit linear codes -> waveform 2 q / 255 - 1 (float32)."""
    _check_codes(q)
    return (q.double() / (N_CLASSES - 1) * 2 - 1).float()


def encode(x: torch.Tensor, quantization: str) -> torch.Tensor:
    """Dispatch on `quantization` ('mu-law' or 'linear')."""
    return {"mu-law": mu_law_encode, "linear": linear_encode}[_check_quantization(quantization)](x)


def decode(q: torch.Tensor, quantization: str) -> torch.Tensor:
    """Dispatch on `quantization` ('mu-law' or 'linear')."""
    return {"mu-law": mu_law_decode, "linear": linear_decode}[_check_quantization(quantization)](q)


def _check_quantization(quantization: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    return quantization
