"""Models: streaming `step` equals re-encoding, SIGMA's partial flip and padding invariance, tied scores."""
import pytest
import torch

from ssmkit.core.layers import partial_flip
from ssmkit.recsys.models import GRU4Rec, Mamba4Rec, SASRec, SIGMA, TiM4Rec

N_ITEMS, L = 40, 11


def _batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    items = torch.zeros(B, L, dtype=torch.long)
    times = torch.zeros(B, L, dtype=torch.float64)
    for b, n in enumerate(lengths):
        items[b, :n] = torch.randint(1, N_ITEMS + 1, (n,), generator=g)
        gaps = torch.randint(0, 30, (n,), generator=g).double() * 86400
        gaps = gaps * torch.rand(n, generator=g, dtype=torch.float64)
        times[b, :n] = 1e9 + torch.cumsum(gaps, 0)
    return items, torch.tensor(lengths), times


SMALL = dict(n_items=N_ITEMS, hidden_size=16)


@pytest.mark.parametrize("model", [GRU4Rec(**SMALL, gru_size=24), Mamba4Rec(**SMALL, n_layers=2, d_state=8),
                                   TiM4Rec(**SMALL, n_layers=2, d_state=8, headdim=8, chunk_size=4)],
                         ids=["gru4rec", "mamba4rec", "tim4rec"])
def test_step_equals_reencoding_the_history(model):
    torch.manual_seed(1)
    model.eval()
    items, _, times = _batch([L] * 3)
    state = model.initial_state(3)
    with torch.no_grad():
        for t in range(L):
            h, state = model.step(items[:, t], state, times[:, t])
            prefix = torch.full((3,), t + 1)
            ref = model.encode(items[:, : t + 1], prefix, times[:, : t + 1])
            torch.testing.assert_close(h, ref, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(model.scores(h), model.scores(ref), atol=1e-4, rtol=1e-4)


def test_tim4rec_uses_time():
    torch.manual_seed(0)
    model = TiM4Rec(**SMALL, n_layers=1, d_state=8, headdim=8).eval()
    for p in model.parameters():  # move the time path off its near-zero init
        p.data += 0.3 * torch.randn_like(p)
    items, lengths, times = _batch([L, L])
    with torch.no_grad():
        a = model.encode(items, lengths, times)
        b = model.encode(items, lengths, times * 5)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("r", [0, 1, 5])
def test_partial_flip_matches_a_per_sequence_loop_for_every_length(r):
    x = torch.arange(1, L + 1).repeat(L + 1, 1).unsqueeze(-1).float()
    lengths = torch.arange(L + 1)                      # 0 (all padding) .. L (no padding)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 0                                   # right padding
    out = partial_flip(x, lengths, r)
    for b, n in enumerate(lengths.tolist()):
        row = x[b, :, 0].tolist()
        k = max(n - r, 0)
        expected = row[:k][::-1] + row[k:]
        assert out[b, :, 0].tolist() == expected, (n, r)


def test_sigma_padded_batch_equals_each_history_alone():
    torch.manual_seed(0)
    model = SIGMA(**SMALL, d_state=8, n_layers=2, r=3).eval()
    lengths = list(range(1, L + 1))
    items, lengths_t, times = _batch(lengths, seed=2)
    with torch.no_grad():
        h = model.encode(items, lengths_t)
        for b, n in enumerate(lengths):
            alone = model.encode(items[b:b + 1, :n], torch.tensor([n]))
            torch.testing.assert_close(h[b:b + 1], alone, atol=2e-5, rtol=1e-4)


def test_sigma_cannot_stream():
    model = SIGMA(**SMALL, d_state=8)
    with pytest.raises(NotImplementedError, match="partial flip"):
        model.step(torch.tensor([1]), None)
    with pytest.raises(NotImplementedError, match="cannot stream"):
        model.initial_state(1)
    assert not model.streamable and not SASRec(**SMALL).streamable


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec, Mamba4Rec, SIGMA, TiM4Rec])
def test_scores_are_tied_to_the_item_table_and_padding_invariant(cls):
    torch.manual_seed(0)
    kwargs = dict(d_state=8) if cls in (Mamba4Rec, SIGMA, TiM4Rec) else {}
    if cls is TiM4Rec:
        kwargs.update(headdim=8, chunk_size=4)
    model = cls(**SMALL, **kwargs).eval()
    items, lengths, times = _batch([3, L, 1])
    with torch.no_grad():
        h = model.encode(items, lengths, times)
        scores = model(items, lengths, times)
        torch.testing.assert_close(scores, h @ model.item_embedding.weight.t())
        short = model.encode(items[:1, :3], lengths[:1], times[:1, :3])
        torch.testing.assert_close(short, h[:1], atol=2e-5, rtol=1e-4)
    assert scores.shape == (3, N_ITEMS + 1)


def test_grow_items_keeps_old_rows_exactly():
    model = Mamba4Rec(**SMALL, d_state=8)
    old = model.item_embedding.weight.detach().clone()
    model.grow_items(N_ITEMS + 7)
    new = model.item_embedding.weight.detach()
    assert new.shape == (N_ITEMS + 8, 16) and torch.equal(new[: N_ITEMS + 1], old)
    assert model.spec()["init_args"]["n_items"] == N_ITEMS + 7
    with pytest.raises(ValueError, match="shrink"):
        model.grow_items(3)


