"""ssmkit: state-space sequence models and the domain models built on them."""
__version__ = "0.1.0"
