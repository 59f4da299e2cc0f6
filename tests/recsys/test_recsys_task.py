"""Task: full ranking vs brute force, metrics vs hand-computed values, fine-tuning with new items."""
import math

import lightning as L
import pytest
import torch

from ssmkit.recsys.data import SequentialDataModule
from ssmkit.recsys.models import Mamba4Rec
from ssmkit.recsys.task import SequentialRecTask, full_sort_ranks, rank_metrics

from .conftest import write_inter


def test_full_sort_rank_equals_brute_force_ranking():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(30, 26, generator=g)
    scores[:5, 0] = 100.0                      # the padding column must never count
    targets = torch.randint(1, 26, (30,), generator=g)
    ranks = full_sort_ranks(scores, targets)
    for b in range(30):
        order = sorted(range(1, 26), key=lambda i: -float(scores[b, i]))
        assert int(ranks[b]) == order.index(int(targets[b])) + 1


def test_metrics_equal_hand_computed_values():
    m = rank_metrics(torch.tensor([1, 3, 10, 15, 25]), ks=(10, 20))
    assert m["hr@10"].tolist() == [1, 1, 1, 0, 0] and m["hr@20"].tolist() == [1, 1, 1, 1, 0]
    assert m["ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0, 0])
    assert m["ndcg@20"].tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0.25, 0])
    assert m["mrr@10"].tolist() == pytest.approx([1.0, 1 / 3, 0.1, 0, 0])
    assert m["mrr@20"].tolist() == pytest.approx([1.0, 1 / 3, 0.1, 1 / 15, 0])


def chain_rows(users, items, length, prefix, seed):
    """Each user walks `items` in order from a random start: the next item is predictable."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for u in range(users):
        start = int(torch.randint(len(items), (1,), generator=g))
        rows += [(f"{prefix}{u}", items[(start + k) % len(items)], 1000 + 3600 * k) for k in range(length)]
    return rows


def _trainer(tmp_path, epochs, name):
    return L.Trainer(max_epochs=epochs, default_root_dir=str(tmp_path / name), enable_progress_bar=False,
                     enable_model_summary=False, logger=L.pytorch.loggers.CSVLogger(str(tmp_path / name)),
                     num_sanity_val_steps=0, deterministic=True)


def test_logged_metrics_equal_brute_force_over_the_test_split(tmp_path):
    L.seed_everything(0)
    path = write_inter(tmp_path / "a.inter", chain_rows(20, [f"i{k}" for k in range(12)], 8, "u", 0))
    dm = SequentialDataModule(str(path), batch_size=16, eval_batch_size=7, user_min=1, item_min=1)
    task = SequentialRecTask(Mamba4Rec(hidden_size=16, d_state=8))
    trainer = _trainer(tmp_path, 2, "m")
    trainer.fit(task, dm)
    logged = trainer.test(task, dm, verbose=False)[0]
    task.eval()
    hits, ndcg = [], []
    with torch.no_grad():
        for s in dm.datasets["test"]:
            n = int(s["length"])
            scores = task.model(s["items"][None, :n], s["length"][None]).squeeze(0)
            ranked = sorted(range(1, dm.n_items + 1), key=lambda i: -float(scores[i]))
            rank = ranked.index(int(s["target"])) + 1
            hits.append(float(rank <= 10))
            ndcg.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    assert logged["test/hr@10"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert logged["test/ndcg@10"] == pytest.approx(sum(ndcg) / len(ndcg), abs=1e-5)


def test_fine_tuning_grows_items_keeps_old_rows_and_improves(tmp_path):
    L.seed_everything(0)
    old_items = [f"i{k}" for k in range(15)]
    new_items = [f"i{k}" for k in range(10, 22)]          # i15..i21 were never seen
    pre = write_inter(tmp_path / "pre.inter", chain_rows(40, old_items, 10, "u", 1))
    ft = write_inter(tmp_path / "ft.inter", chain_rows(40, new_items, 10, "v", 2))
    task = SequentialRecTask(Mamba4Rec(hidden_size=16, d_state=8), lr=5e-3)
    trainer = _trainer(tmp_path, 8, "pre")
    pre_dm = SequentialDataModule(str(pre), batch_size=64, user_min=1, item_min=1)
    trainer.fit(task, pre_dm)
    ckpt = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    old_rows = task.model.item_embedding.weight.detach().clone()

    def fine_tune(epochs):
        L.seed_everything(1)
        tuned = SequentialRecTask(Mamba4Rec(hidden_size=16, d_state=8), lr=5e-3, init_from=str(ckpt))
        dm = SequentialDataModule(str(ft), batch_size=64, user_min=1, item_min=1)
        t = _trainer(tmp_path, epochs, f"ft{epochs}")
        if epochs:
            t.fit(tuned, dm)
        return tuned, dm, t.test(tuned, dm, verbose=False)[0]

    base, dm, before = fine_tune(0)
    tuned, dm, after = fine_tune(8)
    assert sorted(pre_dm.item_ids) == sorted(old_items)
    assert dm.item_ids[:15] == pre_dm.item_ids and sorted(dm.item_ids[15:]) == sorted(new_items[5:])
    for model in (base.model, tuned.model):
        w = model.item_embedding.weight.detach()
        assert w.shape == (23, 16) and torch.equal(w[:16], old_rows)
    assert after["test/ndcg@10"] > before["test/ndcg@10"] + 0.1
    assert after["test/hr@10"] > before["test/hr@10"]
    item_map = tmp_path / "ft8" / "lightning_logs" / "version_0" / "item_map.json"
    assert item_map.is_file()
    tuned_ckpt = tmp_path / "tuned.ckpt"
    _trainer(tmp_path, 1, "save").validate(tuned, dm, verbose=False)
    tuned.trainer.save_checkpoint(tuned_ckpt)
    fresh = lambda: SequentialRecTask(Mamba4Rec(hidden_size=16, d_state=8))  # noqa: E731
    with pytest.raises(ValueError, match="item map"):   # the new file alone maps items in another order
        _trainer(tmp_path, 1, "t1").test(fresh(), SequentialDataModule(str(ft), user_min=1, item_min=1),
                                         ckpt_path=str(tuned_ckpt), verbose=False)
    again = _trainer(tmp_path, 1, "t2").test(fresh(), SequentialDataModule(str(ft), user_min=1, item_min=1,
                                                                            item_map=str(item_map)),
                                             ckpt_path=str(tuned_ckpt), verbose=False)[0]
    assert again["test/ndcg@10"] == pytest.approx(after["test/ndcg@10"], abs=1e-6)
