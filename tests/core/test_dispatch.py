"""The dispatch point (`core/ops/_dispatch.select`) and `ssmkit.kernels`: explicit, auto, disabled and
skipped backends, missing backends naming themselves, and the mamba_ssm adapters' argument mapping
(checked with stand-in modules, so no CUDA is needed)."""
import sys
import types

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops import causal_conv1d_ref, selective_scan_ref
from ssmkit.core.ops._dispatch import Call, select

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
    with_state = Call(torch.float32, frozenset({"initial_state"}))  # mamba_ssm declares no initial_state
    assert select("selective_scan", "auto", CUDA, torch_impl, with_state)() == "triton"
    assert select("selective_scan", "auto", torch.device("meta"), torch_impl) is torch_impl


def test_auto_trains_ssd_on_the_pytorch_path_not_on_tritons_forward_only_kernel(monkeypatch):
    """The Triton SSD's backward re-runs the PyTorch path, so a call that needs a gradient is faster there:
    "auto" takes Triton for inference only; mamba_ssm (own backward) and explicit requests are unaffected."""
    fake_loader(monkeypatch, ok=("triton",))
    training, inference = Call(torch.float32, grad=True), Call(torch.float32)
    assert select("ssd", "auto", CUDA, torch_impl, training) is torch_impl
    assert select("ssd", "auto", CUDA, torch_impl, inference)() == "triton"
    assert select("ssd", "triton", CUDA, torch_impl, training)() == "triton"
    assert select("selective_scan", "auto", CUDA, torch_impl, training)() == "triton"  # has its own backward
    fake_loader(monkeypatch, ok=("triton", "mamba_ssm"))
    training = Call(torch.float32, grad=True, kwargs={"chunk_size": 64})  # mamba_ssm wants a power-of-two chunk
    assert select("ssd", "auto", CUDA, torch_impl, training)() == "mamba_ssm"


def test_describe_sees_gradients_only_with_autograd_on():
    from ssmkit.core.ops._dispatch import describe
    x = torch.zeros(2, requires_grad=True)
    assert describe(x.dtype, {}, (), None, (x, None)).grad
    assert not describe(x.dtype, {}, (), None, (x.detach(),)).grad
    with torch.no_grad():
        assert not describe(x.dtype, {}, (), None, (x,)).grad


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
    u, delta, A, B, C = r(2, 4, 5), r(2, 4, 5).abs(), -r(4, 3).abs(), r(2, 3, 5), r(2, 3, 5)
    D, z, bias = r(4), r(2, 4, 5), r(4)
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


# A fake backend that declares what it cannot take, and would get those calls wrong: it ignores initial_state,
# computes in fp32 and returns a final state with no gradient. `auto` must never pick it for such calls.
def _fake_backend(monkeypatch):
    from ssmkit.core.ops import _dispatch, selective_scan

    used = []

    def fake_scan(*, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state):
        used.append(True)  # keyword-only: the op must call backends with keyword arguments
        y, h = selective_scan(u.float(), delta.float(), A.float(), B.float(), C.float(), D, z, delta_bias,
                              delta_softplus, True, None, backend="torch")
        y = y.to(u.dtype)
        return (y, h.detach()) if return_last_state else y

    loader = kernels.load
    monkeypatch.setattr(kernels, "BACKENDS", kernels.BACKENDS + ("fake",))
    monkeypatch.setattr(kernels, "load", lambda b, op, dev: fake_scan if b == "fake" else loader(b, op, dev))
    monkeypatch.setitem(_dispatch.AUTO_ORDER, "cpu", ("fake",))
    scan_args = frozenset({"D", "z", "delta_bias", "delta_softplus", "return_last_state"})
    monkeypatch.setitem(_dispatch.SUPPORTS, "fake", {"selective_scan": _dispatch.Supports(
        scan_args, frozenset({torch.float32, torch.bfloat16}), grad_final_state=False)})
    return used, fake_scan


