"""Named errors for bad genomics input; each message names the file and the record or line."""


class GenomeDataError(ValueError):
    """Base of every bad-input error in ssmkit.genomics."""


class FastaFormatError(GenomeDataError):
    """Text before the first '>' of a FASTA file, or a file that is neither FASTA nor GenBank."""


class EmptyRecordError(GenomeDataError):
    """A FASTA/GenBank record with no sequence."""


class InvalidBaseError(GenomeDataError):
    """A character outside the IUPAC nucleotide codes."""


class TruncatedFileError(GenomeDataError):
    """A gzip/BGZF file that ends before its end-of-stream marker (cut short in transfer)."""


class GFFFormatError(GenomeDataError):
    """A GFF3 feature line without 9 tab-separated columns, or with bad coordinates."""


class LabelledDataError(GenomeDataError):
    """A labelled sequence file (CSV or FASTA) with a missing column, empty sequence or missing label."""
