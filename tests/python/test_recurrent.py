# attnkit.gated_delta_rule against a straightforward float64 torch loop over tokens (DeltaNet,
# Gated DeltaNet, KDA, gated linear attention), chunk-wise and token by token, and the state
# round trip (prefill, then decode from the returned state, equals one pass).
import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def torch_loop(q, k, v, log_alpha=None, beta=None, state=None, delta_rule=True, scale=None):
    """The recurrence token by token, written from its definition. Shapes as in attnkit (bhsd).
    log_alpha [b, hv, s] or [b, hv, s, dk]; beta [b, hv, s]. Returns (out, final state)."""
    q, k, v = (torch.from_numpy(np.array(x, dtype=np.float64)) for x in (q, k, v))
    b, hqk, s, dk = q.shape
    hv, dv = v.shape[1], v.shape[3]
    g = hv // hqk
    q = torch.nn.functional.normalize(q, dim=-1) * (scale if scale else dk ** -0.5)
    k = torch.nn.functional.normalize(k, dim=-1)
    S = (torch.zeros(b, hv, dk, dv, dtype=torch.float64) if state is None
         else torch.from_numpy(np.array(state, dtype=np.float64)))
    la = None if log_alpha is None else torch.from_numpy(np.array(log_alpha, dtype=np.float64))
    bt = None if beta is None else torch.from_numpy(np.array(beta, dtype=np.float64))
    out = torch.zeros(b, hv, s, dv, dtype=torch.float64)
    for t in range(s):
        for h in range(hv):
            qt, kt, vt = q[:, h // g, t], k[:, h // g, t], v[:, h, t]  # [b, dk], [b, dk], [b, dv]
            Sh = S[:, h]
            if la is not None:
                alpha = torch.exp(la[:, h, t])
                Sh = Sh * (alpha[:, None, None] if alpha.dim() == 1 else alpha[:, :, None])
            if delta_rule:
                pred = torch.einsum("bkv,bk->bv", Sh, kt)
                Sh = Sh + bt[:, h, t, None, None] * kt[:, :, None] * (vt - pred)[:, None, :]
            else:
                Sh = Sh + kt[:, :, None] * vt[:, None, :]
            S[:, h] = Sh
            out[:, h, t] = torch.einsum("bkv,bk->bv", Sh, qt)
    return out.numpy(), S.numpy()


def gates(rng, b, hv, s, dk, per_channel):
    shape = (b, hv, s, dk) if per_channel else (b, hv, s)
    log_alpha = -rng.uniform(0.0, 0.5, shape).astype(np.float32)
    beta = rng.uniform(0.0, 1.0, (b, hv, s)).astype(np.float32)
    return log_alpha, beta


VARIANTS = {
    "deltanet": dict(decay=None, delta_rule=True),
    "gated_deltanet": dict(decay="scalar", delta_rule=True),
    "kda": dict(decay="channel", delta_rule=True),
    "gla": dict(decay="channel", delta_rule=False),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("algorithm", ["chunked", "recurrent"])
def test_variants_match_a_torch_loop(rng, variant, algorithm):
    b, hqk, hv, s, dk, dv = 2, 2, 4, 37, 12, 10
    q, k, v = randn(rng, b, hqk, s, dk), randn(rng, b, hqk, s, dk), randn(rng, b, hv, s, dv)
    spec = VARIANTS[variant]
    log_alpha, beta = gates(rng, b, hv, s, dk, spec["decay"] == "channel")
    if spec["decay"] is None:
        log_alpha = None
    if not spec["delta_rule"]:
        beta = None
    out, state = attnkit.gated_delta_rule(q, k, v, log_alpha=log_alpha, beta=beta,
                                          delta_rule=spec["delta_rule"], chunk_size=16,
                                          algorithm=algorithm, return_state=True)
    want, want_state = torch_loop(q, k, v, log_alpha, beta, delta_rule=spec["delta_rule"])
    ref.assert_close(out, want, tol=1e-4)
    ref.assert_close(state, want_state, tol=1e-4, what="state")


def test_state_round_trip_equals_one_pass(rng):
    b, h, T, P, dk, dv = 1, 3, 50, 29, 16, 16
    q, k, v = randn(rng, b, h, T, dk), randn(rng, b, h, T, dk), randn(rng, b, h, T, dv)
    log_alpha, beta = gates(rng, b, h, T, dk, per_channel=False)
    full, full_state = attnkit.gated_delta_rule(q, k, v, log_alpha=log_alpha, beta=beta,
                                                return_state=True)
    sl = lambda x, a, z: x[:, :, a:z]
    out1, st = attnkit.gated_delta_rule(sl(q, 0, P), sl(k, 0, P), sl(v, 0, P),
                                        log_alpha=sl(log_alpha, 0, P), beta=sl(beta, 0, P),
                                        return_state=True)
    st_before = st.copy()
    out2, st2 = attnkit.gated_delta_rule(sl(q, P, T), sl(k, P, T), sl(v, P, T),
                                         log_alpha=sl(log_alpha, P, T), beta=sl(beta, P, T),
                                         initial_state=st, return_state=True)
    np.testing.assert_array_equal(st, st_before)  # initial_state is left unchanged
    ref.assert_close(np.concatenate([out1, out2], axis=2), full, tol=1e-4)
    ref.assert_close(st2, full_state, tol=1e-4, what="state")
    # Token-by-token decode with the state updated in place.
    state = np.zeros((b, h, dk, dv), np.float32)
    outs = []
    for t in range(T):
        o, s_ret = attnkit.gated_delta_rule(sl(q, t, t + 1), sl(k, t, t + 1), sl(v, t, t + 1),
                                            log_alpha=sl(log_alpha, t, t + 1),
                                            beta=sl(beta, t, t + 1), state=state,
                                            return_state=True)
        assert s_ret is state
        outs.append(o)
    ref.assert_close(np.concatenate(outs, axis=2), full, tol=1e-4)
    ref.assert_close(state, full_state, tol=1e-4, what="state")


def test_bshd_layout_gates_follow_the_layout(rng):
    b, h, s, d = 1, 2, 20, 8
    q, k, v = randn(rng, b, h, s, d), randn(rng, b, h, s, d), randn(rng, b, h, s, d)
    log_alpha, beta = gates(rng, b, h, s, d, per_channel=True)
    want = attnkit.gated_delta_rule(q, k, v, log_alpha=log_alpha, beta=beta)
    t = lambda x: np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    got = attnkit.gated_delta_rule(t(q), t(k), t(v), log_alpha=t(log_alpha),
                                   beta=np.ascontiguousarray(beta.transpose(0, 2, 1)),
                                   layout="bshd")
    ref.assert_close(got.transpose(0, 2, 1, 3), want, tol=1e-5)


def test_gates_match_their_formulas(rng):
    b, h, s, d = 2, 3, 7, 4
    a, a_log, dt_bias = randn(rng, b, h, s), randn(rng, h), randn(rng, h)
    la = attnkit.decay_gate(a, a_log, dt_bias)
    want = -np.exp(a_log.astype(np.float64))[None, :, None] * np.logaddexp(
        0.0, a.astype(np.float64) + dt_bias[None, :, None])
    ref.assert_close(la, want, tol=1e-5)
    a4, bias4 = randn(rng, b, h, s, d), randn(rng, h * d)
    la4 = attnkit.decay_gate(a4, a_log, bias4)
    want4 = -np.exp(a_log.astype(np.float64))[None, :, None, None] * np.logaddexp(
        0.0, a4.astype(np.float64) + bias4.reshape(h, d)[None, :, None, :])
    ref.assert_close(la4, want4, tol=1e-5)
    bl = randn(rng, b, h, s)
    ref.assert_close(attnkit.write_gate(bl), 1 / (1 + np.exp(-bl.astype(np.float64))), tol=1e-6)


def test_recurrent_bad_input(rng):
    q = randn(rng, 1, 2, 5, 4)
    beta = np.full((1, 2, 5), 0.5, np.float32)
    with pytest.raises(ValueError, match="beta is required"):
        attnkit.gated_delta_rule(q, q, q)
    with pytest.raises(ValueError, match="<= 0"):
        attnkit.gated_delta_rule(q, q, q, beta=beta, log_alpha=np.ones((1, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
        attnkit.gated_delta_rule(q, q, q, beta=beta * 3)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        attnkit.gated_delta_rule(q, q, q, beta=beta, initial_state=np.zeros((1, 2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="not both"):
        s0 = np.zeros((1, 2, 4, 4), np.float32)
        attnkit.gated_delta_rule(q, q, q, beta=beta, initial_state=s0, state=s0.copy())
    with pytest.raises(ValueError, match="beta must be 3-D"):
        attnkit.gated_delta_rule(q, q, q, beta=beta[..., None])
    with pytest.raises(ValueError, match="algorithm must be"):
        attnkit.gated_delta_rule(q, q, q, beta=beta, algorithm="fast")
    with pytest.raises(TypeError, match="decay_gate: a_log"):
        attnkit.decay_gate(beta, None, None)
