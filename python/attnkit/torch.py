"""attnkit.torch: attnkit's differentiable kernels as torch.autograd.Functions on CPU tensors.

    import attnkit
    out = attnkit.torch.attention(q, k, v, causal=True, window=512)
    out.sum().backward()          # fills q.grad, k.grad, v.grad

Tensors must be float32 CPU tensors whose last axis is contiguous (any other strides are read in
place); they reach the NumPy bindings through `.numpy()` views and results come back through
`torch.from_numpy`, so nothing is copied except an incoming gradient whose last axis is not
contiguous (e.g. the expanded ones of `out.sum().backward()`). Anything else raises ValueError
naming the argument, instead of being converted behind your back.

The keywords are those of attnkit.attention, attnkit.linear_attention and
attnkit.gated_delta_rule (minus `out=` and the in-place `state=`); the backward passes are
attnkit.attention_backward, attnkit.linear_attention_backward and
attnkit.gated_delta_rule_backward, which recompute what they need from the saved inputs.
"""
import numpy as np
import torch

from . import _attnkit as _ak

__all__ = ["attention", "linear_attention", "gated_delta_rule"]


def _as_numpy(x, name, optional=False):
    """A float32 CPU tensor -> a NumPy view of the same memory (no copy), or ValueError."""
    if x is None:
        if optional:
            return None
        raise ValueError(f"{name}: expected a torch.Tensor, got None")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(f"{name}: attnkit runs on CPU tensors, got a tensor on {x.device} "
                         f"(move it with .cpu())")
    if x.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {x.layout}")
    if x.dtype != torch.float32:
        raise ValueError(f"{name}: expected dtype torch.float32, got {x.dtype} (convert it with "
                         f".float(); attnkit does not convert silently)")
    if x.dim() > 0 and x.shape[-1] > 1 and x.stride(-1) != 1:
        raise ValueError(f"{name}: the last axis must be contiguous (stride 1), got strides "
                         f"{tuple(x.stride())} (use .contiguous())")
    return x.detach().numpy()


def _grad_numpy(g, name):
    """An incoming gradient as a NumPy view; copied only when its last axis is not contiguous."""
    if g is None:
        return None
    if g.dtype != torch.float32:
        g = g.float()
    if g.dim() > 0 and g.shape[-1] > 1 and g.stride(-1) != 1:
        g = g.contiguous()
    return _as_numpy(g, name)


def _tensor(a):
    return None if a is None else torch.from_numpy(np.asarray(a))


def _constant(x, name):
    """A non-differentiable array argument (alibi_slopes): tensors as views, others as given."""
    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            raise ValueError(f"{name}: attnkit.torch does not differentiate {name}; pass it "
                             f"detached")
        return _as_numpy(x, name)
    return x


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sinks, kw):
        qn, kn, vn = _as_numpy(q, "q"), _as_numpy(k, "k"), _as_numpy(v, "v")
        sn = _as_numpy(sinks, "sinks", optional=True)
        out, lse = _ak.attention(qn, kn, vn, sinks=sn, return_lse=True, **kw)
        out, lse = torch.from_numpy(out), torch.from_numpy(lse)
        ctx.kw = kw
        ctx.has_sinks = sinks is not None
        ctx.save_for_backward(q, k, v, sinks, out, lse)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, sinks, out, lse = ctx.saved_tensors
        backward = getattr(_ak, "attention_backward", None)
        if backward is None:
            raise RuntimeError("attnkit.torch.attention: this build of attnkit has no "
                               "attention_backward binding")
        grads = backward(_as_numpy(q, "q"), _as_numpy(k, "k"), _as_numpy(v, "v"),
                         out.numpy(), lse.numpy(), _grad_numpy(dout, "dout"),
                         sinks=_as_numpy(sinks, "sinks", optional=True), **ctx.kw)
        dq, dk, dv = (_tensor(g) for g in grads[:3])
        dsinks = _tensor(grads[3]) if ctx.has_sinks else None
        return dq, dk, dv, dsinks, None


