# attnkit.attention_backward against PyTorch autograd of a plain float64 softmax(Q Kᵀ) V:
# every mask kind, GQA / MQA, head_dim_qk != head_dim_v, soft-capping, ALiBi, sinks (and their
# gradient), layouts, offsets, torch tensors as input, and bad input.
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def torch_grads(q, k, v, dout, allow=None, scale=None, softcap=None, sinks=None,
                alibi_slopes=None, q_start=None, k_start=0):
    """Gradients of sum(dout * attention(q, k, v)) by torch autograd in float64."""
    q, k, v = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
               for x in (q, k, v))
    hq, hkv = q.shape[1], k.shape[1]
    kk = k.repeat_interleave(hq // hkv, dim=1)
    vv = v.repeat_interleave(hq // hkv, dim=1)
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    s = torch.matmul(q, kk.transpose(-1, -2)) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        qp, kp = ref.positions(q.shape[2], k.shape[2], q_start, k_start)
        slopes = torch.as_tensor(np.asarray(alibi_slopes, dtype=np.float64))
        s = s - slopes[None, :, None, None] * (qp - kp).abs().double()
    if allow is not None:
        s = s.masked_fill(~allow, float("-inf"))
    sink = None
    if sinks is not None:
        sink = torch.tensor(np.asarray(sinks, dtype=np.float64), requires_grad=True)
        col = sink[None, :, None, None].expand(s.shape[0], -1, s.shape[2], 1)
        s = torch.cat([s, col], dim=-1)
    p = torch.softmax(s, dim=-1)
    if sinks is not None:
        p = p[..., :-1]
    out = torch.matmul(p, vv)
    (out * torch.from_numpy(np.asarray(dout, dtype=np.float64))).sum().backward()
    grads = [q.grad.numpy(), k.grad.numpy(), v.grad.numpy()]
    if sink is not None:
        grads.append(sink.grad.numpy())
    return grads


def check(got, want):
    # Gradients share the loss's units: errors relative to the largest of them.
    scale = max(1.0, max(float(np.max(np.abs(w))) for w in want))
    for name, g, w in zip(("dq", "dk", "dv", "dsinks"), got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        ref.assert_close(g, w, tol=1e-4 * scale / max(1.0, float(np.max(np.abs(w)))), what=name)


MASKS = {
    "none": (dict(), ("none", {})),
    "causal": (dict(causal=True), ("causal", {})),
    "sliding_window": (dict(window=7), ("sliding_window", {"w": 7})),
    "window_pair": (dict(window=(5, 3)), ("window", {"left": 5, "right": 3})),
    "chunked": (dict(mask=attnkit.masks.chunked(10)), ("chunked", {"chunk": 10})),
}


@pytest.mark.parametrize("case", sorted(MASKS))
@pytest.mark.parametrize("hq,hkv,sq,skv,dk,dv", [(4, 2, 37, 53, 24, 16), (3, 1, 65, 65, 16, 16),
                                                 (2, 2, 1, 29, 8, 8)])
def test_every_mask_matches_torch_autograd(rng, case, hq, hkv, sq, skv, dk, dv):
    kwargs, (kind, params) = MASKS[case]
    q, k, v = randn(rng, 2, hq, sq, dk), randn(rng, 2, hkv, skv, dk), randn(rng, 2, hkv, skv, dv)
    dout = randn(rng, 2, hq, sq, dv)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **kwargs)
    got = attnkit.attention_backward(q, k, v, out, lse, dout, **kwargs)
    check(got, torch_grads(q, k, v, dout, allow=ref.allowed(kind, sq, skv, **params)))


@pytest.mark.parametrize("opts", ["softcap", "alibi", "sinks", "scale", "everything"])
def test_score_options_match_torch_autograd(rng, opts):
    hq, hkv, sq, skv, d = 4, 2, 30, 45, 16
    q, k, v = randn(rng, 1, hq, sq, d) * 2, randn(rng, 1, hkv, skv, d) * 2, randn(rng, 1, hkv, skv, d)
    dout = randn(rng, 1, hq, sq, d)
    kw = {"causal": True}
    every = opts == "everything"
    if opts == "softcap" or every:
        kw["softcap"] = 3.0
    if opts == "alibi" or every:
        kw["alibi_slopes"] = np.array([0.5, 0.25, 0.125, 0.0625], dtype=np.float32)
    if opts == "sinks" or every:
        kw["sinks"] = np.array([0.3, -1.0, 2.0, 0.0], dtype=np.float32)
    if opts == "scale" or every:
        kw["scale"] = 0.3
    out, lse = attnkit.attention(q, k, v, return_lse=True, **kw)
    got = attnkit.attention_backward(q, k, v, out, lse, dout, **kw)
    assert len(got) == (4 if "sinks" in kw else 3)
    tkw = {key: val for key, val in kw.items() if key != "causal"}
    check(got, torch_grads(q, k, v, dout, allow=ref.allowed("causal", sq, skv), **tkw))


def test_bshd_layout_offsets_and_torch_tensors(rng):
    b, hq, hkv, sq, skv, d = 2, 6, 3, 20, 33, 16
    q = torch.from_numpy(randn(rng, b, sq, hq, d))  # bshd, as torch tensors
    k, v = torch.from_numpy(randn(rng, b, skv, hkv, d)), torch.from_numpy(randn(rng, b, skv, hkv, d))
    dout = torch.from_numpy(randn(rng, b, sq, hq, d))
    kw = dict(causal=True, layout="bshd", q_start=20, k_start=3)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **kw)
    dq, dk, dv = attnkit.attention_backward(q, k, v, out, lse, dout, **kw)
    assert dq.shape == (b, sq, hq, d) and dk.shape == (b, skv, hkv, d)
    t = lambda x: np.asarray(x).transpose(0, 2, 1, 3)  # noqa: E731
    want = torch_grads(t(q), t(k), t(v), t(dout),
                       allow=ref.allowed("causal", sq, skv, q_start=20, k_start=3))
    check([t(dq), t(dk), t(dv)], want)


def test_bad_input_raises_value_error_naming_the_argument(rng):
    q, k, v = randn(rng, 1, 2, 10, 8), randn(rng, 1, 1, 12, 8), randn(rng, 1, 1, 12, 8)
    out, lse = attnkit.attention(q, k, v, return_lse=True)
    dout = randn(rng, 1, 2, 10, 8)
    with pytest.raises(ValueError, match="lse"):
        attnkit.attention_backward(q, k, v, out, lse[:, :, :5], dout)
    with pytest.raises(ValueError, match="dout"):
        attnkit.attention_backward(q, k, v, out, lse, randn(rng, 1, 2, 10, 4))
    bad = lse.copy()
    bad[0, 0, 0] = np.inf  # NaN is accepted: a row poisoned by a non-finite input
    with pytest.raises(ValueError, match="lse"):
        attnkit.attention_backward(q, k, v, out, bad, dout)
