"""Property suite (issue 17): every public op with an oracle, on random shapes (batch and length 0 and 1 included),
dtypes, chunk sizes, packed sequences (`seq_idx`) and injected NaN / inf, against its `_ref` in fp64.

Each case must end one of two ways: the same result as the oracle (same non-finite positions, finite values within
the dtype's tolerance), or a ValueError / TypeError that names the offending argument. Anything else (another
exception: a crash; a result that differs: a silent wrong answer) fails the test. A second family corrupts one
argument (wrong size, rank or dtype) and demands the named error. Deterministic (`derandomize=True`, fixed
`max_examples`), so CI sees the same cases every run; the counts are printed at the end of the module.
"""
from __future__ import annotations

import collections
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmkit import kernels
from ssmkit.core import ops
from ssmkit.core.ops import companion_recurrence as krylov_ops

F64 = torch.float64
NONFINITE = [None, None, float("nan"), float("inf"), -float("inf")]  # None: a clean case (drawn more often)
TOL = {torch.float64: 1e-8, torch.float32: 2e-3}
COUNTS = collections.Counter()


def prop(max_examples):
    return settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def summary() -> str:
    tried = COUNTS["matched"] + COUNTS["named error"]
    per_op = "; ".join(f"{k[3:]} {v}" for k, v in sorted(COUNTS.items()) if k.startswith("op:"))
    return (f"op property suite: {tried} cases tried: {COUNTS['matched']} matched the fp64 oracle, "
            f"{COUNTS['named error']} raised a named error, 0 crashes, 0 silent wrong answers ({per_op})")


class _Report:
    """Writes the counts into pytest's terminal summary (visible with output capture on)."""

    def pytest_terminal_summary(self, terminalreporter):
        if COUNTS:
            terminalreporter.write_line(summary())


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """Register the summary once per session; a failing case fails its test, so the printed counts hold."""
    if not request.config.pluginmanager.has_plugin("ssmkit-op-properties"):
        request.config.pluginmanager.register(_Report(), "ssmkit-op-properties")
    yield
    print(summary())


def cpp_available():
    try:
        kernels.load("cpp", "selective_scan", torch.device("cpu"))
        return True
    except kernels.BackendUnavailable:
        return False


class Case:
    """Random tensors from one drawn seed (cheaper for hypothesis than drawing every element)."""

    def __init__(self, data, dtype=None):
        self.g = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 31 - 1), label="seed"))
        self.dtype = dtype or data.draw(st.sampled_from([torch.float32, F64]), label="dtype")
        self.data = data

    def randn(self, *shape, scale=1.0):
        return (torch.randn(*shape, generator=self.g, dtype=F64) * scale).to(self.dtype)

    def rand(self, *shape, low=0.0, high=1.0):
        return (low + (high - low) * torch.rand(*shape, generator=self.g, dtype=F64)).to(self.dtype)

    def inject(self, tensors: dict, names):
        """Maybe put one NaN / inf into one of `names` at a random position; returns what was done."""
        value = self.data.draw(st.sampled_from(NONFINITE), label="nonfinite")
        candidates = [n for n in names if tensors.get(n) is not None and tensors[n].numel() > 0]
        if value is None or not candidates:
            return None
        name = self.data.draw(st.sampled_from(candidates), label="where")
        t = tensors[name]
        t.view(-1)[int(torch.randint(t.numel(), (1,), generator=self.g))] = value
        return name, value


