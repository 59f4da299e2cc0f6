"""`ssmkit genome build|info` and `ssmkit dna sample`.

    ssmkit genome build ecoli.fna.gz [more.gbff ...] --out ecoli.zarr [--val-fraction 0.1 --test-fraction 0.1]
    ssmkit genome info ecoli.zarr
    ssmkit dna sample --checkpoint last.ckpt --length 2000 --n 4 --out samples.fa [--genome ecoli.zarr]
"""
from __future__ import annotations

import argparse
import sys
from typing import List

from .errors import GenomeDataError


def genome_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssmkit genome", description="FASTA/GenBank files -> zarr genome store")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="tokenize FASTA/GenBank files (plain, gzip, BGZF) into a zarr v3 store")
    build.add_argument("inputs", nargs="+", help="FASTA or GenBank files")
    build.add_argument("--out", required=True, help="output store, e.g. genome.zarr")
    build.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction per contig (before test)")
    build.add_argument("--test-fraction", type=float, default=0.1, help="test fraction per contig (at the end)")
    build.add_argument("--shard", type=int, default=1 << 24, help="shard length for long contigs (0: no shards)")
    build.add_argument("--prefix-names", action="store_true", help="name contigs <file>:<record> (several genomes)")
    info = sub.add_parser("info", help="print what a genome store holds")
    info.add_argument("store")
    args = parser.parse_args(argv)
    from .store import GenomeStore, build_genome_store
    try:
        if args.command == "build":
            store = build_genome_store(args.inputs, args.out, args.val_fraction, args.test_fraction,
                                       shard=args.shard or None, progress=True, prefix_names=args.prefix_names)
            print(store.info())
        else:
            print(GenomeStore(args.store).info())
    except (GenomeDataError, FileNotFoundError) as e:
        print(f"ssmkit genome: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def dna_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssmkit dna", description="DNA language model tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="sample sequences from a causal DNA LM checkpoint (FASTA out)")
    sample.add_argument("--checkpoint", required=True, help="a DNAPretrainTask checkpoint (causal objective)")
    sample.add_argument("--length", type=int, required=True, help="bases per sequence")
    sample.add_argument("--n", type=int, default=1, help="number of sequences")
    sample.add_argument("--out", required=True, help="output FASTA")
    sample.add_argument("--genome", help="genome store to compare GC and k-mer spectrum with (train split)")
    sample.add_argument("--prompt", default="", help="bases to start from (default: a single random base)")
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--k", type=int, default=6, help="k of the k-mer spectrum distance")
    sample.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from .sample import sample_main
    return sample_main(args)
