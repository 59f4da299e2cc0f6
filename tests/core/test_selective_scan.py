"""selective_scan: the chunked fast path and the public dispatch against `selective_scan_ref` (and the ref
against an explicit per-element loop), outputs and gradients of every input, every B/C layout, options,
continuation, gradcheck, bad input and NaN propagation."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from ssmkit import kernels
from ssmkit.core.ops import selective_scan, selective_scan_ref
from ssmkit.core.ops.selective_scan import _scan_torch

F64 = torch.float64
LAYOUTS = ("dim", "bnl", "g1", "g2")  # B/C as (dim, N), (batch, N, L), (batch, 1, N, L), (batch, 2, N, L)
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(batch=2, dim=4, N=3, L=7, layout="bnl", dtype=F64, z=True, D=True, bias=True, h0=True, seed=0):
    """Mamba-like inputs (A = -0.5 rand - 0.1, delta = 0.5 rand): a dict of leaf tensors that require grad."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    shapes = {"dim": (dim, N), "bnl": (batch, N, L), "g1": (batch, 1, N, L), "g2": (batch, 2, N, L)}
    t = dict(u=r(batch, dim, L), delta=0.5 * torch.rand(batch, dim, L, generator=g, dtype=F64),
             A=-0.5 * torch.rand(dim, N, generator=g, dtype=F64) - 0.1, B=r(*shapes[layout]), C=r(*shapes[layout]))
    if D:
        t["D"] = r(dim)
    if z:
        t["z"] = r(batch, dim, L)
    if bias:
        t["delta_bias"] = 0.5 * torch.rand(dim, generator=g, dtype=F64)
    if h0:
        t["initial_state"] = r(batch, dim, N)
    return {k: v.to(dtype).requires_grad_(True) for k, v in t.items()}


def rel(a, b):
    """Norm-wise relative error ||a - b|| / ||b|| in fp64."""
    a, b = a.detach().to(F64), b.detach().to(F64)
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def outputs_and_grads(fn, inp, softplus, seed=1, **kwargs):
    """y, last_state and the gradients of every input under random upstream gradients of both outputs."""
    y, h = fn(**inp, delta_softplus=softplus, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=F64).to(y.dtype)
    gh = torch.randn(h.shape, generator=g, dtype=F64).to(h.dtype)
    grads = torch.autograd.grad((y, h), list(inp.values()), (gy, gh))
    return y, h, dict(zip(inp, grads))


def assert_matches_ref(fn, inp, softplus, tol, **kwargs):
    ref_inp = {k: v.detach().to(F64).requires_grad_(True) for k, v in inp.items()}
    y_ref, h_ref, g_ref = outputs_and_grads(selective_scan_ref, ref_inp, softplus)
    y, h, grads = outputs_and_grads(fn, inp, softplus, **kwargs)
    assert y.dtype == inp["u"].dtype and h.dtype == inp["u"].dtype
    assert y.shape == y_ref.shape and h.shape == h_ref.shape
    assert rel(y, y_ref) < tol, rel(y, y_ref)
    assert rel(h, h_ref) < tol, rel(h, h_ref)
    for name in inp:
        assert grads[name].shape == inp[name].shape, name
        assert rel(grads[name], g_ref[name]) < tol, (name, rel(grads[name], g_ref[name]))


# --- the oracle itself -------------------------------------------------------------------------------------

