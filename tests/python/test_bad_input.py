# Bad input raises TypeError / ValueError naming the argument; nothing crashes, nothing is silently
# converted or copied.
import numpy as np
import pytest
import torch

import attnkit


def arrays(b=1, hq=4, hkv=2, sq=5, skv=7, dk=8, dv=8):
    z = np.zeros
    return (z((b, hq, sq, dk), np.float32), z((b, hkv, skv, dk), np.float32),
            z((b, hkv, skv, dv), np.float32))


def raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_wrong_dtypes_are_type_errors():
    q, k, v = arrays()
    raises(TypeError, r"^q must be a float32 array, got dtype float64", attnkit.attention,
           q.astype(np.float64), k, v)
    raises(TypeError, r"^k must be a float32 array, got dtype int32", attnkit.attention, q,
           k.astype(np.int32), v)
    raises(TypeError, r"^v must be a float32 array, got dtype float16", attnkit.attention, q, k,
           v.astype(np.float16))
    raises(TypeError, r"^q must be a float32 array", attnkit.attention, q.astype(">f4"), k, v)
    raises(TypeError, r"^q must be a float32 array, got dtype float64", attnkit.attention,
           q.tolist(), k, v)
    raises(TypeError, r"^q must be an array, got None", attnkit.attention, None, k, v)
    raises(TypeError, r"^sinks must hold real numbers", attnkit.attention, q, k, v,
           sinks=np.array(["a"] * 4))
    raises(TypeError, r"^out must be a float32 array", attnkit.attention, q, k, v,
           out=np.zeros(q.shape, np.float64))
    raises(TypeError, r"^q cannot be read as a NumPy array", attnkit.attention,
           torch.zeros(1, 4, 5, 8, requires_grad=True), k, v)
    raises(TypeError, r"^mask must be an attnkit.Mask", attnkit.attention, q, k, v, mask="causal")
    raises(TypeError, r"^window must be None, an int", attnkit.attention, q, k, v, window=2.5)


def test_wrong_ranks_and_shapes_are_value_errors():
    q, k, v = arrays()
    raises(ValueError, r"^q must be 4-D \[batch, heads, seqlen, head_dim\], got shape \(4, 5, 8\)",
           attnkit.attention, q[0], k, v)
    raises(ValueError, r"^v must be 4-D \[batch, seqlen, heads, head_dim\]", attnkit.attention,
           q, k, v[..., None], layout="bshd")
    raises(ValueError, r"^num_heads_q .* multiple of num_heads_kv", attnkit.attention,
           *arrays(hq=5, hkv=2))
    raises(ValueError, r"^q and k must have the same head_dim", attnkit.attention, q,
           *arrays(dk=6)[1:])
    raises(ValueError, r"^k and v must have the same seqlen", attnkit.attention, q, k, v[:, :, :3])
    raises(ValueError, r"^k and v must have the same heads", attnkit.attention, q, k, v[:, :1])
    raises(ValueError, r"^q, k and v must have the same batch", attnkit.attention,
           np.concatenate([q, q]), k, v)
    raises(ValueError, r"^q is empty", attnkit.attention, q[:, :, :0], k, v)
    raises(ValueError, r"^out must have shape \(1, 4, 5, 8\)", attnkit.attention, q, k, v,
           out=np.zeros((1, 4, 5, 7), np.float32))
    raises(ValueError, r"^sinks must have shape \(4,\)", attnkit.attention, q, k, v,
           sinks=np.zeros(3))
    raises(ValueError, r"^alibi_slopes must have shape \(4,\)", attnkit.attention, q, k, v,
           alibi_slopes=np.zeros((4, 1)))


