"""Image data readers (idx files the tests write themselves), seeded splits, the classification task and the
vision configs."""
import gzip
import importlib
import pathlib
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ssmkit.train import no_weight_decay_names
from ssmkit.vision.data import MNIST_MEAN, MNIST_STD, MNISTDataModule, read_idx
from ssmkit.vision.task import ImageClassificationTask, topk_accuracy

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "vision"


def _write_idx(path, array, code=0x08, gz=True):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">") if array.itemsize > 1 else array.dtype).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _mnist_files(root, n=50, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    return images, labels


def test_read_idx_round_trips_plain_gzip_and_wide_dtypes(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.idx", a, gz=False)
    _write_idx(tmp_path / "a.idx.gz", a)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a) and np.array_equal(read_idx(tmp_path / "a.idx.gz"), a)
    b = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    _write_idx(tmp_path / "b.idx", b, code=0x0C, gz=False)
    assert np.array_equal(read_idx(tmp_path / "b.idx"), b)


def test_read_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match=r"bad\.idx: not an idx file"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc")
    with pytest.raises(ValueError, match=r"short\.idx: header says shape \(5,\)"):
        read_idx(short)
    code = tmp_path / "code.idx"
    code.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"a")
    with pytest.raises(ValueError, match=r"code\.idx: unknown idx dtype code 0x07"):
        read_idx(code)


def test_mnist_datamodule_seeded_disjoint_split_and_normalisation(tmp_path):
    images, labels = _mnist_files(tmp_path)
    dm = MNISTDataModule(str(tmp_path), split=(30, 10, 10), batch_size=8, seed=3)
    dm.setup()
    sets = dm._sets
    assert [len(s) for s in sets] == [30, 10, 10] and dm.num_classes == 10
    x, y = sets[1][:]
    assert x.shape == (10, 1, 28, 28)
    # map every val example back to its source image through the normalisation
    raw = np.rint((x[:, 0].numpy() * MNIST_STD + MNIST_MEAN) * 255).astype(np.uint8)
    idx = [int(np.flatnonzero((images == r).all(axis=(1, 2)))[0]) for r in raw]
    assert np.array_equal(labels[idx], y.numpy())
    all_idx = []
    for s in sets:
        r = np.rint((s[:][0][:, 0].numpy() * MNIST_STD + MNIST_MEAN) * 255).astype(np.uint8)
        all_idx += [int(np.flatnonzero((images == i).all(axis=(1, 2)))[0]) for i in r]
    assert sorted(all_idx) == list(range(50))
    again = MNISTDataModule(str(tmp_path), split=(30, 10, 10), seed=3)
    again.setup()
    assert torch.equal(again._sets[0][:][0], sets[0][:][0])
    other = MNISTDataModule(str(tmp_path), split=(30, 10, 10), seed=4)
    other.setup()
    assert not torch.equal(other._sets[0][:][0], sets[0][:][0])
    big = MNISTDataModule(str(tmp_path), img_size=32, in_chans=3, split=(40, 5, 5))
    big.setup()
    assert next(iter(big.train_dataloader()))[0].shape[1:] == (3, 32, 32)
    with pytest.raises(ValueError, match="add up to 60 > 50"):
        MNISTDataModule(str(tmp_path), split=(40, 10, 10)).setup()


def test_topk_accuracy_matches_a_loop():
    torch.manual_seed(0)
    logits, target = torch.randn(40, 7), torch.randint(0, 7, (40,))
    for k in (1, 3, 5, 9):
        order = logits.argsort(-1, descending=True)[:, :min(k, 7)].tolist()
        expected = sum(int(t) in row for t, row in zip(target.tolist(), order)) / 40
        assert topk_accuracy(logits, target, k).item() == pytest.approx(expected)


def test_task_loss_metrics_and_weight_decay_groups():
    task = ImageClassificationTask("test_vim", num_classes=10, in_chans=1, label_smoothing=0.2,
                                   model_kwargs=dict(img_size=16, patch_size=4, depth=1))
    logged = {}
    task.log_metrics = lambda stage, metrics, **kw: logged.update({f"{stage}/{k}": v for k, v in metrics.items()})
    images, target = torch.randn(6, 1, 16, 16), torch.arange(6)
    loss = task.training_step((images, target), 0)
    logits = task(images)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, label_smoothing=0.2))
    task.validation_step((images, target), 0)
    torch.testing.assert_close(logged["val/loss"], F.cross_entropy(logits, target))
    assert logged["val/top1"] == (logits.argmax(-1) == target).float().mean()
    assert {"model.pos_embed", "model.cls_token"} <= no_weight_decay_names(task)
    probs = task.predict_step((images, target), 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(6))
    with pytest.raises(ValueError, match="label_smoothing"):
        ImageClassificationTask("test_vim", label_smoothing=1.0)


def _instantiate(spec):
    module, name = spec["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_configs_instantiate(config):
    """Every vision config names real classes with valid arguments (data is not read here)."""
    cfg = yaml.safe_load((CONFIGS / config).read_text())
    args = cfg["model"]["init_args"]
    if "img_size" not in args.get("model_kwargs", {}):  # paper-sized: build on meta (the EMA copy needs real tensors)
        assert args.get("ema_decay") is None or 0.999 <= args["ema_decay"] < 1
        with torch.device("meta"):
            task = _instantiate({**cfg["model"], "init_args": {**args, "ema_decay": None}})
    else:
        task = _instantiate(cfg["model"])
    assert isinstance(task, ImageClassificationTask)
    assert _instantiate(cfg["data"]).batch_size > 0


def test_image_folder_datamodule_reads_png_trees(tmp_path):
    from PIL import Image

    from ssmkit.vision.data import ImageFolderDataModule
    for split in ("train", "val"):
        for c, colour in (("cat", 200), ("dog", 30)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (colour, colour, colour)).save(tmp_path / split / c / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), img_size=32, batch_size=2, num_workers=0)
    dm.setup()
    assert dm.num_classes == 2
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 0]
    # a uniform grey image normalises to (value/255 - mean) / std in every pixel
    torch.testing.assert_close(x[0, 0], torch.full((32, 32), (200 / 255 - 0.485) / 0.229), atol=1e-2, rtol=0)
    assert next(iter(dm.train_dataloader()))[0].shape == (2, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="expected root/train"):
        ImageFolderDataModule(str(tmp_path / "nothing")).setup()


def test_random_shift_translates_each_image_and_fills_with_background():
    from ssmkit.vision.data import RandomShift
    torch.manual_seed(0)
    x = torch.zeros(16, 1, 6, 5)
    x[:, :, 1:5, 1:4] = torch.rand(16, 1, 4, 3) + 1  # a "digit" on a zero background
    y = torch.arange(16)
    out, labels = RandomShift(1)([(x[i], y[i]) for i in range(16)])
    assert torch.equal(labels, y) and out.shape == x.shape
    seen = set()
    for i in range(16):
        padded = F.pad(x[i], (1, 1, 1, 1))
        matches = [(dy, dx) for dy in range(3) for dx in range(3)
                   if torch.equal(out[i], padded[:, dy:dy + 6, dx:dx + 5])]
        assert matches, f"image {i} is not a translation of its input"
        seen.add(matches[0])
    assert len(seen) > 1  # the offsets are random
    unchanged, _ = RandomShift(0)([(x[i], y[i]) for i in range(16)])
    assert torch.equal(unchanged, x)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
