"""Cross-check of attnkit's attention blocks against an independent PyTorch implementation.

`attnkit blocks-dump DIR` (the C++ CLI, built in build/) writes small GQA and MLA blocks: their
random weights, inputs, and the C++ outputs of a full pass and of prefill + token-by-token
decode. This file recomputes every block from the weights and inputs in float64 torch, written
from the math (docs/blocks.md), not by calling attnkit, and compares.

Weights are [in, out] (y = x @ W), as attnkit stores them.
"""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
# f32 C++ vs float64 torch: the relative max error of a plain f32 implementation of these small
# blocks is ~1e-6; 1e-4 leaves room for the kernel's online softmax while catching any real bug.
TOL = 1e-4


def find_cli():
    candidates = [os.environ.get("ATTNKIT_CLI"), ROOT / "build" / "attnkit",
                  ROOT / "build" / "tools" / "cli" / "attnkit"]
    for c in candidates:
        if c and pathlib.Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    pytest.fail("attnkit CLI not found (looked at $ATTNKIT_CLI, build/attnkit): build it first with "
                "`cmake -S . -B build && cmake --build build --target attnkit_cli`")


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    out = tmp_path_factory.mktemp("blocks")
    seed = os.environ.get("ATTNKIT_TEST_SEED", str(np.random.SeedSequence().entropy % 100000))
    subprocess.run([find_cli(), "blocks-dump", str(out), "--seed", seed], check=True,
                   capture_output=True)
    return out, seed


def load(case_dir):
    arrays = {p.stem: torch.from_numpy(np.load(p)).double() for p in case_dir.glob("*.npy")}
    meta = json.loads((case_dir / "meta.json").read_text())
    return meta, arrays


def rel_err(got, want):
    return float((got - want).abs().max() / want.abs().max())


def rms_norm(x, weight, eps, zero_centred=False):
    y = x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    if weight is None:
        return y
    return y * (1.0 + weight if zero_centred else weight)