def check(op_name, run, run_ref, dtype, names=None):
    """Run the op; compare with the fp64 oracle, or accept a ValueError / TypeError naming an argument (one of
    `names` when given: the spoiled one, or the one whose shape it now conflicts with)."""
    try:
        out = run()
    except (ValueError, TypeError) as e:
        assert str(e), f"{op_name}: an error without a message"
        named = names is None or any(re.search(rf"\b{n}\b", str(e)) for n in names)
        assert named, f"{op_name}: {e!r} names no argument"
        COUNTS["named error"] += 1
        COUNTS[f"op:{op_name}:named error"] += 1
        return
    outs, refs = flat(out), flat(run_ref())
    assert len(outs) == len(refs)
    for y, r in zip(outs, refs):
        assert y.shape == r.shape, f"{op_name}: shape {tuple(y.shape)} vs oracle {tuple(r.shape)}"
        bad, bad_ref = ~torch.isfinite(y), ~torch.isfinite(r)
        assert torch.equal(bad, bad_ref), (f"{op_name}: non-finite at {bad.nonzero()[:5].tolist()}, "
                                           f"oracle at {bad_ref.nonzero()[:5].tolist()}")
        if (~bad).any():
            y_ok, r_ok = y[~bad].to(torch.complex128 if y.is_complex() else F64), r[~bad_ref].to(y_ok_dtype(y))
            scale = max(1.0, r_ok.abs().max().item())
            err = (y_ok - r_ok).abs().max().item()
            assert err <= TOL[dtype] * scale, f"{op_name}: max error {err:.3g} (scale {scale:.3g})"
    COUNTS["matched"] += 1
    COUNTS[f"op:{op_name}:matched"] += 1


