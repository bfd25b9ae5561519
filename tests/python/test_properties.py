# Property-based tests of the Python bindings (Hypothesis, Debian's python3-hypothesis): shapes,
# head groupings, masks, layouts, strided views and non-finite values drawn at random. Each case
# either matches a float64 NumPy reference (the non-finite rule of docs/reliability.md included)
# or raises ValueError (TypeError for a wrong dtype, as the bindings document); nothing else (no crash, no other exception). Bounded: a few dozen
# examples per property, the whole file in seconds. Examples are derandomised (the same every
# run) unless ATTNKIT_TEST_SEED=random, like the rest of the suite.
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import attnkit  # noqa: E402

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=os.environ.get("ATTNKIT_TEST_SEED", "") != "random",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BAD = [np.nan, np.inf, -np.inf]


def close(got, want, what, rtol=2e-4, atol=2e-5):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def poison(data, arrays, name):
    """Maybe writes NaN / ±Inf at one drawn element of arrays[name]; returns its index or None."""
    if not data.draw(st.booleans(), label=f"poison {name}"):
        return None
    a = arrays[name]
    idx = tuple(data.draw(st.integers(0, n - 1), label=f"{name} index") for n in a.shape)
    a[idx] = data.draw(st.sampled_from(BAD), label=f"{name} value")
    return idx


def maybe_strided(data, a, label):
    """The same values as a C-contiguous array or as a strided view into a larger buffer."""
    if not data.draw(st.booleans(), label=f"{label} strided"):
        return a
    big = np.zeros(a.shape[:2] + (a.shape[2] * 2, a.shape[3]), np.float32)
    big[:, :, ::2] = a  # every other token row: a strided view, rows still contiguous
    return big[:, :, ::2]


def draw_qkv(data, max_seq=24, max_dim=16):
    b = data.draw(st.integers(1, 2), label="batch")
    hkv = data.draw(st.integers(1, 2), label="hkv")
    hq = hkv * data.draw(st.integers(1, 3), label="group")
    sq = data.draw(st.integers(1, max_seq), label="seqlen_q")
    skv = data.draw(st.integers(1, max_seq), label="seqlen_kv")
    dk = data.draw(st.integers(1, max_dim), label="dk")
    dv = data.draw(st.integers(1, max_dim), label="dv")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"q": f(b, hq, sq, dk), "k": f(b, hkv, skv, dk), "v": f(b, hkv, skv, dv)}


def softmax_ref(q, k, v, allow):
    """float64 softmax attention per the non-finite rule: out [b, h, sq, dv], lse [b, h, sq]."""
    b, hq, sq, dk = q.shape
    hkv, skv, dv = k.shape[1], k.shape[2], v.shape[3]
    g = hq // hkv
    out = np.zeros((b, hq, sq, dv))
    lse = np.full((b, hq, sq), -np.inf)
    for bi in range(b):
        for h in range(hq):
            kk, vv = k[bi, h // g].astype(np.float64), v[bi, h // g].astype(np.float64)
            bad_kv = ~(np.isfinite(kk).all(1) & np.isfinite(vv).all(1))
            for i in range(sq):
                a = allow[i]
                if not a.any():
                    continue
                qi = q[bi, h, i].astype(np.float64)
                if not np.isfinite(qi).all() or (bad_kv & a).any():
                    out[bi, h, i] = np.nan
                    lse[bi, h, i] = np.nan
                    continue
                s = kk[a] @ qi / np.sqrt(dk)
                m = s.max()
                p = np.exp(s - m)
                out[bi, h, i] = p @ vv[a] / p.sum()
                lse[bi, h, i] = m + np.log(p.sum())
    return out, lse


def allowed(kind, sq, skv, window):
    i = np.arange(sq)[:, None] + (skv - sq)  # bottom-right aligned query positions
    j = np.arange(skv)[None, :]
    if kind == "none":
        return np.ones((sq, skv), bool)
    if kind == "causal":
        return j <= i
    return (j <= i) & (j > i - window)  # sliding window of `window` keys


def check_rows(got, want, what, **tol):
    nan_rows = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan_rows), f"{what}: NaN rows differ"
    close(np.where(nan_rows, 0, got), np.where(nan_rows, 0, want), what, **tol)


