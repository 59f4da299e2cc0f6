"""`ssmkit demo` step: pretrain a tiny HyenaDNA on a synthetic genome with planted motifs (FASTA -> zarr store ->
random windows), then fine-tune it on motif presence (CSV -> seeded stratified split); prints both metrics."""
from __future__ import annotations

import pathlib
import time

from ssmkit.train import DemoResult, LossHistory, demo_trainer, seed, smoothed

from .data import GenomeDataModule
from .labelled import SequenceDataModule
from .models import HyenaDNA
from .store import build_genome_store
from .synthetic import write_motif_csv, write_synthetic_fasta
from .task import DNAPretrainTask, SequenceClassificationTask


def demo(out_dir: pathlib.Path, steps: int = 60) -> DemoResult:
    out_dir = pathlib.Path(out_dir)
    t0 = time.perf_counter()
    seed(0)
    fasta = write_synthetic_fasta(out_dir / "data" / "synthetic.fa")
    store = build_genome_store([fasta], out_dir / "data" / "synthetic.zarr")
    model = HyenaDNA(d_model=32, n_layer=2, l_max=130, embed_dropout=0.0)
    pre = DNAPretrainTask(model, lr=3e-3, weight_decay=0.1, warmup_steps=5, scheduler="cosine")
    data = GenomeDataModule(str(store.path), seq_len=129, batch_size=16, batches_per_epoch=steps,
                            max_val_windows=32, eval_batch_size=32)
    history = LossHistory()
    trainer = demo_trainer(out_dir / "pretrain", steps, [history], limit_val_batches=1)
    trainer.fit(pre, data)
    ppl = trainer.test(pre, data, verbose=False)[0]["test/perplexity"]
    ckpt = out_dir / "pretrain" / "hyenadna_synthetic.ckpt"
    trainer.save_checkpoint(ckpt)

    csv = write_motif_csv(out_dir / "data" / "motif.csv")
    labelled = SequenceDataModule([str(csv)], "csv", seed=0, batch_size=32, eval_batch_size=128)
    clf = SequenceClassificationTask(HyenaDNA(d_model=32, n_layer=2, l_max=130, embed_dropout=0.0), num_classes=2,
                                     init_from=str(ckpt), lr=3e-3, weight_decay=0.0, warmup_steps=5)
    ft_history = LossHistory()
    ft = demo_trainer(out_dir / "finetune", steps, [ft_history], limit_val_batches=1)
    ft.fit(clf, labelled)
    acc = ft.test(clf, labelled, verbose=False)[0]["test/accuracy"]
    first, last = smoothed(history.losses)
    return DemoResult(model="HyenaDNA (2 x 32)",
                      task=f"pretrain synthetic genome (test ppl {ppl:.3f}) -> motif presence",
                      steps=len(history.losses) + len(ft_history.losses), first_loss=first, last_loss=last,
                      metric_name="motif test acc", metric=float(acc), seconds=time.perf_counter() - t0,
                      outputs=[fasta, store.path, ckpt, csv])
