"""Compile the C++ sources of this folder on first use with torch.utils.cpp_extension and cache the result.

The build directory is `$SSMKIT_CACHE/cpp/<key>` (default `~/.cache/ssmkit/cpp/<key>`), where the key names the
torch and Python versions and hashes the sources (with the local headers they include) and the compiler flags, which
name the x86-64 micro-architecture level compiled for (elsewhere the key hashes the CPU's features), so a cache
shared between machines or torch upgrades never loads a stale or foreign binary, and a VM moved to another host of
the same level keeps its builds.
The sources are compiled from a copy inside the build directory: ninja's build file then names the same paths from
every checkout, so a fresh clone with the same sources reuses the binary instead of recompiling.
A failed build is remembered for the life of the process (one warning, then the same error every
time) instead of being retried on every call.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple

import torch

_HERE = Path(__file__).resolve().parent
_LOCK = threading.Lock()
_MODULES: Dict[str, ModuleType] = {}
_ERRORS: Dict[str, str] = {}

# x86-64 micro-architecture levels (the psABI's) by the /proc/cpuinfo flags each needs; v4 (AVX-512) is left out on
# purpose: the kernels are written for 256-bit vectors and one v3 binary serves every AVX2 host.
_X86_LEVELS = [
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
]


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _arch_flag() -> str:
    """`-march=x86-64-v3` (or v2) on x86-64 from the CPU's flags, so the build key (which names the flag, not the
    host) stays the same when a VM moves to another host of the same level; `-march=native` elsewhere, where the
    key then hashes the CPU's features."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags = set(_cpu_features().split())
        return next((f"-march={level}" for level, need in _X86_LEVELS if need <= flags), "")
    return "-march=native"


# Flag sets tried in order; the later ones only when the compiler rejected a flag of the earlier ones.
_FLAG_SETS: List[Tuple[List[str], List[str]]] = [
    ([f for f in ("-O3", _arch_flag(), "-fno-trapping-math", "-fopenmp") if f], ["-fopenmp"]),
    (["-O3", "-fno-trapping-math", "-fopenmp"], ["-fopenmp"]),
    (["-O3"], []),
]


def cache_dir() -> Path:
    root = os.environ.get("SSMKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ssmkit")
    return Path(root) / "cpp"


def _with_headers(src: Path) -> List[Path]:
    """The source and the local headers it includes (`#include "..."`)."""
    return [src] + [src.parent / h.decode() for h in re.findall(rb'#include "([^"]+)"', src.read_bytes())]


def _key(name: str, sources: List[Path], cflags: List[str]) -> str:
    h = hashlib.sha256()
    for src in sources:
        for path in _with_headers(src):  # a change in a local header rebuilds too
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update(" ".join(cflags).encode())
    h.update(os.environ.get("CXX", "c++").encode())
    if "-march=native" in cflags:
        h.update(_cpu_features().encode())
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return f"{name}-torch{torch.__version__.replace('+', '_')}-{py}-{h.hexdigest()[:12]}"


def _tail(text: str, limit: int = 4000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _staged(sources: List[Path], folder: Path) -> List[Path]:
    """Copies of the sources and their local headers in `folder`, rewritten only when their bytes differ (an
    unchanged copy keeps its mtime, so ninja sees nothing to do); written atomically for concurrent processes."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        for path in _with_headers(src):
            dest, data = folder / path.name, path.read_bytes()
            if not dest.exists() or dest.read_bytes() != data:
                tmp = folder / f".{path.name}.{os.getpid()}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, dest)
    return [folder / src.name for src in sources]


def _compile(name: str, sources: List[Path], cflags: List[str], ldflags: List[str]) -> ModuleType:
    from torch.utils import cpp_extension  # imported lazily: it pulls in setuptools

    key = _key(name, sources, cflags)
    build = cache_dir() / key
    build.mkdir(parents=True, exist_ok=True)
    sources = _staged(sources, build / "src")
    verbose = os.environ.get("SSMKIT_CPP_VERBOSE", "") not in ("", "0")
    return cpp_extension.load(
        name=key.replace("-", "_").replace(".", "_"),
        sources=[str(s) for s in sources],
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        build_directory=str(build),
        verbose=verbose,
    )


def build(name: str, sources: List[str]) -> ModuleType:
    """The compiled extension `name` built from `sources` (file names in this folder).

    Raises RuntimeError carrying the compiler's message when it cannot be built; a failure is cached.
    """
    with _LOCK:
        if name in _MODULES:
            return _MODULES[name]
        if name in _ERRORS:
            raise RuntimeError(_ERRORS[name])
        paths = [_HERE / s for s in sources]
        first_error: Optional[str] = None
        for cflags, ldflags in _FLAG_SETS:
            try:
                module = _compile(name, paths, cflags, ldflags)
            except Exception as e:  # compiler missing, compile error, ninja missing, link error...
                msg = f"{type(e).__name__}: {e}"
                if first_error is None:
                    first_error = f"building with flags {' '.join(cflags)} failed: {_tail(msg)}"
                flag_trouble = ("unrecognized command", "unrecognised command", "unknown argument",
                                "unsupported option", "omp.h", "-lgomp", "-lomp", "invalid argument")
                if not any(f in msg for f in flag_trouble):
                    break  # not a flag problem: the other flag sets would fail the same way
                continue
            _MODULES[name] = module
            return module
        err = f"cannot build the ssmkit C++ extension {name!r} in {cache_dir()}: {first_error}"
        _ERRORS[name] = err
        warnings.warn(f"ssmkit: {err}\n(the C++ CPU backend is unavailable; backend='auto' uses PyTorch)",
                      RuntimeWarning, stacklevel=3)
        raise RuntimeError(err)
