# Attention blocks from Python: a GQA block against a float64 torch forward written from its
# weights, prefill then decode equal to one full pass for every block kind, MLA's two paths
# agreeing, and a stack.
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def torch_rope_half(x, positions, theta):
    """Rotate-half RoPE over the whole head dim: x [b, h, t, d], float64."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    ang = positions[:, None].double() * inv[None, :]  # [t, d/2]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def torch_gqa_block(x, w, hq, hkv, d, theta, window=0, sinks=False):
    x = torch.from_numpy(x).double()
    W = {k: torch.from_numpy(v).double() for k, v in w.items()}
    b, t, _ = x.shape
    heads = lambda y, h: y.view(b, t, h, d).transpose(1, 2)
    q, k, v = heads(x @ W["w_q"], hq), heads(x @ W["w_k"], hkv), heads(x @ W["w_v"], hkv)
    pos = torch.arange(t)
    q, k = torch_rope_half(q, pos, theta), torch_rope_half(k, pos, theta)
    allow = (ref.allowed("sliding_window", t, t, w=window) if window
             else ref.allowed("causal", t, t))
    o, _ = ref.attention(q.numpy(), k.numpy(), v.numpy(), allow,
                         sinks=w["sinks"] if sinks else None)
    o = torch.from_numpy(o).transpose(1, 2).reshape(b, t, hq * d)
    return (o @ W["w_o"]).numpy()


@pytest.mark.parametrize("window,sinks", [(0, False), (5, True)])
def test_gqa_block_matches_torch(rng, window, sinks):
    hidden, hq, hkv, d, T = 48, 6, 2, 8, 13
    layer = attnkit.gqa_block(hidden, hq, hkv, d, window=window, sinks=sinks, rope_theta=500.0,
                              seed=int(rng.integers(1 << 30)), max_tokens=64, batch=2)
    x = rng.standard_normal((2, T, hidden)).astype(np.float32)
    out = layer.forward(x)
    w = layer.weights()
    assert w["w_q"].shape == (hidden, hq * d) and ("sinks" in w) == sinks
    ref.assert_close(out, torch_gqa_block(x, w, hq, hkv, d, 500.0, window, sinks), tol=1e-4)
    # The same weights passed back in give the same block.
    again = attnkit.gqa_block(hidden, hq, hkv, d, window=window, sinks=sinks, rope_theta=500.0,
                              weights=w, max_tokens=64, batch=2)
    ref.assert_close(again.forward(x), out, tol=1e-6)


@pytest.mark.parametrize("kind", ["gqa", "mqa", "swa", "sinks", "qknorm", "gated", "mla",
                                  "mla-naive", "gated_deltanet", "kda", "deltanet", "performer",
                                  "linear_elu", "linear_relu", "strided", "fixed", "bigbird",
                                  "longformer", "chunked", "dsa"])
def test_prefill_then_decode_equals_one_pass(rng, kind):
    shape = dict(hidden=64, num_heads=4, num_heads_kv=2, head_dim=16, window=6, q_lora_rank=24,
                 kv_lora_rank=32, rope_head_dim=8, batch=2, max_tokens=40)
    seed = int(rng.integers(1 << 30))
    full_layer = attnkit.make_layer(kind, seed=seed, **shape)
    x = rng.standard_normal((2, 20, 64)).astype(np.float32)
    full = full_layer.forward(x)
    layer = attnkit.make_layer(kind, seed=seed, **shape)
    parts = [layer.forward(x[:, :11])]
    for t in range(11, 20):
        parts.append(layer(x[:, t:t + 1], position=t))
    ref.assert_close(np.concatenate(parts, axis=1), full, tol=1e-4)
    assert layer.tokens_seen == 20 and layer.cache_bytes > 0 and layer.weight_bytes > 0
    layer.reset()
    assert layer.tokens_seen == 0


def test_mla_paths_agree_and_cache_is_latent(rng):
    args = dict(hidden=64, num_heads=4, kv_lora_rank=32, qk_nope_head_dim=16,
                qk_rope_head_dim=8, v_head_dim=16, q_lora_rank=24, max_tokens=30)
    seed = int(rng.integers(1 << 30))
    a = attnkit.mla_block(seed=seed, **args)
    b = attnkit.mla_block(seed=seed, path="naive", **args)
    x = rng.standard_normal((1, 17, 64)).astype(np.float32)
    ref.assert_close(a.forward(x), b.forward(x), tol=1e-4)
    assert a.cache_bytes == 30 * (32 + 8) * 4  # kv_lora_rank + rope dims per token, f32
    b.reset()
    b.set_path("absorbed")
    a.reset()
    ref.assert_close(b.forward(x), a.forward(x), tol=1e-5)


def test_stack_runs_hybrid_kinds(rng):
    st = attnkit.Stack("2*swa,gqa,mla", hidden=64, num_heads=4, num_heads_kv=2, head_dim=16,
                       window=4, q_lora_rank=0, kv_lora_rank=32, rope_head_dim=8, max_tokens=32)
    x = rng.standard_normal((1, 12, 64)).astype(np.float32)
    full = st.forward(x)
    assert st.num_layers == 4 and full.shape == x.shape and np.all(np.isfinite(full))
    st.reset()
    parts = [st.forward(x[:, :5])] + [st.forward(x[:, t:t + 1]) for t in range(5, 12)]
    ref.assert_close(np.concatenate(parts, axis=1), full, tol=1e-4)


def test_layer_bad_input(rng):
    layer = attnkit.make_layer("gqa", hidden=32, num_heads=4, num_heads_kv=2, head_dim=8,
                               max_tokens=8)
    with pytest.raises(ValueError, match="hidden size 16 but the layer's is 32"):
        layer.forward(np.zeros((1, 3, 16), np.float32))
    with pytest.raises(ValueError):
        layer.forward(np.zeros((1, 3, 32), np.float32), position=5)  # skips positions
    with pytest.raises(ValueError):
        layer.forward(np.zeros((1, 9, 32), np.float32))  # past the cache capacity
    with pytest.raises(ValueError, match="unknown weight"):
        attnkit.gqa_block(32, 4, 2, 8, weights={"w_x": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError):
        attnkit.gqa_block(32, 4, 2, 8, weights={"w_q": np.zeros((32, 32), np.float32)})
    with pytest.raises(ValueError):
        attnkit.make_layer("nope")
    with pytest.raises(ValueError, match="only MLA"):
        layer.set_path("naive")


def test_a_real_models_layer_at_its_own_dims(rng):
    layer = attnkit.model_layer("llama-3.2-1b", 0, max_tokens=16)
    model = attnkit.load_model("llama-3.2-1b")
    assert layer.hidden == model.hidden_size
    x = (0.1 * rng.standard_normal((1, 3, layer.hidden))).astype(np.float32)
    out = layer.forward(x)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="index must be in"):
        attnkit.model_layer("llama-3.2-1b", 10_000)
