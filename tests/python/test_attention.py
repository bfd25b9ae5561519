# attnkit.attention against a plain float64 torch softmax(Q Kᵀ) V: every mask kind, GQA / MQA,
# soft-capping, sinks, ALiBi, the log-sum-exp, layouts, strided views, out=, offsets, and the
# exact merge of split-KV pieces.
import threading

import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def qkv(rng, batch=2, hq=6, hkv=2, sq=37, skv=53, dk=24, dv=None):
    dv = dk if dv is None else dv
    return (randn(rng, batch, hq, sq, dk), randn(rng, batch, hkv, skv, dk),
            randn(rng, batch, hkv, skv, dv))


# (attnkit keywords, torch_ref.allowed kind + parameters)
MASK_CASES = {
    "none": (dict(), ("none", {})),
    "causal": (dict(causal=True), ("causal", {})),
    "sliding_window_int": (dict(window=7), ("sliding_window", {"w": 7})),
    "window_pair": (dict(window=(5, 3)), ("window", {"left": 5, "right": 3})),
    "window_left_unbounded": (dict(window=(-1, 2)), ("window", {"left": None, "right": 2})),
    "window_right_unbounded": (dict(window=(4, None)), ("window", {"left": 4, "right": None})),
    "mask_causal": (dict(mask=attnkit.masks.causal()), ("causal", {})),
    "mask_sliding_window": (dict(mask=attnkit.masks.sliding_window(16)),
                            ("sliding_window", {"w": 16})),
    "mask_window": (dict(mask=attnkit.masks.window(9, 2)), ("window", {"left": 9, "right": 2})),
    "mask_chunked": (dict(mask=attnkit.masks.chunked(10)), ("chunked", {"chunk": 10})),
    "causal_and_window_pair": (dict(causal=True, window=(6, 6)),
                               ("window", {"left": 6, "right": 0})),
}


@pytest.mark.parametrize("case", sorted(MASK_CASES))
@pytest.mark.parametrize("sq,skv", [(37, 53), (53, 53), (1, 29), (40, 17)])
def test_every_mask_kind_matches_torch(rng, case, sq, skv):
    kwargs, (kind, params) = MASK_CASES[case]
    q, k, v = qkv(rng, sq=sq, skv=skv)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **kwargs)
    want, want_lse = ref.attention(q, k, v, allow=ref.allowed(kind, sq, skv, **params))
    ref.assert_close(out, want)
    ref.assert_close(lse, want_lse, what="lse")
    assert out.dtype == np.float32 and out.shape == (2, 6, sq, 24)
    assert lse.dtype == np.float32 and lse.shape == (2, 6, sq)


def test_and_or_masks_match_torch(rng):
    q, k, v = qkv(rng, sq=45, skv=45)
    m_and = attnkit.masks.chunked(8) & attnkit.masks.sliding_window(5)
    m_or = attnkit.masks.sliding_window(3) | attnkit.masks.window(0, 0)
    want_and = ref.allowed("chunked", 45, 45, chunk=8) & ref.allowed("sliding_window", 45, 45, w=5)
    want_or = ref.allowed("sliding_window", 45, 45, w=3) | ref.allowed("window", 45, 45, left=0,
                                                                         right=0)
    ref.assert_close(attnkit.attention(q, k, v, mask=m_and), ref.attention(q, k, v, want_and)[0])
    ref.assert_close(attnkit.attention(q, k, v, mask=m_or), ref.attention(q, k, v, want_or)[0])


@pytest.mark.parametrize("hq,hkv", [(4, 4), (8, 2), (6, 3), (5, 1)])
def test_gqa_and_mqa_expand_kv_heads(rng, hq, hkv):
    q, k, v = qkv(rng, hq=hq, hkv=hkv, sq=19, skv=31, dk=16, dv=40)
    out = attnkit.attention(q, k, v, causal=True)
    ref.assert_close(out, ref.attention(q, k, v, ref.allowed("causal", 19, 31))[0])
    # The same as repeating each kv head for its group of query heads, then running MHA.
    g = hq // hkv
    mha = attnkit.attention(q, np.repeat(k, g, axis=1), np.repeat(v, g, axis=1), causal=True)
    ref.assert_close(out, mha, tol=1e-6)


