"""SaShiMi (step == stepper == forward, causality, long stable stepping, paper parameter count) and WaveNet."""
import copy

import pytest
import torch

from ssmkit.audio import generate
from ssmkit.audio.models import SaShiMi, WaveNet
from ssmkit.audio.models.recurrence import fused_matrix, ssm_step
from ssmkit.audio.models.stepper import _fused
from ssmkit.core.layers import S4, S4D


def _tiny(layer, **kw):
    torch.manual_seed(0)
    return SaShiMi(d_model=8, n_layers=1, layer=layer, d_state=8, **kw).eval()


@pytest.mark.parametrize("layer, kw", [("s4", {}), ("s4d", {}), ("s4", {"ff": 0, "pool": (2, 3)})])
def test_step_and_stepper_equal_forward(layer, kw):
    model = _tiny(layer, **kw)
    codes = torch.randint(0, 256, (2, 53))  # not a multiple of 16: forward pads, stepping does not
    with torch.no_grad():
        full = model(codes)
        state, stepper, steps, fast = model.initial_state(2), model.stepper(2), [], []
        out = torch.empty(2, 256)
        for t in range(codes.shape[1]):
            logits, state = model.step(codes[:, t], state)
            steps.append(logits)
            assert stepper(codes[:, t], out=out) is out
            fast.append(out.clone())
    assert full.shape == (2, 53, 256)
    for got in (torch.stack(steps, 1), torch.stack(fast, 1)):
        assert float((got - full).norm() / full.norm()) < 1e-4


def test_stepper_is_a_snapshot_of_the_weights_and_needs_eval_mode():
    model = _tiny("s4")
    before = copy.deepcopy(model)
    codes = torch.randint(0, 256, (1, 32))
    with torch.no_grad():
        stepper = model.stepper(1)
        first = [stepper(codes[:, t]) for t in range(16)]
        model.up[-1].blocks[0].layer.kernel.inv_dt.add_(0.5)  # in place, as an optimiser step does
        model.head.bias.add_(1.0)
        rest = [stepper(codes[:, t]) for t in range(16, 32)]
        old = torch.stack(first + rest, 1)
        new_stepper = model.stepper(1)
        new = torch.stack([new_stepper(codes[:, t]) for t in range(32)], 1)
        torch.testing.assert_close(old, before(codes), rtol=1e-4, atol=1e-4)  # built before: the old weights
        torch.testing.assert_close(new, model(codes), rtol=1e-4, atol=1e-4)  # built after: the new ones
        assert float((model(codes) - before(codes)).abs().max()) > 0.5
    with pytest.raises(ValueError, match="eval"):
        model.train().stepper(1)


@pytest.mark.parametrize("cls", [S4, S4D])
def test_fused_recurrence_matches_the_core_layer_step(cls):
    torch.manual_seed(1)
    layer = cls(6, d_state=8).eval()
    x = torch.randn(3, 20, 6)
    Mt = fused_matrix(layer)
    s_core, s_fused = layer.initial_state(3), torch.zeros(6, 3, 8)
    with torch.no_grad():
        for t in range(20):
            y_core, s_core = layer.step(x[:, t], s_core)
            y_fused, s_fused = ssm_step(layer, Mt, x[:, t], s_fused)
            torch.testing.assert_close(y_fused, y_core, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [S4, S4D])
def test_fused_matrix_cache_follows_every_parameter_change(cls):
    torch.manual_seed(2)
    layer, other = cls(6, d_state=8).eval(), cls(6, d_state=8).eval()
    first = _fused(layer, torch.float32)
    assert _fused(layer, torch.float32) is first  # unchanged parameters: the cached matrix
    with torch.no_grad():
        for change in (lambda: layer.kernel.log_dt.add_(0.3) if cls is S4D else layer.kernel.inv_dt.add_(0.3),
                       lambda: layer.D.mul_(2.0),  # every SSM parameter is in the key, D included
                       lambda: layer.load_state_dict(other.state_dict()),
                       lambda: setattr(layer.kernel.C, "data", layer.kernel.C.data + 1.0)):
            before = _fused(layer, torch.float32)
            change()
            after = _fused(layer, torch.float32)
            assert after is not before
            torch.testing.assert_close(after, fused_matrix(layer), rtol=0, atol=0)
    assert _fused(layer, torch.float64).dtype == torch.float64