def rope(x, positions, theta, fraction, layout):
    """x [..., tokens, heads, dim]; rotates the first fraction·dim dims (rounded down to even)."""
    dim = x.shape[-1]
    rd = int(np.floor(fraction * dim))
    rd -= rd % 2
    inv_freq = theta ** (-torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    ang = positions.double()[:, None] * inv_freq[None, :]  # [tokens, rd/2]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]  # broadcast over heads
    rot, rest = x[..., :rd], x[..., rd:]
    if layout == "half":
        a, b = rot[..., : rd // 2], rot[..., rd // 2:]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    else:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    return torch.cat([out, rest], dim=-1)


def attention(q, k, v, scale, window=0, softcap=0.0, sinks=None):
    """q [B, T, Hq, dk], k [B, T, Hkv, dk], v [B, T, Hkv, dv]; causal (+ window) self-attention."""
    hq, hkv = q.shape[2], k.shape[2]
    k = k.repeat_interleave(hq // hkv, dim=2)
    v = v.repeat_interleave(hq // hkv, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    t = q.shape[1]
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = j <= i
    if window > 0:
        allowed &= j > i - window
    s = s.masked_fill(~allowed, float("-inf"))
    if sinks is not None:  # one extra logit per head in the denominator, no value
        sink = sinks[None, :, None, None].expand(s.shape[0], -1, t, 1)
        p = torch.softmax(torch.cat([s, sink], dim=-1), dim=-1)[..., :-1]
    else:
        p = torch.softmax(s, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, v)


def gqa_block(m, w, x):
    b, t, _ = x.shape
    hq, hkv, dk, dv = m["num_heads_q"], m["num_heads_kv"], m["head_dim"], m["head_dim_v"]
    q = (x @ w["w_q"]).view(b, t, hq, dk)
    k = (x @ w["w_k"]).view(b, t, hkv, dk)
    v = (x @ w["w_v"]).view(b, t, hkv, dv)
    if m["qk_norm"]:
        q = rms_norm(q, w["q_norm"], m["norm_eps"], m["qk_norm_zero_centred"])
        k = rms_norm(k, w["k_norm"], m["norm_eps"], m["qk_norm_zero_centred"])
    if m["use_rope"]:
        pos = torch.arange(t)
        r = m["rope"]
        q = rope(q, pos, r["theta"], r["fraction"], r["layout"])
        k = rope(k, pos, r["theta"], r["fraction"], r["layout"])
    o = attention(q, k, v, 1.0 / np.sqrt(dk), m["window"], m["softcap"],
                  w.get("sinks") if m["sinks"] else None).reshape(b, t, hq * dv)
    if m["output_gate"]:
        o = o * torch.sigmoid(x @ w["w_gate"])
    return o @ w["w_o"]


def mla_block(m, w, x):
    b, t, _ = x.shape
    h, r = m["num_heads"], m["kv_lora_rank"]
    dn, dr, dv = m["qk_nope_head_dim"], m["qk_rope_head_dim"], m["v_head_dim"]
    eps, ro = m["norm_eps"], m["rope"]
    pos = torch.arange(t)
    if m["q_lora_rank"] > 0:
        c_q = rms_norm(x @ w["w_dq"], w["q_norm"], eps)
    else:
        c_q = x
    q = (c_q @ w["w_uq"]).view(b, t, h, dn + dr)
    q_nope, q_rope = q[..., :dn], rope(q[..., dn:], pos, ro["theta"], 1.0, ro["layout"])
    c_kv = rms_norm(x @ w["w_dkv"], w["kv_norm"], eps)  # [b, t, r]
    k_rope = rope((x @ w["w_kr"]).view(b, t, 1, dr), pos, ro["theta"], 1.0, ro["layout"])
    k_nope = (c_kv @ w["w_uk"]).view(b, t, h, dn)
    v = (c_kv @ w["w_uv"]).view(b, t, h, dv)
    k = torch.cat([k_nope, k_rope.expand(b, t, h, dr)], dim=-1)
    qf = torch.cat([q_nope, q_rope], dim=-1)
    o = attention(qf, k, v, 1.0 / np.sqrt(dn + dr)).reshape(b, t, h * dv)
    latent = torch.cat([c_kv, k_rope.view(b, t, dr)], dim=-1)
    return o @ w["w_o"], latent


@pytest.mark.parametrize("case", ["gqa_rope_qknorm", "gqa_all_options"])
def test_gqa_block_matches_torch(dump, case):
    out, seed = dump
    m, a = load(out / case)
    want = gqa_block(m, a, a["x"])
    for name in ("out_full", "out_incremental"):
        err = rel_err(a[name], want)
        assert err < TOL, f"{case}/{name}: relative max error {err:.3g} (seed {seed})"


@pytest.mark.parametrize("case", ["mla", "mla_direct_q"])
def test_mla_block_matches_torch(dump, case):
    out, seed = dump
    m, a = load(out / case)
    want, latent = mla_block(m, a, a["x"])
    for name in ("out_naive_full", "out_absorbed_full", "out_naive_incremental",
                 "out_absorbed_incremental"):
        err = rel_err(a[name], want)
        assert err < TOL, f"{case}/{name}: relative max error {err:.3g} (seed {seed})"
    err = rel_err(a["latent_cache"], latent)
    assert err < TOL, f"{case}/latent_cache: relative max error {err:.3g} (seed {seed})"


def test_dump_is_not_trivial(dump):
    """Guards the check itself: the outputs are not all zero and differ between cases."""
    out, _ = dump
    for case in ("gqa_rope_qknorm", "gqa_all_options", "mla", "mla_direct_q"):
        _, a = load(out / case)
        key = "out_full" if "out_full" in a else "out_naive_full"
        assert a[key].abs().max() > 1e-3, case
