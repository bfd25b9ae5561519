# Round trips through attnkit.KVCache: prefill then token-by-token decode equals one full causal
# attention call (contiguous and ring-buffer caches, float32 and bf16 storage, GQA, sinks).
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def run_decode(cache, q, k, v, steps, layout="bhsd", **kwargs):
    """Appends k/v in pieces of the given sizes and decodes the matching queries."""
    t_axis = 2 if layout == "bhsd" else 1
    outs, t = [], 0
    for n in steps:
        sl = [slice(None)] * 4
        sl[t_axis] = slice(t, t + n)
        cache.append(k[tuple(sl)], v[tuple(sl)], layout=layout)
        outs.append(attnkit.decode(q[tuple(sl)], cache, layout=layout, **kwargs))
        t += n
    return np.concatenate(outs, axis=t_axis)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (6, 2), (3, 1)])
def test_decode_equals_one_full_call(rng, hq, hkv):
    T = 41
    q, k, v = randn(rng, 2, hq, T, 16), randn(rng, 2, hkv, T, 16), randn(rng, 2, hkv, T, 12)
    full = attnkit.attention(q, k, v, causal=True)
    cache = attnkit.KVCache(2, hkv, 16, 12, capacity=T)
    got = run_decode(cache, q, k, v, [17] + [1] * 20 + [4])
    ref.assert_close(got, full)
    ref.assert_close(got, ref.attention(q, k, v, ref.allowed("causal", T, T))[0])
    assert cache.length == T and len(cache) == T and cache.stored == T


def test_decode_with_score_options_and_lse(rng):
    T, hq = 30, 4
    q, k, v = randn(rng, 1, hq, T, 8), randn(rng, 1, 2, T, 8), randn(rng, 1, 2, T, 8)
    sinks, slopes = randn(rng, hq), np.linspace(0.05, 0.4, hq)
    kw = dict(softcap=3.0, sinks=sinks, alibi_slopes=slopes, scale=0.5)
    full, full_lse = attnkit.attention(q, k, v, causal=True, return_lse=True, **kw)
    cache = attnkit.KVCache(1, 2, 8, capacity=T)
    cache.append(k[:, :, :29], v[:, :, :29])
    cache.append(k[:, :, 29:], v[:, :, 29:])
    out, lse = attnkit.decode(q[:, :, 29:], cache, return_lse=True, **kw)
    ref.assert_close(out, full[:, :, 29:])
    ref.assert_close(lse, full_lse[:, :, 29:], what="lse")


def test_decode_bshd_layout_and_out(rng):
    T = 12
    q, k, v = randn(rng, 1, T, 4, 8), randn(rng, 1, T, 2, 8), randn(rng, 1, T, 2, 8)
    full = attnkit.attention(q, k, v, causal=True, layout="bshd")
    cache = attnkit.KVCache(1, 2, 8, capacity=T)
    got = run_decode(cache, q, k, v, [5, 1, 1, 5], layout="bshd")
    ref.assert_close(got, full)
    buf = np.empty((1, 1, 4, 8), np.float32)
    cache.clear()
    cache.append(k, v, layout="bshd")
    assert attnkit.decode(q[:, -1:], cache, layout="bshd", out=buf) is buf
    ref.assert_close(buf, full[:, -1:])


@pytest.mark.parametrize("window,max_step,steps", [(8, 1, [1] * 40), (8, 3, [3, 1, 2] * 9),
                                                    (5, 4, [4] * 10)])
def test_ring_buffer_decode_equals_sliding_window(rng, window, max_step, steps):
    T = sum(steps)
    q, k, v = randn(rng, 2, 4, T, 8), randn(rng, 2, 2, T, 8), randn(rng, 2, 2, T, 8)
    cache = attnkit.KVCache(2, 2, 8, window=window, max_step=max_step)
    got = run_decode(cache, q, k, v, steps)
    ref.assert_close(got, attnkit.attention(q, k, v, window=window))
    ref.assert_close(got, ref.attention(q, k, v, ref.allowed("sliding_window", T, T, w=window))[0])
    assert cache.slots == window + max_step - 1 and cache.stored == cache.slots
    kc, vc, start = cache.contents()  # the ring keeps exactly the newest `slots` tokens
    assert start == T - cache.slots
    np.testing.assert_array_equal(kc, k[:, :, start:])
    np.testing.assert_array_equal(vc, v[:, :, start:])


def test_bf16_cache_matches_torch_on_rounded_keys(rng):
    T = 25
    q, k, v = randn(rng, 1, 4, T, 16), randn(rng, 1, 2, T, 16), randn(rng, 1, 2, T, 16)
    cache = attnkit.KVCache(1, 2, 16, capacity=T, dtype="bf16")
    got = run_decode(cache, q, k, v, [10] + [1] * 15)
    kb, vb = (torch.from_numpy(x).to(torch.bfloat16).float().numpy() for x in (k, v))
    ref.assert_close(got, ref.attention(q, kb, vb, ref.allowed("causal", T, T))[0])
    kc, vc, _ = cache.contents()
    np.testing.assert_array_equal(kc, kb)
    assert cache.dtype == "bf16" and cache.nbytes == 2 * (1 * 2 * T * 16) * 2
    assert "bf16" in repr(cache)


def test_decode_with_extra_mask(rng):
    T = 32
    q, k, v = randn(rng, 1, 2, T, 8), randn(rng, 1, 2, T, 8), randn(rng, 1, 2, T, 8)
    cache = attnkit.KVCache(1, 2, 8, capacity=T)
    got = run_decode(cache, q, k, v, [1] * T, mask=attnkit.masks.chunked(6))
    ref.assert_close(got, ref.attention(q, k, v, ref.allowed("chunked", T, T, chunk=6))[0])