def test_strides_that_need_a_copy_are_value_errors():
    q, k, v = arrays()
    wide = np.zeros((1, 4, 5, 16), np.float32)
    raises(ValueError, r"^q must be contiguous in its last axis", attnkit.attention,
           wide[..., ::2], k, v)
    raises(ValueError, r"^k has a negative stride", attnkit.attention, q, k[:, :, ::-1], v)
    raw = np.zeros(1 * 4 * 5 * 8 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(1, 4, 5, 8)
    raises(ValueError, r"^q is not aligned", attnkit.attention, raw, k, v)


def test_bad_outputs_are_value_errors():
    q, k, v = arrays(dv=8)
    ro = np.zeros(q.shape, np.float32)
    ro.flags.writeable = False
    raises(ValueError, r"^out is read-only", attnkit.attention, q, k, v, out=ro)
    shared = np.lib.stride_tricks.as_strided(np.zeros(8, np.float32), q.shape, (0, 0, 0, 4))
    raises(ValueError, r"^out has elements that share memory", attnkit.attention, q, k, v,
           out=shared)
    raises(ValueError, r"out overlaps an input", attnkit.attention, q, k, v, out=q)


def test_bad_options_are_value_errors():
    q, k, v = arrays()
    raises(ValueError, r"^scale must be a finite nonzero", attnkit.attention, q, k, v, scale=0.0)
    raises(ValueError, r"^scale must be a finite nonzero", attnkit.attention, q, k, v,
           scale=float("nan"))
    raises(ValueError, r"^softcap must be a finite number >= 0", attnkit.attention, q, k, v,
           softcap=-1.0)
    raises(ValueError, r"^layout must be", attnkit.attention, q, k, v, layout="bsdh")
    raises(ValueError, r"^backend must be", attnkit.attention, q, k, v, backend="gpu")
    raises(ValueError, r"^window must be >= 1", attnkit.attention, q, k, v, window=0)
    raises(ValueError, r"^window must be an int or a \(left, right\) pair", attnkit.attention,
           q, k, v, window=(1, 2, 3))
    raises(ValueError, r"^num_threads must be >= 0", attnkit.attention, q, k, v, num_threads=-2)
    raises(ValueError, r"sinks\[1\] must be a finite logit", attnkit.attention, q, k, v,
           sinks=[0.0, np.inf, 0.0, 0.0])
    raises(ValueError, r"alibi_slopes\[0\] is not finite", attnkit.attention, q, k, v,
           alibi_slopes=[np.nan, 0.0, 0.0, 0.0])
    raises(ValueError, r"CausalWindowMask: window must be >= 1", attnkit.masks.sliding_window, 0)
    raises(ValueError, r"ChunkedLocalMask: chunk must be >= 1", attnkit.masks.chunked, -3)
    raises(ValueError, r"n must be >= 1", attnkit.set_num_threads, 0)


def test_merge_attention_rejects_mismatches():
    o = np.zeros((1, 2, 3, 4), np.float32)
    lse = np.zeros((1, 2, 3), np.float32)
    raises(ValueError, r"outs is empty", attnkit.merge_attention, [], [])
    raises(ValueError, r"same length", attnkit.merge_attention, [o, o], [lse])
    raises(ValueError, r"outs\[1\] has shape", attnkit.merge_attention, [o, o[:, :1]], [lse, lse])
    raises(ValueError, r"lses\[0\] must be 3-D", attnkit.merge_attention, [o], [lse[..., None]])
    raises(ValueError, r"lses\[1\] must be \[batch, num_heads_q, seqlen_q\]",
           attnkit.merge_attention, [o, o], [lse, lse[:, :, :2]])
    raises(TypeError, r"lses\[0\] must be a float32", attnkit.merge_attention, [o],
           [lse.astype(np.float64)])


def test_kv_cache_misuse():
    raises(ValueError, r"give capacity=", attnkit.KVCache, 1, 2, 8)
    raises(ValueError, r"dtype must be", attnkit.KVCache, 1, 2, 8, capacity=4, dtype="fp8")
    raises(ValueError, r"KvCache: num_heads_kv must be positive", attnkit.KVCache, 1, 0, 8,
           capacity=4)
    cache = attnkit.KVCache(1, 2, 8, capacity=4)
    q, k, v = arrays(sq=1, skv=3)
    raises(ValueError, r"the cache is empty", attnkit.decode, q, cache)
    cache.append(k, v)
    raises(ValueError, r"capacity 4 exceeded", cache.append, k, v)
    raises(ValueError, r"KvCache::Append: k .* does not match the cache", cache.append,
           *arrays(hkv=3, skv=1)[1:])
    raises(TypeError, r"^k must be a float32 array", cache.append, k.astype(np.float64), v)
    raises(ValueError, r"4 query tokens but the cache holds only 3", attnkit.decode,
           *arrays(sq=4)[:1], cache)
    raises(ValueError, r"num_heads_q \(3\) must be a multiple", attnkit.decode,
           arrays(hq=3, sq=1)[0], cache)
    raises(ValueError, r"^out must have shape", attnkit.decode, q, cache,
           out=np.zeros((1, 4, 2, 8), np.float32))
    raises(TypeError, r"incompatible function arguments", attnkit.decode, q, "cache")
    ring = attnkit.KVCache(1, 2, 8, window=4, max_step=2)
    ring.append(k, v)
    raises(ValueError, r"3 query tokens exceed the ring buffer's max_step 2", attnkit.decode,
           arrays(sq=3)[0], ring)
