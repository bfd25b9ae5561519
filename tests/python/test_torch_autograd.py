# attnkit.torch: the autograd wrappers' gradients (float32, through the backward bindings) against
# torch autograd of plain float64 implementations; their input checks; a tiny training run.
# The bindings are float32-only, so instead of gradcheck in float64 the float32 gradients are
# compared with the float64 reference's within a tolerance.
import importlib.util
import pathlib

import numpy as np
import pytest
import torch

import attnkit
import torch_ref as ref
from test_backward_linear import torch_delta, torch_linear

ROOT = pathlib.Path(__file__).resolve().parents[2]
needs_attention_backward = pytest.mark.skipif(
    not hasattr(attnkit, "attention_backward"),
    reason="this build of attnkit has no attention_backward binding (arrives from another branch)")


def leaves(rng, *shapes, scale=1.0):
    """float32 tensors needing grad, and float64 copies needing grad, of the same values."""
    f32, f64 = [], []
    for shape in shapes:
        x = (scale * rng.standard_normal(shape)).astype(np.float32)
        f32.append(torch.tensor(x, requires_grad=True))
        f64.append(torch.tensor(x.astype(np.float64), requires_grad=True))
    return f32, f64


def check_grads(f32, f64, names, tol=1e-4):
    for name, a, b in zip(names, f32, f64):
        assert a.grad is not None and a.grad.dtype == torch.float32, name
        ref.assert_close(a.grad.numpy(), b.grad.numpy(), tol=tol, what=name)


