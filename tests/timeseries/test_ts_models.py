"""Forecasting models: shapes, gradients for M and S, and each model's math against a direct computation."""
import pytest
import torch

from ssmkit.timeseries.models import Chimera, DLinear, NLinear, SMamba, SpaceTime
from ssmkit.timeseries.models.linear import moving_average
from ssmkit.timeseries.models.spacetime import preprocessing_kernels

SMALL_SMAMBA = dict(d_model=16, d_ff=16, e_layers=2, d_state=2)
SMALL_CHIMERA = dict(d_model=8, d_state=4, kernel_size=5, kernel_dim=8, n_kernels=4)


def _models(enc_in, L=24, H=8):
    return {"NLinear": NLinear(L, H, enc_in), "NLinear-ind": NLinear(L, H, enc_in, individual=True),
            "DLinear": DLinear(L, H, enc_in), "DLinear-ind": DLinear(L, H, enc_in, individual=True),
            "SMamba": SMamba(L, H, enc_in, **SMALL_SMAMBA),
            "SpaceTime": SpaceTime(L, H, enc_in, d_model=16, kernel_dim=8, n_kernels=4),
            "Chimera": Chimera(L, H, enc_in, **SMALL_CHIMERA)}


@pytest.mark.parametrize("enc_in", [7, 1], ids=["M", "S"])
def test_ts_models_forward_backward(enc_in):
    torch.manual_seed(0)
    x, x_mark = torch.randn(3, 24, enc_in), torch.rand(3, 24, 4) - 0.5
    for name, model in _models(enc_in).items():
        y = model(x, x_mark)
        assert y.shape == (3, 8, enc_in), name
        y.pow(2).mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_ts_models_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(\?, 24, 7\)"):
        NLinear(24, 8, 7)(torch.randn(2, 24, 6))
    with pytest.raises(ValueError, match="x_mark"):
        SMamba(24, 8, 7, **SMALL_SMAMBA)(torch.randn(2, 24, 7), torch.randn(3, 24, 4))


def test_ts_nlinear_matches_dense_formula():
    torch.manual_seed(1)
    m = NLinear(12, 5, 3).double()
    x = torch.randn(2, 12, 3, dtype=torch.float64)
    W, b = m.head.linear.weight, m.head.linear.bias
    want = torch.stack([torch.stack([W @ (x[i, :, c] - x[i, -1, c]) + b + x[i, -1, c] for c in range(3)], -1)
                        for i in range(2)])
    torch.testing.assert_close(m(x), want)


def test_ts_dlinear_individual_matches_loop():
    torch.manual_seed(2)
    m = DLinear(10, 4, 2, individual=True, kernel_size=5).double()
    x = torch.randn(1, 10, 2, dtype=torch.float64)
    # moving average with edge replication, written as a loop
    pad = torch.cat([x[:, :1].repeat(1, 2, 1), x, x[:, -1:].repeat(1, 2, 1)], 1)
    trend = torch.stack([pad[:, t:t + 5].mean(1) for t in range(10)], 1)
    torch.testing.assert_close(moving_average(x, 5), trend)
    want = torch.stack([m.seasonal.weight[c] @ (x[0, :, c] - trend[0, :, c]) + m.seasonal.bias[c]
                        + m.trend.weight[c] @ trend[0, :, c] + m.trend.bias[c] for c in range(2)], -1)
    torch.testing.assert_close(m(x)[0], want)


def test_ts_smamba_normalisation_and_token_mixing():
    torch.manual_seed(3)
    m = SMamba(24, 8, 3, **SMALL_SMAMBA).double().eval()
    x, xm = torch.randn(2, 24, 3, dtype=torch.float64), torch.rand(2, 24, 4, dtype=torch.float64) - 0.5
    y = m(x, xm)
    # per-window normalisation: an affine change of each series maps the forecast the same way
    torch.testing.assert_close(m(3 * x + 7, xm), 3 * y + 7, atol=1e-4, rtol=1e-6)
    # bidirectional mixing: every variate's forecast depends on every other variate and on the time features
    for c in range(3):
        x2 = x.clone()
        x2[:, :, c] += torch.randn(2, 24, dtype=torch.float64)
        changed = (m(x2, xm) - y).abs().amax(dim=(0, 1))
        assert (changed > 1e-8).all(), c
    assert (m(x, xm + 0.1) - y).abs().max() > 1e-8
    # official parameter names
    names = dict(m.named_parameters())
    for key in ("enc_embedding.value_embedding.weight", "encoder.attn_layers.1.attention_r.A_log",
                "encoder.attn_layers.0.conv1.weight", "encoder.norm.weight", "projector.bias"):
        assert key in names
    assert names["encoder.attn_layers.0.conv1.weight"].shape == (16, 16, 1)


