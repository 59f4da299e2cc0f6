"""GenomeDataModule: resumable rank/worker-sharded streams, sequence-length warm-up, RC augmentation, the N
limit; SequenceDataModule readers, named errors and seeded stratified splits."""
import gzip

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ssmkit.genomics import errors
from ssmkit.genomics.data import GenomeDataModule, RandomWindowStream, _Epoch
from ssmkit.genomics.labelled import (SequenceDataModule, cds_vs_intergenic, read_labelled_csv, read_labelled_fasta,
                                      splice_sites, stratified_split)
from ssmkit.genomics.store import build_genome_store
from ssmkit.genomics.tokenizer import N, DNATokenizer

RNG = np.random.default_rng(0)
GENOME = {"c1": "".join(RNG.choice(list("ACGT"), 3000)), "c2": "".join(RNG.choice(list("ACGT"), 1500)) + "N" * 500}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("g")
    fa = d / "g.fa"
    fa.write_text("".join(f">{k}\n{v}\n" for k, v in GENOME.items()))
    build_genome_store([fa], d / "g.zarr", val_fraction=0.1, test_fraction=0.1)
    return d / "g.zarr"


class _FakeTrainer:
    training, global_rank, world_size = True, 0, 1


def test_genomics_stream_resumes_exactly_from_saved_state(store):
    dm = GenomeDataModule(str(store), seq_len=32, batch_size=4, batches_per_epoch=50, max_n_fraction=0.0)
    dm.trainer = _FakeTrainer()
    loader = iter(dm.train_dataloader())
    first = [dm.on_after_batch_transfer(next(loader), 0) for _ in range(5)]
    state = dm.state_dict()
    later = [next(loader) for _ in range(3)]
    resumed = GenomeDataModule(str(store), seq_len=32, batch_size=4, batches_per_epoch=50, max_n_fraction=0.0)
    resumed.load_state_dict(state)
    again = list(zip(range(3), resumed.train_dataloader()))
    for a, (_, b) in zip(later, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[1])
    assert all((b != N).all() for b in first)  # max_n_fraction 0: no window touches the N run


def test_genomics_next_epoch_continues_the_stream(store):
    dm = GenomeDataModule(str(store), seq_len=32, batch_size=2, batches_per_epoch=3)
    dm.trainer = _FakeTrainer()
    loader = dm.train_dataloader()  # Lightning re-iterates the same loader every epoch
    epochs = [[dm.on_after_batch_transfer(b, 0) for b in loader] for _ in range(2)]
    stream = dm.train_dataset()
    assert [len(e) for e in epochs] == [3, 3]
    for n, b in enumerate(epochs[0] + epochs[1]):
        assert torch.equal(b, stream.batch(n))


def test_genomics_stream_shards_by_rank_and_worker(store):
    stages = [(16, 2, None)]
    whole = RandomWindowStream(store, stages, seed=3)
    ranks = [RandomWindowStream(store, stages, seed=3, rank=r, world_size=2) for r in range(2)]
    # rank r's batch n is global batch n * 2 + r of one seeded sequence: disjoint, and the union covers it
    one_rank = RandomWindowStream(store, stages, seed=3, rank=0, world_size=1)
    assert torch.equal(ranks[1].batch(2), one_rank.batch(5))
    assert not torch.equal(ranks[0].batch(0), ranks[1].batch(0))
    loader = DataLoader(_Epoch(whole, 6), batch_size=None, num_workers=2)
    assert all(torch.equal(a, whole.batch(i)) for i, a in enumerate(loader))  # two workers, original order


def test_genomics_sequence_length_warmup_and_rc_aug(store):
    stream = RandomWindowStream(store, [(8, 16, 2), (16, 8, 3), (32, 4, None)], rc_aug=True, max_n_fraction=1.0)
    shapes = [tuple(stream.batch(n).shape) for n in range(7)]
    assert shapes == [(16, 8)] * 2 + [(8, 16)] * 3 + [(4, 32)] * 2
    tok = DNATokenizer()
    text = {k: v[: int(len(v) * 0.8)] for k, v in GENOME.items()}
    comp = str.maketrans("ACGTN", "TGCAN")
    n_fwd = n_rc = 0
    for n in range(5, 30):
        for row in stream.batch(n).numpy():
            s = tok.decode(row)
            fwd = any(s in t for t in text.values())
            rc = any(s.translate(comp)[::-1] in t for t in text.values())
            assert fwd or rc
            n_fwd, n_rc = n_fwd + fwd, n_rc + rc
    assert n_fwd > 10 and n_rc > 10  # both orientations occur


def test_genomics_eval_windows_tile_held_out_split(store):
    dm = GenomeDataModule(str(store), seq_len=50, batch_size=4)
    tok = DNATokenizer()
    val = torch.cat(list(dm.val_dataloader()))
    c1 = GENOME["c1"]
    assert tok.decode(val[0].numpy()) == c1[2400:2450]  # the val region of c1 is [2400, 2700)
    assert len(val) == 300 // 50 + 200 // 50


