"""The RecBole sequential protocol on small synthetic logs: readers, k-core, sort, LOO split, samples."""
import gzip
from collections import Counter

import numpy as np
import pytest
import torch

from ssmkit.recsys.data import (DataFormatError, SequentialDataModule, k_core, read_log, save_item_map)

from .conftest import synthetic_rows, write_inter


def _oracle_sequences(rows):
    """Per user: items sorted by time, ties in file order (an independent stable sort)."""
    by_user = {}
    for pos, (u, i, t) in enumerate(rows):
        by_user.setdefault(u, []).append((t, pos, i))
    return {u: [i for _, _, i in sorted(v)] for u, v in by_user.items()}


def test_sample_counts_and_loo_targets(tmp_path):
    rows = synthetic_rows()
    dm = SequentialDataModule(str(write_inter(tmp_path / "x.inter", rows)), max_len=4, user_min=1, item_min=1)
    dm.setup()
    seqs = _oracle_sequences(rows)
    n = {u: len(s) for u, s in seqs.items()}
    assert len(dm.datasets["train"]) == sum(k - 3 for k in n.values())
    assert len(dm.datasets["val"]) == len(dm.datasets["test"]) == len(seqs)
    ids = dm.item_ids
    name = lambda k: ids[k - 1]  # noqa: E731
    for split, back in (("val", 2), ("test", 1)):
        for sample in dm.datasets[split]:
            user = dm.sequences.users[int(sample["user"])]
            s = seqs[user]
            assert name(int(sample["target"])) == s[-back]
            hist = s[:-back][-4:]
            length = int(sample["length"])
            assert [name(int(k)) for k in sample["items"][:length]] == hist
            assert (sample["items"][length:] == 0).all()       # right padding
    # the test history ends with the validation item
    val = {int(s["user"]): int(s["target"]) for s in dm.datasets["val"]}
    for s in dm.datasets["test"]:
        assert int(s["items"][int(s["length"]) - 1]) == val[int(s["user"])]


def test_no_future_interaction_in_training(tmp_path):
    rows = synthetic_rows(seed=3)
    dm = SequentialDataModule(str(write_inter(tmp_path / "x.inter", rows)), max_len=50, user_min=1, item_min=1)
    dm.setup()
    seqs = _oracle_sequences(rows)
    seen = Counter()
    for s in dm.datasets["train"]:
        user = dm.sequences.users[int(s["user"])]
        length = int(s["length"])
        hist = [dm.item_ids[int(k) - 1] for k in s["items"][:length]]
        assert hist + [dm.item_ids[int(s["target"]) - 1]] == seqs[user][:length + 1]   # a prefix, nothing later
        assert length <= len(seqs[user]) - 3                                            # never the val/test items
        times = s["times"][:length]
        assert (times[1:] >= times[:-1]).all() and float(s["target_time"]) >= float(times[-1])
        seen[user] += 1
    assert all(seen[u] == len(v) - 3 for u, v in seqs.items())


def test_short_users_follow_recbole_leave_one_out(tmp_path):
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3), ("c", "z", 1)]
    dm = SequentialDataModule(str(write_inter(tmp_path / "s.inter", rows)), user_min=1, item_min=1)
    dm.setup()
    users = lambda split: sorted(dm.sequences.users[int(s["user"])] for s in dm.datasets[split])  # noqa: E731
    assert users("train") == ["a", "b"] and users("val") == [] and users("test") == ["b"]


def test_k_core_is_iterative():
    # item "rare" has 1 interaction; removing it drops user u3 below 3, which drops item "c" below 3.
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3),
            ("u3", "a", 1), ("u3", "b", 2), ("u3", "rare", 3), ("u4", "a", 1), ("u4", "b", 2), ("u4", "c", 4)]
    from ssmkit.recsys.data import InteractionLog
    log = InteractionLog([r[0] for r in rows], [r[1] for r in rows], np.array([r[2] for r in rows], float))
    out = k_core(log, user_min=3, item_min=3)
    assert sorted(set(out.users)) == ["u1", "u2", "u4"] and sorted(set(out.items)) == ["a", "b", "c"]
    assert len(out) == 9


def test_stable_sort_keeps_file_order_for_ties(tmp_path):
    rows = [("u", "b", 5), ("u", "a", 5), ("u", "c", 1), ("u", "d", 9)]
    dm = SequentialDataModule(str(write_inter(tmp_path / "t.inter", rows)), user_min=1, item_min=1)
    dm.setup()
    s = dm.datasets["test"][0]
    assert [dm.item_ids[int(k) - 1] for k in s["items"][:3]] == ["c", "b", "a"]
    assert dm.item_ids[int(s["target"]) - 1] == "d"


