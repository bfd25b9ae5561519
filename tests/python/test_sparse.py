# Sparse attention from Python: the static sparse masks against their definitions (and through
# attention() against torch), and DeepSeek Sparse Attention (indexer, top-k, gather) against
# plain torch computations, including decode through an IndexerCache.
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def grid(n):
    q = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    return q, k


def strided_def(n, stride):
    q, k = grid(n)
    return (k <= q) & (((q - k) < stride) | ((q - k) % stride == 0))


def fixed_def(n, block, summary):
    q, k = grid(n)
    return (k <= q) & ((k // block == q // block) | (k % block >= block - summary))


def longformer_def(n, window, globals_, causal):
    q, k = grid(n)
    ok = np.abs(q - k) <= window
    g = np.zeros(n, bool)
    g[list(globals_)] = True
    ok |= g[:, None] | g[None, :]
    return ok & (k <= q) if causal else ok


def bitmap_def(n, bitmap, bq, bk, causal):
    q, k = grid(n)
    ok = bitmap[q // bq, k // bk].astype(bool)
    return ok & (k <= q) if causal else ok


def test_sparse_masks_follow_their_definitions(rng):
    n = 70
    np.testing.assert_array_equal(attnkit.masks.strided(5).to_array(n), strided_def(n, 5))
    np.testing.assert_array_equal(attnkit.masks.fixed(8, 3).to_array(n), fixed_def(n, 8, 3))
    for causal in (True, False):
        lf = attnkit.masks.longformer(n, 4, globals=[0, 33], causal=causal)
        np.testing.assert_array_equal(lf.to_array(n), longformer_def(n, 4, [0, 33], causal))
    bitmap = rng.integers(0, 2, (5, 4)).astype(bool)
    bb = attnkit.masks.block_bitmap(bitmap, 14, 18, causal=True)
    np.testing.assert_array_equal(bb.to_array(n), bitmap_def(n, bitmap, 14, 18, True))


def test_bigbird_has_its_window_globals_and_seeded_random_blocks():
    n, b = 256, 16
    m = attnkit.masks.bigbird(n, block=b, window_blocks=1, global_blocks=1, random_blocks=2,
                              seed=5)
    pic = m.to_array(n)
    q, k = grid(n)
    must = (np.abs(q // b - k // b) <= 1) | (k // b == 0)
    assert np.all(pic[must & (k <= q)])
    assert not np.any(pic[k > q])  # causal by default
    np.testing.assert_array_equal(pic, attnkit.masks.bigbird(n, block=b, seed=5).to_array(n))
    assert not np.array_equal(pic, attnkit.masks.bigbird(n, block=b, seed=6).to_array(n))
    assert 0 < m.density(n) < 0.5


@pytest.mark.parametrize("name", ["strided", "fixed", "longformer", "bitmap"])
def test_attention_under_sparse_masks_matches_torch(rng, name):
    n = 64
    masks = {
        "strided": (attnkit.masks.strided(6), strided_def(n, 6)),
        "fixed": (attnkit.masks.fixed(16, 4), fixed_def(n, 16, 4)),
        "longformer": (attnkit.masks.longformer(n, 5, globals=[3]), longformer_def(n, 5, [3], True)),
        "bitmap": (attnkit.masks.block_bitmap(np.tril(np.ones((4, 4), bool)), 16),
                   bitmap_def(n, np.tril(np.ones((4, 4), bool)), 16, 16, False)),
    }
    mask, allow = masks[name]
    q, k, v = randn(rng, 1, 4, n, 16), randn(rng, 1, 2, n, 16), randn(rng, 1, 2, n, 16)
    out, stats = attnkit.attention(q, k, v, mask=mask, return_stats=True)
    ref.assert_close(out, ref.attention(q, k, v, torch.from_numpy(allow))[0])


def test_mask_pictures():
    m = attnkit.masks.sliding_window(4)
    assert m.ascii(8).count("\n") >= 8
    assert m.svg(64).startswith("<svg") or "<svg" in m.svg(64)
    cov = m.coverage(1000, max_cells=50)
    assert cov.shape == (50, 50) and cov.dtype == np.float32
    assert 0.0 <= cov.min() and cov.max() <= 1.0


def torch_indexer(q_index, weights, k_index, reduced=True):
    """I(t, s) = Σ_j w[t, j] relu(q_I[j, t] · k_I[s]), causal (bottom-right), float64."""
    qi, w, ki = (torch.from_numpy(np.array(x)) for x in (q_index, weights, k_index))
    if reduced:
        qi, ki = qi.bfloat16(), ki.bfloat16()
    qi, w, ki = qi.double(), w.double(), ki.double()
    dots = torch.relu(torch.einsum("bhtd,bsd->bhts", qi, ki))
    scores = torch.einsum("bth,bhts->bts", w, dots)
    sq, skv = scores.shape[1], scores.shape[2]
    allow = ref.allowed("causal", sq, skv)
    return scores.masked_fill(~allow, float("-inf")).numpy()


@pytest.mark.parametrize("reduced", [True, False])
def test_lightning_indexer_matches_torch(rng, reduced):
    qi, w, ki = randn(rng, 2, 4, 19, 32), randn(rng, 2, 19, 4), randn(rng, 2, 27, 32)
    got = attnkit.lightning_indexer(qi, w, ki, reduced_precision=reduced)
    assert got.shape == (2, 19, 27)
    ref.assert_close(got, torch_indexer(qi, w, ki, reduced), tol=1e-5)


def test_dsa_select_is_a_top_k_of_the_scores(rng):
    top_k = 6
    qi, w, ki = randn(rng, 1, 2, 24, 16), randn(rng, 1, 24, 2), randn(rng, 1, 24, 16)
    idx = attnkit.dsa_select(qi, w, ki, top_k)
    scores = torch_indexer(qi, w, ki)
    assert idx.dtype == np.int32 and idx.shape == (1, 24, top_k)
    for t in range(24):
        row = idx[0, t]
        chosen = row[row >= 0]
        assert len(chosen) == min(top_k, t + 1)
        assert np.all(np.diff(chosen) > 0)  # increasing, distinct
        rest = np.setdiff1d(np.arange(t + 1), chosen)
        if len(rest):
            assert scores[0, t, chosen].min() >= scores[0, t, rest].max() - 1e-4


def test_gather_attention_equals_attention_over_the_selected_keys(rng):
    sq, skv, top_k = 17, 40, 9
    q, k, v = randn(rng, 2, 6, sq, 16), randn(rng, 2, 2, skv, 16), randn(rng, 2, 2, skv, 12)
    idx = np.full((2, sq, top_k), -1, np.int32)
    allow = np.zeros((2, sq, skv), bool)
    for b in range(2):
        for i in range(sq):
            n = rng.integers(0, top_k + 1)  # some rows select nothing
            pick = rng.choice(skv, n, replace=False)
            idx[b, i, :n] = pick
            allow[b, i, pick] = True
    out, lse = attnkit.gather_attention(q, k, v, idx, return_lse=True)
    for b in range(2):
        want, want_lse = ref.attention(q[b:b + 1], k[b:b + 1], v[b:b + 1],
                                       torch.from_numpy(allow[b]))
        ref.assert_close(out[b:b + 1], want)
        ref.assert_close(lse[b:b + 1], want_lse, what="lse")


def test_dsa_attention_decode_with_indexer_cache_equals_prefill(rng):
    T, top_k = 30, 8
    q, k, v = randn(rng, 1, 4, T, 16), randn(rng, 1, 1, T, 16), randn(rng, 1, 1, T, 16)
    qi, w, ki = randn(rng, 1, 2, T, 8), randn(rng, 1, T, 2), randn(rng, 1, T, 8)
    full, idx = attnkit.dsa_attention(q, k, v, qi, w, ki, top_k, return_indices=True)
    np.testing.assert_array_equal(attnkit.masks.selection(idx, 0).to_array(T),
                                  _selection_def(idx[0], T))
    cache = attnkit.IndexerCache(1, 8, T)
    outs = []
    for t in range(T):
        cache.append(ki[:, t:t + 1])
        outs.append(attnkit.dsa_attention(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1],
                                          qi[:, :, t:t + 1], w[:, t:t + 1], cache, top_k))
    assert cache.length == T
    ref.assert_close(np.concatenate(outs, axis=2), full)


def _selection_def(idx, n):
    allow = np.zeros((idx.shape[0], n), bool)
    for i, row in enumerate(idx):
        allow[i, row[row >= 0]] = True
    return allow


def test_dsa_bad_input(rng):
    qi, w, ki = randn(rng, 1, 2, 5, 8), randn(rng, 1, 5, 2), randn(rng, 1, 5, 8)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        attnkit.dsa_select(qi, w, ki, 0)
    with pytest.raises(ValueError, match="^weights must be 3-D"):
        attnkit.lightning_indexer(qi, w[..., None], ki)
    with pytest.raises(TypeError, match="^indices must be a int32 array"):
        q = randn(rng, 1, 2, 5, 8)
        attnkit.gather_attention(q, q, q, np.zeros((1, 5, 2), np.int64))
    with pytest.raises(ValueError, match="IndexerCache is empty"):
        attnkit.dsa_select(qi, w, attnkit.IndexerCache(1, 8, 4), 2)
    with pytest.raises(ValueError, match="bitmap must be 2-D"):
        attnkit.masks.block_bitmap(np.ones(4), 8)