def test_ts_smamba_paper_defaults_size():
    m = SMamba()  # d_model = d_ff = 256, e_layers 2, d_state 2, d_conv 2, expand 1, L = H = 96
    mamba = m.encoder.attn_layers[0].attention
    assert (mamba.d_state, mamba.d_conv, mamba.d_inner) == (2, 2, 256)
    # per Mamba: in_proj 256*512, conv 256*2+256, x_proj 256*(16+4), dt_proj 16*256+256, A_log 256*2, D 256, out 256*256
    per_mamba = 256 * 512 + 256 * 3 + 256 * 20 + 16 * 256 + 256 + 256 * 2 + 256 + 256 * 256
    per_layer = 2 * per_mamba + 2 * (256 * 256 + 256) + 4 * 256
    want = (96 * 256 + 256) + 2 * per_layer + 2 * 256 + (256 * 96 + 96)
    assert sum(p.numel() for p in m.parameters()) == want


def test_ts_spacetime_ett_config_size_matches_original_architecture():
    # HazyResearch/spacetime's ETT command (1 encoder block, model_dim 128, kernel_dim 64) on 7 channels, counted
    # from its configs: encoder companion SSM with 16 kernels (8 heads each) and a skip per channel, a residual
    # MLP 128 -> 128; closed-loop decoder with n_heads 1, hence 128 kernels (a, b, c, k); output MLP
    # GELU -> dropout -> Linear(128 -> 7). Preprocessing kernels are fixed buffers, not parameters.
    m = SpaceTime(336, 720, 7, d_model=128, n_blocks=1, kernel_dim=64, n_kernels=16, dropout=0.25)
    want = (7 * 128 + 128) + (3 * 16 * 64 + 128) + (128 * 128 + 128) + 4 * 128 * 64 + (128 * 7 + 7)
    assert sum(p.numel() for p in m.parameters()) == want
    assert [type(layer).__name__ for layer in (m.output.dropout, m.output.linear)] == ["Dropout", "Linear"]
    assert m.output.dropout.p == 0.25 and not m.output.residual


def test_ts_spacetime_closed_loop_longer_horizon_and_loss():
    torch.manual_seed(4)
    m = SpaceTime(24, 8, 2, d_model=16, kernel_dim=8, n_kernels=4).double().eval()
    x = torch.randn(3, 24, 2, dtype=torch.float64)
    long = m.forecast(x, 40)                      # 5x the horizon it is built / trained for
    assert long.shape == (3, 40, 2) and torch.isfinite(long).all()
    torch.testing.assert_close(long[:, :8], m(x))  # the closed loop is causal in the horizon
    # the paper's mean transform: shifting a window shifts its forecast, and the loss does not see the shift
    torch.testing.assert_close(m.forecast(x + 5, 40), long + 5)
    y = torch.randn(3, 8, 2, dtype=torch.float64)
    torch.testing.assert_close(m.loss(x + 5, y + 5), m.loss(x, y))
    raw = SpaceTime(24, 8, 2, d_model=16, kernel_dim=8, n_kernels=4, mean_transform=False).double().eval()
    raw.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x), raw(x - x.mean(1, keepdim=True)) + x.mean(1, keepdim=True))
    m.train()
    loss = m.loss(x, y)
    loss.backward()
    assert m.decoder.k.grad.abs().sum() > 0 and m.encoder[0].ssm.a.grad.abs().sum() > 0


def test_ts_spacetime_preprocessing_kernels():
    k = preprocessing_kernels(16, max_diff_order=4, n_kernels=8, max_avg_window=10)
    assert k.shape == (16, 10)
    want_diff = torch.tensor([[1, 0, 0, 0], [1, -1, 0, 0], [1, -2, 1, 0], [1, -3, 3, -1]], dtype=torch.float32)
    for r in range(2):                            # each repeat: 4 differencing kernels, then 4 MA residuals
        torch.testing.assert_close(k[8 * r:8 * r + 4, :4], want_diff)
        ma = k[8 * r + 4:8 * r + 8]
        torch.testing.assert_close(ma.sum(1), torch.zeros(4))  # a residual removes constants
        w = (ma[:, 1:] != 0).sum(1) + 1
        torch.testing.assert_close(ma[:, 0], 1 - 1 / w.float())