def test_movielens_and_time_interval_readers(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t3\t100\n1\t11\t4\t50\n2\t10\t5\t7\n")
    log = read_log(tmp_path / "u.data")
    assert log.users == ["1", "1", "2"] and log.items == ["10", "11", "10"] and list(log.times) == [100, 50, 7]
    (tmp_path / "ratings.dat").write_text("1::10::3::100\n2::11::4::50\n")
    assert read_log(tmp_path / "ratings.dat").items == ["10", "11"]
    with gzip.open(tmp_path / "Beauty.timeinterval.txt.gz", "wt") as f:
        f.write("1 5 6 7\t0 86400 0\n2 6 7\t0 3600\n")
    log = read_log(tmp_path / "Beauty.timeinterval.txt.gz")
    assert log.users == ["1"] * 3 + ["2"] * 2 and log.items == ["5", "6", "7", "6", "7"]
    assert list(log.times) == [0, 86400, 86400, 0, 3600]


@pytest.mark.parametrize("name,text,line,why", [
    ("a.inter", "user_id:token\titem_id:token\tprice:float\n1\t2\t3\n", 1, "unknown column"),
    ("b.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\n", 3, "expected 3"),
    ("c.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\tnoon\n", 3, "not a number"),
    ("d.inter", "user_id:token\titem_id:token\ttimestamp:token\n", 1, "must be typed"),
    ("u.data", "1\t2\t3\t4\n1\t2\t3\tyesterday\n", 2, "timestamp"),
    ("x.txt", "1 2 3\t0 5\n2 3\t0 1 2\n", 2, "1 items but 3 time gaps"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, text, line, why):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataFormatError) as err:
        read_log(path)
    assert f"{path}:{line}:" in str(err.value) and why in str(err.value)


def test_item_map_extends_a_base_map(tmp_path):
    rows = [("u", "new", 1), ("u", "b", 2), ("u", "a", 3)]
    base = save_item_map(["a", "gone", "b"], tmp_path / "map.json")
    dm = SequentialDataModule(str(write_inter(tmp_path / "f.inter", rows)), user_min=1, item_min=1,
                              item_map=str(base))
    dm.setup()
    assert dm.item_ids == ["a", "gone", "b", "new"] and dm.n_items == 4


def test_loader_trims_padding_and_is_map_style(inter_file):
    dm = SequentialDataModule(str(inter_file), max_len=50, batch_size=5, user_min=1, item_min=1)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["items"].shape[1] == int(batch["length"].max()) and batch["items"].dtype == torch.long
    assert batch["times"].dtype == torch.float64
    assert hasattr(dm.datasets["train"], "__getitem__") and len(dm.datasets["train"]) > 0


def test_training_order_is_seeded_and_resumes_mid_epoch(inter_file):
    """The shared resumable sampler: the order is a function of the seed, and a restored position skips exactly
    the batches the checkpoint trained (docs/data_modules.md)."""
    def order(seed, state=None):
        dm = SequentialDataModule(str(inter_file), batch_size=8, user_min=1, item_min=1, seed=seed)
        dm.setup("fit")
        if state is not None:
            dm.load_state_dict(state)
        return list(dm.train_dataloader().sampler)

    full = order(0)
    assert sorted(full) == list(range(len(full))) and order(0) == full and order(1) != full
    assert order(0, {"epoch": 0, "batches": 3, "total_batches": 3}) == full[24:]
    dm = SequentialDataModule(str(inter_file), batch_size=8, user_min=1, item_min=1)
    dm.setup("fit")
    rng = torch.get_rng_state()
    next(iter(dm.train_dataloader()))
    assert torch.equal(torch.get_rng_state(), rng)  # the loader has its own generator (exact resume of dropout)


@pytest.mark.parametrize("max_len", [3, 50])
def test_batched_getitems_equals_stacking_getitem(inter_file, max_len):
    dm = SequentialDataModule(str(inter_file), max_len=max_len, batch_size=5, user_min=1, item_min=1)
    dm.setup()
    for split, data in dm.datasets.items():
        indices = np.random.default_rng(0).permutation(len(data))[:17].tolist()
        batch = data.__getitems__(indices)
        for key in batch:
            expected = torch.stack([data[i][key] for i in indices])
            assert batch[key].dtype == expected.dtype, (split, key)
            assert torch.equal(batch[key], expected), (split, key)