def _scan_inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    return dict(u=r(2, 4, 9), delta=r(2, 4, 9), A=-r(4, 3).abs(), B=r(2, 3, 9), C=r(2, 3, 9), D=r(4), z=r(2, 4, 9),
                delta_bias=r(4), delta_softplus=True), r(2, 4, 3)


def test_auto_skips_a_backend_that_cannot_take_the_call(monkeypatch):
    from ssmkit.core.ops import selective_scan

    used, fake = _fake_backend(monkeypatch)
    args, h0 = _scan_inputs()
    assert torch.equal(selective_scan(**args), selective_scan(**args, backend="torch")) and used == [True]
    # initial_state: the fake would ignore it (its answer differs), so auto takes the torch path
    used.clear()
    wrong = fake(**args, return_last_state=False, initial_state=h0)
    want = selective_scan(**args, initial_state=h0, backend="torch")
    assert not torch.allclose(wrong, want)
    assert torch.equal(selective_scan(**args, initial_state=h0), want) and used == [True]  # only the direct call
    # fp64: the fake computes in fp32; auto keeps fp64 exact
    used.clear()
    args64, _ = _scan_inputs(torch.float64)
    assert torch.equal(selective_scan(**args64), selective_scan(**args64, backend="torch")) and used == []
    # a gradient through the final state: the fake drops it; auto keeps it
    A = args.pop("A").requires_grad_()
    _, h_auto = selective_scan(A=A, **args, return_last_state=True)
    (g_auto,) = torch.autograd.grad(h_auto.sum(), A)
    _, h_torch = selective_scan(A=A, **args, return_last_state=True, backend="torch")
    (g_torch,) = torch.autograd.grad(h_torch.sum(), A)
    assert used == [] and torch.equal(g_auto, g_torch) and g_torch.abs().sum() > 0
    with torch.no_grad():  # without autograd, the last state needs no gradient: the fake may take the call
        selective_scan(A=A, **args, return_last_state=True)
    assert used == [True]


def test_an_explicit_backend_that_cannot_take_the_call_names_the_argument(monkeypatch):
    from ssmkit.core.ops import selective_scan

    _fake_backend(monkeypatch)
    args, h0 = _scan_inputs()
    selective_scan(**args, backend="fake")  # a call it can take runs
    with pytest.raises(kernels.BackendUnavailable, match="'fake' selective_scan does not take initial_state"):
        selective_scan(**args, initial_state=h0, backend="fake")
    with pytest.raises(kernels.BackendUnavailable, match="does not take dtype torch.float64"):
        selective_scan(**_scan_inputs(torch.float64)[0], backend="fake")
    args["A"].requires_grad_()
    with pytest.raises(kernels.BackendUnavailable, match="no gradient through the final state"):
        selective_scan(**args, return_last_state=True, backend="fake")


def test_declarations_of_the_real_backends():
    from ssmkit.core.ops._dispatch import unsupported

    f32, f64 = torch.float32, torch.float64
    assert "initial_state" in unsupported("mamba_ssm", "selective_scan", Call(f32, frozenset({"initial_state"})))
    assert "float64" in unsupported("mamba_ssm", "ssd", Call(f64, kwargs={"chunk_size": 64}))
    assert "power of two" in unsupported("mamba_ssm", "ssd", Call(f32, kwargs={"chunk_size": 48}))
    assert unsupported("mamba_ssm", "ssd", Call(f32, frozenset({"initial_states"}), True, {"chunk_size": 64})) is None
    stateful_conv = Call(f32, frozenset({"return_final_state"}))
    assert "return_final_state" in unsupported("mamba_ssm", "causal_conv1d", stateful_conv)
    assert unsupported("cpp", "selective_scan", Call(f64, frozenset({"initial_state"}), True)) is None
    assert "declares no ssd" in unsupported("cpp", "ssd", Call(f32))
