#!/usr/bin/env python3
"""A tour of the attention variants attnkit binds, each in a few lines, on random data:
sparse masks, DeepSeek Sparse Attention, Performer, Gated DeltaNet with a decode state, an MLA
block, and the KV-cache cost of real models.

Run after building (bash scripts/build.sh release):
    PYTHONPATH=build/python python3 examples/variants_tour.py
"""
import numpy as np

import attnkit

rng = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


batch, heads, seqlen, dim = 1, 4, 256, 32
q, k, v = randn(batch, heads, seqlen, dim), randn(batch, heads, seqlen, dim), randn(batch, heads, seqlen, dim)

# 1. Static sparse patterns are masks: the kernel skips the tiles they leave empty.
for mask in (attnkit.masks.strided(16), attnkit.masks.longformer(seqlen, 8, globals=[0]),
             attnkit.masks.bigbird(seqlen, block=32, seed=1)):
    out, stats = attnkit.attention(q, k, v, mask=mask, return_stats=True)
    print(f"{mask.describe():55s} density {mask.density(seqlen):5.1%}, "
          f"tiles skipped {stats['tiles_skipped']}/{stats['tiles_total']}")
print(attnkit.masks.fixed(8, 2).ascii(16))

# 2. DeepSeek Sparse Attention: a cheap indexer picks 32 keys per query, exact attention over them.
q_index, weights, k_index = randn(batch, 2, seqlen, 16), randn(batch, seqlen, 2), randn(batch, seqlen, 16)
out, idx = attnkit.dsa_attention(q, k, v, q_index, weights, k_index, top_k=32, return_indices=True)
print(f"DSA: query {seqlen - 1} attends to keys {idx[0, -1, :8]} ... ({idx.shape[-1]} in all)")

# 3. Performer: softmax attention estimated with random features, in linear time.
exact = attnkit.attention(0.5 * q, 0.5 * k, v, causal=True)
for m in (16, 256):
    f = attnkit.PerformerFeatures(m, dim, seed=0)
    approx = attnkit.linear_attention(0.5 * q, 0.5 * k, v, features=f, causal=True)
    print(f"Performer with {m:4d} features: mean |error| vs exact {np.abs(approx - exact).mean():.4f}")

# 4. Gated DeltaNet: prefill 200 tokens, then decode the rest one at a time from the state.
log_alpha = -rng.uniform(0, 0.3, (batch, heads, seqlen)).astype(np.float32)
beta = rng.uniform(0, 1, (batch, heads, seqlen)).astype(np.float32)
full = attnkit.gated_delta_rule(q, k, v, log_alpha=log_alpha, beta=beta)
out, state = attnkit.gated_delta_rule(q[:, :, :200], k[:, :, :200], v[:, :, :200],
                                      log_alpha=log_alpha[:, :, :200], beta=beta[:, :, :200],
                                      return_state=True)
steps = []
for t in range(200, seqlen):
    s = slice(t, t + 1)
    steps.append(attnkit.gated_delta_rule(q[:, :, s], k[:, :, s], v[:, :, s],
                                          log_alpha=log_alpha[:, :, s], beta=beta[:, :, s],
                                          state=state))
err = np.abs(np.concatenate(steps, axis=2) - full[:, :, 200:]).max()
print(f"Gated DeltaNet: state {state.shape} ({state.nbytes} bytes, fixed), decode vs full {err:.1e}")

# 5. An MLA block: a small latent cache, two equivalent paths.
mla = attnkit.mla_block(256, 8, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
                        v_head_dim=32, q_lora_rank=96, max_tokens=64)
x = randn(1, 20, 256, scale=0.5)
y_absorbed = mla.forward(x)
mla.reset()
mla.set_path("naive")
print(f"MLA block: cache {mla.cache_bytes} bytes for 64 tokens, "
      f"naive vs absorbed {np.abs(mla.forward(x) - y_absorbed).max():.1e}")

# 6. What real models' KV caches cost at 128k tokens (bf16).
for name in ("llama-3.1-8b", "gemma-3-27b", "qwen3-next-80b-a3b"):
    gb = attnkit.kv_cache_bytes(name, context=131072, dtype="bf16") / 1e9
    print(f"{name:22s} KV cache at 128k tokens: {gb:6.2f} GB  ({attnkit.load_model(name).summary})")
