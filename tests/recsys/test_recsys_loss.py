"""tied_cross_entropy (blocked full-softmax CE over the item table) against F.cross_entropy on the full logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.recsys import loss as loss_mod
from ssmkit.recsys.loss import tied_cross_entropy


def _reference(h, weight, target):
    logits = h @ weight.T
    logits = torch.cat([torch.full_like(logits[:, :1], float("-inf")), logits[:, 1:]], 1)
    return F.cross_entropy(logits, target)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_value_and_gradients_equal_full_cross_entropy(monkeypatch, dtype):
    monkeypatch.setattr(loss_mod, "BLOCK_BYTES", 7 * 50 * 8)  # 7 rows per block at 50 columns: 5 blocks, last short
    g = torch.Generator().manual_seed(0)
    h = torch.randn(31, 6, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    w = torch.randn(50, 6, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    target = torch.randint(1, 50, (31,), generator=g)
    got = tied_cross_entropy(h, w, target)
    got.backward(torch.tensor(1.7, dtype=dtype))
    h2, w2 = h.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    ref = _reference(h2, w2, target)
    ref.backward(torch.tensor(1.7, dtype=dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.dtype == dtype and abs(got.item() - ref.item()) < tol * abs(ref.item())
    assert torch.allclose(h.grad, h2.grad, rtol=tol, atol=tol) and torch.allclose(w.grad, w2.grad, rtol=tol, atol=tol)
    assert w.grad[0].abs().max() == 0  # the padding row gets no gradient: its column is never a candidate


def test_padding_target_is_not_silently_dropped():
    h, w = torch.randn(2, 3), torch.randn(5, 3)
    assert torch.isinf(tied_cross_entropy(h, w, torch.tensor([0, 2])))


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="target must be"):
        tied_cross_entropy(torch.randn(2, 3), torch.randn(5, 3), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="weight"):
        tied_cross_entropy(torch.randn(2, 3), torch.randn(5, 4), torch.tensor([1, 2]))


def test_training_step_loss_equals_benchmarks_full_logits_loss(inter_file):
    """The task trains on tied_cross_entropy; benchmarks/recsys.py times it against F.cross_entropy on the full
    score matrix. Both are the same loss on a real batch and model (dropout off), with the same gradients."""
    import importlib.util
    import pathlib

    from ssmkit.recsys.data import SequentialDataModule
    from ssmkit.recsys.models import Mamba4Rec
    from ssmkit.recsys.task import SequentialRecTask

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "recsys.py"
    spec = importlib.util.spec_from_file_location("bench_recsys_loss", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    dm = SequentialDataModule(str(inter_file), batch_size=32, user_min=1, item_min=1)
    dm.setup("fit")
    task = SequentialRecTask(Mamba4Rec(n_items=dm.n_items, hidden_size=16, d_state=8)).double().eval()
    batch = next(iter(dm.train_dataloader()))
    ours, full = task.training_step(batch, 0), bench.full_logits_loss(task, batch)
    g_ours = torch.autograd.grad(ours, list(task.parameters()))
    g_full = torch.autograd.grad(full, list(task.parameters()))
    assert abs(ours.item() - full.item()) < 1e-12
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_ours, g_full))
