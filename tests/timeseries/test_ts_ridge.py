"""ridge_fit (the NLinear-ridge floor's solver) taken in row chunks equals the closed-form ridge solution computed
directly in numpy, whatever the chunk size."""
import numpy as np
import pytest
import torch

from ssmkit.timeseries.models.linear import ridge_fit


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
def test_ts_ridge_fit_chunked_matches_numpy(chunk):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) + 3.0
    y = x @ rng.normal(size=(6, 4)) + rng.normal(size=(50, 4)) * 0.1 - 2.0
    alpha = 1e-2
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.solve(xc.T @ xc + alpha * len(x) * np.eye(6), xc.T @ yc)
    b = y.mean(0) - x.mean(0) @ w
    got_w, got_b = ridge_fit(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), alpha,
                             chunk=chunk)
    np.testing.assert_allclose(got_w.numpy(), w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_b.numpy(), b, rtol=1e-5, atol=1e-5)