def test_presets_build_the_original_configurations():
    m = TiM4Rec.from_preset("movie_256d", n_items=5)
    assert (m.hidden_size, m.d_state, m.headdim, m.nheads, m.n_layers) == (256, 64, 128, 4, 2)
    assert Mamba4Rec.from_preset("amazon").n_layers == 2 and Mamba4Rec.from_preset("paper").n_layers == 1
    assert SIGMA.from_preset("paper", dropout=0.3).dropout == 0.3
    for cls in (SASRec, GRU4Rec):
        assert cls.from_preset("recbole").hidden_size == 64
    with pytest.raises(ValueError, match="unknown SASRec preset"):
        SASRec.from_preset("huge")


@pytest.mark.parametrize("cls", [Mamba4Rec, TiM4Rec])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_step_equals_the_pytorch_step_and_reencoding(cls, dtype, monkeypatch):
    """The eval-mode step runs the fused CPU kernels (`mamba_mixer_step` / `time_ssd_step` + `postnorm_ffn`); with
    the cpp backend off it runs the same ops in PyTorch. Both equal re-encoding the history at every prefix."""
    torch.manual_seed(0)
    kw = dict(d_state=8) if cls is Mamba4Rec else dict(d_state=8, headdim=8, chunk_size=4)
    model = cls(**SMALL, n_layers=2, **kw).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():  # move every parameter (biases, D, dt bias, the time path) off its init
            p.add_(0.1 * torch.randn_like(p))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=2e-5)
    items, _, times = _batch([L] * 3)
    fused = eager = model.initial_state(3)
    with torch.no_grad():
        for t in range(L):
            h, fused = model.step(items[:, t], fused, times[:, t])
            monkeypatch.setenv("SSMKIT_DISABLE_BACKENDS", "cpp")
            h_eager, eager = model.step(items[:, t], eager, times[:, t])
            monkeypatch.delenv("SSMKIT_DISABLE_BACKENDS")
            ref = model.encode(items[:, : t + 1], torch.full((3,), t + 1), times[:, : t + 1])
            assert h.dtype == dtype
            torch.testing.assert_close(h, h_eager, **tol)
            torch.testing.assert_close(h, ref, **tol)


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec, Mamba4Rec, SIGMA, TiM4Rec])
def test_encoding_by_length_groups_equals_one_call(cls):
    """forward() encodes groups of similar length separately: same values and same gradients as one padded call."""
    torch.manual_seed(0)
    kwargs = dict(d_state=8) if cls in (Mamba4Rec, SIGMA, TiM4Rec) else {}
    if cls is TiM4Rec:
        kwargs.update(headdim=8, chunk_size=4)
    model = cls(**SMALL, **kwargs).eval()
    items, lengths, times = _batch([1, L, 3, 2, 7, 4, 1, 9, 5])
    grouped = model.encode_by_length(items, lengths, times, bounds=(1, 2, 4, 8))
    whole = model.encode(items, lengths, times)
    torch.testing.assert_close(grouped, whole, atol=2e-5, rtol=1e-4)
    w = torch.randn_like(whole)  # a loss that the final LayerNorm does not make constant
    g_grouped = torch.autograd.grad((grouped * w).sum(), list(model.parameters()), allow_unused=True)
    g_whole = torch.autograd.grad((whole * w).sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(g_grouped, g_whole):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p(p):
    from ssmkit.recsys.models.base import Dropout
    torch.manual_seed(0)
    drop = Dropout(p)
    x = (torch.rand(400, 500) + 1).requires_grad_()
    y = drop(x)
    kept = y != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5)  # 5 sigma
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    assert drop.eval()(x) is x


def _all_positions(model, items, lengths, times):
    """The layer stack run at every position, read out at length - 1: the oracle for `encode`, which runs its last
    layer's position-wise part at the read-out position only."""
    from ssmkit.recsys.models.tim4rec import time_gaps
    mask = items != 0
    emb = model.item_embedding(items)
    if isinstance(model, SASRec):
        Lb = items.shape[1]
        x = model.LayerNorm(emb + model.position_embedding(torch.arange(Lb)))
        allowed = (torch.ones(Lb, Lb, dtype=torch.bool).tril() & mask[:, None, :]).unsqueeze(1)
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        for attention, ffn in zip(model.attention, model.ffn):
            x = ffn(attention(x, allowed))
    else:
        x = model.LayerNorm(emb)
        T = time_gaps(times, mask).unsqueeze(-1).expand(-1, -1, model.nheads) if isinstance(model, TiM4Rec) else None
        for layer in model.layers:
            if isinstance(model, SIGMA):
                x = layer(x, lengths, mask)
            elif T is not None:
                x, T = layer(x, T)
            else:
                x = layer(x)
    return x[torch.arange(len(items)), lengths - 1]


@pytest.mark.parametrize("cls", [SASRec, Mamba4Rec, SIGMA, TiM4Rec])
def test_encode_equals_every_layer_at_every_position(cls):
    torch.manual_seed(0)
    kwargs = dict(d_state=8, n_layers=2) if cls in (Mamba4Rec, SIGMA, TiM4Rec) else {}
    if cls is TiM4Rec:
        kwargs.update(headdim=8, chunk_size=4)
    model = cls(**SMALL, **kwargs).eval()
    items, lengths, times = _batch([1, L, 3, 7])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(items, lengths, times), _all_positions(model, items, lengths, times),
                                   atol=2e-5, rtol=1e-4)
