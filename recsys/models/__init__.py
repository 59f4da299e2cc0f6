"""ssmkit.recsys models: one file per published model."""
