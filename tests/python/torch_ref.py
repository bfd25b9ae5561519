# Plain torch references for the Python tests: attention written as softmax(Q Kᵀ) V in float64
# with masks built straight from their definitions (independently of attnkit's mask objects).
import numpy as np
import torch


def positions(seqlen_q, seqlen_kv, q_start=None, k_start=0):
    """Absolute positions of query and key rows (bottom-right alignment by default)."""
    if q_start is None:
        q_start = k_start + seqlen_kv - seqlen_q
    qp = torch.arange(seqlen_q, dtype=torch.int64) + q_start
    kp = torch.arange(seqlen_kv, dtype=torch.int64) + k_start
    return qp[:, None], kp[None, :]


def allowed(kind, seqlen_q, seqlen_kv, q_start=None, k_start=0, **p):
    """[seqlen_q, seqlen_kv] bool matrix of the mask `kind`, from its definition."""
    q, k = positions(seqlen_q, seqlen_kv, q_start, k_start)
    if kind == "none":
        return torch.ones(seqlen_q, seqlen_kv, dtype=torch.bool)
    if kind == "causal":
        return k <= q
    if kind == "sliding_window":  # w keys including the query itself
        return (k <= q) & (k > q - p["w"])
    if kind == "window":  # q - left <= k <= q + right; None = unbounded
        ok = torch.ones(seqlen_q, seqlen_kv, dtype=torch.bool)
        if p["left"] is not None:
            ok &= k >= q - p["left"]
        if p["right"] is not None:
            ok &= k <= q + p["right"]
        return ok
    if kind == "chunked":
        c = p["chunk"]
        return (k <= q) & (torch.div(k, c, rounding_mode="floor") ==
                           torch.div(q, c, rounding_mode="floor"))
    raise ValueError(kind)


def attention(q, k, v, allow=None, scale=None, softcap=None, sinks=None, alibi_slopes=None,
              q_start=None, k_start=0):
    """float64 torch attention. q [b, hq, sq, dk], k [b, hkv, skv, dk], v [b, hkv, skv, dv]
    (NumPy or torch). allow: [sq, skv] bool or None. Returns (out, lse) as float64 NumPy."""
    q, k, v = (torch.from_numpy(np.array(x, dtype=np.float64)) for x in (q, k, v))
    hq, hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(hq // hkv, dim=1)  # GQA: query head h reads kv head h // group
    v = v.repeat_interleave(hq // hkv, dim=1)
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        qp, kp = positions(q.shape[2], k.shape[2], q_start, k_start)
        slopes = torch.as_tensor(np.asarray(alibi_slopes)).double()
        s = s - slopes[None, :, None, None] * (qp - kp).abs().double()
    if allow is not None:
        s = s.masked_fill(~allow, float("-inf"))
    if sinks is not None:
        sink = torch.as_tensor(np.asarray(sinks)).double()[None, :, None, None]
        s = torch.cat([s, sink.expand(s.shape[0], -1, s.shape[2], 1)], dim=-1)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    p = torch.nan_to_num(p, nan=0.0)  # rows with every key masked: out = 0
    if sinks is not None:
        p = p[..., :-1]
    out = torch.matmul(p, v)
    return out.numpy(), lse.numpy()


def assert_close(actual, expected, tol=2e-5, what="out"):
    """Max error relative to the reference's largest magnitude (at least 1)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    finite = np.isfinite(expected)
    assert np.array_equal(finite, np.isfinite(actual)), f"{what}: non-finite entries differ"
    assert np.array_equal(actual[~finite], expected[~finite]), f"{what}: infinities differ"
    if finite.any():
        err = np.max(np.abs(actual[finite] - expected[finite]))
        ref = max(1.0, np.max(np.abs(expected[finite])))
        assert err <= tol * ref, f"{what}: max error {err:.3g} > {tol:.1g} x {ref:.3g}"
