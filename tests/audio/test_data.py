"""audio/data.py and audio/quantize.py on tiny WAV/FLAC files written here."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmkit.audio.data import (IGNORE_INDEX, AudioFileError, AudioFolderDataModule, CodeWindows, FSDDDataModule,
                               fsdd_split, load_codes, read_audio, sc09_split)
from ssmkit.audio.quantize import SILENCE, linear_decode, linear_encode, mu_law_decode, mu_law_encode


def _tone(n, rate, freq=440.0, amp=0.5):
    t = np.arange(n) / rate
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _mu_law_oracle(x, mu=255):
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((y + 1) / 2 * mu + 0.5).astype(np.int64)


def test_mu_law_matches_formula_and_round_trips_within_one_step():
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    q = mu_law_encode(x)
    assert torch.equal(q, torch.from_numpy(_mu_law_oracle(x.numpy())))
    assert q.min() == 0 and q.max() == 255 and int(mu_law_encode(torch.zeros(1))) == SILENCE
    xr = mu_law_decode(q).double()
    levels = mu_law_decode(torch.arange(256)).double()
    step = torch.maximum(levels[(q + 1).clamp(max=255)] - levels[q], levels[q] - levels[(q - 1).clamp(min=0)])
    assert ((xr - x).abs() <= step + 1e-7).all()
    assert torch.equal(mu_law_encode(levels), torch.arange(256))  # decode then encode is the identity


def test_linear_round_trip_and_errors():
    x = torch.linspace(-1, 1, 5001)
    q = linear_encode(x)
    assert ((linear_decode(q) - x).abs() <= 1 / 255 + 1e-6).all()
    assert torch.equal(linear_encode(linear_decode(torch.arange(256))), torch.arange(256))
    with pytest.raises(ValueError, match="peak-normalise"):
        mu_law_encode(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="non-finite"):
        linear_encode(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        mu_law_decode(torch.tensor([256]))


def test_read_resample_normalise_and_named_errors(tmp_path):
    sf.write(tmp_path / "a.wav", np.stack([_tone(800, 8000), _tone(800, 8000)], 1), 8000, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", _tone(1600, 16000, amp=0.05), 16000)
    x = read_audio(tmp_path / "a.wav", 8000)
    assert x.dtype == torch.float32 and x.shape == (800,)
    assert abs(float(x.abs().max()) - 0.5) < 1e-3
    y = read_audio(tmp_path / "b.flac", 8000)
    assert y.shape == (800,)  # resampled 16 kHz -> 8 kHz
    codes = load_codes(tmp_path / "b.flac", 8000)
    assert codes.dtype == torch.uint8 and int(codes.max()) >= 254 and int(codes.min()) <= 1  # peak-normalised
    with pytest.raises(AudioFileError, match="b.flac.*16000 Hz, expected 8000"):
        read_audio(tmp_path / "b.flac", 8000, require_rate=True)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioFileError, match="corrupt.wav.*cannot read"):
        read_audio(tmp_path / "corrupt.wav", 8000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(AudioFileError, match="empty.wav.*empty"):
        read_audio(tmp_path / "empty.wav", 8000)


def test_windows_shift_pad_and_mask():
    clip = torch.arange(10, 20, dtype=torch.uint8)  # 10 samples, window 4 -> windows 4, 4, 2 (+2 padding)
    ds = CodeWindows([clip], window=4)
    assert len(ds) == 3
    x0, y0 = ds[0]
    assert x0.tolist() == [SILENCE, 10, 11, 12] and y0.tolist() == [10, 11, 12, 13]
    x1, y1 = ds[1]
    assert x1.tolist() == [13, 14, 15, 16] and y1.tolist() == [14, 15, 16, 17]
    x2, y2 = ds[2]
    assert x2.tolist() == [17, 18, SILENCE, SILENCE] and y2.tolist() == [18, 19, IGNORE_INDEX, IGNORE_INDEX]


def _write_fsdd(root, speakers=("ann", "bob", "cid"), takes=7):
    root.mkdir()
    for d in range(2):
        for s in speakers:
            for t in range(takes):
                sf.write(root / f"{d}_{s}_{t}.wav", _tone(100 + 10 * t, 8000, 200 + 50 * d), 8000, subtype="PCM_16")


def test_fsdd_splits_are_official_seeded_and_disjoint(tmp_path):
    _write_fsdd(tmp_path / "rec")
    a = fsdd_split(tmp_path / "rec", "take", seed=1, val_fraction=0.25)
    assert sorted(int(p.stem.split("_")[2]) for p in a["test"]) == sorted(list(range(5)) * 6)
    assert len(a["val"]) == 3 and len(a["train"]) == 9
    assert a == fsdd_split(tmp_path / "rec", "take", seed=1, val_fraction=0.25)
    assert not set(a["train"]) & set(a["val"])
    b = fsdd_split(tmp_path / "rec", "speaker", test_speakers=["bob"])
    speakers = {k: {p.stem.split("_")[1] for p in v} for k, v in b.items()}
    assert speakers["test"] == {"bob"} and len(speakers["val"]) == 1 and not speakers["train"] & speakers["val"]
    (tmp_path / "rec" / "bad-name.wav").write_bytes(b"")
    with pytest.raises(AudioFileError, match="bad-name.wav"):
        fsdd_split(tmp_path / "rec")


def test_fsdd_datamodule_batches(tmp_path):
    _write_fsdd(tmp_path / "rec")
    dm = FSDDDataModule(str(tmp_path / "rec"), window=64, batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.long
    n_targets = sum(int((yy != IGNORE_INDEX).sum()) for _, yy in dm.datasets["test"])
    assert n_targets == sum(100 + 10 * t for t in range(5)) * 6  # every test sample is a target exactly once
    sf.write(tmp_path / "rec" / "1_ann_9.wav", _tone(50, 16000), 16000)
    with pytest.raises(AudioFileError, match="1_ann_9.wav.*16000 Hz"):
        FSDDDataModule(str(tmp_path / "rec"), window=64).setup("fit")


def test_sc09_layout_and_folder_layout(tmp_path):
    root = tmp_path / "sc09"
    for label in ("zero", "one"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            sf.write(root / label / f"s{i}.wav", _tone(320, 16000), 16000)
    (root / "validation_list.txt").write_text("zero/s0.wav\n")
    (root / "testing_list.txt").write_text("one/s0.wav\none/s1.wav\n")
    s = sc09_split(root)
    assert [len(s[k]) for k in ("train", "val", "test")] == [3, 1, 2]
    dm = AudioFolderDataModule(str(root), layout="sc09", window=320, batch_size=2)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3
    long = tmp_path / "long"
    long.mkdir()
    for i in range(4):
        sf.write(long / f"rec{i}.wav", _tone(1000, 16000), 16000)
    dm = AudioFolderDataModule(str(long), layout="folder", window=300, batch_size=2)
    dm.setup("fit")
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert len(dm.datasets["train"]) == 8  # 2 files x ceil(1000 / 300) windows
    (root / "zero" / "s2.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioFileError, match="s2.wav"):
        AudioFolderDataModule(str(root), layout="sc09", window=320).setup("fit")


def test_fsdd_training_order_is_seeded_and_resumes_mid_epoch(tmp_path):
    """The shared resumable sampler: the order is a function of the seed, and a restored position skips exactly
    the batches the checkpoint trained (docs/data_modules.md)."""
    _write_fsdd(tmp_path / "rec")

    def order(seed, state=None):
        dm = FSDDDataModule(str(tmp_path / "rec"), window=64, batch_size=4, val_fraction=0.25, seed=seed)
        dm.setup("fit")
        if state is not None:
            dm.load_state_dict(state)
        return list(dm.train_dataloader().sampler)

    full = order(0)
    assert sorted(full) == list(range(len(full))) and order(0) == full and order(1) != full
    assert order(0, {"epoch": 0, "batches": 2, "total_batches": 2}) == full[8:]
    dm = FSDDDataModule(str(tmp_path / "rec"), window=64, batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    rng = torch.get_rng_state()
    next(iter(dm.train_dataloader()))
    assert torch.equal(torch.get_rng_state(), rng)  # the loader has its own generator (exact resume of dropout)
