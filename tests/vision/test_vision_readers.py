"""Vision readers under bad input: every decode, encoding or truncation error names the file (a gzip cut short, a
raw idx file named .gz, a truncated PNG), and MNIST labels outside the declared classes are refused instead of
silently growing the class count."""
import gzip
import struct

import numpy as np
import pytest

from ssmkit.vision.data import ImageFolderDataModule, MNISTDataModule, load_rgb, read_idx


def _idx(images: np.ndarray) -> bytes:
    return b"\x00\x00\x08" + bytes([images.ndim]) + struct.pack(f">{images.ndim}I", *images.shape) + images.tobytes()


def _mnist(root, labels, n=12):
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    (root / "img.gz").write_bytes(gzip.compress(_idx(images)))
    (root / "lab.gz").write_bytes(gzip.compress(_idx(np.asarray(labels, dtype=np.uint8))))
    return images


def test_cut_gzip_names_the_file(tmp_path):
    whole = gzip.compress(_idx(np.arange(4000, dtype=np.uint8) % 251))
    cut = tmp_path / "cut-images.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut-images\.gz: corrupt or truncated gzip stream"):
        read_idx(cut)
    garbled = tmp_path / "garbled.gz"
    garbled.write_bytes(whole[:20] + bytes(255 - b for b in whole[20:]))
    with pytest.raises(ValueError, match=r"garbled\.gz: corrupt or truncated gzip stream"):
        read_idx(garbled)


def test_raw_idx_named_gz_names_the_file(tmp_path):
    raw = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw.write_bytes(_idx(np.arange(10, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: named \.gz but not gzip-compressed"):
        read_idx(raw)


def test_mnist_label_outside_the_declared_classes_is_refused(tmp_path):
    labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 10]
    _mnist(tmp_path, labels)
    dm = MNISTDataModule(str(tmp_path), images="img.gz", labels="lab.gz", split=(8, 2, 2))
    with pytest.raises(ValueError, match=r"lab\.gz: record 11 has label 10, outside the 10 classes \[0, 10\) "
                                         r"\(1 such records\)"):
        dm.setup()
    wider = MNISTDataModule(str(tmp_path), images="img.gz", labels="lab.gz", split=(8, 2, 2), num_classes=11)
    wider.setup()
    assert wider.num_classes == 11 and sum(len(s) for s in wider._sets) == 12
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        MNISTDataModule(str(tmp_path), num_classes=0)


def test_mnist_num_classes_is_the_declared_count_not_the_largest_label(tmp_path):
    _mnist(tmp_path, [0, 1, 2, 3] * 3)
    dm = MNISTDataModule(str(tmp_path), images="img.gz", labels="lab.gz", split=(8, 2, 2))
    dm.setup()
    assert dm.num_classes == 10


def _png_tree(root):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")


def test_truncated_png_names_the_file(tmp_path):
    _png_tree(tmp_path)
    bad = tmp_path / "train" / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"train/b/1\.png: cannot decode image"):
        load_rgb(str(bad))
    dm = ImageFolderDataModule(str(tmp_path), img_size=16, batch_size=2, num_workers=0)
    dm.setup()
    train = dm._sets[0]
    assert train[0][0].shape == (3, 16, 16)  # the good files still load
    with pytest.raises(ValueError, match=r"1\.png: cannot decode image"):
        train[train.samples.index((str(bad), 1))]
    text = tmp_path / "val" / "a" / "0.png"
    text.write_bytes("not an image: caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"val/a/0\.png: cannot decode image \(UnidentifiedImageError"):
        dm._sets[1][0]