@pytest.mark.parametrize("layer", ["s4", "s4d"])
def test_no_future_sample_leaks(layer):
    model = _tiny(layer).double()
    L = 48
    codes = torch.randint(0, 256, (1, L))
    grads = {}

    def keep(module, args, out):
        out.retain_grad()
        grads["emb"] = out

    model.embedding.register_forward_hook(keep)
    for t in (0, 3, 4, 15, 16, 17, 31):
        model.zero_grad()
        model(codes)[0, t].sum().backward()
        g = grads["emb"].grad[0].abs().sum(-1)  # (L,) sensitivity of output t to each input position
        assert float(g[t + 1:].max()) <= 1e-10 * float(g[: t + 1].max()), f"output {t} sees the future"
        assert float(g[t]) > 0  # and it does see its own input (the D skip of the outer S4 layers)


def test_sixteen_thousand_steps_stay_finite():
    torch.manual_seed(0)
    model = SaShiMi(d_model=4, n_layers=1, ff=0, d_state=4, pool=(4, 4)).eval()
    codes, bits = generate(model, 1, 16_000, seed=0, progress=False)  # sampled, as `ssmkit generate` does
    # bits sums log_softmax of every step's logits; a NaN or inf in the state would reach them (as NaN, via the norms)
    assert codes.shape == (1, 16_000) and torch.isfinite(bits).all()


def _hand_count(d=64, n=8, N=64, pools=2, expand=2, pool=4, ff=2, classes=256):
    """The reference SaShiMi's parameter count (S4 with n_ssm=1, rank 1), written out per module."""
    def s4(h):  # D, log dt, (A_real, A_imag, B, P) shared, C per channel, Linear(h, 2h) + GLU
        return h + h + N // 2 * 2 + N + N + h * N + h * 2 * h + 2 * h

    def stage(h):
        return n * (s4(h) + 2 * h + (h * ff * h + ff * h + ff * h * h + h) + 2 * h)
    total, h = classes * d + d * classes + classes + 2 * d, d
    for _ in range(pools):
        total += (h * pool) * (h * expand) + h * expand  # DownPool
        total += (h * expand) * (h * pool) + h * pool  # UpPool
        total += stage(h)
        h *= expand
    return total + stage(h)


def test_sc09_preset_has_the_papers_parameter_count():
    model = SaShiMi.from_preset("sc09")
    count = sum(p.numel() for p in model.parameters())
    assert count == _hand_count()
    assert abs(count - 4.76e6) < 0.01e6  # the reference's 4.76M (paper: 4.75M) with n_ssm=1
    assert sum(p.numel() for p in SaShiMi.from_preset("small").parameters()) < 0.5e6
    with pytest.raises(ValueError, match="unknown SaShiMi preset"):
        SaShiMi.from_preset("huge")


def test_wavenet_is_causal_and_sized():
    torch.manual_seed(0)
    net = WaveNet(channels=8, skip_channels=8, n_layers=4, cycle=4).double()
    assert net.receptive_field == 16
    assert sum(p.numel() for p in net.parameters()) == WaveNet.count_parameters(8, 8, 4)
    codes = torch.randint(0, 256, (1, 40))
    emb = {}

    def keep(module, args, out):
        out.retain_grad()
        emb["x"] = out

    net.embedding.register_forward_hook(keep)
    net(codes)[0, 20].sum().backward()
    g = emb["x"].grad[0].abs().sum(-1)
    assert float(g[21:].max()) == 0 and float(g[20]) > 0 and float(g[: 20 - 15].max()) == 0  # window [5, 20]
    sized = WaveNet.sized(100_000)
    assert abs(sum(p.numel() for p in sized.parameters()) - 100_000) < 0.03 * 100_000
