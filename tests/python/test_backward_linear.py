# attnkit.linear_attention_backward and attnkit.gated_delta_rule_backward against PyTorch autograd
# (float64) of plain implementations of the same functions: linear attention with the elu+1, ReLU
# and FAVOR+ feature maps (W fixed), and the gated delta rule token by token (DeltaNet, Gated
# DeltaNet, KDA, gated linear attention) with an initial state and a final-state gradient.
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def t64(x):
    return torch.tensor(np.array(x, dtype=np.float64), requires_grad=True)


def torch_linear(q, k, v, phi, causal):
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    a = phi(q) @ phi(k).transpose(-1, -2)
    if causal:
        a = torch.tril(a)
    return (a @ v) / a.sum(-1, keepdim=True)


def favor_phi(w):
    w = torch.from_numpy(w.astype(np.float64))
    m, d = w.shape

    def phi(x):
        x = x * d ** -0.25
        return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / m ** 0.5

    return phi


@pytest.mark.parametrize("feature_map", ["favor+", "elu+1", "relu"])
@pytest.mark.parametrize("causal", [True, False])
def test_linear_attention_backward_matches_autograd(rng, feature_map, causal):
    b, hq, hkv, s, d, dv = 2, 4, 2, 70, 16, 12
    q, k = randn(rng, b, hq, s, d, scale=0.5), randn(rng, b, hkv, s, d, scale=0.5)
    v, dout = randn(rng, b, hkv, s, dv), randn(rng, b, hq, s, dv)
    if feature_map == "relu":  # keep normalisers away from 0
        q, k = q + 0.5, k + 0.5
    features = None
    if feature_map == "favor+":
        features = attnkit.PerformerFeatures(32, d, seed=int(rng.integers(1 << 30)))
        phi = favor_phi(features.w)
    elif feature_map == "elu+1":
        phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    else:
        phi = torch.relu
    dq, dk, dv_ = attnkit.linear_attention_backward(q, k, v, dout, feature_map=feature_map,
                                                    features=features, causal=causal,
                                                    chunk_size=16)
    tq, tk, tv = t64(q), t64(k), t64(v)
    out = torch_linear(tq, tk, tv, phi, causal)
    out.backward(torch.from_numpy(dout.astype(np.float64)))
    for name, got, want in (("dq", dq, tq.grad), ("dk", dk, tk.grad), ("dv", dv_, tv.grad)):
        assert got.shape == want.shape, name
        ref.assert_close(got, want.numpy(), tol=1e-4, what=name)


def torch_delta(q, k, v, log_alpha, beta, state, delta_rule):
    """The recurrence token by token, functional (no in-place updates), float64."""
    b, hqk, s, dk = q.shape
    hv = v.shape[1]
    g = hv // hqk
    q = torch.nn.functional.normalize(q, dim=-1, eps=0) * dk ** -0.5
    k = torch.nn.functional.normalize(k, dim=-1, eps=0)
    outs, finals = [], []
    for h in range(hv):
        S = state[:, h]
        per_t = []
        for t in range(s):
            qt, kt, vt = q[:, h // g, t], k[:, h // g, t], v[:, h, t]
            if log_alpha is not None:
                alpha = torch.exp(log_alpha[:, h, t])
                S = S * (alpha[:, None, None] if alpha.dim() == 1 else alpha[:, :, None])
            if delta_rule:
                pred = torch.einsum("bkv,bk->bv", S, kt)
                S = S + beta[:, h, t, None, None] * kt[:, :, None] * (vt - pred)[:, None, :]
            else:
                S = S + kt[:, :, None] * vt[:, None, :]
            per_t.append(torch.einsum("bkv,bk->bv", S, qt))
        outs.append(torch.stack(per_t, 1))
        finals.append(S)
    return torch.stack(outs, 1), torch.stack(finals, 1)


@pytest.mark.parametrize("variant", ["deltanet", "gated_deltanet", "kda", "gla"])
def test_gated_delta_rule_backward_matches_autograd(rng, variant):
    b, hqk, hv, s, dk, dv = 1, 1, 2, 70, 8, 6
    q, k, v = randn(rng, b, hqk, s, dk), randn(rng, b, hqk, s, dk), randn(rng, b, hv, s, dv)
    state, dout, dfinal = randn(rng, b, hv, dk, dv), randn(rng, b, hv, s, dv), randn(rng, b, hv, dk, dv)
    delta_rule = variant != "gla"
    log_alpha = None
    if variant in ("gated_deltanet",):
        log_alpha = -rng.uniform(0.01, 0.5, (b, hv, s)).astype(np.float32)
    elif variant in ("kda", "gla"):
        log_alpha = -rng.uniform(0.01, 0.5, (b, hv, s, dk)).astype(np.float32)
    beta = rng.uniform(0.05, 0.95, (b, hv, s)).astype(np.float32) if delta_rule else None
    dq, dk_, dv_, dla, dbeta, dstate = attnkit.gated_delta_rule_backward(
        q, k, v, dout, log_alpha=log_alpha, beta=beta, initial_state=state, dfinal_state=dfinal,
        delta_rule=delta_rule, chunk_size=16)
    tq, tk, tv, ts = t64(q), t64(k), t64(v), t64(state)
    tla = t64(log_alpha) if log_alpha is not None else None
    tb = t64(beta) if beta is not None else None
    out, final = torch_delta(tq, tk, tv, tla, tb, ts, delta_rule)
    loss = (out * torch.from_numpy(dout.astype(np.float64))).sum() + \
        (final * torch.from_numpy(dfinal.astype(np.float64))).sum()
    loss.backward()
    pairs = [("dq", dq, tq), ("dk", dk_, tk), ("dv", dv_, tv), ("dstate", dstate, ts)]
    if tla is not None:
        pairs.append(("dlog_alpha", dla, tla))
    else:
        assert dla is None
    if tb is not None:
        pairs.append(("dbeta", dbeta, tb))
    else:
        assert dbeta is None
    for name, got, want in pairs:
        assert got.shape == tuple(want.shape), name
        ref.assert_close(got, want.grad.numpy(), tol=1e-4, what=name)


def test_backward_bad_input_raises_value_error(rng):
    q, k, v = randn(rng, 1, 1, 5, 4), randn(rng, 1, 1, 5, 4), randn(rng, 1, 1, 5, 3)
    with pytest.raises(ValueError, match="dout"):
        attnkit.gated_delta_rule_backward(q, k, v, randn(rng, 1, 1, 5, 2),
                                          beta=np.full((1, 1, 5), 0.5, np.float32))
    with pytest.raises(ValueError, match="dout"):
        attnkit.linear_attention_backward(q, k, v, randn(rng, 1, 1, 4, 3), feature_map="elu+1")
