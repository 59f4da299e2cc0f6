"""Image classification data: the MNIST / Fashion-MNIST idx format, scikit-learn's built-in digits, and
LightningDataModules with seeded train / val / test splits.

Images become float tensors (C, H, W) normalised by the dataset's mean and std; `img_size` resizes them
(bilinear) and `in_chans=3` repeats the grey channel for three-channel models.
"""
from __future__ import annotations

import gzip
import io
import pathlib
import zlib
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, default_collate

from ssmkit.data import ResumableDataModule

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def read_idx(path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic 0x0000 <dtype> <ndim>, ndim big-endian uint32 sizes, data.

    Raises ValueError naming the file for a bad magic number, an unknown dtype, a size mismatch, or a `.gz` file
    that is not gzip or is cut short.
    """
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except gzip.BadGzipFile as e:
            raise ValueError(f"{path}: named .gz but not gzip-compressed ({e}); gunzip it or drop the .gz") from e
        except (EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({e}); download the file again") from e
    else:
        raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file (magic bytes {raw[:4].hex()!r}, expected 0000<dtype><ndim>)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown idx dtype code 0x{code:02x} (known: {sorted(IDX_DTYPES)})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, need {header} for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes in all), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def to_image_tensor(images: np.ndarray, mean: float, std: float, scale: float, img_size: Optional[int],
                    in_chans: int) -> torch.Tensor:
    """(N, H, W) grey images -> normalised float (N, in_chans, img_size, img_size)."""
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    x = (torch.as_tensor(np.asarray(images, dtype=np.float32)) / scale).unsqueeze(1)
    if img_size is not None and tuple(x.shape[-2:]) != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = (x - mean) / std
    return x.expand(-1, in_chans, -1, -1).contiguous()


def seeded_split(n: int, sizes: Sequence[int], seed: int) -> Tuple[torch.Tensor, ...]:
    """Disjoint index sets of the given sizes from a seeded permutation of range(n)."""
    if sum(sizes) > n:
        raise ValueError(f"split sizes {tuple(sizes)} add up to {sum(sizes)} > {n} examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = np.cumsum([0, *sizes])
    return tuple(perm[a:b] for a, b in zip(bounds[:-1], bounds[1:]))


class RandomShift:
    """Training collate: translate each image by up to `max_shift` pixels, filling with its corner (background)
    value — the classic MNIST augmentation that keeps digits whole."""

    def __init__(self, max_shift: int):
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = max_shift

    def __call__(self, batch):
        x, y = default_collate(batch)
        s = self.max_shift
        if s == 0:
            return x, y
        n, c, H, W = x.shape
        padded = x[:, :, :1, :1].expand(n, c, H + 2 * s, W + 2 * s).clone()
        padded[:, :, s:s + H, s:s + W] = x
        offsets = torch.randint(0, 2 * s + 1, (n, 2)).tolist()
        return torch.stack([padded[i, :, dy:dy + H, dx:dx + W] for i, (dy, dx) in enumerate(offsets)]), y


class _SplitDataModule(ResumableDataModule):
    """Holds (images, labels) tensors and serves a seeded train / val / test split; `max_shift` augments train.

    Training batches come from a resumable, rank-sharded sampler (`ssmkit.data`); labels must lie in
    [0, num_classes).
    """

    def __init__(self, split: Sequence[int], batch_size: int, seed: int, num_workers: int, max_shift: int = 0,
                 num_classes: int = 10):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.split, self.batch_size, self.seed, self.num_workers = tuple(split), batch_size, seed, num_workers
        self.augment = RandomShift(max_shift)
        self.num_classes = num_classes
        self._sets = None

    def load(self) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self._sets is None:
            x, y = self.load()
            self._sets = [TensorDataset(x[i], y[i]) for i in seeded_split(len(y), self.split, self.seed)]

    def loader(self, split: str) -> DataLoader:
        data, train = self._sets[("train", "val", "test").index(split)], split == "train"
        return self.split_loader(data, train, self.batch_size, self.seed, self.num_workers,
                                 drop_last=train and len(data) > self.batch_size,
                                 collate_fn=self.augment if train else None)


class MNISTDataModule(_SplitDataModule):
    """MNIST or Fashion-MNIST from idx files in `root` (gzipped or not), split by `split` with `seed`.

    The default reads the 10k test split (t10k-*) as 8k train / 1k val / 1k test, the protocol used where
    only that split is available. A label outside [0, num_classes) is an error naming the file and record.
    """

    def __init__(self, root: str, images: str = "t10k-images-idx3-ubyte.gz",
                 labels: str = "t10k-labels-idx1-ubyte.gz", split: Sequence[int] = (8000, 1000, 1000),
                 img_size: Optional[int] = None, in_chans: int = 1, mean: float = MNIST_MEAN, std: float = MNIST_STD,
                 batch_size: int = 128, seed: int = 0, num_workers: int = 0, max_shift: int = 0,
                 num_classes: int = 10):
        super().__init__(split, batch_size, seed, num_workers, max_shift, num_classes)
        self.save_hyperparameters()
        self.root = pathlib.Path(root)

    def load(self):
        h = self.hparams
        images, labels = read_idx(self.root / h.images), read_idx(self.root / h.labels)
        if images.ndim != 3:
            raise ValueError(f"{self.root / h.images}: expected (N, H, W) images, got shape {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{self.root / h.labels}: expected {images.shape[0]} labels, got shape {labels.shape}")
        outside = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        if outside.size:
            raise ValueError(f"{self.root / h.labels}: record {outside[0]} has label {labels[outside[0]]}, outside the "
                             f"{self.num_classes} classes [0, {self.num_classes}) ({outside.size} such records); "
                             f"set num_classes if the data has more")
        x = to_image_tensor(images, h.mean, h.std, 255.0, h.img_size, h.in_chans)
        return x, torch.as_tensor(labels.astype(np.int64))


class DigitsDataModule(_SplitDataModule):
    """scikit-learn's built-in 8x8 digits (1,797 images, 10 classes; no download), upsampled to `img_size`."""

    def __init__(self, split: Sequence[int] = (1297, 250, 250), img_size: int = 16, in_chans: int = 1,
                 batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(split, batch_size, seed, num_workers)
        self.save_hyperparameters()

    def load(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError('DigitsDataModule needs scikit-learn: pip install scikit-learn') from e
        digits = load_digits()
        h = self.hparams
        # pixel values are 0..16; mean/std of the set at that scale
        x = to_image_tensor(digits.images, 0.3, 0.4, 16.0, h.img_size, h.in_chans)
        return x, torch.as_tensor(digits.target, dtype=torch.long)


def load_rgb(path: str):
    """Decode an image file to RGB (PIL), re-raising any decode or truncation error as a ValueError naming the file.
    A PNG's chunk checksums and its end chunk are checked first (decoding alone checks neither IDAT's nor IEND's CRC,
    so a damaged or cut file could decode without an error)."""
    from PIL import Image
    try:
        with open(path, "rb") as f:
            raw = f.read()
        img = Image.open(io.BytesIO(raw))
        if img.format == "PNG":
            img.verify()  # every chunk's CRC but IEND's, whose bytes are fixed: its absence means a cut file
            if raw.rfind(b"\0\0\0\0IEND\xaeB`\x82") < 0:
                raise ValueError("no complete IEND chunk at the end: the file is cut short or damaged")
            img = Image.open(io.BytesIO(raw))
        return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def _posterize(img, bits_to_keep, **_):
    """timm's posterize with Pillow < 13's result for 0 bits (a black image): Pillow 13 raises for bits < 1, which
    RandAugment's increasing posterize reaches whenever the sampled magnitude is clipped at 10."""
    from PIL import ImageOps
    if bits_to_keep >= 8:
        return img
    return img.point(lambda _: 0) if bits_to_keep < 1 else ImageOps.posterize(img, bits_to_keep)


def with_safe_posterize(transform):
    """Point every posterize op of the RandAugment / AutoAugment stages in `transform` at `_posterize`."""
    for stage in getattr(transform, "transforms", []):
        for op in getattr(stage, "ops", []) + [o for sub in getattr(stage, "policy", []) for o in sub]:
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return transform


class ImageFolderDataModule(ResumableDataModule):
    """`root/train/<class>/*` and `root/val/<class>/*` image trees (torchvision ImageFolder) with timm's
    `create_transform` (training augmentation on train, resize + centre crop on val; val doubles as test).
    Training batches come from a resumable, rank-sharded sampler (`ssmkit.data`).

    The training augmentation is timm's ImageNet recipe: random resized crop (`scale`), horizontal flip
    (`hflip`), `auto_augment` (e.g. RandAugment "rand-m9-mstd0.5-inc1", which replaces colour jitter),
    `color_jitter`, and random erasing (`re_prob`, `re_mode`), resized with `interpolation`."""

    def __init__(self, root: str, img_size: int = 224, batch_size: int = 64, num_workers: int = 4,
                 auto_augment: Optional[str] = None, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), crop_pct: float = 0.875, seed: int = 0,
                 color_jitter: float = 0.4, re_prob: float = 0.0, re_mode: str = "pixel", hflip: float = 0.5,
                 scale: Sequence[float] = (0.08, 1.0), interpolation: str = "bilinear"):
        super().__init__()
        self.save_hyperparameters()
        self.root, self.batch_size = pathlib.Path(root), batch_size
        self.num_classes: Optional[int] = None
        self._sets = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self._sets is not None:
            return
        from timm.data import create_transform
        from torchvision.datasets import ImageFolder
        h = self.hparams
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(f"{self.root / split}: missing; expected root/train/<class>/ and "
                                        f"root/val/<class>/ image folders")
        common = dict(input_size=h.img_size, mean=tuple(h.mean), std=tuple(h.std), interpolation=h.interpolation)
        augment = create_transform(is_training=True, auto_augment=h.auto_augment, color_jitter=h.color_jitter,
                                   re_prob=h.re_prob, re_mode=h.re_mode, hflip=h.hflip, scale=tuple(h.scale), **common)
        train = ImageFolder(str(self.root / "train"), with_safe_posterize(augment), loader=load_rgb)
        val = ImageFolder(str(self.root / "val"), create_transform(is_training=False, crop_pct=h.crop_pct, **common),
                          loader=load_rgb)
        if train.classes != val.classes:
            raise ValueError(f"{self.root}: train classes {train.classes} differ from val classes {val.classes}")
        self.num_classes, self._sets = len(train.classes), (train, val)

    def train_dataloader(self):
        seed = self.hparams.seed
        return DataLoader(self._sets[0], batch_size=self.batch_size, drop_last=True,
                          sampler=self.train_sampler(self._sets[0], self.batch_size, seed),
                          num_workers=self.hparams.num_workers, generator=torch.Generator().manual_seed(seed))

    def val_dataloader(self):
        return DataLoader(self._sets[1], batch_size=self.batch_size, num_workers=self.hparams.num_workers,
                          generator=torch.Generator().manual_seed(self.hparams.seed))

    test_dataloader = val_dataloader
