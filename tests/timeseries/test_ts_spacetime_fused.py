"""SpaceTime's fused training path (channels first, one transform per convolved input, skip and preprocessing
folded into the kernels) against the plain composition of its layers (time-major, each layer's own forward,
direct convolutions): same loss, same forecast, same gradients, in fp64."""
import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.ops import fft_conv_ref
from ssmkit.timeseries.models import SpaceTime


def _encode_reference(m, x):
    """The encoder as a stack of its layers' own forwards, time-major (N, L, d_model)."""
    u = m.embedding(x)
    for block in m.encoder:
        z = u
        if block.pre_kernel is not None:
            L = u.shape[1]
            pre = F.pad(block.pre_kernel[:, :L], (0, max(L - block.pre_kernel.shape[1], 0)))
            z = fft_conv_ref(u.transpose(1, 2), pre).transpose(1, 2)
        u = block.mlp(block.ssm(z)) + z
    return u


def _loss_reference(m, x, y):
    """The three-term loss written from the layers' public forwards (the formulation before the fusion)."""
    k = y.shape[-1]
    mean = x.mean(1, keepdim=True)
    x, y = m._fold(x - mean), m._fold(y - mean[..., -k:])
    k = x.shape[-1] if m.channel_independent else k
    z = _encode_reference(m, x)
    y_c, _ = m.decoder.forecast(z, y.shape[1], next_inputs=False)
    err = (lambda p, t: F.mse_loss(p, t).sqrt()) if m.loss_fn == "rmse" else F.mse_loss
    w0, w1, w2 = m.loss_weights
    loss = w0 * err(m.output(y_c)[..., -k:], y)
    start = min(m.kernel_dim, x.shape[1] - 1) - 1
    target = torch.cat([x[..., -k:], y[:, :1]], dim=1)
    loss = loss + w1 * err(m.output(m.decoder(z))[..., -k:][:, start:], target[:, start + 1:])
    return loss + w2 * err(m.decoder.next_input(z)[:, start:-1], z[:, start + 1:])


@pytest.mark.parametrize("L,kw", [
    (24, dict(kernel_dim=8)),                                    # L < the preprocessing kernels' width (64)
    (70, dict(kernel_dim=8, n_blocks=2, loss_fn="rmse")),        # L > 64: zero-padded; a block without them
    (30, dict(kernel_dim=40, channel_independent=True, decoder_n_kernels=8, kernel_method="squaring")),
])
def test_ts_spacetime_fused_loss_forecast_and_gradients_equal_the_layer_composition(L, kw):
    torch.manual_seed(L)
    m = SpaceTime(L, 8, 3, d_model=16, n_kernels=4, dropout=0.0, **kw).double()
    x, y = torch.randn(2, L, 3, dtype=torch.float64), torch.randn(2, 8, 3, dtype=torch.float64)
    loss, ref = m.loss(x, y), _loss_reference(m, x, y)
    assert torch.allclose(loss, ref, rtol=1e-10)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    grads_ref = torch.autograd.grad(ref, list(m.parameters()))
    for (name, _), g, r in zip(m.named_parameters(), grads, grads_ref):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-10), name
    with torch.no_grad():
        mean = x.mean(1, keepdim=True)
        z = _encode_reference(m, m._fold(x - mean))
        forecast = m.output(m.decoder.forecast(z, 12, next_inputs=False)[0])
        forecast = m._unfold(forecast, 3) + mean
        assert torch.allclose(m.forecast(x, 12), forecast, atol=1e-10)