def flat(out):
    """A tensor or nested tuples of tensors (outputs and states) as one list."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def y_ok_dtype(y):
    return torch.complex128 if y.is_complex() else F64


def f64(kw):
    return {k: (v.to(F64) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}


sizes = st.integers(0, 3)
lengths = st.sampled_from([0, 1, 2, 3, 7, 16, 33])


@prop(40)
@given(data=st.data(), batch=sizes, L=lengths, dim=st.integers(1, 4), N=st.integers(1, 5),
       layout=st.sampled_from(["invariant", "shared", "grouped"]), options=st.integers(0, 31))
def test_selective_scan(data, batch, L, dim, N, layout, options):
    c = Case(data)
    backend = data.draw(st.sampled_from(["torch", "cpp"] if cpp_available() else ["torch"]), label="backend")
    G = data.draw(st.sampled_from([g for g in (1, 2, 4) if dim % g == 0]), label="G")
    bc = {"invariant": (dim, N), "shared": (batch, N, L), "grouped": (batch, G, N, L)}[layout]
    kw = dict(u=c.randn(batch, dim, L), delta=c.randn(batch, dim, L), A=-c.rand(dim, N, high=2.0),
              B=c.randn(*bc), C=c.randn(*bc), D=c.randn(dim) if options & 1 else None,
              z=c.randn(batch, dim, L) if options & 2 else None, delta_bias=c.randn(dim) if options & 4 else None,
              initial_state=c.randn(batch, dim, N) if options & 8 else None)
    softplus = bool(options & 16)
    if not softplus:
        kw["delta"] = kw["delta"].abs()
        if kw["delta_bias"] is not None:
            kw["delta_bias"] = kw["delta_bias"].abs()
    c.inject(kw, ["u", "delta", "B", "C", "z"])
    check(f"selective_scan[{backend}]",
          lambda: ops.selective_scan(**kw, delta_softplus=softplus, return_last_state=True, backend=backend),
          lambda: ops.selective_scan_ref(**f64(kw), delta_softplus=softplus, return_last_state=True), c.dtype)


def draw_seq_idx(data, g, batch, L):
    if not data.draw(st.booleans(), label="packed"):
        return None
    starts = torch.rand(batch, L, generator=g) < data.draw(st.sampled_from([0.05, 0.2, 0.5]), label="p_new")
    return starts.long().cumsum(1)


@prop(40)
@given(data=st.data(), batch=sizes, L=lengths, H=st.sampled_from([1, 2, 4]), P=st.integers(1, 3),
       N=st.integers(1, 4), chunk_size=st.integers(1, 40), options=st.integers(0, 15))
def test_ssd(data, batch, L, H, P, N, chunk_size, options):
    c = Case(data)
    G = data.draw(st.sampled_from([g for g in (1, 2, 4) if H % g == 0]), label="G")
    kw = dict(x=c.randn(batch, L, H, P), dt=c.randn(batch, L, H), A=-c.rand(H, high=2.0), B=c.randn(batch, L, G, N),
              C=c.randn(batch, L, G, N), D=c.randn(H) if options & 1 else None,
              z=c.randn(batch, L, H, P) if options & 2 else None, dt_bias=c.randn(H) if options & 4 else None,
              initial_states=c.randn(batch, H, P, N) if options & 8 else None,
              seq_idx=draw_seq_idx(data, c.g, batch, L))
    c.inject(kw, ["x", "dt", "B", "C", "z", "initial_states"])
    check("ssd", lambda: ops.ssd(**kw, chunk_size=chunk_size, dt_softplus=True, return_final_states=True,
                                 backend="torch"),
          lambda: ops.ssd_ref(**f64(kw), dt_softplus=True, return_final_states=True), c.dtype)


@prop(25)
@given(data=st.data(), batch=sizes, L=lengths, dim=st.integers(1, 4), W=st.integers(1, 5), options=st.integers(0, 7))
def test_causal_conv1d(data, batch, L, dim, W, options):
    c = Case(data)
    kw = dict(x=c.randn(batch, dim, L), weight=c.randn(dim, W), bias=c.randn(dim) if options & 1 else None,
              initial_state=c.randn(batch, dim, W - 1) if options & 2 else None)
    act = "silu" if options & 4 else None
    c.inject(kw, ["x", "initial_state"])
    check("causal_conv1d", lambda: ops.causal_conv1d(**kw, activation=act, return_final_state=True),
          lambda: ops.causal_conv1d_ref(**f64(kw), activation=act, return_final_state=True), c.dtype)


@prop(30)
@given(data=st.data(), batch=sizes, L=lengths, dim=st.integers(1, 4), bidirectional=st.booleans())
def test_fft_conv(data, batch, L, dim, bidirectional):
    c = Case(data)
    Lk = data.draw(st.integers(0, L), label="Lk")
    kw = dict(u=c.randn(batch, dim, L), k=c.randn(*((2,) if bidirectional else ()), dim, Lk))
    c.inject(kw, ["u", "k"])
    check("fft_conv", lambda: ops.fft_conv(**kw, bidirectional=bidirectional),
          lambda: ops.fft_conv_ref(**f64(kw), bidirectional=bidirectional), c.dtype)


@prop(30)
@given(data=st.data(), batch=sizes, S=lengths, NH=st.integers(1, 2), DH=st.integers(1, 4), DV=st.integers(1, 4),
       form=st.sampled_from(["chunkwise", "parallel"]), chunk_size=st.integers(1, 20), with_state=st.booleans())
def test_mlstm(data, batch, S, NH, DH, DV, form, chunk_size, with_state):
    c = Case(data)
    kw = dict(q=c.randn(batch, NH, S, DH), k=c.randn(batch, NH, S, DH), v=c.randn(batch, NH, S, DV),
              i=c.randn(batch, NH, S), f=c.randn(batch, NH, S, scale=2.0) + 2)
    state = (c.randn(batch, NH, DH, DV), c.randn(batch, NH, DH), c.randn(batch, NH)) if with_state else None
    value = c.inject(kw, ["q", "k", "v", "i"])  # f = -inf ("forget all") is a known limit of the parallel forms
    del value
    fn = ops.mlstm_parallel if form == "parallel" else lambda **a: ops.mlstm_chunkwise(**a, chunk_size=chunk_size)
    st64 = None if state is None else tuple(s.to(F64) for s in state)
    check(f"mlstm_{form}", lambda: fn(**kw, initial_state=state, return_final_state=True),
          lambda: ops.mlstm_ref(**f64(kw), initial_state=st64, return_final_state=True), c.dtype)


@prop(25)
@given(data=st.data(), batch=sizes, L=lengths, dim=st.integers(1, 3), N=st.integers(1, 4), softplus=st.booleans())
def test_selective_scan_states(data, batch, L, dim, N, softplus):
    c = Case(data)
    kw = dict(u=c.randn(batch, dim, L), delta=c.randn(batch, dim, L).abs(), A=-c.rand(dim, N, high=2.0),
              B=c.randn(batch, N, L))
    c.inject(kw, ["u", "delta", "B"])
    check("selective_scan_states", lambda: ops.selective_scan_states(**kw, delta_softplus=softplus),
          lambda: ops.selective_scan_states_ref(**f64(kw), delta_softplus=softplus), c.dtype)


@prop(20)
@given(data=st.data(), batch=sizes, L=lengths, H=st.sampled_from([1, 2]), P=st.integers(1, 3), N=st.integers(1, 4))
def test_ssd_noncausal(data, batch, L, H, P, N):
    c = Case(data)
    kw = dict(x=c.randn(batch, L, H, P), dt=c.randn(batch, L, H), A=-c.rand(H), B=c.randn(batch, L, 1, N),
              C=c.randn(batch, L, 1, N), D=c.randn(H))
    check("ssd_noncausal", lambda: ops.ssd_noncausal(**kw, dt_softplus=True),
          lambda: ops.ssd_noncausal_ref(**f64(kw), dt_softplus=True), c.dtype)


@prop(20)
@given(data=st.data(), H=st.integers(1, 3), N=st.sampled_from([2, 4]), L=lengths)
def test_ssm_kernels(data, H, N, L):
    c = Case(data, dtype=F64)  # the kernels are computed in complex fp64 / complex64 from these parameters
    dt = c.rand(H, low=1e-3, high=0.1)
    A = torch.complex(-c.rand(H, N, low=0.1, high=1.0), math.pi * c.randn(H, N))
    B, C = torch.complex(c.randn(H, N), c.randn(H, N)), torch.complex(c.randn(H, N), c.randn(H, N))
    check("s4d_kernel", lambda: ops.s4d_kernel(dt, A, B, C, L), lambda: ops.s4d_kernel_ref(dt, A, B, C, L), F64)
    a, b, cc = c.randn(H, N, scale=0.3), c.randn(H, N), c.randn(H, N)
    check("companion_kernel", lambda: ops.companion_kernel(a, b, cc, L),
          lambda: ops.companion_kernel_ref(a, b, cc, L), F64)
    check("companion_kernel_squaring", lambda: ops.companion_kernel_squaring(a, b, cc, L),
          lambda: ops.companion_kernel_ref(a, b, cc, L), F64)
    v = c.randn(2, H, N)  # the Krylov recurrences (cpp on CPU) against their dense oracles
    check("companion_krylov", lambda: krylov_ops.companion_krylov(a, v, L),
          lambda: krylov_ops.companion_krylov_ref(a, v, L), F64)
    check("closed_loop_krylov", lambda: krylov_ops.closed_loop_krylov(a, b, cc, v, L),
          lambda: krylov_ops.closed_loop_krylov_ref(a, b, cc, v, L), F64)


@prop(15)
@given(data=st.data(), H=st.integers(1, 2), N=st.sampled_from([2, 4]), L=lengths, rank=st.integers(1, 2))
def test_dplr_kernel(data, H, N, L, rank):
    c = Case(data, dtype=F64)
    dt = c.rand(H, low=1e-3, high=0.1)
    Lam = torch.complex(-c.rand(H, N // 2, low=0.1, high=1.0), math.pi * c.randn(H, N // 2))
    P = torch.complex(c.randn(rank, H, N // 2, scale=0.3), c.randn(rank, H, N // 2, scale=0.3))
    B, C = (torch.complex(c.randn(H, N // 2), c.randn(H, N // 2)) for _ in range(2))
    check("dplr_kernel", lambda: ops.dplr_kernel(dt, Lam, P, B, C, L), lambda: ops.dplr_kernel_ref(dt, Lam, P, B, C, L),
          torch.float32)  # the spectral (Cauchy + Woodbury) form vs the dense recurrence: agree to ~1e-6


@prop(20)
@given(data=st.data(), batch=sizes, L=st.sampled_from([0, 1, 2, 5]), V=st.sampled_from([0, 1, 3]),
       D=st.integers(1, 3), N=st.integers(1, 3), softplus=st.booleans())
def test_selective_scan_2d(data, batch, L, V, D, N, softplus):
    c = Case(data)
    kw = dict(u=c.randn(batch, L, V, D), delta1=c.randn(batch, L, V, D).abs(), delta2=c.randn(batch, L, V, D).abs(),
              A=-c.rand(2, D, N, low=0.1, high=2.0), couplings=c.rand(2, D, N, low=-1.0, high=1.0),
              B1=c.randn(batch, L, V, N), B2=c.randn(batch, L, V, N), C1=c.randn(batch, L, V, N),
              C2=c.randn(batch, L, V, N), D=c.randn(D), delta_bias=c.randn(2, D).abs())
    check("selective_scan_2d", lambda: ops.selective_scan_2d(**kw, delta_softplus=softplus),
          lambda: ops.selective_scan_2d_ref(**f64(kw), delta_softplus=softplus), c.dtype)


@prop(20)
@given(data=st.data(), batch=sizes, dim=st.integers(1, 4), N=st.integers(1, 4), W=st.integers(1, 4),
       grouped=st.booleans())
def test_one_step_updates(data, batch, dim, N, W, grouped):
    """The decoding steps against their oracles: selective_state_update, ssd_state_update, causal_conv1d_update."""
    c = Case(data)
    G = 1 if not grouped else data.draw(st.sampled_from([g for g in (1, 2, 4) if dim % g == 0]), label="G")
    kw = dict(state=c.randn(batch, dim, N), x=c.randn(batch, dim), dt=c.randn(batch, dim), A=-c.rand(dim, N),
              B=c.randn(batch, G, N) if grouped else c.randn(batch, N), C=c.randn(batch, G, N) if grouped else
              c.randn(batch, N), D=c.randn(dim), z=c.randn(batch, dim), dt_bias=c.randn(dim))
    c.inject(kw, ["x", "dt", "B", "C", "state"])
    check("selective_state_update", lambda: ops.selective_state_update(**kw, dt_softplus=True),
          lambda: ops.selective_state_update_ref(**f64(kw), dt_softplus=True), c.dtype)
    H, P = dim, 2
    kw = dict(state=c.randn(batch, H, P, N), x=c.randn(batch, H, P), dt=c.randn(batch, H), A=-c.rand(H),
              B=c.randn(batch, 1, N), C=c.randn(batch, 1, N), D=c.randn(H), dt_bias=c.randn(H))
    check("ssd_state_update", lambda: ops.ssd_state_update(**kw, dt_softplus=True),
          lambda: ops.ssd_state_update_ref(**f64(kw), dt_softplus=True), c.dtype)
    x, w, b, cs = c.randn(batch, dim), c.randn(dim, W), c.randn(dim), c.randn(batch, dim, W - 1)

    def conv_ref():  # a length-1 sequence from the window: (y (batch, dim), the new window)
        y, window = ops.causal_conv1d_ref(x.to(F64)[..., None], w.to(F64), b.to(F64), "silu", cs.to(F64), True)
        return y[..., 0], window

    check("causal_conv1d_update", lambda: ops.causal_conv1d_update(x, cs, w, b, "silu"), conv_ref, c.dtype)


@prop(15)
@given(data=st.data(), batch=sizes, dim=st.integers(1, 3), N=st.integers(1, 3), W=st.integers(1, 4),
       biases=st.booleans(), activation=st.sampled_from(["gelu", "hardswish", "relu"]))
def test_whole_mixer_steps(data, batch, dim, N, W, biases, activation):
    """The one-token steps of whole mixers (fused on CPU for inference) against their oracles: mamba_mixer_step,
    time_ssd_step, postnorm_ffn."""
    c = Case(data)
    dm, di, R = 3, 2 * dim, 2
    opt = (lambda *shape: c.randn(*shape)) if biases else (lambda *shape: None)
    kw = dict(x=c.randn(batch, dm), conv_state=c.randn(batch, di, W - 1), ssm_state=c.randn(batch, di, N),
              in_proj_weight=c.randn(2 * di, dm, scale=0.5), in_proj_bias=opt(2 * di), conv_weight=c.randn(di, W),
              conv_bias=opt(di), x_proj_weight=c.randn(R + 2 * N, di, scale=0.5), dt_proj_weight=c.randn(di, R),
              dt_proj_bias=c.randn(di), A_log=c.randn(di, N, scale=0.5), D=c.randn(di),
              out_proj_weight=c.randn(dm, di), out_proj_bias=opt(dm))
    c.inject(kw, ["x", "conv_state", "ssm_state"])
    check("mamba_mixer_step", lambda: ops.mamba_mixer_step(**kw), lambda: ops.mamba_mixer_step_ref(**f64(kw)),
          c.dtype)
    H, P, cd = dim, 2, 2 * dim + 2 * N
    w = dict(in_proj_weight=c.randn(2 * H * P + 2 * N + H, dm, scale=0.5), conv_weight=c.randn(cd, W),
             conv_bias=c.randn(cd), mlp1_weight=c.randn(H, H), mlp1_bias=c.randn(H), mlp2_weight=c.randn(H, H),
             mlp2_bias=c.randn(H), time_conv1_weight=c.randn(H, W), time_conv1_bias=c.randn(H),
             time_conv2_weight=c.randn(H, W), time_conv2_bias=c.randn(H), gate_weight=c.randn(H, H),
             gate_bias=c.randn(H), dt_bias=c.randn(H), A_log=c.randn(H, scale=0.5), D=c.randn(H),
             norm_weight=c.randn(H * P), out_proj_weight=c.randn(dm, H * P))
    kw = dict(x=c.randn(batch, dm), T=c.rand(batch, H, high=3.0), conv_state=c.randn(batch, cd, W - 1),
              time1_state=c.randn(batch, H, W - 1), time2_state=c.randn(batch, H, W - 1),
              ssm_state=c.randn(batch, H, P, N), **w)
    c.inject(kw, ["x", "T", "conv_state", "ssm_state"])
    check("time_ssd_step", lambda: ops.time_ssd_step(**kw, norm_eps=1e-5),
          lambda: ops.time_ssd_step_ref(**f64(kw), norm_eps=1e-5), c.dtype)
    kw = dict(y=c.randn(batch, 2, dm), x=opt(batch, 2, dm), norm1_weight=c.randn(dm), norm1_bias=c.randn(dm),
              w1=c.randn(5, dm), b1=c.randn(5), w2=c.randn(dm, 5), b2=c.randn(dm), norm2_weight=c.randn(dm),
              norm2_bias=c.randn(dm))
    c.inject(kw, ["y", "x"])
    check("postnorm_ffn", lambda: ops.postnorm_ffn(**kw, activation=activation),
          lambda: ops.postnorm_ffn_ref(**f64(kw), activation=activation), c.dtype)


@prop(20)
@given(data=st.data(), batch=sizes, T=st.sampled_from([0, 1, 2, 5, 9]), P=st.integers(1, 3),
       with_state=st.booleans())
def test_convssm_scan(data, batch, T, P, with_state):
    c = Case(data)
    Lam, Bu = c.rand(P, low=0.1, high=0.99), c.randn(batch, T, 2, 2, P)
    h0 = c.randn(batch, 2, 2, P) if with_state else None
    check("convssm_scan", lambda: ops.convssm_scan(Lam, Bu, h0),
          lambda: ops.convssm_scan_ref(Lam.to(F64), Bu.to(F64), None if h0 is None else h0.to(F64)), c.dtype)


# ------------------------------------------------------------------------------------------- corrupted inputs

def corrupt(data, g, kw, names):
    """Spoil one argument: one axis one longer, one axis missing, or an integer dtype."""
    name = data.draw(st.sampled_from([n for n in names if kw.get(n) is not None]), label="spoil")
    t = kw[name]
    how = data.draw(st.sampled_from(["size", "rank", "dtype"]), label="how")
    if how == "size":
        axis = data.draw(st.integers(0, t.dim() - 1), label="axis")
        shape = list(t.shape)
        shape[axis] += 1
        kw[name] = torch.randn(*shape, generator=g, dtype=t.dtype)
    elif how == "rank":
        kw[name] = t.sum(0) if t.dim() > 1 else t.unsqueeze(0).unsqueeze(0)
    else:
        kw[name] = t.long()


@prop(60)
@given(data=st.data(), op=st.sampled_from(["selective_scan", "ssd", "causal_conv1d", "fft_conv", "mlstm_chunkwise",
                                           "mamba_mixer_step"]),
       batch=st.integers(1, 2), L=st.integers(1, 9))
def test_corrupted_argument_gives_a_named_error_or_the_oracle(data, op, batch, L):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 31 - 1), label="seed"))
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if op == "selective_scan":
        kw = dict(u=r(batch, 3, L), delta=r(batch, 3, L).abs(), A=-r(3, 4).abs(), B=r(batch, 4, L), C=r(batch, 4, L),
                  D=r(3), z=r(batch, 3, L), delta_bias=r(3))
        run, ref = ops.selective_scan, ops.selective_scan_ref
    elif op == "ssd":
        kw = dict(x=r(batch, L, 2, 3), dt=r(batch, L, 2), A=-r(2).abs(), B=r(batch, L, 1, 4), C=r(batch, L, 1, 4),
                  D=r(2), z=r(batch, L, 2, 3), dt_bias=r(2), initial_states=r(batch, 2, 3, 4), dt_softplus=True)
        run, ref = (lambda **a: ops.ssd(**a, chunk_size=4)), ops.ssd_ref
    elif op == "causal_conv1d":
        kw = dict(x=r(batch, 3, L), weight=r(3, 4), bias=r(3), initial_state=r(batch, 3, 3))
        run, ref = ops.causal_conv1d, ops.causal_conv1d_ref
    elif op == "fft_conv":
        kw = dict(u=r(batch, 3, L), k=r(3, L))
        run, ref = ops.fft_conv, ops.fft_conv_ref
    elif op == "mamba_mixer_step":  # its fused kernel refuses a spoilt call; the named checks then say why
        kw = dict(x=r(batch, 3), conv_state=r(batch, 4, 2), ssm_state=r(batch, 4, 2), in_proj_weight=r(8, 3),
                  in_proj_bias=r(8), conv_weight=r(4, 3), conv_bias=r(4), x_proj_weight=r(5, 4), dt_proj_weight=r(4, 1),
                  dt_proj_bias=r(4), A_log=r(4, 2), D=r(4), out_proj_weight=r(3, 4), out_proj_bias=r(3))
        run, ref = ops.mamba_mixer_step, ops.mamba_mixer_step_ref
    else:
        kw = dict(q=r(batch, 2, L, 3), k=r(batch, 2, L, 3), v=r(batch, 2, L, 4), i=r(batch, 2, L), f=r(batch, 2, L))
        run, ref = (lambda **a: ops.mlstm_chunkwise(**a, chunk_size=4)), ops.mlstm_ref
    corrupt(data, g, kw, [n for n, t in kw.items() if isinstance(t, torch.Tensor)])
    # Most spoils are invalid (a named error); some stay valid (u one batch longer for fft_conv): then the oracle.
    check(op, lambda: run(**kw), lambda: ref(**f64(kw)), torch.float32, names=list(kw))
