#!/usr/bin/python3
"""The PyTorch autograd peer of `attnkit bench backward-linear`: the same shapes, written as a
practitioner would without a custom kernel, forward + backward timed with torch's autograd
(float32, torch.set_num_threads(threads)), medians of `--repeats` runs:

  gdn_naive_recurrence   Gated DeltaNet token by token (the recurrence of attnkit.gated_delta_rule,
                         l2-normalised q/k, scalar decay, beta), a Python loop over tokens
  performer_naive_causal causal FAVOR+ linear attention in its quadratic masked form
                         tril(phi(Q) phi(K)^T) V / rowsum (the cumulative-sum form would hold a
                         [seqlen, m, head_dim] tensor per head, ~1 GiB here)

Prints one JSON object per case. Run with Debian's torch: /usr/bin/python3 tools/bench/...
"""
import argparse
import json
import time

import numpy as np
import torch


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def gdn_case(seqlen, heads, d, repeats):
    g = torch.Generator().manual_seed(7)
    q = torch.rand(1, heads, seqlen, d, generator=g) * 2 - 1
    k = torch.rand(1, heads, seqlen, d, generator=g) * 2 - 1
    v = torch.rand(1, heads, seqlen, d, generator=g) * 2 - 1
    la = -(torch.rand(1, heads, seqlen, generator=g) * 0.099 + 0.001)
    beta = torch.rand(1, heads, seqlen, generator=g) * 0.8 + 0.1
    dout = torch.rand(1, heads, seqlen, d, generator=g) * 2 - 1
    leaves = [x.requires_grad_() for x in (q, k, v, la, beta)]

    def forward():
        qn = torch.nn.functional.normalize(leaves[0], dim=-1) * d ** -0.5
        kn = torch.nn.functional.normalize(leaves[1], dim=-1)
        alpha = torch.exp(leaves[3])
        # Per-token views through unbind: indexing x[:, :, t] instead makes autograd's backward
        # materialise a full-size gradient per token (O(seqlen^2) work; 37 min instead of minutes).
        qs, ks, vs = qn.unbind(2), kn.unbind(2), leaves[2].unbind(2)
        als, bs = alpha.unbind(2), leaves[4].unbind(2)
        S = torch.zeros(1, heads, d, d)
        outs = []
        for t in range(seqlen):
            kt, vt = ks[t], vs[t]
            S = S * als[t][:, :, None, None]
            pred = (kt.unsqueeze(-2) @ S).squeeze(-2)  # S^T k
            S = S + bs[t][:, :, None, None] * kt[..., :, None] * (vt - pred)[..., None, :]
            outs.append((qs[t].unsqueeze(-2) @ S).squeeze(-2))
        return torch.stack(outs, 2)

    state = {}

    def fwd():
        state["out"] = forward()

    def bwd():
        for x in leaves:
            x.grad = None
        state["out"].backward(dout)

    fwd_s = median_time(fwd, repeats)
    bwd_times = []
    for _ in range(repeats):
        fwd()
        t0 = time.perf_counter()
        bwd()
        bwd_times.append(time.perf_counter() - t0)
    return fwd_s, float(np.median(bwd_times))


def performer_case(seqlen, heads, d, m, repeats):
    g = torch.Generator().manual_seed(8)
    q = (torch.rand(1, heads, seqlen, d, generator=g) - 0.5).requires_grad_()
    k = (torch.rand(1, heads, seqlen, d, generator=g) - 0.5).requires_grad_()
    v = (torch.rand(1, heads, seqlen, d, generator=g) * 2 - 1).requires_grad_()
    w = torch.randn(m, d, generator=g)
    dout = torch.rand(1, heads, seqlen, d, generator=g) * 2 - 1
    mask = torch.ones(seqlen, seqlen).tril_()

    def phi(x):
        x = x * d ** -0.25
        a = x @ w.T - (x * x).sum(-1, keepdim=True) / 2
        return torch.exp(a - a.amax(-1, keepdim=True).detach()) / m ** 0.5

    def forward():
        a = (phi(q) @ phi(k).transpose(-1, -2)) * mask
        return (a @ v) / a.sum(-1, keepdim=True)

    state = {}

    def fwd():
        state["out"] = forward()

    fwd_s = median_time(fwd, repeats)
    bwd_times = []
    for _ in range(repeats):
        fwd()
        for x in (q, k, v):
            x.grad = None
        t0 = time.perf_counter()
        state["out"].backward(dout)
        bwd_times.append(time.perf_counter() - t0)
    return fwd_s, float(np.median(bwd_times))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqlen", type=int, default=8192)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[0]
    cases = [("gdn_naive_recurrence", gdn_case(a.seqlen, a.heads, a.head_dim, a.repeats)),
             ("performer_naive_causal",
              performer_case(a.seqlen, a.heads, a.head_dim, a.features, a.repeats))]
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[0]
    for name, (fwd, bwd) in cases:
        print(json.dumps({"case": name, "seqlen": a.seqlen, "heads": a.heads,
                          "head_dim": a.head_dim, "threads": a.threads, "torch": torch.__version__,
                          "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3,
                          "load_average": f"{load_before} -> {load_after}"}))


if __name__ == "__main__":
    main()
