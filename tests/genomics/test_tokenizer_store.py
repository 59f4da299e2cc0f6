"""Tokenizer, readers and the zarr store: exact round trips (N and soft-mask included), named errors on every
malformed input, truncated gzip/BGZF reported, splits that never overlap."""
import gzip

import numpy as np
import pytest

from ssmkit.genomics import errors
from ssmkit.genomics.cli import genome_main
from ssmkit.genomics.io import iter_records, read_gff3
from ssmkit.genomics.store import GenomeStore, build_genome_store
from ssmkit.genomics.tokenizer import DNATokenizer

CONTIGS = {"chrA": "ACGTNacgtnACGGTTAAccgg" * 7 + "NNNNacgt", "chrB": "GATTACAgattacaNNNN" * 11}


def write_fasta(path, records, width=60, opener=open):
    with opener(path, "wt") as f:
        for name, seq in records.items():
            f.write(f">{name} some description\n")
            for i in range(0, len(seq), width):
                f.write(seq[i:i + width] + "\n")
    return path


def test_genomics_tokenizer_ids_rc_and_round_trip():
    tok = DNATokenizer()
    enc = tok.encode("ACGTNacgtRyn")
    assert enc.ids.tolist() == [7, 8, 9, 10, 11, 7, 8, 9, 10, 11, 11, 11]
    assert enc.n_ambiguous == 2  # R and y became N and are counted
    assert tok.decode(enc.ids, enc.flags) == "ACGTNacgtNnn"
    seq = "".join(np.random.default_rng(0).choice(list("ACGTNacgtn"), 500))
    enc = tok.encode(seq)
    assert tok.decode(enc.ids, enc.flags) == seq
    # reverse complement on ids == the reverse complement of the text (oracle: a dict per base)
    comp = dict(zip("ACGTNacgtn", "TGCANtgcan"))
    expected = "".join(comp[b] for b in reversed(seq)).upper()
    assert tok.decode(tok.reverse_complement(enc.ids)) == expected
    import torch
    t = torch.as_tensor(enc.ids.astype(np.int64))[None]
    assert tok.decode(tok.reverse_complement(t)[0].numpy()) == expected


def test_genomics_tokenizer_rejects_non_iupac():
    with pytest.raises(errors.InvalidBaseError, match=r"chr9.*'X' at position 4"):
        DNATokenizer().encode("ACGXT", where="chr9")


@pytest.mark.parametrize("kind", ["plain", "gzip", "bgzf", "genbank"])
def test_genomics_store_round_trip_exact(tmp_path, kind):
    if kind == "plain":
        path = write_fasta(tmp_path / "g.fa", CONTIGS)
    elif kind == "gzip":
        path = write_fasta(tmp_path / "g.fa.gz", CONTIGS, opener=gzip.open)
    elif kind == "bgzf":
        from Bio import bgzf
        path = tmp_path / "g.fa.bgz"
        with bgzf.BgzfWriter(str(path), "wb") as f:
            for name, seq in CONTIGS.items():
                f.write(f">{name}\n{seq}\n".encode())
    else:
        from Bio import SeqIO
        from Bio.Seq import Seq
        from Bio.SeqRecord import SeqRecord
        path = tmp_path / "g.gbk"
        recs = [SeqRecord(Seq(s), id=n, name=n, annotations={"molecule_type": "DNA"}) for n, s in CONTIGS.items()]
        SeqIO.write(recs, path, "genbank")
    store = build_genome_store([path], tmp_path / "g.zarr", val_fraction=0.2, test_fraction=0.1, chunk=64,
                               shard=128)
    store = GenomeStore(tmp_path / "g.zarr")
    for name, seq in CONTIGS.items():
        # N and soft-mask come back exactly (GenBank has no soft-mask: Biopython reads it upper case)
        assert store.sequence(name) == (seq.upper() if kind == "genbank" else seq)
    assert store.root["ids/0"].shards == (128,)  # the long contig is sharded
    meta = {c["name"]: c for c in store.attrs["contigs"]}
    if kind != "genbank":
        assert meta["chrA"]["n_soft_masked"] == sum(ch.islower() for ch in CONTIGS["chrA"])
    assert len(store.attrs["sources"][0]["sha256"]) == 64


