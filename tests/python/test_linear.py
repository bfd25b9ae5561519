# attnkit.linear_attention: elu+1 / ReLU linear attention against a plain float64 torch formula,
# Performer FAVOR+ against exact softmax attention within statistical bounds, and the decode
# state round trip.
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def torch_linear(q, k, v, phi, causal):
    """out_i = phi(q_i)ᵀ Σ_j phi(k_j) v_jᵀ / phi(q_i)ᵀ Σ_j phi(k_j), float64, GQA by repetition."""
    q, k, v = (torch.from_numpy(np.array(x, dtype=np.float64)) for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    a = phi(q) @ phi(k).transpose(-1, -2)  # [b, h, sq, skv]
    if causal:
        a = torch.tril(a)
    num, den = a @ v, a.sum(-1, keepdim=True)
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                      torch.zeros_like(num))
    return out.numpy()


PHI = {"elu+1": lambda x: torch.nn.functional.elu(x) + 1, "relu": torch.relu}


@pytest.mark.parametrize("feature_map", ["elu+1", "relu"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hkv", [(4, 4), (6, 2)])
def test_elu_and_relu_match_torch(rng, feature_map, causal, hq, hkv):
    s = 45
    q, k, v = randn(rng, 2, hq, s, 12), randn(rng, 2, hkv, s, 12), randn(rng, 2, hkv, s, 20)
    out = attnkit.linear_attention(q, k, v, feature_map=feature_map, causal=causal, chunk_size=16)
    ref.assert_close(out, torch_linear(q, k, v, PHI[feature_map], causal), tol=5e-5)


def test_bshd_layout_and_bidirectional_cross_lengths(rng):
    q, k, v = randn(rng, 1, 20, 4, 8), randn(rng, 1, 33, 2, 8), randn(rng, 1, 33, 2, 8)
    out = attnkit.linear_attention(q, k, v, feature_map="elu+1", causal=False, layout="bshd")
    t = lambda x: x.transpose(0, 2, 1, 3)
    ref.assert_close(t(out), torch_linear(t(q), t(k), t(v), PHI["elu+1"], False), tol=5e-5)


@pytest.mark.parametrize("kind", ["iid", "orthogonal"])
def test_favor_features_estimate_the_softmax_kernel_without_bias(rng, kind):
    """Mean of phi(q)·phi(k) over independent draws is within 5 standard errors of
    exp(q·k / sqrt(d)) for every pair."""
    d, m, draws = 16, 256, 800
    q, k = randn(rng, 1, 1, 5, d, scale=0.6), randn(rng, 1, 1, 6, d, scale=0.6)
    truth = np.exp(q[0, 0].astype(np.float64) @ k[0, 0].T.astype(np.float64) / np.sqrt(d))
    base = int(rng.integers(1 << 30))
    est = []
    for r in range(draws):
        f = attnkit.PerformerFeatures(m, d, kind=kind, seed=base + r)
        pq, sq = attnkit.linear_feature_map(q, features=f, return_shift=True)
        pk, sk = attnkit.linear_feature_map(k, features=f, return_shift=True)
        pq = pq[0, 0].astype(np.float64) * np.exp(sq[0, 0].astype(np.float64))[:, None]
        pk = pk[0, 0].astype(np.float64) * np.exp(sk[0, 0].astype(np.float64))[:, None]
        est.append(pq @ pk.T)
    est = np.array(est)
    stderr = est.std(axis=0, ddof=1) / np.sqrt(draws)
    z = np.abs(est.mean(axis=0) - truth) / stderr
    assert z.max() < 5.0, f"bias: max z-score {z.max():.2f}"


@pytest.mark.parametrize("causal", [False, True])
def test_performer_approaches_exact_attention_as_features_grow(rng, causal):
    """Error against exact softmax attention shrinks like 1/sqrt(m): 64x the features must give
    well under half the error (expected 1/8), and stay small in absolute terms."""
    d, s = 16, 64
    q, k, v = randn(rng, 1, 2, s, d, scale=0.5), randn(rng, 1, 2, s, d, scale=0.5), randn(rng, 1, 2, s, d)
    allow = ref.allowed("causal" if causal else "none", s, s)
    exact = ref.attention(q, k, v, allow)[0]
    base = int(rng.integers(1 << 30))

    def err(m):
        e = []
        for r in range(6):
            f = attnkit.PerformerFeatures(m, d, seed=base + 1000 * m + r)
            out = attnkit.linear_attention(q, k, v, features=f, causal=causal, chunk_size=16)
            e.append(np.abs(out - exact).mean())
        return float(np.mean(e))

    small, large = err(16), err(1024)
    assert large < small / 2.5, (small, large)
    assert large < 0.08, large


@pytest.mark.parametrize("feature_map", ["favor+", "elu+1"])
def test_prefill_then_decode_state_equals_one_pass(rng, feature_map):
    T, P = 40, 23
    q, k, v = randn(rng, 2, 4, T, 8), randn(rng, 2, 2, T, 8), randn(rng, 2, 2, T, 6)
    f = attnkit.PerformerFeatures(32, 8, seed=7) if feature_map == "favor+" else None
    kw = dict(feature_map=feature_map, features=f, chunk_size=8)
    full = attnkit.linear_attention(q, k, v, **kw)
    m = f.num_features if f else 8
    st = attnkit.LinearState(2, 2, m, 6)
    parts = [attnkit.linear_attention(q[:, :, :P], k[:, :, :P], v[:, :, :P], state=st, **kw)]
    for t in range(P, T):
        parts.append(attnkit.linear_attention(q[:, :, t:t + 1], k[:, :, t:t + 1],
                                              v[:, :, t:t + 1], state=st, **kw))
    ref.assert_close(np.concatenate(parts, axis=2), full, tol=1e-4)
    assert st.tokens == T and st.s.shape == (2, 2, m, 6) and st.z.shape == (2, 2, m)
    st.reset()
    assert st.tokens == 0


def test_reference_backend_and_chunk_sizes_agree(rng):
    q, k, v = randn(rng, 1, 3, 50, 8), randn(rng, 1, 3, 50, 8), randn(rng, 1, 3, 50, 8)
    f = attnkit.PerformerFeatures(40, 8, kind="iid", seed=3)
    a = attnkit.linear_attention(q, k, v, features=f, chunk_size=7)
    b = attnkit.linear_attention(q, k, v, features=f, chunk_size=64)
    c = attnkit.linear_attention(q, k, v, features=f, backend="reference")
    ref.assert_close(a, c, tol=1e-4)
    ref.assert_close(b, c, tol=1e-4)
    assert f.w.shape == (40, 8) and "iid" in repr(f)


def test_linear_bad_input():
    z = np.zeros((1, 2, 4, 8), np.float32)
    with pytest.raises(ValueError, match="needs features="):
        attnkit.linear_attention(z, z, z)
    with pytest.raises(ValueError, match="feature_map must be"):
        attnkit.linear_attention(z, z, z, feature_map="softmax")
    f = attnkit.PerformerFeatures(16, 4)
    with pytest.raises(ValueError, match="head_dim_qk"):
        attnkit.linear_attention(z, z, z, features=f)
    with pytest.raises(ValueError, match="seqlen_q == seqlen_kv"):
        attnkit.linear_attention(z[:, :, :2], z, z, feature_map="relu")
    with pytest.raises(ValueError, match="LinearState"):
        attnkit.linear_attention(z, z, z, feature_map="relu", causal=False,
                                 state=attnkit.LinearState(1, 2, 8, 8))
    with pytest.raises(ValueError, match="out overlaps q"):
        attnkit.linear_attention(z, z.copy(), z.copy(), feature_map="relu", out=z)
    with pytest.raises(TypeError, match="^k must be a float32"):
        attnkit.linear_attention(z, z.astype(np.float64), z, feature_map="relu")
    with pytest.raises(ValueError, match="num_features must be > 0"):
        attnkit.PerformerFeatures(0, 4)
