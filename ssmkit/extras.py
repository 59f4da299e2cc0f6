"""Lazy checks for optional dependencies: a domain whose extra is missing names the pip command."""
import importlib.util


def require_extra(extra: str, modules) -> None:
    """Raise ImportError naming `pip install "ssmkit[<extra>]"` if any of `modules` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ssmkit.{extra} needs {', '.join(missing)}: pip install \"ssmkit[{extra}]\"")
