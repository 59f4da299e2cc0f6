"""The papers' training recipe end to end: an ImageFolder of digit PNGs written here (scikit-learn's built-in
8x8 digits, no download), timm's create_transform augmentation with random erasing, Mixup/CutMix with label
smoothing into SoftTargetCrossEntropy, drop path, AdamW + warm-up cosine and a ModelEmaV3 of the weights, checked
against hand-computed values; the run learns, its EMA weights are evaluated, and `ssmkit export` round-trips the
trained checkpoint (EMA weights) to .pt2 and ONNX."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup

from ssmkit.train import LossHistory, demo_trainer, seed
from ssmkit.vision.data import ImageFolderDataModule
from ssmkit.vision.task import ImageClassificationTask

CLASSES = 4
VIM = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, d_state=8, drop_path_rate=0.1)


def _digit_folder(root, per_class=(60, 20)):
    """root/{train,val}/<digit>/<i>.png: 32x32 grey PNGs of scikit-learn's digits 0..CLASSES-1."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(CLASSES):
        images = digits.images[digits.target == c]
        start = 0
        for split, n in zip(("train", "val"), per_class):
            (root / split / str(c)).mkdir(parents=True)
            for i, img in enumerate(images[start:start + n]):
                image = Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").resize((32, 32), Image.BILINEAR)
                image.save(root / split / str(c) / f"{i}.png")
            start += n
    return root


def test_mixup_loss_is_soft_target_cross_entropy_and_ema_follows_the_weights():
    task = ImageClassificationTask("test_vim", num_classes=5, in_chans=3, model_kwargs=dict(img_size=16, patch_size=4,
                                   depth=1), label_smoothing=0.1, mixup=0.8, cutmix=1.0, ema_decay=0.5)
    assert not any(p.requires_grad for p in task.model_ema.parameters())
    assert all(id(p) not in {id(q) for q in task.model_ema.parameters()}
               for g in task.configure_optimizers()["optimizer"].param_groups for p in g["params"])
    logged = {}
    task.log_metrics = lambda stage, metrics, **kw: logged.update({f"{stage}/{k}": v for k, v in metrics.items()})
    images, target = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    seed(7)
    loss = task.training_step((images.clone(), target), 0)
    seed(7)  # the same draws (numpy: lambda, mixup vs cutmix; torch: the box) by timm's own Mixup
    mixed, soft = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=5)(images.clone(), target)
    assert torch.allclose(soft.sum(-1), torch.ones(4)) and soft.min() > 0  # smoothed, mixed targets
    task.model.eval()
    torch.testing.assert_close(loss, -(soft * F.log_softmax(task.model(mixed), -1)).sum(-1).mean())
    with pytest.raises(ValueError, match="even batch size"):
        task.training_step((images[:3], target[:3]), 0)
    # EMA: the first update copies the weights, later ones move half-way (decay 0.5) towards them
    w = task.model.head.weight
    task.model_ema.update(task.model, step=0)
    torch.testing.assert_close(task.model_ema.module.head.weight, w)
    old = w.detach().clone()
    with torch.no_grad():
        w.add_(1.0)
    task.model_ema.update(task.model, step=5)
    torch.testing.assert_close(task.model_ema.module.head.weight, old + 0.5)
    task.validation_step((images, target), 0)
    assert {"val/top1", "val_ema/top1", "val_ema/loss"} <= set(logged)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """120 steps of the recipe on the digit folder: (trainer, task, data, losses, checkpoint path)."""
    tmp = tmp_path_factory.mktemp("recipe")
    root = _digit_folder(tmp / "digits")
    seed(0)
    data = ImageFolderDataModule(str(root), img_size=32, batch_size=16, num_workers=0, color_jitter=0.3,
                                 re_prob=0.25, re_mode="pixel", hflip=0.0, scale=(0.6, 1.0), interpolation="bicubic",
                                 mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    task = ImageClassificationTask("test_vim", num_classes=CLASSES, in_chans=3, model_kwargs=VIM, label_smoothing=0.1,
                                   mixup=0.8, cutmix=1.0, ema_decay=0.99, ema_warmup=True, lr=3e-3,
                                   weight_decay=0.05, scheduler="cosine", warmup_steps=10, min_lr_ratio=0.01)
    history = LossHistory()
    trainer = demo_trainer(tmp / "run", 120, [history], limit_val_batches=1.0, val_check_interval=None,
                           check_val_every_n_epoch=1000)
    trainer.fit(task, datamodule=data)
    ckpt = tmp / "trained.ckpt"
    trainer.save_checkpoint(ckpt)
    return trainer, task, data, history.losses, ckpt


def test_recipe_on_a_digit_image_folder_learns_with_ema_evaluated(trained):
    trainer, task, data, losses, _ = trained
    first, last = np.mean(losses[:15]), np.mean(losses[-15:])
    assert last < 0.85 * first, f"training loss did not fall: first 15 steps {first:.3f}, last 15 {last:.3f}"
    metrics = trainer.validate(task, datamodule=data, verbose=False)[0]
    assert metrics["val_ema/top1"] > 0.6 and metrics["val/top1"] > 0.6, metrics  # chance is 0.25


def _round_trip(trained, fmt, tmp_path):
    from ssmkit import export

    _, task, _, _, ckpt = trained
    ema = task.model_ema.module.eval()
    x = torch.randn(3, 3, 32, 32)
    out = tmp_path / f"model.{fmt}"
    assert export.main(["--checkpoint", str(ckpt), "--format", fmt, "--out", str(out)]) == 0
    with torch.no_grad():
        torch.testing.assert_close(export.run_exported(out, x), ema(x), atol=1e-4, rtol=1e-4)


def test_ssmkit_export_round_trips_the_trained_checkpoint_pt2(trained, tmp_path):
    from ssmkit import export

    _round_trip(trained, "pt2", tmp_path)
    with pytest.raises(ValueError, match="differs from the checkpoint's model"):
        export.main(["--model", "vim_tiny_patch16_224", "--checkpoint", str(trained[4]), "--format", "pt2",
                     "--out", str(tmp_path / "x.pt2")])


@pytest.mark.heavy
def test_ssmkit_export_round_trips_the_trained_checkpoint_onnx(trained, tmp_path):
    _round_trip(trained, "onnx", tmp_path)


def test_randaugment_posterize_at_full_magnitude_gives_black_instead_of_raising():
    """Pillow 13 rejects posterize(bits=0), which timm's increasing posterize asks for at magnitude 10; the data
    module keeps the older Pillow result (all bits cleared)."""
    from PIL import Image
    from timm.data import create_transform

    from ssmkit.vision.data import with_safe_posterize

    img = Image.fromarray(np.arange(3 * 16 * 16, dtype=np.uint8).reshape(16, 16, 3))
    transform = with_safe_posterize(create_transform(16, is_training=True, auto_augment="rand-m10-n1-mstd0-inc1"))
    ops = [op for stage in transform.transforms for op in getattr(stage, "ops", [])]
    posterize = next(op for op in ops if op.name == "PosterizeIncreasing")
    assert posterize.level_fn(10, posterize.hparams) == (0,)  # what Pillow 13 refuses
    assert np.asarray(posterize.aug_fn(img, 0)).max() == 0
    assert np.array_equal(np.asarray(posterize.aug_fn(img, 3)), np.asarray(img) & 0b11100000)
    seed(0)
    for _ in range(200):  # magnitude 10 every time, one op per image: posterize comes up about 13 times
        transform(img)
