"""Chimera: every parameter trains in M and S mode, the decomposition is exact, the variate scan reaches both
sides (and only through its backward module), per-window normalisation, and the closed loop's any-horizon forecast."""
import pytest
import torch

from ssmkit.timeseries.models import Chimera

SMALL = dict(d_model=8, d_state=4, kernel_size=5, kernel_dim=8, n_kernels=4, dropout=0.0)


@pytest.mark.parametrize("enc_in", [7, 1], ids=["M", "S"])
def test_ts_chimera_every_parameter_gets_gradient(enc_in):
    torch.manual_seed(0)
    m = Chimera(16, 6, enc_in, e_layers=2, **SMALL)
    y = m(torch.randn(2, 16, enc_in))
    assert y.shape == (2, 6, enc_in)
    y.pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_ts_chimera_decomposition_recombines():
    m = Chimera(20, 4, 3, **SMALL).double()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    trend, seasonal = m.decompose(x)
    torch.testing.assert_close(trend + seasonal, x, rtol=0, atol=1e-12)
    # a centred moving average keeps a straight line: away from the edges, a ramp is all trend
    ramp = (0.5 * torch.arange(20, dtype=torch.float64) - 3).view(1, 20, 1).expand(2, 20, 3)
    trend, seasonal = m.decompose(ramp)
    torch.testing.assert_close(trend[:, 2:-2], ramp[:, 2:-2])
    assert seasonal[:, 2:-2].abs().max() < 1e-12 and seasonal[:, :2].abs().max() > 0.1
    # the heads receive the two parts of the normalised window, and these recombine to it
    seen = {}
    m.trend.register_forward_hook(lambda mod, inp, out: seen.__setitem__("trend", inp[0]))
    m.seasonal.register_forward_hook(lambda mod, inp, out: seen.__setitem__("seasonal", inp[0]))
    m(x)
    mean, std = x.mean(1, keepdim=True), x.std(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(seen["trend"] + seen["seasonal"], (x - mean) / (std ** 2 + 1e-5).sqrt())
    torch.testing.assert_close(seen["trend"], m.decompose((x - mean) / (std ** 2 + 1e-5).sqrt())[0])


def _forward_only(model):
    """Switch off the backward-over-variates module of every 2-D SSM mixer (its scan returns zeros)."""
    for block in [*model.trend.blocks, *model.seasonal.blocks]:
        scan = block.mixer.scan
        block.mixer.scan = lambda x, k, scan=scan: scan(x, k) if k == 0 else torch.zeros_like(x)


def test_ts_chimera_variates_seen_from_both_sides():
    torch.manual_seed(1)
    m = Chimera(16, 4, 4, **SMALL).double().eval()
    x = torch.randn(2, 16, 4, dtype=torch.float64)
    y = m(x)
    first, last = x.clone(), x.clone()
    first[:, :, 0] += torch.randn(2, 16, dtype=torch.float64)
    last[:, :, -1] += torch.randn(2, 16, dtype=torch.float64)
    assert ((m(first) - y)[..., 1:].abs().amax(dim=(0, 1)) > 1e-8).all()   # variate 0 reaches every later one
    assert ((m(last) - y)[..., :-1].abs().amax(dim=(0, 1)) > 1e-8).all()   # the last reaches every earlier one
    _forward_only(m)
    y = m(x)
    assert ((m(first) - y)[..., 1:].abs().amax(dim=(0, 1)) > 1e-8).all()
    torch.testing.assert_close(m(last)[..., :-1], y[..., :-1], rtol=0, atol=1e-12)  # forward scan alone: one side


def test_ts_chimera_normalisation_and_closed_loop():
    torch.manual_seed(2)
    m = Chimera(16, 4, 3, **SMALL).double().eval()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    y = m(x)
    torch.testing.assert_close(m(3 * x + 7), 3 * y + 7, atol=1e-6, rtol=1e-6)
    long = m.forecast(x, 20)                       # 5x the horizon it is built for
    assert long.shape == (2, 20, 3) and torch.isfinite(long).all()
    torch.testing.assert_close(long[:, :4], y)
    with pytest.raises(ValueError, match="x must have shape"):
        m(torch.randn(2, 15, 3, dtype=torch.float64))
