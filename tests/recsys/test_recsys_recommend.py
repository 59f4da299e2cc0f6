"""`ssmkit recommend`: CSV in/out with original item ids, and streaming with `step` equal to re-encoding."""
import csv
import io

import pytest
import torch

from ssmkit.cli import main as ssmkit_main
from ssmkit.recsys.models import SASRec, TiM4Rec
from ssmkit.recsys.recommend import Recommender, recommend, stream

ITEMS = [f"sku-{k}" for k in range(30)]


def _checkpoint(tmp_path, model):
    torch.manual_seed(0)
    model.grow_items(len(ITEMS))
    for p in model.parameters():
        p.data += 0.2 * torch.randn_like(p)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "recsys": {"model": model.spec(), "item_ids": ITEMS, "max_len": 6}}, path)
    return path


def _history_csv(tmp_path):
    rows = [("bob", "sku-3", 50), ("ann", "sku-7", 10), ("bob", "sku-1", 20), ("ann", "sku-2", 30),
            ("bob", "sku-9", 70), ("ann", "sku-2", 30)]
    path = tmp_path / "hist.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path


def test_csv_in_csv_out_with_original_ids(tmp_path, capsys):
    model = TiM4Rec(hidden_size=16, d_state=8, headdim=8, chunk_size=4)
    ckpt = _checkpoint(tmp_path, model)
    out = tmp_path / "top.csv"
    assert ssmkit_main(["recommend", "--checkpoint", str(ckpt), "--history", str(_history_csv(tmp_path)),
                        "-k", "4", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["user"] for r in rows] == ["bob"] * 4 + ["ann"] * 4 and [r["rank"] for r in rows[:4]] == list("1234")
    rec = Recommender(str(ckpt))
    with torch.no_grad():   # bob sorted by time: sku-1 (20), sku-3 (50), sku-9 (70)
        h = rec.encode([[rec.index["sku-1"], rec.index["sku-3"], rec.index["sku-9"]]], [[20.0, 50.0, 70.0]])
        scores = rec.model.scores(h)[0, 1:]
    best = [ITEMS[int(i)] for i in scores.argsort(descending=True)[:4]]
    assert [r["item"] for r in rows[:4]] == best
    assert float(rows[0]["score"]) == pytest.approx(float(scores.max()), rel=1e-5)


def test_streaming_prints_the_same_top_k_as_re_encoding(tmp_path):
    ckpt = _checkpoint(tmp_path, TiM4Rec(hidden_size=16, d_state=8, headdim=8, chunk_size=4))
    rec = Recommender(str(ckpt))
    events = [("ann", "sku-4", 1.0), ("bob", "sku-5", 2.0), ("ann", "sku-8", 86400.0), ("ann", "sku-1", 3e5)]
    out = io.StringIO()
    n = stream(rec, io.StringIO("".join(f"{u},{i},{t}\n" for u, i, t in events)), "events", 5, out)
    assert n == 4
    printed = list(csv.reader(io.StringIO(out.getvalue())))
    expected = []
    for k, (user, _, _) in enumerate(events):
        mine = [e for e in events[: k + 1] if e[0] == user]
        top = recommend(str(ckpt), {user: [e[1] for e in mine]}, k=5, times={user: [e[2] for e in mine]})
        expected.append([user, " ".join(r["item"] for r in top)])
    assert printed == expected


def test_errors_name_the_line_and_the_model(tmp_path):
    ckpt = _checkpoint(tmp_path, TiM4Rec(hidden_size=16, d_state=8, headdim=8, chunk_size=4))
    with pytest.raises(KeyError, match="events:2: item 'nope'"):
        stream(Recommender(str(ckpt)), io.StringIO("a,sku-1\na,nope\n"), "events", 3, io.StringIO())
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,timestamp\na,sku-1,5\na,sku-2,late\n")
    with pytest.raises(ValueError, match="bad.csv:3: timestamp 'late'"):
        ssmkit_main(["recommend", "--checkpoint", str(ckpt), "--history", str(bad)])
    sas = _checkpoint(tmp_path, SASRec(hidden_size=16, max_len=6))
    with pytest.raises(ValueError, match="SASRec cannot stream"):
        stream(Recommender(str(sas)), io.StringIO("a,sku-1\n"), "events", 3, io.StringIO())
