"""The mixer contract (ssmkit.core.layers.contract) for every mixer that `ssmkit.core.layers` exports.

Mixers are discovered from `__all__`; each needs one entry in SPECS (a small constructor and an input shape), so
a newly exported mixer fails here until it has one. Checked: shapes, the dtype policy (output in the input's
dtype, fp32 states, fp64 end to end), step == forward, pieces == whole, the state type, named shape errors.
"""
from typing import NamedTuple, Optional, Tuple

import pytest
import torch
import torch.nn as nn

import ssmkit.core.layers as layers



class Spec(NamedTuple):
    kwargs: dict                            # constructor arguments of a small instance
    shape: Tuple[int, ...]                  # input shape, batch first, time second for recurrent mixers
    arg: str = "x"                          # name of forward's input in error messages
    bf16: Optional[str] = None              # why bf16 is not supported (None: it is)


COMPLEX = "complex parameters (real views) and FFTs: bf16 has no complex type"
SPECS = {
    "Mamba": Spec(dict(d_model=8, d_state=4), (2, 11, 8)),
    "Mamba2": Spec(dict(d_model=16, d_state=8, headdim=8, chunk_size=4), (2, 11, 16)),
    "S4": Spec(dict(d_model=6, d_state=8), (2, 11, 6), bf16=COMPLEX),
    "S4D": Spec(dict(d_model=6, d_state=8), (2, 11, 6), bf16=COMPLEX),
    "mLSTM": Spec(dict(d_model=16, num_heads=2, chunk_size=4), (2, 11, 16)),
    "sLSTM": Spec(dict(d_model=16, num_heads=2), (2, 11, 16)),
    "CompanionSSM": Spec(dict(d_model=6, kernel_dim=4, n_kernels=3, skip_connection=True), (2, 11, 6),
                         bf16=COMPLEX),
    "ClosedLoopCompanionSSM": Spec(dict(d_model=6, kernel_dim=4), (2, 11, 6), bf16=COMPLEX),
    "ConvS5": Spec(dict(d_model=4, d_state=4), (2, 7, 3, 4, 4), bf16=COMPLEX),
    "Hyena": Spec(dict(d_model=8, l_max=16, filter_order=8), (2, 11, 8), bf16=COMPLEX),
    "BiMamba": Spec(dict(d_model=8, d_state=4), (2, 11, 8)),
    "Hydra": Spec(dict(d_model=16, d_state=8, headdim=8, chunk_size=4), (2, 11, 16), arg="u"),
    "SS2D": Spec(dict(d_model=8, d_state=4), (2, 3, 4, 8)),
    "StructureAwareSSM": Spec(dict(d_model=8, d_state=2), (2, 3, 4, 8)),
    "Chimera2DSSM": Spec(dict(d_model=8, d_state=4), (2, 5, 3, 8)),
    "MultiHeadScan": Spec(dict(d_model=8, num_heads=2, d_state=4), (2, 3, 4, 8)),
}

MIXERS = sorted(name for name in layers.__all__
                if isinstance(getattr(layers, name), type) and issubclass(getattr(layers, name), nn.Module))
RECURRENT = [n for n in MIXERS if hasattr(getattr(layers, n), "step")]
STATELESS = [n for n in MIXERS if n not in RECURRENT]
print(f"mixer contract: {len(MIXERS)} mixers exported by ssmkit.core.layers: recurrent {RECURRENT}, "
      f"not recurrent {STATELESS}")


def _build(name, dtype=torch.float32, seed=0):
    if name not in SPECS:
        pytest.fail(f"{name} is exported by ssmkit.core.layers but has no entry in SPECS: add its constructor")
    spec = SPECS[name]
    torch.manual_seed(seed)
    mixer = getattr(layers, name)(**spec.kwargs).to(dtype)
    with torch.no_grad():  # move every parameter off its structured init (zeros, ones) so nothing cancels
        for p in mixer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(spec.shape, dtype=dtype)
    return mixer.eval(), x, spec


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _check_state(state, mixer, work):
    """One NamedTuple type; recurrent fields in the work dtype (complex for complex states); conv windows hold
    inputs in the module's dtype."""
    assert isinstance(state, tuple) and hasattr(state, "_fields"), f"state must be a NamedTuple, got {type(state)}"
    complex_work = torch.complex128 if work == torch.float64 else torch.complex64
    for field, t in zip(state._fields, state):
        assert isinstance(t, torch.Tensor), field
        if field == "conv":
            continue
        assert t.dtype in (work, complex_work), f"state field {field} has dtype {t.dtype}, want {work}"