def naive_scan(u, delta, A, B, C, D, z, delta_bias, softplus, h0):
    """Scalar loops over batch, channel, time and state: the issue's equations written out, group by d // (dim/G)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    y = torch.zeros(batch, dim, L, dtype=F64)
    last = torch.zeros(batch, dim, N, dtype=F64)
    for b in range(batch):
        for d in range(dim):
            h = [float(h0[b, d, n]) for n in range(N)]
            for t in range(L):
                dt = float(delta[b, d, t]) + float(delta_bias[d])
                dt = float(F.softplus(torch.tensor(dt, dtype=F64))) if softplus else dt
                acc = 0.0
                for n in range(N):
                    if B.dim() == 2:
                        Bv, Cv = float(B[d, n]), float(C[d, n])
                    elif B.dim() == 3:
                        Bv, Cv = float(B[b, n, t]), float(C[b, n, t])
                    else:
                        grp = d // (dim // B.shape[1])
                        Bv, Cv = float(B[b, grp, n, t]), float(C[b, grp, n, t])
                    decay = torch.exp(torch.tensor(dt * float(A[d, n]), dtype=F64)).item()
                    h[n] = decay * h[n] + dt * Bv * float(u[b, d, t])
                    acc += Cv * h[n]
                acc += float(D[d]) * float(u[b, d, t])
                zz = float(z[b, d, t])
                y[b, d, t] = acc * zz / (1 + torch.exp(torch.tensor(-zz, dtype=F64)).item())
            last[b, d] = torch.tensor(h, dtype=F64)
    return y, last


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ref_equals_scalar_loop(layout):
    inp = {k: v.detach() for k, v in make_inputs(dim=4, N=2, L=5, layout=layout).items()}
    y, h = selective_scan_ref(**inp, delta_softplus=True, return_last_state=True)
    y_n, h_n = naive_scan(**{k: inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")},
                          softplus=True, h0=inp["initial_state"])
    assert torch.allclose(y, y_n, rtol=1e-12, atol=1e-12)
    assert torch.allclose(h, h_n, rtol=1e-12, atol=1e-12)


def test_ref_known_values_without_decay():
    """A = 0, delta = 1: h is the running sum of B u, y_t = C . h_t."""
    u = torch.arange(1.0, 6.0, dtype=F64).view(1, 1, 5)
    B = torch.tensor([[1.0, 2.0]], dtype=F64)
    C = torch.tensor([[1.0, -1.0]], dtype=F64)
    y, h = selective_scan_ref(u, torch.ones_like(u), torch.zeros(1, 2, dtype=F64), B, C, return_last_state=True)
    assert torch.equal(y, -torch.tensor([[[1.0, 3.0, 6.0, 10.0, 15.0]]], dtype=F64))
    assert torch.equal(h, torch.tensor([[[15.0, 30.0]]], dtype=F64))


# --- fast path and public function against the oracle --------------------------------------------------------

OPTIONS = [dict(z=True, D=True, bias=True, h0=True, softplus=True),
           dict(z=False, D=False, bias=False, h0=False, softplus=False)]


@pytest.mark.parametrize("layout,opts", list(itertools.product(LAYOUTS, OPTIONS)))
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-10), (torch.float32, 1e-5)])
def test_public_scan_matches_ref_all_layouts(layout, opts, dtype, tol):
    opts = dict(opts)
    softplus = opts.pop("softplus")
    inp = make_inputs(batch=2, dim=4, N=3, L=70, layout=layout, dtype=dtype, **opts)
    assert_matches_ref(selective_scan, inp, softplus, tol, backend="torch")


@pytest.mark.parametrize("opts", [dict(z=True, D=False, bias=True, softplus=False),
                                  dict(z=False, D=True, bias=False, softplus=True),
                                  dict(z=False, D=True, bias=True, softplus=True)])
def test_mixed_options_match_ref(opts):
    opts = dict(opts)
    softplus = opts.pop("softplus")
    inp = make_inputs(L=19, layout="g2", **opts)
    assert_matches_ref(selective_scan, inp, softplus, 1e-10, backend="torch")


@pytest.mark.parametrize("L,chunk", [(1, 64), (1, 3), (7, 3), (7, 64), (64, 64), (64, 5), (129, 64), (129, 50),
                                     (129, 200), (1000, 64), (1000, 96)])
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-10), (torch.float32, 1e-5)])
def test_fast_path_lengths_and_chunks(L, chunk, dtype, tol):
    inp = make_inputs(batch=1, dim=2, N=3, L=L, layout="g2", dtype=dtype)
    assert_matches_ref(_scan_torch, inp, True, tol, chunk_size=chunk)


def test_medium_shape_fp32():
    inp = make_inputs(batch=2, dim=16, N=8, L=300, layout="bnl", dtype=torch.float32, seed=3)
    assert_matches_ref(selective_scan, inp, True, 1e-5, backend="torch")


def test_returns_y_alone_and_keeps_dtypes():
    inp = {k: v.detach() for k, v in make_inputs(dtype=torch.float32).items()}
    y = selective_scan(**inp, backend="torch")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    half = {k: v.to(torch.bfloat16) for k, v in inp.items()}
    y_h, h_h = selective_scan(**half, return_last_state=True, backend="torch")
    assert y_h.dtype == torch.bfloat16 and h_h.dtype == torch.float32
    y_ref = selective_scan_ref(**{k: v.to(F64) for k, v in half.items()})
    assert rel(y_h, y_ref) < 1e-2


def test_gradient_flows_only_through_last_state():
    """With y unused, every input still gets its gradient through last_state."""
    inp = make_inputs(L=11)
    ref_inp = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    (_, h) = _scan_torch(**inp, delta_softplus=True, return_last_state=True, chunk_size=4)
    (_, h_ref) = selective_scan_ref(**ref_inp, delta_softplus=True, return_last_state=True)
    gh = torch.randn_like(h)
    grads = torch.autograd.grad(h, list(inp.values()), gh, allow_unused=True)
    grads_ref = torch.autograd.grad(h_ref, list(ref_inp.values()), gh, allow_unused=True)
    for name, g, g_ref in zip(inp, grads, grads_ref):
        if g_ref is None:  # D and z do not reach the state
            assert g is None or torch.count_nonzero(g) == 0, name
        else:
            assert rel(g, g_ref) < 1e-10, name


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("layout", ["dim", "g2"])
@pytest.mark.parametrize("split", [1, 5, 13])
def test_continuation_with_initial_state(layout, split, backend):
    inp = {k: v.detach() for k, v in make_inputs(batch=2, dim=4, N=3, L=14, layout=layout, h0=False).items()}

    def part(sl):
        out = dict(inp)
        for k in ("u", "delta", "z"):
            out[k] = inp[k][..., sl]
        if layout != "dim":
            out["B"], out["C"] = inp["B"][..., sl], inp["C"][..., sl]
        return out

    kw = dict(delta_softplus=True, return_last_state=True, backend=backend)
    y, h = selective_scan(**inp, **kw)
    y1, h1 = selective_scan(**part(slice(0, split)), **kw)
    y2, h2 = selective_scan(**part(slice(split, None)), initial_state=h1, **kw)
    assert torch.allclose(torch.cat([y1, y2], -1), y, rtol=1e-12, atol=1e-12)
    assert torch.allclose(h2, h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L,chunk,layout", [(1, 64, "bnl"), (7, 3, "g2"), (5, 2, "dim"), (6, 4, "g1")])
def test_gradcheck_fast_path(L, chunk, layout):
    inp = make_inputs(batch=2, dim=2, N=2, L=L, layout=layout, seed=L)
    names = list(inp)

    def f(*tensors):
        return _scan_torch(**dict(zip(names, tensors)), delta_softplus=True, return_last_state=True,
                           chunk_size=chunk)

    assert torch.autograd.gradcheck(f, tuple(inp.values()), eps=1e-6, atol=1e-8, rtol=1e-6)


# --- bad input -----------------------------------------------------------------------------------------------

def _ok():
    return {k: v.detach() for k, v in make_inputs(batch=2, dim=4, N=3, L=5, layout="bnl").items()}


BAD = [
    ("u", lambda t: t["u"][0], ValueError, ["u", "(batch, dim, L)"]),
    ("delta", lambda t: t["delta"][..., :4], ValueError, ["delta", "(batch, dim, L)", "(2, 4, 5)"]),
    ("A", lambda t: t["A"][:3], ValueError, ["A", "(dim, N)"]),
    ("B", lambda t: t["B"][:, :2], ValueError, ["B", "(batch, N, L)"]),
    ("C", lambda t: t["C"][None, None], ValueError, ["C", "(dim, N), (batch, N, L) or (batch, G, N, L)"]),
    ("D", lambda t: t["D"][:2], ValueError, ["D", "(dim)", "(2,)"]),
    ("z", lambda t: t["z"][:1], ValueError, ["z", "(batch, dim, L)"]),
    ("delta_bias", lambda t: t["delta_bias"][None], ValueError, ["delta_bias", "(dim)"]),
    ("initial_state", lambda t: t["initial_state"][..., :2], ValueError, ["initial_state", "(batch, dim, N)"]),
    ("u", lambda t: t["u"].long(), TypeError, ["u", "floating-point", "torch.int64"]),
    ("delta", lambda t: t["delta"].int(), TypeError, ["delta", "floating-point"]),
    ("B", lambda t: t["B"].tolist(), TypeError, ["B", "torch.Tensor", "list"]),
]


@pytest.mark.parametrize("name,corrupt,exc,words", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_argument_and_shape(name, corrupt, exc, words):
    t = _ok()
    t[name] = corrupt(t)
    with pytest.raises(exc) as info:
        selective_scan(**t)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_bad_groups():
    t = _ok()
    t["B"] = torch.randn(2, 3, 3, 5, dtype=F64)
    t["C"] = torch.randn(2, 3, 3, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"B has 3 groups, which must divide dim=4"):
        selective_scan(**t)
    t["B"] = torch.randn(2, 2, 3, 5, dtype=F64)
    t["C"] = torch.randn(2, 1, 3, 5, dtype=F64)
    with pytest.raises(ValueError, match="same number of groups"):
        selective_scan(**t)


@pytest.mark.parametrize("name", ["A", "C", "initial_state"])
def test_mixed_devices(name):
    t = _ok()
    t[name] = t[name].to("meta")
    with pytest.raises(ValueError, match=rf"one device.*{name} on meta"):
        selective_scan(**t)


def test_backends_unknown_and_missing():
    t = _ok()
    with pytest.raises(ValueError, match=r"backend must be .*'cpp'.*got 'fastest'"):
        selective_scan(**t, backend="fastest")
    no_h0 = {k: v for k, v in t.items() if k != "initial_state"}
    for name in ("triton", "mamba_ssm"):  # both need CUDA tensors (triton also runs under its CPU interpreter)
        try:
            kernels.load(name, "selective_scan", torch.device("cpu"))
        except kernels.BackendUnavailable:
            with pytest.raises(kernels.BackendUnavailable, match=rf"{name} backend .*CUDA"):
                selective_scan(**no_h0, backend=name)
    with pytest.raises(kernels.BackendUnavailable, match="initial_state|CUDA"):  # on CPU it cannot run at all
        selective_scan(**t, backend="mamba_ssm")


@pytest.mark.parametrize("fn", [selective_scan_ref, lambda **k: _scan_torch(**k, chunk_size=3)])
@pytest.mark.parametrize("where", ["u", "delta", "B"])
def test_nan_propagates(fn, where):
    """A NaN at time 4 reaches every later output it feeds (across chunk boundaries) and nothing earlier."""
    t = {k: v.detach().clone() for k, v in make_inputs(batch=2, dim=4, N=3, L=10, layout="bnl").items()}
    if where == "B":
        t["B"][0, 1, 4] = float("nan")
    else:
        t[where][0, 2, 4] = float("nan")
    y, h = fn(**t, delta_softplus=True, return_last_state=True)
    channels = slice(None) if where == "B" else slice(2, 3)
    states = slice(1, 2) if where == "B" else slice(None)  # a NaN in B[n] reaches state n only
    assert torch.isnan(y[0, channels, 4:]).all() and torch.isnan(h[0, channels, states]).all()
    assert not torch.isnan(y[0, :, :4]).any() and not torch.isnan(y[1]).any()
    if where != "B":
        assert not torch.isnan(y[0, [0, 1, 3]]).any()