@pytest.mark.parametrize("softcap", [None, 5.0, 30.0])
@pytest.mark.parametrize("use_sinks", [False, True])
@pytest.mark.parametrize("use_alibi", [False, True])
def test_score_options_match_torch(rng, softcap, use_sinks, use_alibi):
    q, k, v = qkv(rng, hq=4, hkv=2, sq=33, skv=47, dk=32)
    q *= 3.0  # large logits, so soft-capping matters
    sinks = randn(rng, 4) if use_sinks else None
    slopes = 2.0 ** (-8.0 * np.arange(1, 5) / 4) if use_alibi else None  # float64 is accepted
    out, lse = attnkit.attention(q, k, v, window=20, softcap=softcap, sinks=sinks,
                                 alibi_slopes=slopes, scale=0.11, return_lse=True)
    want, want_lse = ref.attention(q, k, v, ref.allowed("sliding_window", 33, 47, w=20),
                                   scale=0.11, softcap=softcap, sinks=sinks, alibi_slopes=slopes)
    ref.assert_close(out, want)
    ref.assert_close(lse, want_lse, what="lse")


def test_fully_masked_rows_are_zero_with_lse_minus_inf(rng):
    q, k, v = qkv(rng, sq=20, skv=8)  # bottom-right causal: the first 12 query rows see no key
    out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    assert np.all(out[:, :, :12] == 0) and np.all(lse[:, :, :12] == -np.inf)
    want, want_lse = ref.attention(q, k, v, ref.allowed("causal", 20, 8))
    ref.assert_close(out, want)
    ref.assert_close(lse, want_lse, what="lse")
    sinks = randn(rng, 6)
    _, lse_sink = attnkit.attention(q, k, v, causal=True, sinks=sinks, return_lse=True)
    ref.assert_close(lse_sink[:, :, :12], np.broadcast_to(sinks[None, :, None], (2, 6, 12)),
                     what="lse with sinks")


def test_bshd_layout_and_strided_views_without_copies(rng):
    q, k, v = qkv(rng, hq=4, hkv=2, sq=21, skv=30, dk=16)
    want = attnkit.attention(q, k, v, causal=True)
    # bshd buffers.
    qs, ks, vs = (np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q, k, v))
    out = attnkit.attention(qs, ks, vs, causal=True, layout="bshd")
    assert out.shape == (2, 21, 4, 16)
    ref.assert_close(out.transpose(0, 2, 1, 3), want, tol=1e-6)
    # A transposed view of the bshd buffer passed as bhsd: strides carry it, no copy needed.
    out2 = attnkit.attention(qs.transpose(0, 2, 1, 3), ks.transpose(0, 2, 1, 3),
                             vs.transpose(0, 2, 1, 3), causal=True)
    ref.assert_close(out2, want, tol=1e-6)
    # Slices of a bigger buffer (a fused qkv projection), and a broadcast (stride-0) kv batch.
    fused = randn(rng, 2, 4 + 2 + 2, 30, 16)
    qf, kf, vf = fused[:, :4, 9:], fused[:, 4:6], fused[:, 6:]
    assert not qf.flags.c_contiguous
    ref.assert_close(attnkit.attention(qf, kf, vf),
                     ref.attention(qf, kf, vf)[0])
    kb = np.broadcast_to(k[:1], k.shape)
    ref.assert_close(attnkit.attention(q, kb, kb), ref.attention(q, kb, kb)[0])


def test_out_argument_is_written_in_place(rng):
    q, k, v = qkv(rng, dv=8)
    out = np.full((2, 6, 37, 8), np.nan, dtype=np.float32)
    res = attnkit.attention(q, k, v, causal=True, out=out)
    assert res is out
    ref.assert_close(out, ref.attention(q, k, v, ref.allowed("causal", 37, 53))[0])
    # Into a strided view of a bigger array.
    big = np.zeros((2, 37, 6, 20), dtype=np.float32)
    attnkit.attention(q, k, v, causal=True, out=big[..., 4:12].transpose(0, 2, 1, 3))
    ref.assert_close(big[..., 4:12].transpose(0, 2, 1, 3), out, tol=1e-6)
    assert np.all(big[..., :4] == 0) and np.all(big[..., 12:] == 0)


def test_torch_tensors_in_and_out(rng):
    q, k, v = qkv(rng)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    tout = torch.empty(2, 6, 37, 24)
    res = attnkit.attention(tq, tk, tv, causal=True, out=tout)
    assert res is tout
    ref.assert_close(tout.numpy(), ref.attention(q, k, v, ref.allowed("causal", 37, 53))[0])