def test_genomics_splits_never_overlap_and_windows_stay_inside(tmp_path):
    from ssmkit.genomics.data import FixedWindows, RandomWindowStream
    path = write_fasta(tmp_path / "g.fa", CONTIGS)
    store = build_genome_store([path], tmp_path / "g.zarr", val_fraction=0.1, test_fraction=0.1)
    covered = {}
    for split in ("train", "val", "test"):
        for contig, s, e in store.intervals(split):
            cover = covered.setdefault(contig, np.zeros(store.contig(contig).length, int))
            cover[s:e] += 1
    for contig, cover in covered.items():
        assert (cover == 1).all(), contig  # each base in exactly one split
    train = {c: (s, e) for c, s, e in store.intervals("train")}
    L = 16
    stream = RandomWindowStream(tmp_path / "g.zarr", [(L, 8, None)], max_n_fraction=1.0)
    tok = DNATokenizer()
    for n in range(20):
        for row in stream.batch(n).numpy():
            text = tok.decode(row)
            # the window occurs inside the train region of some contig (upper-cased oracle search)
            assert any(text in CONTIGS[c][s:e].upper() for c, (s, e) in train.items())
    val = FixedWindows(tmp_path / "g.zarr", "val", 8)
    for (contig, start) in val.starts:
        s, e = store.splits[contig]["val"][0]
        assert s <= start and start + 8 <= e
    assert len({(c, s) for c, s in val.starts}) == len(val)


def test_genomics_text_before_first_header(tmp_path):
    p = tmp_path / "bad.fa"
    p.write_text("hello\n>chr1\nACGT\n")
    with pytest.raises(errors.FastaFormatError, match=r"bad.fa, line 1"):
        list(iter_records(p))


def test_genomics_empty_record(tmp_path):
    p = tmp_path / "empty.fa"
    p.write_text(">chr1\nACGT\n>chr2 nothing here\n>chr3\nAC\n")
    with pytest.raises(errors.EmptyRecordError, match=r"empty.fa, record 2 \('chr2'\)"):
        list(iter_records(p))


def test_genomics_invalid_letter_names_file_and_record(tmp_path):
    p = write_fasta(tmp_path / "x.fa", {"chr1": "ACGT", "chr2": "ACGTQ"})
    with pytest.raises(errors.InvalidBaseError, match=r"x.fa, record 'chr2'.*'Q' at position 5"):
        build_genome_store([p], tmp_path / "x.zarr")


@pytest.mark.parametrize("kind", ["gzip", "bgzf"])
def test_genomics_truncated_compressed_file_is_reported(tmp_path, kind):
    seq = "".join(np.random.default_rng(1).choice(list("ACGT"), 200_000))
    full = tmp_path / f"full.{kind}"
    if kind == "gzip":
        with gzip.open(full, "wt") as f:
            f.write(f">chr1\n{seq}\n")
    else:
        from Bio import bgzf
        with bgzf.BgzfWriter(str(full), "wb") as f:
            f.write(f">chr1\n{seq}\n".encode())
    data = full.read_bytes()
    cut = tmp_path / f"cut.fa.{'gz' if kind == 'gzip' else 'bgz'}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(errors.TruncatedFileError, match="cut.fa"):
        list(iter_records(cut))
    assert "".join(s for _, s in iter_records(full)) == seq


def test_genomics_gff_line_without_nine_columns(tmp_path):
    p = tmp_path / "a.gff3"
    p.write_text("##gff-version 3\nchr1\tsrc\tgene\t1\t10\t.\t+\t.\tID=g1\nchr1\tsrc\texon\t2\t5\t.\t+\n")
    with pytest.raises(errors.GFFFormatError, match=r"a.gff3, line 3: expected 9"):
        read_gff3(p)
    p.write_text("chr1\tsrc\tgene\t1\t10\t.\t-\t.\tID=g1;Name=x\n")
    (f,) = read_gff3(p)
    assert (f.start, f.end, f.strand, f.attr("Name")) == (0, 10, -1, "x")


def test_genomics_cli_build_and_info(tmp_path, capsys):
    path = write_fasta(tmp_path / "g.fa", CONTIGS)
    assert genome_main(["build", str(path), "--out", str(tmp_path / "g.zarr")]) == 0
    assert genome_main(["info", str(tmp_path / "g.zarr")]) == 0
    out = capsys.readouterr().out
    assert "chrA" in out and f"{len(CONTIGS['chrA']):,}" in out
    bad = tmp_path / "bad.fa"
    bad.write_text("junk\n>c\nAC\n")
    assert genome_main(["build", str(bad), "--out", str(tmp_path / "b.zarr")]) == 1
    assert "FastaFormatError" in capsys.readouterr().err
    # the same contig name in two genomes: a named error, or qualified names on request
    other = write_fasta(tmp_path / "other.fa", {"chrA": "ACGT" * 10})
    assert genome_main(["build", str(path), str(other), "--out", str(tmp_path / "c.zarr")]) == 1
    assert "occurs twice" in capsys.readouterr().err
    assert genome_main(["build", str(path), str(other), "--out", str(tmp_path / "c.zarr"), "--prefix-names"]) == 0
    assert GenomeStore(tmp_path / "c.zarr").sequence("other:chrA") == "ACGT" * 10