@SETTINGS
@given(st.data())
def test_attention_matches_numpy(data):
    t = draw_qkv(data)
    for name in ("q", "k", "v"):
        poison(data, t, name)
    kind = data.draw(st.sampled_from(["none", "causal", "window"]), label="mask")
    window = data.draw(st.integers(1, 8), label="window")
    backend = data.draw(st.sampled_from(["auto", "reference"]), label="backend")
    kwargs = {"none": {}, "causal": {"causal": True}, "window": {"window": window}}[kind]
    sq, skv = t["q"].shape[2], t["k"].shape[2]
    q, k, v = (maybe_strided(data, t[n], n) for n in ("q", "k", "v"))
    out, lse = attnkit.attention(q, k, v, return_lse=True, backend=backend, **kwargs)
    want, want_lse = softmax_ref(t["q"], t["k"], t["v"], allowed(kind, sq, skv, window))
    check_rows(out, want, f"out ({kind}, {backend})")
    check_rows(lse[..., None], want_lse[..., None], f"lse ({kind}, {backend})")
    assert out.dtype == np.float32 and out.shape == want.shape


@SETTINGS
@given(st.data())
def test_attention_bshd_layout_is_a_transpose(data):
    t = draw_qkv(data)
    q, k, v = (np.ascontiguousarray(t[n].transpose(0, 2, 1, 3)) for n in ("q", "k", "v"))
    got = attnkit.attention(q, k, v, causal=True, layout="bshd")
    want = attnkit.attention(t["q"], t["k"], t["v"], causal=True)
    close(got.transpose(0, 2, 1, 3), want, "bshd")


@SETTINGS
@given(st.data())
def test_gather_attention_matches_numpy(data):
    t = draw_qkv(data)
    b, _, sq, _ = t["q"].shape
    skv = t["k"].shape[2]
    top_k = data.draw(st.integers(1, skv), label="top_k")
    seed = data.draw(st.integers(0, 2**32 - 1), label="index seed")
    rng = np.random.default_rng(seed)
    idx = np.stack([np.stack([rng.permutation(skv)[:top_k] for _ in range(sq)]) for _ in range(b)])
    idx = idx.astype(np.int32)
    unused = rng.random(idx.shape) < 0.2
    idx[unused] = -1
    for name in ("q", "k", "v"):
        poison(data, t, name)
    backend = data.draw(st.sampled_from(["auto", "reference"]), label="backend")
    out, lse = attnkit.gather_attention(t["q"], t["k"], t["v"], idx, return_lse=True,
                                        backend=backend)
    want = np.zeros(out.shape)
    want_lse = np.zeros(lse.shape)
    for bi in range(b):
        for i in range(sq):
            allow = np.zeros((1, skv), bool)
            allow[0, idx[bi, i][idx[bi, i] >= 0]] = True
            o, l = softmax_ref(t["q"][bi:bi + 1, :, i:i + 1], t["k"][bi:bi + 1],
                               t["v"][bi:bi + 1], allow)
            want[bi, :, i] = o[0, :, 0]
            want_lse[bi, :, i] = l[0, :, 0]
    check_rows(out, want, f"gather out ({backend})")
    check_rows(lse[..., None], want_lse[..., None], f"gather lse ({backend})")


def phi(x, fmap):
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))) if fmap == "elu+1" else np.maximum(x, 0)


