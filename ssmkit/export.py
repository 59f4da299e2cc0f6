"""`ssmkit export`: an image classifier to ONNX or a torch.export program (.pt2), checked against eager PyTorch.

    ssmkit export --model vim_tiny_patch16_224 --format onnx --out vim_tiny.onnx
    ssmkit export --checkpoint outputs/vision/run/checkpoints/last.ckpt --format pt2 --out model.pt2

`--model` is any timm name (ours register on import). `--checkpoint` is a Lightning checkpoint of
`ImageClassificationTask` (its model name and arguments come with it; the EMA weights are exported when the
run kept them) or a plain state_dict / official weights file loaded through the model's filter. Both formats
take a dynamic batch dimension; the file is then run on two batch sizes and compared with the eager model.
The scan ops stay one node in a .pt2 (`torch.ops.ssmkit.*`, registered by importing ssmkit.vision before
`torch.export.load`); ONNX gets their chunked closed form (`ssmkit.core.ops.custom_ops.DECOMPOSITIONS`).
"""
from __future__ import annotations

import argparse
import pathlib
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

FORMATS = ("onnx", "pt2")


def load_model(name: Optional[str] = None, checkpoint: Optional[str] = None, use_ema: bool = True,
               **model_kwargs) -> nn.Module:
    """The model in eval mode: `timm.create_model(name)`, with the weights of `checkpoint` if given."""
    import timm

    import ssmkit.vision  # noqa: F401  (registers the models)

    if checkpoint is None:
        if name is None:
            raise ValueError("give --model NAME, --checkpoint CKPT, or both")
        return timm.create_model(name, **model_kwargs).eval()
    path = pathlib.Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "hyper_parameters" in ckpt and "state_dict" in ckpt:
        from ssmkit.vision.task import ImageClassificationTask

        saved = ckpt["hyper_parameters"].get("model_name")
        if name is not None and name != saved:
            raise ValueError(f"--model {name!r} differs from the checkpoint's model {saved!r} ({path})")
        task = ImageClassificationTask.load_from_checkpoint(path, map_location="cpu")
        ema = getattr(task, "model_ema", None)
        return (ema.module if use_ema and ema is not None else task.model).eval()
    if name is None:
        raise ValueError(f"--checkpoint {path} is not a Lightning checkpoint: give --model NAME too")
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **model_kwargs).eval()


def example_input(model: nn.Module, batch: int = 2, img_size: Optional[int] = None) -> torch.Tensor:
    """A seeded random batch of the model's input size: `img_size`, else the size a patch embedding was built for
    (`patch_embed.img_size`, as Vim and timm's ViTs keep it), else `pretrained_cfg["input_size"]`."""
    c, h, w = model.pretrained_cfg["input_size"]
    c = _first_conv_channels(model) or c
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        h = w = img_size
    elif built is not None:
        h, w = built
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


def _first_conv_channels(model: nn.Module) -> Optional[int]:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.in_channels


def _batch_dim() -> dict:
    return {0: torch.export.Dim("batch", min=1, max=1024)}


def export_program(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True):
    """torch.export of the eval model; the scan custom ops stay single nodes."""
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=(_batch_dim(),) if dynamic_batch else None)


def export(model: nn.Module, example: torch.Tensor, fmt: str, out, dynamic_batch: bool = True) -> pathlib.Path:
    """Write `model` as `fmt` ("onnx" or "pt2") to `out`; returns the path."""
    from ssmkit.core.ops.custom_ops import DECOMPOSITIONS

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    program = export_program(model, example, dynamic_batch)
    if fmt == "pt2":
        torch.export.save(program, out)
        return out
    onnx_program = torch.onnx.export(program.run_decompositions(DECOMPOSITIONS), (example,), dynamo=True,
                                     dynamic_shapes=(_batch_dim(),) if dynamic_batch else None, verbose=False)
    onnx_program.save(str(out))
    return out


def run_exported(path, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file (.onnx through onnxruntime, .pt2 through torch.export.load) on x."""
    path = pathlib.Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    import ssmkit.core.ops.custom_ops  # noqa: F401  (the ops a .pt2 refers to)

    with torch.no_grad():
        return torch.export.load(path).module()(x)


def max_relative_error(model: nn.Module, path, inputs: Sequence[torch.Tensor]) -> float:
    """max |exported - eager| / max(1, max |eager|) over the inputs."""
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = model(x)
        got = run_exported(path, x)
        if got.shape != ref.shape:
            raise ValueError(f"{path}: output shape {tuple(got.shape)} differs from eager {tuple(ref.shape)}")
        worst = max(worst, float((got - ref).abs().max()) / max(1.0, float(ref.abs().max())))
    return worst


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ssmkit export", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="timm model name (optional with a Lightning checkpoint)")
    p.add_argument("--checkpoint", help="Lightning checkpoint of ImageClassificationTask, or a weights file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="file to write (.onnx / .pt2)")
    p.add_argument("--img-size", type=int, help="input size for models that take any size (default: the cfg's)")
    p.add_argument("--num-classes", type=int, help="head size when building from --model alone")
    p.add_argument("--no-ema", action="store_true", help="export the trained weights, not their EMA")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 2 instead of dynamic")
    p.add_argument("--tol", type=float, default=1e-4, help="max relative error against eager (default 1e-4)")
    a = p.parse_args(argv)
    kwargs = {} if a.num_classes is None else dict(num_classes=a.num_classes)
    model = load_model(a.model, a.checkpoint, use_ema=not a.no_ema, **kwargs)
    x = example_input(model, 2, a.img_size)
    path = export(model, x, a.format, a.out, dynamic_batch=not a.static_batch)
    checks = [x] if a.static_batch else [x, example_input(model, 3, a.img_size)[1:2]]
    err = max_relative_error(model, path, checks)
    ok = err <= a.tol
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); max relative error against eager on batch "
          f"{', '.join(str(len(c)) for c in checks)}: {err:.2e} ({'ok' if ok else f'above --tol {a.tol}'})")
    return 0 if ok else 1
