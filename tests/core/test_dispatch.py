"""The dispatch point (`core/ops/_dispatch.select`) and `ssmkit.kernels`: explicit, auto, disabled and
skipped backends, missing backends naming themselves, and the mamba_ssm adapters' argument mapping
(checked with stand-in modules, so no CUDA is needed)."""
import sys
import types

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops import causal_conv1d_ref, selective_scan_ref
from ssmkit.core.ops._dispatch import select

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def torch_impl():
    return "torch"


def fake_loader(monkeypatch, ok=()):
    """Make kernels.load succeed (returning a tagged function) for backends in `ok` only; record the calls."""
    calls = []

    def load(backend, op, device):
        calls.append((backend, op, device.type))
        if backend in ok:
            return lambda: backend
        raise kernels.BackendUnavailable(f"{backend} missing")

    monkeypatch.setattr(kernels, "load", load)
    return calls


def test_torch_backend_never_touches_kernels(monkeypatch):
    calls = fake_loader(monkeypatch)
    assert select("selective_scan", "torch", CPU, torch_impl) is torch_impl
    assert calls == []


def test_auto_order_and_fallback(monkeypatch):
    calls = fake_loader(monkeypatch)
    assert select("selective_scan", "auto", CUDA, torch_impl) is torch_impl
    assert calls == [("mamba_ssm", "selective_scan", "cuda"), ("triton", "selective_scan", "cuda")]
    calls = fake_loader(monkeypatch, ok=("cpp",))
    assert select("causal_conv1d", "auto", CPU, torch_impl)() == "cpp"
    calls = fake_loader(monkeypatch, ok=("triton", "mamba_ssm"))
    assert select("selective_scan", "auto", CUDA, torch_impl)() == "mamba_ssm"
    assert select("selective_scan", "auto", CUDA, torch_impl, skip=("mamba_ssm",))() == "triton"
    assert select("selective_scan", "auto", torch.device("meta"), torch_impl) is torch_impl


def test_auto_respects_disabled_backends(monkeypatch):
    fake_loader(monkeypatch, ok=("cpp", "triton", "mamba_ssm"))
    monkeypatch.setenv("SSMKIT_DISABLE_BACKENDS", "cpp, mamba_ssm")
    assert select("selective_scan", "auto", CPU, torch_impl) is torch_impl
    assert select("selective_scan", "auto", CUDA, torch_impl)() == "triton"
    assert select("selective_scan", "cpp", CPU, torch_impl)() == "cpp"  # explicit requests still run


def test_explicit_missing_and_unknown_backends():
    with pytest.raises(ValueError, match=r"backend must be 'auto', 'torch' or one of \['cpp', 'triton', 'mamba_ssm'\]"):
        select("selective_scan", "cuda", CPU, torch_impl)
    for name in kernels.BACKENDS:
        if kernels.available("cpu")[name] != "ok":
            with pytest.raises(kernels.BackendUnavailable, match=name):
                select("selective_scan", name, CPU, torch_impl)
    with pytest.raises(kernels.BackendUnavailable, match="CUDA tensors, got device cpu"):
        kernels.load("mamba_ssm", "selective_scan", CPU)
    with pytest.raises(kernels.BackendUnavailable, match="unknown backend 'x'"):
        kernels.load("x", "selective_scan", CPU)
    with pytest.raises(kernels.BackendUnavailable, match="no fft op"):
        kernels.load("mamba_ssm", "fft", CUDA)


def test_available_reports_every_backend(monkeypatch):
    report = kernels.available("cpu", ops=("selective_scan", "causal_conv1d"))
    assert set(report) == set(kernels.BACKENDS)
    for name, status in report.items():
        loads = True
        try:
            for op in ("selective_scan", "causal_conv1d"):
                kernels.load(name, op, CPU)
        except kernels.BackendUnavailable as e:
            loads = False
            assert status == str(e) and name in status
        assert (status == "ok") == loads
    fake_loader(monkeypatch, ok=("triton",))
    assert kernels.available("cuda") == {"cpp": "cpp missing", "triton": "ok", "mamba_ssm": "mamba_ssm missing"}


def test_mamba_ssm_missing_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # import of mamba_ssm now fails
    with pytest.raises(kernels.BackendUnavailable, match=r'cannot import .*pip install "ssmkit\[cuda\]"'):
        kernels.load("mamba_ssm", "selective_scan", CUDA)


def _stand_in(monkeypatch, dotted, **attrs):
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for k, v in attrs.items():
        setattr(sys.modules[dotted], k, v)


def test_mamba_ssm_adapters_pass_arguments_in_order(monkeypatch):
    """selective_scan_fn takes (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)."""
    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    def causal_conv1d_fn(x, weight, bias=None, activation=None):
        return causal_conv1d_ref(x, weight, bias, activation)

    _stand_in(monkeypatch, "mamba_ssm.ops.selective_scan_interface", selective_scan_fn=selective_scan_fn)
    _stand_in(monkeypatch, "causal_conv1d", causal_conv1d_fn=causal_conv1d_fn)
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    u, delta, A, B, C, D, z, bias = r(2, 4, 5), r(2, 4, 5).abs(), -r(4, 3).abs(), r(2, 3, 5), r(2, 3, 5), r(4), r(2, 4, 5), r(4)
    scan = kernels.load("mamba_ssm", "selective_scan", CUDA)
    y, h = scan(u, delta, A, B, C, D, z, bias, True, True, None)
    y_ref, h_ref = selective_scan_ref(u, delta, A, B, C, D, z, bias, True, True)
    assert torch.equal(y, y_ref) and torch.equal(h, h_ref)
    with pytest.raises(ValueError, match="initial_state"):
        scan(u, delta, A, B, C, D, z, bias, True, True, h)
    conv = kernels.load("mamba_ssm", "causal_conv1d", CUDA)
    w = r(4, 3)
    assert torch.equal(conv(u, w, D, "silu", None, False), causal_conv1d_ref(u, w, D, "silu"))
    with pytest.raises(ValueError, match="initial_state"):
        conv(u, w, D, "silu", None, True)