@SETTINGS
@given(st.data())
def test_linear_attention_matches_numpy(data):
    t = draw_qkv(data)
    causal = data.draw(st.booleans(), label="causal")
    if causal:  # the causal form needs seqlen_q == seqlen_kv
        n = min(t["q"].shape[2], t["k"].shape[2])
        for name in ("q", "k", "v"):
            t[name] = np.ascontiguousarray(t[name][:, :, :n])
    for name in ("q", "k", "v"):
        poison(data, t, name)
    fmap = data.draw(st.sampled_from(["elu+1", "relu"]), label="feature map")
    backend = data.draw(st.sampled_from(["auto", "reference"]), label="backend")
    out = attnkit.linear_attention(t["q"], t["k"], t["v"], feature_map=fmap, causal=causal,
                                   chunk_size=data.draw(st.integers(1, 16)), backend=backend)
    q, k, v = (t[n].astype(np.float64) for n in ("q", "k", "v"))
    b, hq, sq, _ = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    g = hq // hkv
    want = np.zeros(out.shape)
    for bi in range(b):
        for h in range(hq):
            with np.errstate(all="ignore"):
                fk, fq = phi(k[bi, h // g], fmap), phi(q[bi, h], fmap)
            bad_kv = ~(np.isfinite(k[bi, h // g]).all(1) & np.isfinite(v[bi, h // g]).all(1))
            for i in range(sq):
                keys = np.arange(skv) <= i if causal else np.ones(skv, bool)
                if not np.isfinite(q[bi, h, i]).all() or (bad_kv & keys).any():
                    want[bi, h, i] = np.nan
                    continue
                num = fq[i] @ (fk[keys].T @ v[bi, h // g][keys])
                den = fq[i] @ fk[keys].sum(0)
                want[bi, h, i] = num / den if den > 0 else 0.0
    check_rows(out, want, f"linear {fmap} causal={causal} ({backend})")


@SETTINGS
@given(st.data())
def test_gated_delta_rule_matches_numpy(data):
    t = draw_qkv(data, max_dim=8)
    n = t["q"].shape[2]
    b, hqk, _, dk = t["q"].shape
    hv = hqk * data.draw(st.integers(1, 2), label="value heads per qk head")
    dv = t["v"].shape[3]
    seed = data.draw(st.integers(0, 2**32 - 1), label="gate seed")
    rng = np.random.default_rng(seed)
    t["k"] = rng.standard_normal((b, hqk, n, dk)).astype(np.float32)
    t["v"] = rng.standard_normal((b, hv, n, dv)).astype(np.float32)
    log_alpha = -rng.random((b, hv, n)).astype(np.float32)
    beta = rng.random((b, hv, n)).astype(np.float32)
    for name in ("q", "k", "v"):
        poison(data, t, name)
    backend = data.draw(st.sampled_from(["auto", "reference"]), label="backend")
    algorithm = data.draw(st.sampled_from(["auto", "chunked", "recurrent"]), label="algorithm")
    out, state = attnkit.gated_delta_rule(t["q"], t["k"], t["v"], log_alpha=log_alpha, beta=beta,
                                          return_state=True, chunk_size=4, algorithm=algorithm,
                                          backend=backend)
    want = np.zeros(out.shape)
    want_state = np.zeros(state.shape)
    g = hv // hqk
    for bi in range(b):
        for h in range(hv):
            S = np.zeros((dk, dv))
            poisoned = False
            for i in range(n):
                qi, ki = (t[x][bi, h // g, i].astype(np.float64) for x in ("q", "k"))
                vi = t["v"][bi, h, i].astype(np.float64)
                poisoned = poisoned or not (np.isfinite(ki).all() and np.isfinite(vi).all())
                if poisoned:
                    want[bi, h, i] = np.nan
                    continue
                ki = ki / np.sqrt(ki @ ki + 1e-6)  # the models' l2norm (kL2NormEps)
                S = np.exp(log_alpha[bi, h, i]) * S
                S = S + beta[bi, h, i] * np.outer(ki, vi - S.T @ ki)
                if not np.isfinite(qi).all():
                    want[bi, h, i] = np.nan
                    continue
                qi = qi / np.sqrt(qi @ qi + 1e-6) / np.sqrt(dk)
                want[bi, h, i] = S.T @ qi
            want_state[bi, h] = np.nan if poisoned else S
    # float32 chunk-wise products and the kernel's L2-norm epsilon: looser than softmax
    check_rows(out, want, f"gated delta ({algorithm}, {backend})", rtol=1e-3, atol=2e-4)
    check_rows(state, want_state, f"final state ({algorithm}, {backend})", rtol=1e-3, atol=2e-4)


@SETTINGS
@given(st.data())
def test_bad_input_raises_value_error(data):
    t = draw_qkv(data, max_seq=8, max_dim=8)
    fault = data.draw(st.sampled_from(["dtype", "rank", "dk", "heads", "batch", "dv_out",
                                       "stride"]),
                      label="fault")
    q, k, v = t["q"], t["k"], t["v"]
    out = None
    if fault == "dtype":
        which = data.draw(st.sampled_from(["q", "k", "v"]))
        dtype = data.draw(st.sampled_from([np.float64, np.float16, np.int32, np.int64]))
        t[which] = t[which].astype(dtype)
        q, k, v = t["q"], t["k"], t["v"]
    elif fault == "rank":
        q = q[0]
    elif fault == "dk":
        k = np.concatenate([k, k[..., :1]], axis=-1)
    elif fault == "heads":  # more kv heads than q heads: never a divisor
        k = np.repeat(k[:, :1], q.shape[1] + 1, axis=1)
        v = np.repeat(v[:, :1], q.shape[1] + 1, axis=1)
    elif fault == "stride":  # rows must be contiguous (a stride on a 1-long axis is no stride)
        k = np.repeat(k, 2, axis=-1)[..., ::2] if k.shape[-1] > 1 else k[..., :0]
    elif fault == "batch":
        k = np.concatenate([k, k], axis=0)
    else:
        out = np.zeros(q.shape[:3] + (v.shape[3] + 1,), np.float32)
    fn = data.draw(st.sampled_from(["attention", "linear"]), label="function")
    # The bindings' documented split: TypeError for a wrong dtype, ValueError for the rest.
    with pytest.raises(TypeError if fault == "dtype" else ValueError):
        if fn == "attention":
            attnkit.attention(q, k, v, out=out)
        else:
            attnkit.linear_attention(q, k, v, feature_map="relu", causal=False, out=out)