def test_every_exported_mixer_has_a_spec():
    print("found:", ", ".join(MIXERS))
    assert len(MIXERS) >= 16
    assert set(MIXERS) == set(SPECS), (f"no SPECS entry for {sorted(set(MIXERS) - set(SPECS))}; "
                                       f"SPECS entries not exported: {sorted(set(SPECS) - set(MIXERS))}")


@pytest.mark.parametrize("name", MIXERS)
def test_shapes_dtypes_and_fp64(name):
    mixer, x, spec = _build(name)
    with torch.no_grad():
        y32 = mixer(x)
        assert y32.shape == x.shape and y32.dtype == torch.float32 and torch.isfinite(y32).all()
        y64 = mixer.double()(x.double())
    assert y64.dtype == torch.float64 and torch.isfinite(y64).all()
    assert _rel(y32.double(), y64) < 1e-4                                    # fp64 computes the same function
    if spec.bf16 is None:
        with torch.no_grad():
            y16 = mixer.to(torch.bfloat16)(x.to(torch.bfloat16))
        assert y16.dtype == torch.bfloat16 and y16.shape == x.shape
        assert _rel(y16.double(), y64) < 0.1


@pytest.mark.parametrize("name", RECURRENT)
def test_step_equals_forward_and_pieces_equal_whole(name, step_through, in_pieces):
    mixer, x, _ = _build(name, torch.float64)
    L = x.shape[1]
    with torch.no_grad():
        y, final = mixer(x, return_state=True)
        assert torch.equal(mixer(x), y)
        y_steps, stepped = step_through(mixer, x)
        y_pieces, carried = in_pieces(mixer, x, [3, 4, L - 1])
    assert _rel(y_steps, y) < 1e-9 and _rel(y_pieces, y) < 1e-9
    assert type(final) is type(stepped) is type(carried) is type(mixer.initial_state(*x.shape[:1], *x.shape[2:-1]))
    for field, a, b, c in zip(final._fields, final, stepped, carried):
        assert _rel(b, a) < 1e-9 and _rel(c, a) < 1e-9, field
    _check_state(final, mixer, torch.float64)


@pytest.mark.parametrize("name", RECURRENT)
def test_state_dtypes(name, step_through):
    mixer, x, spec = _build(name)
    with torch.no_grad():
        _, state = mixer(x, return_state=True)
        _check_state(state, mixer, torch.float32)
        if spec.bf16 is None:
            mixer = mixer.to(torch.bfloat16)
            y, state = mixer(x.to(torch.bfloat16), return_state=True)
            _check_state(state, mixer, torch.float32)
            y_t, state = mixer.step(x[:, 0].to(torch.bfloat16), state)
            assert y.dtype == y_t.dtype == torch.bfloat16
            _check_state(state, mixer, torch.float32)


@pytest.mark.parametrize("name", MIXERS)
def test_bad_shapes_name_the_argument(name):
    mixer, x, spec = _build(name)
    bad = x[..., :-1]
    with pytest.raises(ValueError, match=rf"{spec.arg} must have shape"):
        mixer(bad)
    if name in RECURRENT:
        state = mixer.initial_state(x.shape[0], *x.shape[2:-1])
        with pytest.raises(ValueError, match=r"x_t must have shape"):
            mixer.step(bad[:, 0], state)


@pytest.mark.parametrize("name", STATELESS)
def test_mixers_without_state_reject_one(name):
    mixer, x, _ = _build(name)
    with pytest.raises(ValueError, match="is not recurrent"):
        mixer(x, return_state=True)
    with pytest.raises(ValueError, match="is not recurrent"):
        mixer(x, state=(torch.zeros(1),))


KEEP_FP32 = {"Mamba": {"A_log", "D"}, "BiMamba": {"A_log", "D", "A_b_log", "D_b"}, "Mamba2": {"D"}, "Hydra": {"D"}}


@pytest.mark.parametrize("name", MIXERS)
def test_device_and_dtype_factory_keywords(name):
    kwargs = SPECS[name].kwargs if name in SPECS else pytest.fail(f"no SPECS entry for {name}")
    torch.manual_seed(0)
    plain = getattr(layers, name)(**kwargs)
    torch.manual_seed(0)
    made = getattr(layers, name)(**kwargs, device="cpu", dtype=torch.float64)
    for (key, p), q in zip(made.named_parameters(), plain.parameters()):
        want = torch.float32 if key in KEEP_FP32.get(name, ()) else torch.float64
        assert p.dtype == want and p.device.type == "cpu", key
        assert torch.equal(p.double(), q.double()), key  # the same initial values, drawn on the CPU in fp32
    meta = getattr(layers, name)(**kwargs, device="meta")
    assert all(p.is_meta for p in meta.parameters())
