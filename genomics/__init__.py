"""ssmkit.genomics: DNA language models (HyenaDNA, DNA-xLSTM, Caduceus / RC-PS) from FASTA/GenBank to
pretraining and fine-tuning; see genomics/README.md. Needs the `genomics` extra."""
from ssmkit.extras import require_extra

require_extra("genomics", ["Bio", "zarr"])

from .data import GenomeDataModule  # noqa: E402
from .errors import (EmptyRecordError, FastaFormatError, GenomeDataError, GFFFormatError,  # noqa: E402
                     InvalidBaseError, LabelledDataError, TruncatedFileError)
from .labelled import SequenceDataModule  # noqa: E402
from .models import CNN, RCPS, Caduceus, DNAxLSTM, HyenaDNA, TransformerLM  # noqa: E402
from .store import GenomeStore, build_genome_store  # noqa: E402
from .task import DNAPretrainTask, SequenceClassificationTask  # noqa: E402
from .tokenizer import DNATokenizer  # noqa: E402

__all__ = ["DNATokenizer", "build_genome_store", "GenomeStore", "GenomeDataModule", "SequenceDataModule",
           "HyenaDNA", "DNAxLSTM", "Caduceus", "RCPS", "CNN", "TransformerLM", "DNAPretrainTask",
           "SequenceClassificationTask", "GenomeDataError", "FastaFormatError", "EmptyRecordError",
           "InvalidBaseError", "TruncatedFileError", "GFFFormatError", "LabelledDataError"]
