"""The fused one-token steps (`kernels/cpu/mixer_step.cpp`) against their `_ref` oracles and against running the whole
sequence at once: every step of a sequence with the state carried, fp64 to 1e-12 and fp32 to its rounding; NaN in,
NaN out where the oracle has it (and only there); the dispatch (auto picks the kernel for inference, PyTorch for
gradients and mixed dtypes; named errors for bad shapes)."""
import pytest
import torch

from ssmkit import kernels
from ssmkit.core.layers import Mamba
from ssmkit.core.ops import (mamba_mixer_step, mamba_mixer_step_ref, postnorm_ffn, postnorm_ffn_ref, time_ssd_step,
                             time_ssd_step_ref)

F64 = torch.float64
TOL = {F64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}
L = 7


@pytest.fixture(scope="module", autouse=True)
def cpp():
    try:
        return kernels.load("cpp", "mamba_mixer_step", torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")


def _mamba(dtype, biases=False, seed=0):
    torch.manual_seed(seed)
    m = Mamba(12, d_state=5, d_conv=3, dt_rank=3, bias=biases, dtype=dtype)
    with torch.no_grad():
        for p in m.parameters():  # move every parameter (D, dt bias, conv bias) off its init
            p.add_(0.2 * torch.randn_like(p))
    return m


def _mamba_weights(m):
    return dict(in_proj_weight=m.in_proj.weight, in_proj_bias=m.in_proj.bias, conv_weight=m.conv1d.weight.squeeze(1),
                conv_bias=m.conv1d.bias, x_proj_weight=m.x_proj.weight, dt_proj_weight=m.dt_proj.weight,
                dt_proj_bias=m.dt_proj.bias, A_log=m.A_log, D=m.D, out_proj_weight=m.out_proj.weight,
                out_proj_bias=m.out_proj.bias)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("biases", [False, True])
def test_mamba_step_equals_the_oracle_and_the_whole_sequence(dtype, biases):
    m = _mamba(dtype, biases)
    x = torch.randn(3, L, 12, dtype=dtype)
    w = _mamba_weights(m)
    with torch.no_grad():
        whole = m(x)
        ref = fused = m.initial_state(3)
        for t in range(L):
            y_ref, *ref = mamba_mixer_step_ref(x[:, t], *ref, **w)
            y, *fused = mamba_mixer_step(x[:, t], *fused, **w, backend="cpp")
            torch.testing.assert_close(y, y_ref, **TOL[dtype])
            for a, b in zip(fused, ref):
                torch.testing.assert_close(a, b, **TOL[dtype])
            torch.testing.assert_close(y, whole[:, t], **TOL[dtype])   # stepping equals the whole sequence


def _tissd(dtype, H=2, P=3, N=4, d_model=5, W=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: (0.5 * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)  # noqa: E731
    di, cd = H * P, H * P + 2 * N
    w = dict(in_proj_weight=r(2 * di + 2 * N + H, d_model), conv_weight=r(cd, W), conv_bias=r(cd),
             mlp1_weight=r(H, H), mlp1_bias=r(H), mlp2_weight=r(H, H), mlp2_bias=r(H), time_conv1_weight=r(H, W),
             time_conv1_bias=r(H), time_conv2_weight=r(H, W), time_conv2_bias=r(H), gate_weight=r(H, H),
             gate_bias=r(H), dt_bias=r(H), A_log=r(H), D=r(H), norm_weight=1 + r(di), out_proj_weight=r(d_model, di))
    state = [torch.zeros(3, cd, W - 1, dtype=dtype), torch.zeros(3, H, W - 1, dtype=dtype),
             torch.zeros(3, H, W - 1, dtype=dtype), torch.zeros(3, H, P, N, dtype=dtype)]
    return w, state, (torch.randn(3, L, d_model, generator=g, dtype=F64).to(dtype),
                      torch.rand(3, L, H, generator=g, dtype=F64).mul(3).to(dtype))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_time_ssd_step_equals_the_oracle_at_every_step(dtype):
    w, state, (x, T) = _tissd(dtype)
    ref = fused = state
    with torch.no_grad():
        for t in range(L):
            y_ref, T_ref, *ref = time_ssd_step_ref(x[:, t], T[:, t], *ref, norm_eps=1e-5, **w)
            y, T_next, *fused = time_ssd_step(x[:, t], T[:, t], *fused, norm_eps=1e-5, **w, backend="cpp")
            for a, b in zip((y, T_next, *fused), (y_ref, T_ref, *ref)):
                torch.testing.assert_close(a, b, **TOL[dtype])
        # another time-MLP input (a dropped-out T in training): the kernel does not take it, auto takes PyTorch
        drop = T[:, 0] * 2
        got = time_ssd_step(x[:, 0], T[:, 0], *state, norm_eps=1e-5, mlp_input=drop, **w)
        want = time_ssd_step_ref(x[:, 0], T[:, 0], *state, norm_eps=1e-5, mlp_input=drop, **w)
        plain = time_ssd_step_ref(x[:, 0], T[:, 0], *state, norm_eps=1e-5, **w)
        torch.testing.assert_close(got[0], want[0], **TOL[dtype])
        assert not torch.allclose(want[0], plain[0])


def _ffn(dtype, d=6, inner=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: (0.5 * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)  # noqa: E731
    return dict(norm1_weight=1 + r(d), norm1_bias=r(d), w1=r(inner, d), b1=r(inner), w2=r(d, inner), b2=r(d),
                norm2_weight=1 + r(d), norm2_bias=r(d)), (r(2, 3, d), r(2, 3, d))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("activation", ["gelu", "hardswish", "relu"])
@pytest.mark.parametrize("residual", [True, False])
def test_postnorm_ffn_equals_the_oracle(dtype, activation, residual):
    w, (y, x) = _ffn(dtype)
    x = x if residual else None
    ref = postnorm_ffn_ref(y, x, **w, eps1=1e-12, eps2=1e-5, activation=activation)
    got = postnorm_ffn(y, x, **w, eps1=1e-12, eps2=1e-5, activation=activation, backend="cpp")
    torch.testing.assert_close(got, ref, **TOL[dtype])
    torch.testing.assert_close(postnorm_ffn(y[0, 1:2], None if x is None else x[0, 1:2], **w, eps1=1e-12,
                                            eps2=1e-5, activation=activation, backend="cpp"), ref[0, 1:2], **TOL[dtype])


def _same_nonfinite(got, ref):
    assert torch.equal(got.isnan(), ref.isnan()), "NaN where the oracle has none, or none where it has one"
    finite = ref.isfinite()
    torch.testing.assert_close(got[finite], ref[finite], **TOL[F64])


def test_nan_in_gives_nan_out_where_the_oracle_has_it():
    m = _mamba(F64)
    w = _mamba_weights(m)
    x = torch.randn(3, L, 12, dtype=F64)
    x[1, 2, 4] = float("nan")                                  # one user, one step, one channel
    with torch.no_grad():
        ref = fused = m.initial_state(3)
        for t in range(L):
            y_ref, *ref = mamba_mixer_step_ref(x[:, t], *ref, **w)
            y, *fused = mamba_mixer_step(x[:, t], *fused, **w, backend="cpp")
            for a, b in zip((y, *fused), (y_ref, *ref)):
                _same_nonfinite(a, b)
        assert y[1].isnan().all() and y[[0, 2]].isfinite().all()   # it stays in that user's state, and only there
    tw, state, (xt, T) = _tissd(F64)
    T[0, 1, 1] = float("nan")                                  # a NaN time gap
    ref = fused = state
    for t in range(L):
        y_ref, T_ref, *ref = time_ssd_step_ref(xt[:, t], T[:, t], *ref, norm_eps=1e-5, **tw)
        y, T_next, *fused = time_ssd_step(xt[:, t], T[:, t], *fused, norm_eps=1e-5, **tw, backend="cpp")
        for a, b in zip((y, T_next, *fused), (y_ref, T_ref, *ref)):
            _same_nonfinite(a, b)
    assert y[0].isnan().all() and y[1:].isfinite().all()
    fw, (fy, fx) = _ffn(F64)
    fy[1, 0, 2] = float("nan")
    _same_nonfinite(postnorm_ffn(fy, fx, **fw, backend="cpp"), postnorm_ffn_ref(fy, fx, **fw))


def test_dispatch_auto_takes_the_kernel_for_inference_only(cpp, monkeypatch):
    m = _mamba(torch.float32)
    w = _mamba_weights(m)
    x, state = torch.randn(2, 12), m.initial_state(2)
    calls = []
    def counted(**kw):  # counts the calls the kernel answered (it refuses others with RuntimeError)
        out = cpp(**kw)
        calls.append(1)
        return out

    monkeypatch.setattr(kernels.cpu, "_CALLABLES", {"mamba_mixer_step": counted})
    with torch.no_grad():
        expected = mamba_mixer_step(x, *state, **w, backend="torch")
        torch.testing.assert_close(mamba_mixer_step(x, *state, **w), expected, **TOL[torch.float32])
    assert calls == [1]
    y, *_ = mamba_mixer_step(x, *state, **w)                       # parameters require grad: the PyTorch path
    y.sum().backward()
    assert calls == [1] and m.in_proj.weight.grad is not None
    with pytest.raises(kernels.BackendUnavailable, match="require grad"):
        mamba_mixer_step(x, *state, **w, backend="cpp")
    with torch.no_grad():
        mixed = (x, state.conv.double(), state.ssm.double())   # the kernel refuses it: the PyTorch path
        torch.testing.assert_close(mamba_mixer_step(*mixed, **w)[0], expected[0], **TOL[torch.float32])
        with pytest.raises(kernels.BackendUnavailable, match="dtype"):
            mamba_mixer_step(*mixed, **w, backend="cpp")
        monkeypatch.setenv("SSMKIT_DISABLE_BACKENDS", "cpp")
        mamba_mixer_step(x, *state, **w)
    assert calls == [1]


def test_bad_shapes_raise_named_errors():
    m = _mamba(torch.float32)
    w = _mamba_weights(m)
    x, state = torch.randn(2, 12), m.initial_state(2)
    with torch.no_grad():
        with pytest.raises(ValueError, match="ssm_state"):
            mamba_mixer_step(x, state.conv, state.ssm[:, :, :3], **w)
        with pytest.raises(ValueError, match="x_proj_weight"):
            mamba_mixer_step(x, *state, **{**w, "x_proj_weight": w["x_proj_weight"][1:]})
        tw, tstate, (xt, T) = _tissd(torch.float32)
        with pytest.raises(ValueError, match="time1_state"):
            time_ssd_step(xt[:, 0], T[:, 0], tstate[0], tstate[1][:, :1], *tstate[2:], norm_eps=1e-5, **tw)
        with pytest.raises(TypeError, match="missing"):
            time_ssd_step(xt[:, 0], T[:, 0], *tstate, norm_eps=1e-5, **{k: v for k, v in tw.items() if k != "D"})
        fw, (fy, fx) = _ffn(torch.float32)
        with pytest.raises(ValueError, match="w2"):
            postnorm_ffn(fy, fx, **{**fw, "w2": fw["w2"][:, 1:]})
        with pytest.raises(ValueError, match="activation"):
            postnorm_ffn(fy, fx, **fw, activation="tanh")
