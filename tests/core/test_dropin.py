"""mamba_ssm / hydra drop-in: constructors take an `ssm_cfg` as those libraries write it; the options that change the
math (dt_init, learnable_init_states, activation) are implemented, the kernel-selection ones accepted or rejected
with a clear error; Hydra's learnable initial state loads strictly and enters both scans."""
import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import Hydra, Mamba, Mamba2
from ssmkit.core.layers.hydra import shifted_scans

MAMBA_CFG = dict(d_state=8, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1, dt_init="random",
                 dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False, use_fast_path=True, layer_idx=3)
MAMBA2_CFG = dict(d_state=16, d_conv=4, conv_init=None, expand=2, headdim=8, d_ssm=None, ngroups=1,
                  A_init_range=(1, 16), D_has_hdim=False, rmsnorm=True, norm_before_gate=False, dt_min=0.001,
                  dt_max=0.1, dt_init_floor=1e-4, dt_limit=(0.0, float("inf")), bias=False, conv_bias=True,
                  chunk_size=256, use_mem_eff_path=True, layer_idx=0, process_group=None, sequence_parallel=True)
HYDRA_CFG = dict(d_state=8, d_conv=7, conv_init=None, expand=2, headdim=8, ngroups=1, dt_min=0.001, dt_max=0.1,
                 dt_init_floor=1e-4, dt_limit=(0.0, float("inf")), learnable_init_states=True, activation="swish",
                 bias=False, conv_bias=True, chunk_size=256, use_mem_eff_path=False, layer_idx=1)


def test_mamba_takes_an_ssm_cfg_and_implements_dt_init():
    m = Mamba(32, **MAMBA_CFG)
    assert m.layer_idx == 3 and m.use_fast_path and m.dt_rank == 2
    std = m.dt_rank ** -0.5 * 1.5
    const = Mamba(32, dt_init="constant", dt_scale=1.5)
    assert torch.equal(const.dt_proj.weight, torch.full_like(const.dt_proj.weight, std))
    rand = Mamba(32, dt_init="random", dt_scale=1.5).dt_proj.weight
    assert rand.abs().max() <= std and rand.std() > 0.3 * std
    with pytest.raises(ValueError, match="dt_init must be one of"):
        Mamba(32, dt_init="uniform")
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    y = Mamba(32, dtype=torch.float64, dt_init="constant")(x)
    assert y.dtype == torch.float64


def test_mamba_dtype_keeps_A_log_and_D_fp32_as_mamba_ssm():
    m = Mamba(16, d_state=4, dtype=torch.bfloat16)
    assert m.A_log.dtype == m.D.dtype == torch.float32
    assert m.in_proj.weight.dtype == m.dt_proj.bias.dtype == torch.bfloat16
    y = m(torch.randn(1, 6, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_mamba2_takes_an_ssm_cfg_and_rejects_tensor_parallelism():
    m = Mamba2(32, **MAMBA2_CFG)
    assert m.layer_idx == 0 and m.use_mem_eff_path and m.sequence_parallel and m.chunk_size == 256
    assert m(torch.randn(2, 9, 32)).shape == (2, 9, 32)
    with pytest.raises(ValueError, match="process_group: tensor-parallel Mamba2 is not supported"):
        Mamba2(32, **{**MAMBA2_CFG, "process_group": object()})
    half = Mamba2(32, headdim=8, dtype=torch.bfloat16)
    assert half.D.dtype == torch.float32 and half.A_log.dtype == half.dt_bias.dtype == torch.bfloat16


# The keys of goombalab/hydra's Hydra(d_model, learnable_init_states=True).
HYDRA_KEYS = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "init_states", "dt_bias", "A_log", "D", "fc_D.weight",
              "norm.weight", "out_proj.weight"}


def test_hydra_takes_its_keywords_and_loads_init_states_strictly():
    layer = Hydra(16, **HYDRA_CFG)
    assert set(layer.state_dict()) == HYDRA_KEYS
    assert layer.init_states.shape == (layer.nheads, 8, 8) and not layer.init_states.any()
    assert layer.init_states._optim == {"weight_decay": 0.0}
    official = {k: torch.randn_like(v) for k, v in layer.state_dict().items()}
    layer.load_state_dict(official, strict=True)
    assert torch.equal(layer.init_states, official["init_states"])
    with pytest.raises(RuntimeError, match="init_states"):
        Hydra(16, **{**HYDRA_CFG, "learnable_init_states": False}).load_state_dict(official, strict=True)
    assert Hydra(16, **{**HYDRA_CFG, "activation": "silu"}).activation == "silu"
    with pytest.raises(ValueError, match="activation must be 'swish' or 'silu'"):
        Hydra(16, **{**HYDRA_CFG, "activation": "gelu"})


def test_hydra_zero_init_states_change_nothing_and_learned_ones_enter_and_train():
    torch.manual_seed(0)
    plain = Hydra(16, **{**HYDRA_CFG, "learnable_init_states": False}).double()
    torch.manual_seed(0)
    learned = Hydra(16, **HYDRA_CFG).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    assert torch.equal(plain(x), learned(x))                     # zero initial state: the same layer
    with torch.no_grad():
        learned.init_states.normal_()
    y = learned(x)
    assert not torch.allclose(y, plain(x))
    y.square().sum().backward()
    assert learned.init_states.grad.abs().sum() > 0


def _direction(x, dt, A, B, C, h0):
    """One SSD direction as an fp64 loop from state h0 (x (b, L, H, P), dt (b, L, H) after softplus)."""
    h, ys = h0.clone(), []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, 0, None,
                                                                                                    None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", h, C[:, t, 0]))
    return torch.stack(ys, 1)


def test_shifted_scans_start_both_directions_from_the_initial_state():
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    b, L, H, P, N = 2, 7, 3, 2, 4
    x, dt_f, dt_b, A = r(b, L, H, P), r(b, L, H), r(b, L, H), -torch.rand(H, generator=g, dtype=torch.float64)
    B_f, C_f, B_b, C_b, h0, bias = r(b, L, 1, N), r(b, L, 1, N), r(b, L, 1, N), r(b, L, 1, N), r(H, P, N), r(H)
    y_fw, y_bw = shifted_scans(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, bias, chunk_size=3, initial_states=h0)
    h0b = h0.expand(b, H, P, N)
    fw = _direction(x, F.softplus(dt_f + bias), A, B_f, C_f, h0b)
    bw = _direction(x.flip(1), F.softplus(dt_b + bias).flip(1), A, B_b.flip(1), C_b.flip(1), h0b).flip(1)
    torch.testing.assert_close(y_fw, F.pad(fw[:, :-1], (0, 0, 0, 0, 1, 0)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_bw, F.pad(bw[:, 1:], (0, 0, 0, 0, 0, 1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls,kw", [(Mamba, dict(d_state=4)), (Mamba2, dict(headdim=8)), (Hydra, dict(headdim=8))])
def test_bf16_factory_layers_run_in_bf16(cls, kw):
    """D (and Mamba's A_log) stay fp32 as in the references; a bf16 input still gives a bf16 output."""
    layer = cls(16, dtype=torch.bfloat16, **kw)
    y = layer(torch.randn(2, 5, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
