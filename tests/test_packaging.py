"""Packaging: a domain whose extra is missing names the pip command; the import rules of docs/DESIGN.md hold
on the source tree; every sub-package is listed in pyproject.toml; core imports without lightning."""
import ast
import importlib
import importlib.util
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOMAINS = ("vision", "audio", "genomics", "timeseries", "recsys")
HEAVY = {"lightning", "pytorch_lightning", "timm", "torchvision", "torchaudio", "pandas", "sklearn", "Bio", "zarr",
         "matplotlib"}
EXTRA_MODULES = {"vision": "timm", "audio": "soundfile", "genomics": "zarr", "timeseries": "pandas",
                 "recsys": "pandas"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_missing_extra_names_pip_command(domain, monkeypatch):
    real = importlib.util.find_spec
    hidden = EXTRA_MODULES[domain]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a))
    for name in [m for m in sys.modules if m == f"ssmkit.{domain}" or m.startswith(f"ssmkit.{domain}.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as info:
        importlib.import_module(f"ssmkit.{domain}")
    assert f'pip install "ssmkit[{domain}]"' in str(info.value) and hidden in str(info.value)


def imports(path):
    """(line, top-level module name, full name) of every absolute import in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations():
    bad = []
    for top in ("core", "kernels", *DOMAINS):
        for path in sorted((ROOT / top).rglob("*.py")):
            for line, mod in imports(path):
                parts, where = mod.split("."), f"{path.relative_to(ROOT)}:{line} imports {mod}"
                if top == "core" and (parts[0] in HEAVY or (parts[0] == "ssmkit" and len(parts) > 1
                                                            and parts[1] in {*DOMAINS, "train", "cli"})):
                    bad.append(where)
                if top == "kernels" and parts[0] == "ssmkit":
                    bad.append(where)
                if top in DOMAINS and parts[0] == "ssmkit" and len(parts) > 1 and parts[1] in set(DOMAINS) - {top}:
                    bad.append(where)
    return bad


def test_import_rules_hold_on_the_source_tree():
    assert violations() == []


def test_rule_scanner_catches_a_violation(tmp_path, monkeypatch):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "bad.py").write_text("import torch\nif True:\n    from lightning import Trainer\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "bad.py").write_text("from ssmkit.core import ops\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations() == ["core/bad.py:3 imports lightning", "kernels/bad.py:1 imports ssmkit.core"]


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set()


def test_core_imports_without_lightning_or_domain_extras():
    code = ("import sys, ssmkit.core.ops, ssmkit.core.layers, ssmkit.core.blocks, ssmkit.kernels; "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
