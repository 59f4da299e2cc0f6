"""The `ssmkit` command: LightningCLI's fit / validate / test / predict on YAML configs, plus `demo` and `bench`.

    ssmkit fit --config configs/core/selective_copy.yaml --trainer.max_steps=200
    ssmkit demo [--out outputs/demo] [--only core,vision] [--steps-scale 1.0]
    ssmkit bench scan [benchmark flags...]
    ssmkit forecast --checkpoint CKPT --csv FILE --out OUT.csv [--plot OUT.png]
    ssmkit genome build|info ...      ssmkit dna sample ...
    ssmkit generate ...               ssmkit recommend ...
"""
from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: ssmkit [--version]
              {fit,validate,test,predict,demo,bench,forecast,genome,dna,generate,recommend,export} ...

  fit|validate|test|predict  LightningCLI on a config: --config FILE, --print_config, dotted overrides
  demo                       short training tour of every installed domain, ends with a summary table
  bench NAME                 run benchmarks/NAME.py (scan, ssd, longconv, scan2d, ...) from a source checkout
  forecast                   --checkpoint CKPT --csv FILE --out OUT.csv [--plot OUT.png]: next H steps of a series
  forecast fit               --csv FILE --target COL --horizon H [--model s_mamba]: train, test, plot a forecast
  genome build|info          FASTA/GenBank files -> zarr genome store; what a store holds
  dna sample                 sample DNA sequences from a causal DNA language model checkpoint
  generate                   generate audio (WAV + spectrogram) from a SaShiMi checkpoint
  recommend                  top-k items for histories, or streaming updates, from a recommender checkpoint
  export                     --model NAME [--checkpoint CKPT] --format onnx|pt2 --out FILE: checked against eager
"""

# Verbs other than LightningCLI's: name -> "module:function", the function takes argv[1:] and returns the exit code.
# A domain adds its verb here; the module is imported only when the verb is used.
VERBS = {
    "demo": "ssmkit.demo:main",
    "bench": "ssmkit.bench:main",
    "forecast": "ssmkit.timeseries.forecast:main",
    "genome": "ssmkit.genomics.cli:genome_main",
    "dna": "ssmkit.genomics.cli:dna_main",
    "generate": "ssmkit.audio.generate:main",
    "recommend": "ssmkit.recsys.recommend:main",
    "export": "ssmkit.export:main",
}


def check_checkpoint(ckpt_path) -> None:
    """A --ckpt_path that names a file must be a readable checkpoint: raise an error naming the file and the reason
    (before Lightning's torch.load fails deep inside with a message that names neither)."""
    import pathlib
    import zipfile
    if ckpt_path is None or str(ckpt_path) in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
        return
    path = pathlib.Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"--ckpt_path {path}: empty checkpoint file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise ValueError(f"--ckpt_path {path}: unreadable checkpoint archive ({e})") from e
        if not any(n.endswith("data.pkl") for n in names):
            raise ValueError(f"--ckpt_path {path}: a zip file but not a torch checkpoint (no data.pkl)")
        return
    import torch
    try:  # a checkpoint in torch's legacy (non-zip) format, or garbage
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"--ckpt_path {path}: not a readable checkpoint, truncated or corrupt "
                         f"({type(e).__name__}: {e})") from e


def lightning_cli(args: Optional[List[str]]):
    """LightningCLI with any LightningModule / LightningDataModule chosen by class_path in the config, and a
    rich progress bar unless the config turns progress bars off."""
    import lightning as L
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class ErrorFirstParser(LightningArgumentParser):
        """States the error on the first line, then the usage (argparse prints the usage first)."""

        def error(self, message: str, ex: Optional[Exception] = None):
            if not self.exit_on_error:
                return super().error(message, ex)
            parser = getattr(ex, "subcommand_parser", None) or self
            prog = parser.prog.replace(" [options]", "")
            sys.stderr.write(f"{prog}: error: {message}\n\n")
            parser.print_usage(sys.stderr)
            sys.stderr.write(f"all options: {prog} --help\n")
            sys.exit(2)

    class SSMKitCLI(LightningCLI):
        def parse_arguments(self, parser, args) -> None:
            """A bad --ckpt_path file ends the command with one line naming it (before Lightning reads it)."""
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            try:
                check_checkpoint((self.config[subcommand] if subcommand else self.config).get("ckpt_path"))
            except (OSError, ValueError) as e:
                sys.stderr.write(f"ssmkit {subcommand}: error: {e}\n")
                sys.exit(2)

        def before_instantiate_classes(self) -> None:
            """EarlyStopping checks when validation ends (where its metric comes from), not at the end of a training
            epoch, so a fit that stops before any validation (max_steps, max_time, limits) does not crash on a
            metric that was never computed; a misspelt monitor still fails at the first validation."""
            config = self.config[self.subcommand] if self.subcommand else self.config
            trainer = config.get("trainer") or {}
            callbacks = trainer.get("callbacks") or []
            for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
                path = str(cb.get("class_path", "")) if hasattr(cb, "get") else ""
                if path.rsplit(".", 1)[-1] == "EarlyStopping" and cb.get("init_args") is not None \
                        and cb.init_args.get("check_on_train_epoch_end") is None:
                    cb.init_args.check_on_train_epoch_end = False

        def instantiate_trainer(self, **kwargs):
            config = self.config_init[self.subcommand] if self.subcommand else self.config_init
            trainer = config.get("trainer") or {}
            configured = trainer.get("callbacks") or []
            configured = list(configured) if isinstance(configured, (list, tuple)) else [configured]
            if trainer.get("enable_progress_bar", True) is not False and not any(
                    isinstance(c, ProgressBar) for c in configured):
                kwargs.setdefault("callbacks", configured + [RichProgressBar()])
            return super().instantiate_trainer(**kwargs)

    return SSMKitCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     parser_class=ErrorFirstParser, args=args, save_config_kwargs={"overwrite": True},
                     parser_kwargs={"prog": "ssmkit", "description": USAGE})


def main(argv: Optional[List[str]] = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from ssmkit import __version__
        print(f"ssmkit {__version__}")
        return 0
    if argv[0] in VERBS:
        import importlib
        module, function = VERBS[argv[0]].split(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    if argv[0] not in ("fit", "validate", "test", "predict"):
        print(f"ssmkit: error: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    lightning_cli(None if from_command_line else argv)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