def torch_attention(q, k, v, allow, scale=None, softcap=None, sinks=None):
    """Differentiable float64 softmax attention with GQA, a boolean mask, softcap and sinks."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    s = q @ k.transpose(-1, -2) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    s = s.masked_fill(~allow, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks[None, :, None, None].expand(s.shape[0], -1, s.shape[2], 1)], -1)
    p = torch.softmax(s, dim=-1)
    if sinks is not None:
        p = p[..., :-1]
    return p @ v


@needs_attention_backward
@pytest.mark.parametrize("case", ["causal_window_gqa", "softcap_sinks", "bshd"])
def test_attention_gradients_match_float64_autograd(rng, case):
    b, hq, hkv, s, d, dv = 2, 4, 2, 37, 16, 12
    (q, k, v), (q64, k64, v64) = leaves(rng, (b, hq, s, d), (b, hkv, s, d), (b, hkv, s, dv))
    dout = torch.from_numpy(rng.standard_normal((b, hq, s, dv)).astype(np.float32))
    kw, ref_kw, sinks = {}, {}, None
    if case == "causal_window_gqa":
        kw = dict(causal=True, window=9)
        allow = ref.allowed("sliding_window", s, s, w=9)
    else:
        allow = ref.allowed("causal", s, s)
        kw = dict(causal=True)
    if case == "softcap_sinks":
        (sinks,), (sinks64,) = leaves(rng, (hq,))
        kw.update(softcap=5.0, sinks=sinks)
        ref_kw = dict(softcap=5.0, sinks=sinks64)
    if case == "bshd":  # views of the same leaves, heads and seqlen swapped: no copies
        out = attnkit.torch.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                      layout="bshd", **kw).transpose(1, 2)
    else:
        out = attnkit.torch.attention(q, k, v, **kw)
    want = torch_attention(q64, k64, v64, allow, **ref_kw)
    ref.assert_close(out.detach().numpy(), want.detach().numpy(), tol=1e-4)
    (out * dout).sum().backward()
    (want * dout.double()).sum().backward()
    names = ["dq", "dk", "dv"]
    f32, f64 = [q, k, v], [q64, k64, v64]
    if sinks is not None:
        names.append("dsinks"), f32.append(sinks), f64.append(sinks64)
    check_grads(f32, f64, names)


@needs_attention_backward
def test_attention_issue_example_fills_q_grad(rng):
    (q, k, v), _ = leaves(rng, (1, 2, 600, 8), (1, 2, 600, 8), (1, 2, 600, 8))
    out = attnkit.torch.attention(q, k, v, causal=True, window=512)
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape and q.grad.abs().sum() > 0


@pytest.mark.parametrize("feature_map", ["elu+1", "favor+"])
@pytest.mark.parametrize("causal", [True, False])
def test_linear_attention_gradients_match_float64_autograd(rng, feature_map, causal):
    b, hq, hkv, s, d, dv = 2, 4, 2, 45, 16, 12
    (q, k, v), (q64, k64, v64) = leaves(rng, (b, hq, s, d), (b, hkv, s, d), (b, hkv, s, dv),
                                        scale=0.5)
    features = None
    if feature_map == "favor+":
        features = attnkit.PerformerFeatures(32, d, seed=int(rng.integers(1 << 30)))
        w = torch.from_numpy(features.w.astype(np.float64))

        def phi(x):
            x = x * d ** -0.25
            return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / w.shape[0] ** 0.5
    else:
        phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    out = attnkit.torch.linear_attention(q, k, v, feature_map=feature_map, features=features,
                                         causal=causal, chunk_size=16)
    want = torch_linear(q64, k64, v64, phi, causal)
    ref.assert_close(out.detach().numpy(), want.detach().numpy(), tol=1e-4)
    dout = torch.from_numpy(rng.standard_normal(out.shape).astype(np.float32))
    (out * dout).sum().backward()
    (want * dout.double()).sum().backward()
    check_grads([q, k, v], [q64, k64, v64], ["dq", "dk", "dv"])


@pytest.mark.parametrize("variant", ["gated_deltanet", "kda", "gla"])
def test_gated_delta_rule_gradients_match_float64_autograd(rng, variant):
    b, hqk, hv, s, dk, dv = 1, 1, 2, 40, 8, 6
    shapes = [(b, hqk, s, dk), (b, hqk, s, dk), (b, hv, s, dv), (b, hv, dk, dv)]
    (q, k, v, state), (q64, k64, v64, state64) = leaves(rng, *shapes)
    delta_rule = variant != "gla"
    la_shape = (b, hv, s) if variant == "gated_deltanet" else (b, hv, s, dk)
    la = -rng.uniform(0.01, 0.5, la_shape)
    log_alpha = torch.tensor(la, dtype=torch.float32, requires_grad=True)
    log_alpha64 = torch.tensor(log_alpha.detach().numpy().astype(np.float64), requires_grad=True)
    f32, f64 = [q, k, v, state, log_alpha], [q64, k64, v64, state64, log_alpha64]
    names = ["dq", "dk", "dv", "dinitial_state", "dlog_alpha"]
    beta = beta64 = None
    if delta_rule:
        bt = rng.uniform(0.05, 0.95, (b, hv, s))
        beta = torch.tensor(bt, dtype=torch.float32, requires_grad=True)
        beta64 = torch.tensor(beta.detach().numpy().astype(np.float64), requires_grad=True)
        f32.append(beta), f64.append(beta64), names.append("dbeta")
    out, final = attnkit.torch.gated_delta_rule(q, k, v, log_alpha=log_alpha, beta=beta,
                                                initial_state=state, return_state=True,
                                                delta_rule=delta_rule, chunk_size=16)
    want, want_final = torch_delta(q64, k64, v64, log_alpha64, beta64, state64, delta_rule)
    ref.assert_close(out.detach().numpy(), want.detach().numpy(), tol=1e-4)
    ref.assert_close(final.detach().numpy(), want_final.detach().numpy(), tol=1e-4)
    dout = torch.from_numpy(rng.standard_normal(out.shape).astype(np.float32))
    dfin = torch.from_numpy(rng.standard_normal(final.shape).astype(np.float32))
    ((out * dout).sum() + (final * dfin).sum()).backward()
    ((want * dout.double()).sum() + (want_final * dfin.double()).sum()).backward()
    check_grads(f32, f64, names)


def test_gated_delta_rule_out_only_loss_without_state(rng):
    # No initial state and a loss on out only: the final state's gradient is absent (None).
    (q, k, v), (q64, k64, v64) = leaves(rng, (1, 2, 20, 4), (1, 2, 20, 4), (1, 2, 20, 3))
    beta = torch.full((1, 2, 20), 0.5)
    attnkit.torch.gated_delta_rule(q, k, v, beta=beta, chunk_size=8).sum().backward()
    want, _ = torch_delta(q64, k64, v64, None, beta.double(), torch.zeros(1, 2, 4, 3,
                                                                          dtype=torch.float64),
                          True)
    want.sum().backward()
    check_grads([q, k, v], [q64, k64, v64], ["dq", "dk", "dv"])


@pytest.mark.parametrize("fn", ["attention", "linear_attention", "gated_delta_rule"])
def test_bad_input_raises_value_error_naming_the_argument(rng, fn):
    call = getattr(attnkit.torch, fn)
    kw = dict(beta=torch.full((1, 2, 6), 0.5)) if fn == "gated_delta_rule" else {}
    if fn == "linear_attention":
        kw = dict(feature_map="elu+1")
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    with pytest.raises(ValueError, match="k: expected dtype torch.float32"):
        call(q, k.double(), v, **kw)
    with pytest.raises(ValueError, match="q: attnkit runs on CPU tensors"):
        call(torch.empty(1, 2, 6, 4, device="meta"), k, v, **kw)
    with pytest.raises(ValueError, match="v: the last axis must be contiguous"):
        call(q, k, torch.randn(1, 2, 4, 6).transpose(2, 3), **kw)
    with pytest.raises(ValueError, match="q: expected a torch.Tensor"):
        call(q.numpy(), k, v, **kw)
    with pytest.raises(ValueError, match="k and v must have the same seqlen"):  # the binding's
        call(q, k, torch.randn(1, 2, 5, 4), **kw)


def test_import_attnkit_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, attnkit; assert 'torch' not in sys.modules; attnkit.attention"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_example_loss_decreases():
    spec = importlib.util.spec_from_file_location("torch_training",
                                                  ROOT / "examples" / "torch_training.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    kernels = ["linear"] + (["softmax"] if hasattr(attnkit, "attention_backward") else [])
    for kernel in kernels:
        losses = example.train(steps=20, kernel=kernel)
        assert losses[-1] < 0.5 * losses[0], (kernel, losses)
