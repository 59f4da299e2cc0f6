"""Waveform data for autoregressive models: soundfile readers, dataset layouts, windows and LightningDataModules.

Pipeline per file: read with soundfile (WAV/FLAC; torchaudio 2.9+ `load` needs FFmpeg, so it is not used), mix to
mono by channel mean, resample with `torchaudio.functional.resample` (or refuse a wrong rate when `require_rate`),
peak-normalise per clip, quantise to 8 bits (`quantize.py`). Clips are decoded once in `setup` and held as 8-bit codes
(1 byte per sample). Each clip is cut into consecutive windows of `window` samples; the last one is right-padded and
its padded targets are `IGNORE_INDEX`, so the loss skips them and no sample is dropped.

An item is `(inputs, targets)`, both int64 (window,): targets are the window's codes, inputs the codes shifted right
by one, starting with the code before the window (or `SILENCE` = 128 at the start of a clip).
"""
from __future__ import annotations

import hashlib
import pathlib
import random
import re
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader, Dataset

from ssmkit.data import ResumableDataModule

from .quantize import SILENCE, encode

IGNORE_INDEX = -100
AUDIO_SUFFIXES = (".wav", ".flac")
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class AudioFileError(ValueError):
    """An audio file that cannot be used (unreadable, corrupt, empty, wrong sample rate, non-finite samples)."""


