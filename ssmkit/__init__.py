"""ssmkit: state-space sequence models and the domain models built on them (architecture: docs/DESIGN.md)."""
import pathlib as _pathlib

__version__ = "0.1.0"

# The sub-packages live in top-level folders of the checkout (`core/` is `ssmkit.core`, ...). An install maps
# them (a strict editable install links them under this package); Python started in the checkout's root finds
# this folder first instead, so point the package's search path at the root too, where those folders are.
_root = _pathlib.Path(__file__).resolve().parent.parent
if (_root / "core" / "__init__.py").is_file() and (_root / "pyproject.toml").is_file() and str(_root) not in __path__:
    __path__.append(str(_root))