def test_positions_offsets_give_chunked_prefill(rng):
    q, k, v = qkv(rng, sq=50, skv=50)
    full = attnkit.attention(q, k, v, causal=True)
    # Rows 20..34 alone, over keys 0..34: their default alignment puts them at positions 20..34.
    part = attnkit.attention(q[:, :, 20:35], k[:, :, :35], v[:, :, :35], causal=True)
    ref.assert_close(part, full[:, :, 20:35], tol=1e-6)
    # Keys 10..49 with k_start=10 under a window of 8 that never reaches below position 10+.
    part2 = attnkit.attention(q[:, :, 30:], k[:, :, 10:], v[:, :, 10:], window=8, k_start=10,
                              q_start=30)
    ref.assert_close(part2, attnkit.attention(q, k, v, window=8)[:, :, 30:], tol=1e-6)


def test_merge_attention_of_key_splits_is_exact(rng):
    q, k, v = qkv(rng, sq=23, skv=60)
    sinks = randn(rng, 6)
    want, want_lse = attnkit.attention(q, k, v, causal=True, sinks=sinks, return_lse=True)
    outs, lses = [], []
    for i, (a, b) in enumerate([(0, 17), (17, 41), (41, 60)]):
        o, l = attnkit.attention(q, k[:, :, a:b], v[:, :, a:b], causal=True, k_start=a,
                                 q_start=60 - 23, sinks=sinks if i == 0 else None,
                                 return_lse=True)
        outs.append(o)
        lses.append(l)
    out, lse = attnkit.merge_attention(outs, lses)
    ref.assert_close(out, want)
    ref.assert_close(lse, want_lse, what="lse")
    buf = np.empty_like(want)
    assert attnkit.merge_attention(outs, lses, out=buf)[0] is buf


def test_reference_backend_and_thread_counts_agree(rng):
    q, k, v = qkv(rng, sq=70, skv=90, dk=40)
    fast = attnkit.attention(q, k, v, causal=True, softcap=20.0)
    slow = attnkit.attention(q, k, v, causal=True, softcap=20.0, backend="reference")
    one = attnkit.attention(q, k, v, causal=True, softcap=20.0, num_threads=1)
    ref.assert_close(fast, slow)
    ref.assert_close(fast, one, tol=1e-6)


def test_pooled_scratch_is_reused_released_and_safe_across_threads(rng):
    # Prefill with several query blocks keeps packed K/V tiles in pooled scratch memory: the
    # answer must not depend on whether the pool is warm, empty, or shared by concurrent calls.
    q, k, v = qkv(rng, batch=2, hq=4, hkv=2, sq=300, skv=300, dk=40)
    want = attnkit.attention(q, k, v, causal=True, backend="reference")
    warm = attnkit.attention(q, k, v, causal=True)
    attnkit.release_scratch_memory()
    cold = attnkit.attention(q, k, v, causal=True)
    ref.assert_close(warm, want)
    np.testing.assert_array_equal(warm, cold)
    results = [None] * 4

    def work(i):
        results[i] = attnkit.attention(q, k, v, causal=True, num_threads=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, warm)


def test_kernel_runs_without_the_gil(rng):
    q, k, v = qkv(rng, batch=1, hq=8, hkv=8, sq=1024, skv=1024, dk=64)
    started, done = threading.Event(), threading.Event()
    result = {}

    def work():
        started.set()
        result["out"] = attnkit.attention(q, k, v, num_threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    ticks = 0
    while not done.is_set():  # runs only while the worker does not hold the GIL
        ticks += 1
    t.join()
    assert ticks > 100, f"the main thread ran only {ticks} loop iterations during the kernel"
    ref.assert_close(result["out"][:, :, :64], ref.attention(q[:, :, :64], k, v)[0])


def test_tile_stats_show_skipped_work(rng):
    q, k, v = qkv(rng, batch=1, hq=2, hkv=1, sq=600, skv=600, dk=16)
    out, stats = attnkit.attention(q, k, v, window=64, return_stats=True)
    ref.assert_close(out, attnkit.attention(q, k, v, window=64))
    assert stats["tiles_total"] == (stats["tiles_skipped"] + stats["tiles_full"] +
                                    stats["tiles_partial"])
    assert stats["tiles_skipped"] > 0 and stats["block_q"] > 0 and stats["block_kv"] > 0
    _, lse, dense = attnkit.attention(q, k, v, return_lse=True, return_stats=True)
    assert lse.shape == (1, 2, 600)
    assert dense["tiles_skipped"] == 0 and dense["tiles_total"] == stats["tiles_total"]