def _ridge_oracle(X, Y, alpha):
    """Ridge with an unpenalised intercept via the augmented normal equations (numpy float64)."""
    import numpy as np
    A = np.hstack([X, np.ones((len(X), 1))])
    P = alpha * len(X) * np.eye(A.shape[1])
    P[-1, -1] = 0.0
    sol = np.linalg.solve(A.T @ A + P, A.T @ Y)
    return sol[:-1].T, sol[-1]


@pytest.mark.parametrize("individual", [False, True])
def test_ts_nlinear_closed_form_matches_ridge_oracle(individual):
    torch.manual_seed(0)
    x, y = torch.randn(50, 12, 3), torch.randn(50, 4, 3)
    model = NLinear(12, 4, 3, individual=individual)
    model.fit_closed_form(x, y, alpha=0.01)
    X, Y = (x - x[:, -1:]).double().numpy(), (y - x[:, -1:]).double().numpy()
    for c in range(3):
        Xc = X[..., c] if individual else X.transpose(2, 0, 1).reshape(-1, 12)
        Yc = Y[..., c] if individual else Y.transpose(2, 0, 1).reshape(-1, 4)
        W, b = _ridge_oracle(Xc, Yc, 0.01)
        got_w = model.head.weight[c] if individual else model.head.linear.weight
        got_b = model.head.bias[c] if individual else model.head.linear.bias
        assert torch.allclose(got_w.double(), torch.from_numpy(W), atol=1e-5)
        assert torch.allclose(got_b.double(), torch.from_numpy(b), atol=1e-5)
    with pytest.raises(ValueError, match="y must have shape"):
        model.fit_closed_form(x, y[:, :3])


def test_ts_smamba_linear_skip_starts_at_the_ridge_forecast():
    torch.manual_seed(0)
    x, y, x_mark = torch.randn(40, 24, 7), torch.randn(40, 8, 7), torch.rand(40, 24, 4) - 0.5
    model = SMamba(24, 8, 7, linear_skip=True, **SMALL_SMAMBA).eval()
    model.fit_closed_form(x, y)
    ridge = NLinear(24, 8, 7)
    ridge.fit_closed_form(x, y)
    assert torch.allclose(model(x, x_mark), ridge(x), atol=1e-6)
    model.train()
    model(x, x_mark).pow(2).mean().backward()
    assert model.projector.weight.grad.abs().sum() > 0      # the SSM path learns from the first step
    with pytest.raises(ValueError, match="linear_skip=True"):
        SMamba(24, 8, 7, **SMALL_SMAMBA).fit_closed_form(x, y)


def test_ts_spacetime_channel_independent_is_the_univariate_model_per_channel():
    torch.manual_seed(0)
    kw = dict(d_model=16, kernel_dim=8, n_kernels=4, dropout=0.0)
    multi = SpaceTime(24, 8, 3, channel_independent=True, **kw).eval()
    uni = SpaceTime(24, 8, 1, **kw).eval()
    uni.load_state_dict(multi.state_dict())
    x, y = torch.randn(2, 24, 3), torch.randn(2, 8, 3)
    out = multi(x)
    for c in range(3):
        assert torch.allclose(out[..., c:c + 1], uni(x[..., c:c + 1]), atol=1e-5)
    folded = torch.stack([uni.loss(x[..., c:c + 1], y[..., c:c + 1]) for c in range(3)]).mean()
    assert torch.allclose(multi.loss(x, y), folded, atol=1e-5)
    with pytest.raises(ValueError, match="n_targets=1 != enc_in=3"):
        multi.loss(x, y[..., -1:], n_targets=1)


def test_ts_spacetime_rmse_loss_is_the_sum_of_root_mse_terms():
    """The original's `--loss informer_rmse`: each of the three terms is sqrt(mean squared error)."""
    torch.manual_seed(1)
    kw = dict(d_model=16, kernel_dim=8, n_kernels=4, dropout=0.0)
    mse = SpaceTime(24, 8, 2, **kw).double().eval()
    x, y = torch.randn(3, 24, 2, dtype=torch.float64), torch.randn(3, 8, 2, dtype=torch.float64)
    terms = []
    for weights in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]:
        mse.loss_weights = weights
        terms.append(mse.loss(x, y))
    rmse = SpaceTime(24, 8, 2, loss_fn="rmse", loss_weights=(0.5, 2.0, 3.0), **kw).double().eval()
    rmse.load_state_dict(mse.state_dict())
    expected = 0.5 * terms[0].sqrt() + 2.0 * terms[1].sqrt() + 3.0 * terms[2].sqrt()
    torch.testing.assert_close(rmse.loss(x, y), expected)
    with pytest.raises(ValueError, match="loss_fn"):
        SpaceTime(24, 8, 2, loss_fn="mae", **kw)