def attention(q, k, v, *, causal=False, window=None, mask=None, scale=None, softcap=None,
              sinks=None, alibi_slopes=None, return_lse=False, layout="bhsd", q_start=None,
              k_start=0, num_threads=0, backend="auto"):
    """Differentiable attnkit.attention: softmax(q k^T * scale) v with its masks and options.

    q [batch, num_heads_q, seqlen_q, head_dim_qk], k/v [batch, num_heads_kv, seqlen_kv, ...]
    (layout="bshd" swaps heads and seqlen), float32 CPU tensors. Gradients flow to q, k, v and
    sinks ([num_heads_q] float32 tensor); alibi_slopes and mask are constants. Returns out, or
    (out, lse) with return_lse=True (lse carries no gradient).
    """
    kw = dict(causal=causal, window=window, mask=mask, scale=scale, softcap=softcap,
              alibi_slopes=_constant(alibi_slopes, "alibi_slopes"), layout=layout,
              q_start=q_start, k_start=k_start, num_threads=num_threads, backend=backend)
    out, lse = _Attention.apply(q, k, v, sinks, kw)
    return (out, lse) if return_lse else out


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kw):
        out = _ak.linear_attention(_as_numpy(q, "q"), _as_numpy(k, "k"), _as_numpy(v, "v"), **kw)
        ctx.kw = kw
        ctx.save_for_backward(q, k, v)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = _ak.linear_attention_backward(_as_numpy(q, "q"), _as_numpy(k, "k"),
                                                   _as_numpy(v, "v"), _grad_numpy(dout, "dout"),
                                                   **ctx.kw)
        return _tensor(dq), _tensor(dk), _tensor(dv), None


def linear_attention(q, k, v, *, feature_map="favor+", features=None, causal=True, chunk_size=64,
                     layout="bhsd", num_threads=0, backend="auto"):
    """Differentiable attnkit.linear_attention (Performer FAVOR+, elu+1, ReLU) from an empty
    state. FAVOR+ gradients treat the projection `features` as fixed."""
    kw = dict(feature_map=feature_map, features=features, causal=causal, chunk_size=chunk_size,
              layout=layout, num_threads=num_threads, backend=backend)
    return _LinearAttention.apply(q, k, v, kw)


class _GatedDeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_alpha, beta, initial_state, kw, fwd_kw):
        arrays = dict(log_alpha=_as_numpy(log_alpha, "log_alpha", optional=True),
                      beta=_as_numpy(beta, "beta", optional=True),
                      initial_state=_as_numpy(initial_state, "initial_state", optional=True))
        out, final = _ak.gated_delta_rule(_as_numpy(q, "q"), _as_numpy(k, "k"), _as_numpy(v, "v"),
                                          return_state=True, **arrays, **kw, **fwd_kw)
        ctx.kw = kw
        ctx.has = (log_alpha is not None, beta is not None, initial_state is not None)
        ctx.save_for_backward(q, k, v, log_alpha, beta, initial_state)
        ctx.set_materialize_grads(False)
        return torch.from_numpy(out), torch.from_numpy(final)

    @staticmethod
    def backward(ctx, dout, dfinal):
        q, k, v, log_alpha, beta, initial_state = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros(v.shape, dtype=torch.float32)  # out has v's shape
        grads = _ak.gated_delta_rule_backward(
            _as_numpy(q, "q"), _as_numpy(k, "k"), _as_numpy(v, "v"), _grad_numpy(dout, "dout"),
            log_alpha=_as_numpy(log_alpha, "log_alpha", optional=True),
            beta=_as_numpy(beta, "beta", optional=True),
            initial_state=_as_numpy(initial_state, "initial_state", optional=True),
            dfinal_state=_grad_numpy(dfinal, "dfinal_state"), **ctx.kw)
        dq, dk, dv, dla, dbeta, dstate = (_tensor(g) for g in grads)
        has_la, has_beta, has_state = ctx.has
        return (dq, dk, dv, dla if has_la else None, dbeta if has_beta else None,
                dstate if has_state else None, None, None)


def gated_delta_rule(q, k, v, *, log_alpha=None, beta=None, initial_state=None,
                     return_state=False, delta_rule=True, l2_normalize_qk=True, scale=None,
                     chunk_size=64, algorithm="auto", layout="bhsd", num_threads=0,
                     backend="auto"):
    """Differentiable attnkit.gated_delta_rule (DeltaNet, Gated DeltaNet, KDA, GLA).

    Gradients flow to q, k, v, log_alpha, beta and initial_state (float32 CPU tensors, shapes as
    in attnkit.gated_delta_rule). Returns out, or (out, final_state) with return_state=True; the
    final state is differentiable too.
    """
    kw = dict(delta_rule=delta_rule, l2_normalize_qk=l2_normalize_qk, scale=scale,
              chunk_size=chunk_size, layout=layout, num_threads=num_threads, backend=backend)
    out, final = _GatedDeltaRule.apply(q, k, v, log_alpha, beta, initial_state, kw,
                                       dict(algorithm=algorithm))
    return (out, final) if return_state else out
