"""ssmkit.audio models: one file per published model."""
