"""Long sequences on CPU: selective_scan, ssd and the Hyena layer at L = 2^20, finite and checked against the oracles.

selective_scan and ssd run the sequence in pieces, carrying the state from piece to piece (`initial_state` /
`initial_states`), so their memory depends on the piece length, not on L. Hyena's long FFT convolution needs the
whole sequence at once (its memory grows with L; there is no state to carry). Every output is checked finite, and
sampled windows of it against fp64 oracles: for the scans, `_ref` run from a zero state over a warm-up before the
window (the decays forget the start, so this also checks the carried state independently of it); for Hyena, the
same layer in fp64 with the FFT convolution replaced by the direct sum at the window's positions.
Each case runs in its own process; its peak memory is that process's max RSS (baseline: after imports and set-up).

    python benchmarks/long_sequences.py [--L 1048576] [--piece 65536] [--threads 1] [--cases ssd hyena] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch

WINDOW, WARMUP = 512, 4096


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def windows(L):
    """Window starts: the beginning, the middle and the end of the sequence."""
    return sorted({0, (L // 2) // WINDOW * WINDOW, max(0, (L - WINDOW) // WINDOW * WINDOW)})  # whole windows


def rel_err(y, ref):
    return ((y.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


# --------------------------------------------------------------------------------------------- selective scan

class ScanInputs:
    """Inputs of position range [t0, t1), reproducible piece by piece (one seeded generator per 4096 steps)."""

    def __init__(self, dim=16, N=16, block=4096):
        self.dim, self.N, self.block = dim, N, block
        g = torch.Generator().manual_seed(0)
        self.A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1) * (0.5 + torch.rand(dim, 1, generator=g))
        self.D, self.delta_bias = torch.randn(dim, generator=g), torch.randn(dim, generator=g) - 2.0

    def _block(self, k):
        g = torch.Generator().manual_seed(1000 + k)
        r = lambda *s: torch.randn(*s, self.block, generator=g)  # noqa: E731
        return dict(u=r(1, self.dim), delta=r(1, self.dim), B=r(1, self.N), C=r(1, self.N), z=r(1, self.dim))

    def get(self, t0, t1):
        blocks = [self._block(k) for k in range(t0 // self.block, (t1 - 1) // self.block + 1)]
        off = (t0 // self.block) * self.block
        return {n: torch.cat([b[n] for b in blocks], -1)[..., t0 - off:t1 - off] for n in blocks[0]}


def run_selective_scan(L, piece):
    from ssmkit.core.ops import selective_scan, selective_scan_ref

    src = ScanInputs()
    x = src.get(0, WINDOW)  # warm-up: loads the compiled backend outside the timing
    selective_scan(x["u"], x["delta"], src.A, x["B"], x["C"], src.D, x["z"], src.delta_bias, delta_softplus=True)
    base = rss_mb()
    keep = {t0: None for t0 in windows(L)}
    h, n_bad, y_max, op_seconds = None, 0, 0.0, 0.0
    start = time.perf_counter()
    for p0 in range(0, L, piece):
        p1 = min(p0 + piece, L)
        x = src.get(p0, p1)
        t = time.perf_counter()
        y, h = selective_scan(x["u"], x["delta"], src.A, x["B"], x["C"], src.D, x["z"], src.delta_bias,
                              delta_softplus=True, return_last_state=True, initial_state=h)
        op_seconds += time.perf_counter() - t
        n_bad += int((~torch.isfinite(y)).sum())
        y_max = max(y_max, y.abs().max().item())
        for t0 in keep:
            if p0 <= t0 < p1:
                assert t0 + WINDOW <= p1, "the piece length must be a multiple of the window"
                keep[t0] = y[..., t0 - p0:t0 - p0 + WINDOW].clone()
    seconds = time.perf_counter() - start
    errors = {}
    for t0, y_win in keep.items():
        w0 = max(0, t0 - WARMUP)
        x = {n: v.double() for n, v in src.get(w0, t0 + WINDOW).items()}
        ref = selective_scan_ref(x["u"], x["delta"], src.A.double(), x["B"], x["C"], src.D.double(), x["z"],
                                 src.delta_bias.double(), delta_softplus=True)[..., t0 - w0:]
        errors[t0] = rel_err(y_win, ref)
    return dict(shape=f"batch 1, dim {src.dim}, N {src.N}, B/C/z/D/delta_bias, softplus", seconds=seconds,
                op_seconds=op_seconds, nonfinite=n_bad, max_abs=y_max, window_rel_err=errors, rss_base_mb=base,
                backend="auto")


# ----------------------------------------------------------------------------------------------------- SSD

class SSDInputs(ScanInputs):
    def __init__(self, H=4, P=16, N=16, block=4096):
        self.H, self.P, self.N, self.block = H, P, N, block
        g = torch.Generator().manual_seed(0)
        self.A = -(0.5 + 3.5 * torch.rand(H, generator=g))
        self.D, self.dt_bias = torch.randn(H, generator=g), torch.randn(H, generator=g) - 2.0

    def _block(self, k):
        g = torch.Generator().manual_seed(2000 + k)
        r = lambda *s: torch.randn(1, self.block, *s, generator=g)  # noqa: E731
        return dict(x=r(self.H, self.P), dt=r(self.H), B=r(1, self.N), C=r(1, self.N))

    def get(self, t0, t1):
        blocks = [self._block(k) for k in range(t0 // self.block, (t1 - 1) // self.block + 1)]
        off = (t0 // self.block) * self.block
        return {n: torch.cat([b[n] for b in blocks], 1)[:, t0 - off:t1 - off] for n in blocks[0]}


def run_ssd(L, piece, chunk_size=64):
    from ssmkit.core.ops import ssd, ssd_ref

    src = SSDInputs()
    x = src.get(0, WINDOW)  # warm-up outside the timing
    ssd(x["x"], x["dt"], src.A, x["B"], x["C"], chunk_size, D=src.D, dt_bias=src.dt_bias, dt_softplus=True)
    base = rss_mb()
    keep = {t0: None for t0 in windows(L)}
    h, n_bad, y_max, op_seconds = None, 0, 0.0, 0.0
    start = time.perf_counter()
    for p0 in range(0, L, piece):
        p1 = min(p0 + piece, L)
        x = src.get(p0, p1)
        t = time.perf_counter()
        y, h = ssd(x["x"], x["dt"], src.A, x["B"], x["C"], chunk_size, D=src.D, dt_bias=src.dt_bias,
                   dt_softplus=True, initial_states=h, return_final_states=True)
        op_seconds += time.perf_counter() - t
        n_bad += int((~torch.isfinite(y)).sum())
        y_max = max(y_max, y.abs().max().item())
        for t0 in keep:
            if p0 <= t0 < p1:
                assert t0 + WINDOW <= p1, "the piece length must be a multiple of the window"
                keep[t0] = y[:, t0 - p0:t0 - p0 + WINDOW].clone()
    seconds = time.perf_counter() - start
    errors = {}
    for t0, y_win in keep.items():
        w0 = max(0, t0 - WARMUP)
        x = {n: v.double() for n, v in src.get(w0, t0 + WINDOW).items()}
        ref = ssd_ref(x["x"], x["dt"], src.A.double(), x["B"], x["C"], D=src.D.double(), dt_bias=src.dt_bias.double(),
                      dt_softplus=True)[:, t0 - w0:]
        errors[t0] = rel_err(y_win, ref)
    return dict(shape=f"batch 1, H {src.H}, P {src.P}, N {src.N}, G 1, chunk {chunk_size}, D/dt_bias, softplus",
                seconds=seconds, op_seconds=op_seconds, nonfinite=n_bad, max_abs=y_max, window_rel_err=errors,
                rss_base_mb=base, backend="auto")


# --------------------------------------------------------------------------------------------------- Hyena

def direct_conv_at(starts):
    """A stand-in for `fft_conv` (causal, u (1, D, L), k (D, L)) that computes the direct sums
    y[t] = sum_{j<=t} k[j] u[t-j] in fp64 at the windows' positions only (elsewhere 0): one batched dot product
    per position, over the reversed sequence, so no (window x L) matrix is ever built."""

    def conv(u, k):
        assert u.shape[0] == 1, "the benchmark's oracle takes batch 1"
        L = u.shape[-1]
        y = torch.zeros(u.shape, dtype=torch.float64)
        u_rev, k64 = u[0].double().flip(-1), k.double()                      # u_rev[L-1-s] = u[s]
        for t0 in starts:
            for t in range(t0, t0 + WINDOW):
                y[0, :, t] = torch.bmm(u_rev[:, None, L - 1 - t:], k64[:, :t + 1, None]).view(-1)
        return y

    return conv


def run_hyena(L, piece, d_model=8, filter_order=16):
    import ssmkit.core.layers.hyena as hyena_module
    from ssmkit.core.layers import Hyena

    torch.manual_seed(0)
    layer = Hyena(d_model, l_max=L, filter_order=filter_order)
    x = torch.randn(1, L, d_model)
    base = rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        y = layer(x)
    seconds = op_seconds = time.perf_counter() - start
    n_bad, y_max = int((~torch.isfinite(y)).sum()), y.abs().max().item()
    starts = windows(L)
    real_conv = hyena_module.fft_conv
    hyena_module.fft_conv = direct_conv_at(starts)
    try:
        with torch.no_grad():
            ref = layer.double()(x.double())
    finally:
        hyena_module.fft_conv = real_conv
    errors = {t0: rel_err(y[:, t0:t0 + WINDOW], ref[:, t0:t0 + WINDOW]) for t0 in starts}
    return dict(shape=f"batch 1, d_model {d_model}, filter_order {filter_order}, whole sequence (one FFT)",
                seconds=seconds, op_seconds=op_seconds, nonfinite=n_bad, max_abs=y_max, window_rel_err=errors,
                rss_base_mb=base, backend="fft_conv")


CASES = {"selective_scan": run_selective_scan, "ssd": run_ssd, "hyena": run_hyena}


def child(name, L, piece, threads):
    torch.set_num_threads(threads)
    result = CASES[name](L, piece)
    result.update(case=name, L=L, piece=piece if name != "hyena" else L, threads=threads, rss_peak_mb=rss_mb())
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, default=2 ** 20)
    p.add_argument("--piece", type=int, default=2 ** 16, help="steps per piece of the scans (state carried)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--out", default=None, help="write the results as JSON here (default: print only)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child, a.L, a.piece, a.threads)
    if a.piece % WINDOW:
        p.error(f"--piece must be a multiple of {WINDOW}")
    results = []
    for name in a.cases:
        cmd = [sys.executable, __file__, "--child", name, "--L", str(a.L), "--piece", str(a.piece),
               "--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"L = {a.L}, {a.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("op time: in the op calls; total: with making the inputs piece by piece. Error: the largest relative error "
          f"of the {WINDOW}-step windows at the start, middle and end against the fp64 oracle.")
    print(f"{'op':<16}{'piece':>9}{'op time s':>11}{'total s':>9}{'Msteps/s':>10}{'peak MB':>9}{'base MB':>9}"
          f"{'non-finite':>12}{'max rel err':>13}")
    for r in results:
        print(f"{r['case']:<16}{r['piece']:>9}{r['op_seconds']:>11.2f}{r['seconds']:>9.2f}"
              f"{r['L'] / r['op_seconds'] / 1e6:>10.3f}{r['rss_peak_mb']:>9.0f}{r['rss_base_mb']:>9.0f}"
              f"{r['nonfinite']:>12}{max(r['window_rel_err'].values()):>13.2e}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
