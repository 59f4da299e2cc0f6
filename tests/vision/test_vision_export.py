"""Deployment of every tiny and test_* preset: TorchScript (script, save, load), torch.export with a static and a
dynamic batch, torch.compile(fullgraph=True) and ONNX through onnxruntime agree with eager within 1e-4; the
scan custom ops and their ONNX decompositions agree with the fp64 reference loops; VSSD is exact in fp64."""
import pytest
import timm
import torch

import ssmkit.vision  # noqa: F401
from ssmkit import export as ex
from ssmkit.core.ops import selective_scan_ref, selective_scan_states_ref, ssd_noncausal_ref
from ssmkit.core.ops.custom_ops import DECOMPOSITIONS, scan_states_chunked

TEST_PRESETS = [("test_vim", dict(img_size=32, patch_size=8)), ("test_vssd", {}), ("test_spatialmamba", {})]
TINY_PRESETS = [("vim_tiny_patch16_224", dict(img_size=32)), ("vim_tiny_patch16_stride8_224", dict(img_size=32)),
                ("vssd_micro", {}), ("vssd_tiny", {}), ("spatialmamba_tiny", {})]
SIZE = 32
TOL = 1e-4


def _model(name, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong branch cannot hide behind an init value
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _x(batch=2):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))


def _close(got, ref):
    err = float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    assert err <= TOL, f"relative error {err:.2e} > {TOL}"


def _rand(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_custom_ops_and_their_decompositions_equal_the_reference_loops():
    g = torch.Generator().manual_seed(0)
    b, d, L, N = 2, 6, 150, 4  # 150 steps: three chunks of the closed form, the last one short
    u, delta, z = (_rand(b, d, L, gen=g) for _ in range(3))
    A = -3 * torch.rand(d, N, generator=g, dtype=torch.float64)
    B, C = _rand(b, N, L, gen=g), _rand(b, N, L, gen=g)
    D, bias = _rand(d, gen=g), _rand(d, gen=g)
    y_ref = selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    torch.testing.assert_close(torch.ops.ssmkit.selective_scan(u, delta, A, B, C, D, z, bias, True), y_ref)
    torch.testing.assert_close(DECOMPOSITIONS[torch.ops.ssmkit.selective_scan.default](u, delta, A, B, C, D, z,
                                                                                         bias, True), y_ref)
    h_ref = selective_scan_states_ref(u, delta, A, B, bias, True)
    torch.testing.assert_close(torch.ops.ssmkit.selective_scan_states(u, delta, A, B, bias, True), h_ref)
    torch.testing.assert_close(scan_states_chunked(u, delta, A, B, bias, True, chunk_size=7), h_ref)
    Bg = _rand(b, 2, N, L, gen=g)  # grouped B: channel k reads group k // 3
    torch.testing.assert_close(scan_states_chunked(u, delta, A, Bg, None, False),
                               selective_scan_states_ref(u, delta, A, Bg))
    x, dt = _rand(b, 40, 3, 5, gen=g), _rand(b, 40, 3, gen=g)
    A3, Bs, Cs, D3, b3 = torch.rand(3, generator=g, dtype=torch.float64), _rand(b, 40, 1, 4, gen=g), \
        _rand(b, 40, 1, 4, gen=g), _rand(3, gen=g), _rand(3, gen=g)
    y_ref = ssd_noncausal_ref(x, dt, A3, Bs, Cs, D3, b3, True)
    torch.testing.assert_close(torch.ops.ssmkit.ssd_noncausal(x, dt, A3, Bs, Cs, D3, b3, True), y_ref)
    torch.testing.assert_close(DECOMPOSITIONS[torch.ops.ssmkit.ssd_noncausal.default](x, dt, A3, Bs, Cs, D3, b3,
                                                                                        True), y_ref)


def test_vssd_mixer_is_exact_in_fp64():
    """exp(A_log) is taken in the input's precision: an fp64 NC-SSD equals the fp64 reference to 1e-12
    (with exp in fp32 it was off by ~1e-7)."""
    from ssmkit.vision.models.vssd import NonCausalSSD

    torch.manual_seed(0)
    m = NonCausalSSD(8, num_heads=2, d_state=4).double()
    u = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    Bsz, H, W = 2, 3, 5
    z, xBC, dt = m.in_proj(u).split([m.d_inner, m.d_inner + 2 * m.d_state, m.nheads], dim=-1)
    xBC = torch.nn.functional.silu(m.conv2d(xBC.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).reshape(Bsz, H * W, -1)
    x, Bm, Cm = xBC.split([m.d_inner, m.d_state, m.d_state], dim=-1)
    y = ssd_noncausal_ref(x.unflatten(-1, (m.nheads, m.headdim)), dt.reshape(Bsz, H * W, m.nheads),
                          torch.exp(m.A_log), Bm.unsqueeze(2), Cm.unsqueeze(2), m.D, m.dt_bias, True)
    expected = m.out_proj(m.norm(y.reshape(Bsz, H, W, m.d_inner)) * z)
    torch.testing.assert_close(m(u), expected, rtol=1e-12, atol=1e-12)


SLOW = pytest.mark.heavy  # minutes each on 2 cores: `make test-heavy`


def _slow(presets):
    return [pytest.param(n, k, id=n, marks=SLOW) for n, k in presets]


@pytest.mark.parametrize("name,kwargs", [pytest.param(n, k, id=n) for n, k in TEST_PRESETS] + _slow(TINY_PRESETS))
def test_torchscript_scripts_saves_and_loads(tmp_path, name, kwargs):
    model = _model(name, kwargs)
    x = _x()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        ref = model(x)
        _close(scripted(x), ref)
    if name.startswith("test_"):
        torch.jit.save(scripted, tmp_path / "m.pt")
        with torch.no_grad():
            _close(torch.jit.load(tmp_path / "m.pt")(x), ref)


def _export_check(model, dynamic):
    x = _x(2)
    program = ex.export_program(model, x, dynamic_batch=dynamic)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any(o.startswith("ssmkit.") for o in ops), "the scans must stay registered custom ops"
    with torch.no_grad():
        _close(program.module()(x), model(x))
        if dynamic:
            x1 = _x(3)
            _close(program.module()(x1), model(x1))
        else:
            with pytest.raises(Exception):
                program.module()(_x(3))


@pytest.mark.parametrize("name,kwargs", [pytest.param(*TEST_PRESETS[0], id="test_vim")] + _slow(TEST_PRESETS[1:]))
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_torch_export_static_and_dynamic_batch(name, kwargs, dynamic):
    _export_check(_model(name, kwargs), dynamic)


@pytest.mark.parametrize("name,kwargs", _slow(TINY_PRESETS))
def test_torch_export_tiny_presets_dynamic_batch(name, kwargs):
    _export_check(_model(name, kwargs), True)


@pytest.mark.parametrize("name,kwargs", _slow(TEST_PRESETS + TINY_PRESETS))
def test_torch_compile_fullgraph(name, kwargs):
    model = _model(name, kwargs)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    x = _x()
    with torch.no_grad():
        _close(compiled(x), model(x))


@pytest.mark.parametrize("name,kwargs", _slow(TEST_PRESETS + TINY_PRESETS))
def test_onnx_through_onnxruntime(tmp_path, name, kwargs):
    model = _model(name, kwargs)
    path = ex.export(model, _x(2), "onnx", tmp_path / "m.onnx")
    assert ex.max_relative_error(model, path, [_x(2), _x(1)]) <= TOL
