"""ssmkit.genomics models: one file per published model."""
