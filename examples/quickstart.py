#!/usr/bin/env python3
"""attnkit from Python in one page: exact attention with GQA and masks, the log-sum-exp, and
token-by-token decoding through a KV cache, each checked against plain NumPy.

Run after building (bash scripts/build.sh release):
    PYTHONPATH=build/python python3 examples/quickstart.py
"""
import time

import numpy as np

import attnkit


def numpy_attention(q, k, v, allowed):
    """softmax(q kᵀ / sqrt(d)) v with a [seqlen_q, seqlen_kv] bool mask, the obvious way."""
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = q.astype(np.float64) @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    s = np.where(allowed, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def main():
    rng = np.random.default_rng(0)
    batch, num_heads_q, num_heads_kv, seqlen, head_dim = 1, 8, 2, 512, 64
    print(f"attnkit {attnkit.__version__}, SIMD target {attnkit.simd_target()}, "
          f"{attnkit.get_num_threads()} threads")

    # Arrays are float32 [batch, heads, seqlen, head_dim]; 8 query heads share 2 kv heads (GQA).
    q = rng.standard_normal((batch, num_heads_q, seqlen, head_dim), dtype=np.float32)
    k = rng.standard_normal((batch, num_heads_kv, seqlen, head_dim), dtype=np.float32)
    v = rng.standard_normal((batch, num_heads_kv, seqlen, head_dim), dtype=np.float32)

    # 1. Causal attention.
    t0 = time.perf_counter()
    out = attnkit.attention(q, k, v, causal=True)
    ms = (time.perf_counter() - t0) * 1e3
    causal = np.tril(np.ones((seqlen, seqlen), dtype=bool))
    err = np.abs(out - numpy_attention(q, k, v, causal)).max()
    print(f"causal attention {out.shape} in {ms:.1f} ms, max |error| vs NumPy {err:.1e}")

    # 2. A sliding window of 128 keys (Mistral / Gemma style), given as a mask object.
    window = attnkit.masks.sliding_window(128)
    out_w = attnkit.attention(q, k, v, mask=window)
    err = np.abs(out_w - numpy_attention(q, k, v, window.to_array(seqlen))).max()
    print(f"{window}: {window.density(seqlen):.1%} of pairs attended, max |error| {err:.1e}")

    # 3. Decoding: prefill 500 tokens, then 12 tokens one at a time through a KV cache.
    cache = attnkit.KVCache(batch, num_heads_kv, head_dim, capacity=seqlen)
    cache.append(k[:, :, :500], v[:, :, :500])
    steps = []
    for t in range(500, seqlen):
        cache.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
        steps.append(attnkit.decode(q[:, :, t:t + 1], cache))
    err = np.abs(np.concatenate(steps, axis=2) - out[:, :, 500:]).max()
    print(f"decode through {cache}: max |difference| from the full call {err:.1e}")

    # 4. Split the keys in two, attend to each half, merge exactly with the log-sum-exps.
    half = seqlen // 2
    o1, l1 = attnkit.attention(q, k[:, :, :half], v[:, :, :half], causal=True,
                               q_start=0, return_lse=True)
    o2, l2 = attnkit.attention(q, k[:, :, half:], v[:, :, half:], causal=True,
                               q_start=0, k_start=half, return_lse=True)
    merged, _ = attnkit.merge_attention([o1, o2], [l1, l2])
    print(f"split-KV merge: max |difference| from the full call {np.abs(merged - out).max():.1e}")


if __name__ == "__main__":
    main()
