"""Published long-term forecasting numbers (multivariate M, standardised MSE / MAE) for the standard set, in one
table, with the NLinear-ridge floor computed here; what `benchmarks/timeseries_ett.py` prints next to our runs.

Transcribed from shared/reference/timeseries.md section 5 (status V: cross-checked against a third-party
transcription; R: recalled from the paper, per-horizon values that average to a V-checked average). A dataset
with `None` has no transcribed number yet (Weather, Electricity, Traffic, Exchange, ILI, Solar: the papers'
tables were not readable as text here); fill them from the paper tables, never from memory.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

Pair = Tuple[float, float]
HORIZONS = {"ILI": (24, 36, 48, 60)}          # every other dataset: 96 / 192 / 336 / 720
STANDARD_SET = ("ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "Electricity", "Traffic", "Exchange", "ILI", "Solar")

# (model, dataset) -> {"source", "per_h": [4 pairs] or None, "avg": pair or None}, look-back 96
PUBLISHED: Dict[Tuple[str, str], dict] = {
    ("s_mamba", "ETTh1"): {"source": "S-Mamba paper Table 2 (per-H R, avg V)",
                           "per_h": [(.386, .405), (.443, .437), (.489, .468), (.502, .489)], "avg": (.455, .450)},
    ("s_mamba", "ETTh2"): {"source": "S-Mamba paper Table 2 (per-H R, avg V)",
                           "per_h": [(.296, .348), (.376, .396), (.424, .431), (.426, .444)], "avg": (.381, .405)},
    ("s_mamba", "ETTm1"): {"source": "S-Mamba paper Table 2 (per-H R, avg V)",
                           "per_h": [(.333, .368), (.376, .390), (.408, .413), (.475, .448)], "avg": (.398, .405)},
    ("s_mamba", "ETTm2"): {"source": "S-Mamba paper (avg V)", "per_h": None, "avg": (.288, .332)},
    ("dlinear", "ETTh1"): {"source": "iTransformer paper's DLinear re-run (V)",
                           "per_h": [(.386, .400), (.437, .432), (.481, .459), (.519, .516)], "avg": (.456, .452)},
    ("dlinear", "ETTh2"): {"source": "iTransformer paper's DLinear re-run (V)",
                           "per_h": [(.333, .387), (.477, .476), (.594, .541), (.831, .657)], "avg": (.559, .515)},
    ("dlinear", "ETTm1"): {"source": "iTransformer paper's DLinear re-run (avg V)", "per_h": None,
                           "avg": (.403, .407)},
    ("dlinear", "ETTm2"): {"source": "iTransformer paper's DLinear re-run (avg)", "per_h": None, "avg": (.350, .401)},
}
# not transcribed yet: listed so a table shows the gap instead of silently leaving the row out
for _model in ("s_mamba", "dlinear"):
    for _dataset in STANDARD_SET:
        PUBLISHED.setdefault((_model, _dataset), {"source": "not transcribed", "per_h": None, "avg": None})

# NLinear-ridge (closed form, channel-shared, alpha = 1e-3 N) computed here on the real files, by look-back:
# `python benchmarks/timeseries_ett.py --models nlinear_ridge --datasets <name> --data-dir <folder>`
# (ETTh1/ETTh2/ETTm1 reproduce the reference's numbers; ETTm2 and Weather on public copies of the files)
FLOOR: Dict[int, Dict[str, Dict[int, Pair]]] = {
    96: {"ETTh1": dict(zip((96, 192, 336, 720), [(.383, .392), (.434, .421), (.476, .443), (.470, .462)])),
         "ETTh2": dict(zip((96, 192, 336, 720), [(.289, .338), (.374, .390), (.413, .425), (.419, .442)])),
         "ETTm1": dict(zip((96, 192, 336, 720), [(.351, .371), (.389, .390), (.422, .412), (.483, .446)])),
         "ETTm2": dict(zip((96, 192, 336, 720), [(.182, .265), (.246, .304), (.307, .342), (.407, .398)])),
         "Weather": dict(zip((96, 192, 336, 720), [(.196, .235), (.241, .271), (.293, .308), (.366, .355)]))},
    336: {"ETTh1": dict(zip((96, 192, 336, 720), [(.370, .391), (.403, .411), (.428, .426), (.434, .450)])),
          "ETTh2": dict(zip((96, 192, 336, 720), [(.272, .335), (.334, .376), (.359, .400), (.393, .435)])),
          "ETTm1": dict(zip((96, 192, 336, 720), [(.301, .343), (.336, .363), (.370, .383), (.426, .416)]))},
}


def horizons(dataset: str) -> Tuple[int, ...]:
    return HORIZONS.get(dataset, (96, 192, 336, 720))


def published(model: str, dataset: str, H: Optional[int] = None) -> Optional[Pair]:
    """The published (MSE, MAE) of `model` on `dataset` at horizon H (None: the horizon average), or None."""
    entry = PUBLISHED.get((model, dataset))
    if entry is None:
        return None
    if H is None:
        return entry["avg"]
    return entry["per_h"][horizons(dataset).index(H)] if entry["per_h"] else None


def floor(dataset: str, H: Optional[int], seq_len: int = 96) -> Optional[Pair]:
    """The NLinear-ridge floor (MSE, MAE) at horizon H (None: the average over the dataset's four horizons), or
    None where not computed."""
    rows = FLOOR.get(seq_len, {}).get(dataset, {})
    if H is not None:
        return rows.get(H)
    if set(rows) != set(horizons(dataset)):
        return None
    return tuple(sum(r[j] for r in rows.values()) / len(rows) for j in (0, 1))