def read_audio(path, sample_rate: int, require_rate: bool = False) -> torch.Tensor:
    """Mono float32 waveform of `path` at `sample_rate` (resampled unless `require_rate`, which makes a different
    rate an error). Raises AudioFileError naming the file for unreadable, cut or damaged (WAV chunk sizes and fmt
    fields, FLAC sample count and MD5), empty or non-finite audio."""
    path = pathlib.Path(path)
    _check_wav(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioFileError(f"{path}: cannot read audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: empty audio file (0 samples)")
    _check_flac(path, data)
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: audio has non-finite samples")
    if rate != sample_rate and require_rate:
        raise AudioFileError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    x = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate:
        x = AF.resample(x, rate, sample_rate)
    return x


def _check_wav(path: pathlib.Path) -> None:
    """What libsndfile lets through in a RIFF/WAVE file: a RIFF size or a chunk longer than the file (cut short: it
    reads the samples that are there) or shorter (bytes spliced in: the samples shift), and PCM/float fmt fields that
    disagree (a damaged sample rate or channel count). Raises AudioFileError naming the file; other formats pass."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return
        size = path.stat().st_size
        if int.from_bytes(head[4:8], "little") != size - 8:
            raise AudioFileError(f"{path}: cannot read audio: the RIFF header says "
                                 f"{int.from_bytes(head[4:8], 'little') + 8} bytes, the file has {size}: cut short or "
                                 f"damaged")
        pos, align = 12, None
        while pos < size:
            f.seek(pos)
            chunk = f.read(8)
            n = int.from_bytes(chunk[4:8], "little")
            if len(chunk) < 8 or pos + 8 + n > size:
                raise AudioFileError(f"{path}: cannot read audio: chunk {chunk[:4]!r} at byte {pos} runs past the "
                                     f"end of the file (cut short or damaged)")
            if chunk[:4] == b"fmt " and n >= 16:
                tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", f.read(16))
                if tag not in (1, 3, 0xFFFE):  # PCM, float, extensible: the fields below must agree
                    align = None
                elif channels == 0 or align != channels * -(-bits // 8) or byte_rate != rate * align:
                    raise AudioFileError(f"{path}: inconsistent fmt chunk ({channels} channels, {bits} bits, block "
                                         f"{align} bytes, {rate} Hz, {byte_rate} bytes/s): damaged header")
            elif chunk[:4] == b"data" and align and n % align:
                raise AudioFileError(f"{path}: data chunk of {n} bytes is not whole frames of {align} bytes")
            pos += 8 + n + (n & 1)


def _check_flac(path: pathlib.Path, data: np.ndarray) -> None:
    """A FLAC file's STREAMINFO holds its sample count and the MD5 of its samples; libsndfile checks neither, so a
    damaged file could decode short or different without an error. Raises AudioFileError naming the file."""
    with open(path, "rb") as f:
        head = f.read(42)
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:  # STREAMINFO must be the first block
        return
    info = head[8:]
    bits = (((info[12] & 1) << 4) | (info[13] >> 4)) + 1
    total = int.from_bytes(info[13:18], "big") & ((1 << 36) - 1)
    if total and data.shape[0] != total:
        raise AudioFileError(f"{path}: decoded {data.shape[0]} samples, the header says {total}: cut short or damaged")
    if any(info[18:34]) and bits in (8, 16, 24):  # an all-zero MD5 means the encoder did not compute one
        ints = np.rint(data.astype(np.float64) * 2.0 ** (bits - 1)).astype("<i4")
        pcm = ints.view(np.uint8).reshape(*ints.shape, 4)[..., :bits // 8]  # interleaved little-endian samples
        if hashlib.md5(pcm.tobytes()).digest() != info[18:34]:
            raise AudioFileError(f"{path}: the decoded samples do not match the file's MD5 signature: damaged file")


def peak_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale a clip so that max |x| = 1 (quiet speakers then use all 256 levels); a silent clip is returned as is."""
    peak = x.abs().max()
    return x / peak if peak > 0 else x


def load_codes(path, sample_rate: int, quantization: str = "mu-law", require_rate: bool = False) -> torch.Tensor:
    """Read, peak-normalise and quantise one file: uint8 codes (n,)."""
    return encode(peak_normalize(read_audio(path, sample_rate, require_rate)), quantization).to(torch.uint8)


def audio_files(folder) -> List[pathlib.Path]:
    """WAV/FLAC files under `folder` (recursive), sorted; an error if there are none."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no {'/'.join(AUDIO_SUFFIXES)} files under {folder}")
    return files


class CodeWindows(Dataset):
    """Map-style dataset of fixed-length AR windows over 8-bit clips (see the module docstring)."""

    def __init__(self, clips: Sequence[torch.Tensor], window: int):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.clips, self.window = list(clips), window
        self.index = [(i, s) for i, c in enumerate(self.clips) for s in range(0, len(c), window)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> Tuple[torch.Tensor, torch.Tensor]:
        i, start = self.index[item]
        clip = self.clips[i].long()
        codes = clip[start:start + self.window]
        first = clip[start - 1:start] if start > 0 else torch.tensor([SILENCE])
        inputs = torch.full((self.window,), SILENCE, dtype=torch.long)
        targets = torch.full((self.window,), IGNORE_INDEX, dtype=torch.long)
        n = len(codes)
        inputs[:n] = torch.cat([first, codes[:-1]])
        targets[:n] = codes
        return inputs, targets


# ---------------------------------------------------------------- layouts: file lists per split


def sc09_split(root) -> Dict[str, List[pathlib.Path]]:
    """SC09 / Speech Commands layout: `root/<label>/<file>.wav`, `validation_list.txt` and `testing_list.txt` list
    val/test files relative to root; every other audio file is training data."""
    root = pathlib.Path(root)
    lists = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"SC09 layout needs {path}")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise ValueError(f"{path}, line {line}: not UTF-8 text ({e.reason})") from None
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        lists[split] = [root / line for _, line in lines]
        for (n, line), f in zip(lines, lists[split]):
            if not f.is_file():
                raise FileNotFoundError(f"{path}, line {n}: lists {line!r}, which is not a file under {root}")
    held_out = {p.resolve() for files in lists.values() for p in files}
    train = [p for p in audio_files(root) if p.resolve() not in held_out]
    return {"train": train, "val": lists["val"], "test": lists["test"]}


def fsdd_split(root, split: str = "take", seed: int = 0, val_fraction: float = 0.1,
               test_speakers: Optional[Sequence[str]] = None) -> Dict[str, List[pathlib.Path]]:
    """Free Spoken Digit Dataset (`{digit}_{speaker}_{take}.wav`).

    split='take': the dataset's official split, takes 0-4 = test; a seeded `val_fraction` of the rest = val.
    split='speaker': held-out speakers: `test_speakers` (default: one chosen with `seed`) = test, one more seeded
    speaker = val, the others train.
    """
    files = audio_files(root)
    parsed = []
    for f in files:
        m = FSDD_NAME.match(f.name)
        if not m:
            raise AudioFileError(f"{f}: not an FSDD file name ('{{digit}}_{{speaker}}_{{take}}.wav')")
        parsed.append((f, m.group(2), int(m.group(3))))
    rng = random.Random(seed)
    if split == "take":
        test = [f for f, _, take in parsed if take <= 4]
        rest = [f for f, _, take in parsed if take > 4]
        rng.shuffle(rest)
        n_val = max(1, round(val_fraction * len(rest)))
        return {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": test}
    if split == "speaker":
        speakers = sorted({s for _, s, _ in parsed})
        if test_speakers is None:
            test_speakers = [rng.choice(speakers)]
        unknown = set(test_speakers) - set(speakers)
        if unknown:
            raise ValueError(f"test_speakers {sorted(unknown)} not in the dataset's speakers {speakers}")
        others = [s for s in speakers if s not in test_speakers]
        if len(others) < 2:
            raise ValueError(f"split='speaker' needs two speakers besides the test speakers, have {others}")
        val_speaker = rng.choice(others)
        pick = {"test": set(test_speakers), "val": {val_speaker}}
        pick["train"] = set(others) - {val_speaker}
        return {k: [f for f, s, _ in parsed if s in v] for k, v in pick.items()}
    raise ValueError(f"split must be 'take' or 'speaker', got {split!r}")


def folder_split(root, val_fraction: float = 0.06, test_fraction: float = 0.06) -> Dict[str, List[pathlib.Path]]:
    """A folder of long recordings split by file in sorted order (as SaShiMi's YouTubeMix/Beethoven: first 88 %
    train, then val, then test; at least one file each)."""
    files = audio_files(root)
    if len(files) < 3:
        raise ValueError(f"{root}: a by-file split needs at least 3 audio files, found {len(files)}")
    n_test = max(1, round(test_fraction * len(files)))
    n_val = max(1, round(val_fraction * len(files)))
    n_train = len(files) - n_val - n_test
    return {"train": files[:n_train], "val": files[n_train:n_train + n_val], "test": files[n_train + n_val:]}


# ---------------------------------------------------------------- LightningDataModules


class _WaveformDataModule(ResumableDataModule):
    """Shared plumbing: file lists per split (from `_split`) -> decoded clips -> `CodeWindows` datasets.

    Datasets are map-style and the training sampler is `ssmkit.data`'s: shuffled with `seed`, sharded by rank,
    and a resumed run continues the epoch where its checkpoint stopped (docs/data_modules.md).
    """

    def __init__(self, sample_rate: int, window: int, quantization: str, require_rate: bool, batch_size: int,
                 eval_batch_size: Optional[int], num_workers: int, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.sample_rate, self.window, self.quantization = sample_rate, window, quantization
        self.require_rate, self.batch_size, self.num_workers = require_rate, batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.splits: Dict[str, List[pathlib.Path]] = {}
        self.datasets: Dict[str, CodeWindows] = {}

    def _split(self) -> Dict[str, List[pathlib.Path]]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        self.splits = self._split()
        for name, files in self.splits.items():
            if not files:
                raise ValueError(f"split {name!r} has no files")
            clips = [load_codes(f, self.sample_rate, self.quantization, self.require_rate) for f in files]
            self.datasets[name] = CodeWindows(clips, self.window)

    def loader(self, split: str) -> DataLoader:
        return self.split_loader(self.datasets[split], split == "train", self.batch_size, self.seed, self.num_workers,
                                 eval_batch_size=self.eval_batch_size)


class AudioFolderDataModule(_WaveformDataModule):
    """A folder of WAV/FLAC files: `layout='sc09'` (label folders + validation/testing lists) or `layout='folder'`
    (long recordings, split by file in sorted order, cut into windows)."""

    def __init__(self, root: str, layout: str = "sc09", sample_rate: int = 16000, window: int = 16000,
                 quantization: str = "mu-law", require_rate: bool = False, val_fraction: float = 0.06,
                 test_fraction: float = 0.06, batch_size: int = 16, eval_batch_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(sample_rate, window, quantization, require_rate, batch_size, eval_batch_size, num_workers,
                         seed)
        if layout not in ("sc09", "folder"):
            raise ValueError(f"layout must be 'sc09' or 'folder', got {layout!r}")
        self.root, self.layout = root, layout
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.save_hyperparameters()

    def _split(self):
        if self.layout == "sc09":
            return sc09_split(self.root)
        return folder_split(self.root, self.val_fraction, self.test_fraction)


class FSDDDataModule(_WaveformDataModule):
    """Free Spoken Digit Dataset at 8 kHz (`recordings/` folder): `split='take'` (official, takes 0-4 test) or
    `split='speaker'`; validation picked with `seed` (recorded in the hyperparameters)."""

    def __init__(self, root: str, split: str = "take", seed: int = 0, sample_rate: int = 8000, window: int = 8000,
                 quantization: str = "mu-law", require_rate: bool = True, val_fraction: float = 0.1,
                 test_speakers: Optional[List[str]] = None, batch_size: int = 16,
                 eval_batch_size: Optional[int] = None, num_workers: int = 0):
        super().__init__(sample_rate, window, quantization, require_rate, batch_size, eval_batch_size, num_workers,
                         seed)
        self.root, self.split = root, split
        self.val_fraction, self.test_speakers = val_fraction, test_speakers
        self.save_hyperparameters()

    def _split(self):
        return fsdd_split(self.root, self.split, self.seed, self.val_fraction, self.test_speakers)