def write_csv(path, rows, opener=open):
    with opener(path, "wt") as f:
        f.write("seq,label\n" + "".join(f"{s},{y}\n" for s, y in rows))
    return path


def test_genomics_labelled_readers_and_errors(tmp_path):
    rows = [("ACGT" * 5, 0), ("GGCC" * 5, 1)]
    assert read_labelled_csv(write_csv(tmp_path / "a.csv.gz", rows, gzip.open)) == rows
    with pytest.raises(errors.LabelledDataError, match=r"b.csv, line 3: label 'x'"):
        read_labelled_csv(write_csv(tmp_path / "b.csv", [("ACGT", 0), ("ACGT", "x")]))
    with pytest.raises(errors.LabelledDataError, match=r"c.csv, line 2: empty sequence"):
        read_labelled_csv(write_csv(tmp_path / "c.csv", [("", 0)]))
    fa = tmp_path / "l.fa"
    fa.write_text(">s1 label=1\nACGT\n>s2 promoter 0\nGGCC\n")
    assert read_labelled_fasta(fa) == [("ACGT", 1), ("GGCC", 0)]
    fa.write_text(">s1 label=1\nACGT\n>s2\nGGCC\n")
    with pytest.raises(errors.LabelledDataError, match=r"l.fa, record 2"):
        read_labelled_fasta(fa)


def test_genomics_stratified_split_is_seeded_disjoint_and_proportional():
    labels = [0] * 60 + [1] * 40
    a = stratified_split(labels, (0.7, 0.1, 0.2), seed=1)
    b = stratified_split(labels, (0.7, 0.1, 0.2), seed=1)
    c = stratified_split(labels, (0.7, 0.1, 0.2), seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])
    assert len(set(np.concatenate(a))) == 100
    lab = np.array(labels)
    assert [int((lab[p] == 1).sum()) for p in a] == [28, 4, 8]


def test_genomics_sequence_datamodule_left_pads_and_records_seed(tmp_path):
    rows = [("ACGT" * (2 + i % 3), i % 2) for i in range(40)]
    dm = SequenceDataModule([str(write_csv(tmp_path / "t.csv", rows))], "csv", seed=5, batch_size=8)
    dm.setup()
    rng = torch.get_rng_state()
    ids, labels = next(iter(dm.train_dataloader()))
    assert torch.equal(torch.get_rng_state(), rng)  # the loader has its own generator (exact resume of dropout)
    lengths = (ids != 4).sum(1)
    for row, n in zip(ids, lengths):
        assert (row[: ids.shape[1] - n] == 4).all() and (row[ids.shape[1] - n:] != 4).all()
    assert dm.split_info["seed"] == 5 and dm.hparams.seed == 5
    assert dm.split_info["n_train"] + dm.split_info["n_val"] + dm.split_info["n_test"] == 40


def test_genomics_annotation_tasks(tmp_path):
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 2000))
    fa = tmp_path / "g.fa"
    fa.write_text(f">chr1\n{seq}\n")
    gff = tmp_path / "g.gff3"
    gff.write_text("##gff-version 3\n"
                   "chr1\tt\tgene\t201\t800\t.\t+\t.\tID=g1\n"
                   "chr1\tt\tCDS\t201\t800\t.\t+\t0\tParent=g1\n"
                   "chr1\tt\tgene\t1201\t1600\t.\t-\t.\tID=g2\n"
                   "chr1\tt\tCDS\t1201\t1600\t.\t-\t0\tParent=g2\n"
                   "chr1\tt\tintron\t401\t500\t.\t+\t.\tParent=t1\n"
                   "chr1\tt\tintron\t1301\t1400\t.\t-\t.\tParent=t2\n")
    ex = cds_vs_intergenic(fa, gff, window=100)
    pos = [s for s, y in ex if y == 1]
    assert seq[200:300] in pos  # plus-strand CDS read forward
    rc = seq[1200:1300].translate(str.maketrans("ACGT", "TGCA"))[::-1]
    assert rc in pos  # minus-strand CDS read on its own strand
    assert sum(y == 0 for _, y in ex) == len(pos)
    for s, y in ex:
        if y == 0:
            i = seq.find(s)
            assert i >= 0 and (i + 100 <= 200 or 800 <= i < 1200 - 100 + 1 or i >= 1600)
    sites = splice_sites(fa, gff, window=20)
    donors = {s for s, y in sites if y == 1}
    assert seq[390:410] in donors  # plus-strand intron starts at 0-based 400
    minus_donor = seq[1390:1410].translate(str.maketrans("ACGT", "TGCA"))[::-1]
    assert minus_donor in donors  # minus strand: the donor is the intron's right end
    assert {y for _, y in sites} == {0, 1, 2}
    bad = tmp_path / "bad.gff3"
    bad.write_text("chr1\tt\tgene\t1\n")
    with pytest.raises(errors.GFFFormatError, match="bad.gff3, line 1"):
        splice_sites(fa, bad)
