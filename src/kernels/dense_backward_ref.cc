// The dense backward's plain reference twin, its argument checks and FLOP count.
//
// ref::DenseBackward is deliberately obvious: one query row at a time, every logit, probability
// and product in double, dK and dV accumulated in double buffers the size of K and V. It never
// holds a seqlen_q × seqlen_kv matrix either (one row of logits at a time).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/kernels/dense_backward.h"
#include "kernels/backward_common.h"
#include "kernels/dense_common.h"
#include "kernels/problem.h"
#include "kernels/score_mods.h"

namespace attnkit {

namespace detail {

template <typename KV>
Problem CheckDenseBackwardArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                               TensorView<const KV> v, TensorView<const float> out,
                               TensorView<const float> lse, TensorView<const float> dout,
                               const DenseGrads& grads, const DenseOptions& o) {
  CheckView(out, fn, "out");
  Require(!lse.empty(), fn, ": lse (the forward's log-sum-exp) is required");
  const Problem g =
      CheckDenseArgs(fn, q, k, v, detail::ConstCastView(out), o, detail::ConstCastView(lse));
  CheckView(dout, fn, "dout");
  Require(dout.shape == out.shape, fn, ": dout must have out's shape ", out.ShapeString(), ", got ",
          dout.ShapeString());
  detail::CheckGradViews(fn, grads.dq, grads.dk, grads.dv, q, k, v);
  const TensorView<float> outs[3] = {grads.dq, grads.dk, grads.dv};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int a = 0; a < 3; ++a) {
    const bool hits = detail::ViewsOverlap(outs[a], out) || detail::ViewsOverlap(outs[a], lse) ||
                      detail::ViewsOverlap(outs[a], dout);
    Require(!hits, fn, ": ", names[a], " overlaps an input (q, k, v, out, lse or dout)");
  }
  if (grads.dsinks) {
    Require(!o.sinks.empty(), fn, ": dsinks given but options.sinks is empty");
  }
  for (int64_t b = 0; b < lse.batch(); ++b) {
    for (int64_t h = 0; h < lse.heads(); ++h) {
      for (int64_t i = 0; i < lse.tokens(); ++i) {
        const float x = lse.at(b, h, i, 0);
        // NaN: a row the forward poisoned (the non-finite rule); its gradients come out NaN.
        Require(std::isfinite(x) || x == detail::kNegInf || std::isnan(x), fn, ": lse[", b, ", ", h,
                ", ", i, "] = ", x, " is not a log-sum-exp (finite, -inf or NaN)");
      }
    }
  }
  return g;
}

template Problem CheckDenseBackwardArgs<float>(const char*, TensorView<const float>,
                                               TensorView<const float>, TensorView<const float>,
                                               TensorView<const float>, TensorView<const float>,
                                               TensorView<const float>, const DenseGrads&,
                                               const DenseOptions&);
template Problem CheckDenseBackwardArgs<bf16>(const char*, TensorView<const float>,
                                              TensorView<const bf16>, TensorView<const bf16>,
                                              TensorView<const float>, TensorView<const float>,
                                              TensorView<const float>, const DenseGrads&,
                                              const DenseOptions&);

}  // namespace detail

double DenseBackwardFlops(int64_t batch, int64_t num_heads_q, int64_t seqlen_q, int64_t seqlen_kv,
                          int64_t head_dim_qk, int64_t head_dim_v, const Mask* mask) {
  return 2.5 * DenseFlops(batch, num_heads_q, seqlen_q, seqlen_kv, head_dim_qk, head_dim_v, mask);
}

namespace ref {
namespace {

// The score modifiers (soft-cap, ALiBi, sinks) come from score_mods.h, the definitions the
// forward kernel and its reference use, with their derivatives.
template <typename KV, typename Mods>
void RefBackwardImpl(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                     TensorView<const float> out, TensorView<const float> lse,
                     TensorView<const float> dout, const DenseGrads& grads, const DenseOptions& o,
                     const detail::DenseGeometry& g, const Mods& mods) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // dK, dV in double: [batch, heads_kv, seqlen_kv, dim] contiguous.
  std::vector<double> dk(static_cast<size_t>(g.batch * g.heads_kv * g.seqlen_kv * g.dk), 0.0);
  std::vector<double> dv(static_cast<size_t>(g.batch * g.heads_kv * g.seqlen_kv * g.dv), 0.0);
  std::vector<double> dsink(static_cast<size_t>(g.heads_q), 0.0);
  std::vector<double> p(static_cast<size_t>(g.seqlen_kv)), deriv(p.size()), dq(g.dk);
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads_q; ++h) {
      const int64_t hk = h / g.group;
      for (int64_t i = 0; i < g.seqlen_q; ++i) {
        const int64_t qp = g.q_start + i;
        const float* qr = q.row(b, h, i);
        const float* orow = out.row(b, h, i);
        const float* dorow = dout.row(b, h, i);
        const double l = lse.at(b, h, i, 0);
        double D = 0;
        for (int64_t d = 0; d < g.dv; ++d) D += double{dorow[d]} * double{orow[d]};
        std::fill(dq.begin(), dq.end(), 0.0);
        if (l == -kInf) {  // the row saw nothing: no gradient flows through it
          float* dqr = grads.dq.row(b, h, i);
          std::fill(dqr, dqr + g.dk, 0.0f);
          continue;
        }
        if constexpr (Mods::kHasSinks) dsink[h] += mods.sinks.Gradient(h, l, D);
        for (int64_t j = 0; j < g.seqlen_kv; ++j) {
          const int64_t kp = g.k_start + j;
          if (o.mask && !o.mask->Allowed(qp, kp)) {
            p[j] = 0;
            continue;
          }
          const KV* kr = k.row(b, hk, j);
          double dot = 0;
          for (int64_t d = 0; d < g.dk; ++d) dot += double{qr[d]} * double{ToFloat(kr[d])};
          const double s = dot * g.scale;
          deriv[j] = g.scale * mods.LogitDerivative(s);  // ∂logit/∂(q·k)
          p[j] = std::exp(mods.Logit(s, h, qp, kp) - l);
        }
        for (int64_t j = 0; j < g.seqlen_kv; ++j) {
          if (p[j] == 0) continue;
          const KV* kr = k.row(b, hk, j);
          const KV* vr = v.row(b, hk, j);
          double dp = 0;
          for (int64_t d = 0; d < g.dv; ++d) dp += double{dorow[d]} * double{ToFloat(vr[d])};
          const double ds = p[j] * (dp - D) * deriv[j];
          double* dkr = dk.data() + ((b * g.heads_kv + hk) * g.seqlen_kv + j) * g.dk;
          double* dvr = dv.data() + ((b * g.heads_kv + hk) * g.seqlen_kv + j) * g.dv;
          for (int64_t d = 0; d < g.dk; ++d) {
            dq[d] += ds * double{ToFloat(kr[d])};
            dkr[d] += ds * double{qr[d]};
          }
          for (int64_t d = 0; d < g.dv; ++d) dvr[d] += p[j] * double{dorow[d]};
        }
        float* dqr = grads.dq.row(b, h, i);
        for (int64_t d = 0; d < g.dk; ++d) dqr[d] = static_cast<float>(dq[d]);
      }
    }
  }
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t hk = 0; hk < g.heads_kv; ++hk) {
      for (int64_t j = 0; j < g.seqlen_kv; ++j) {
        const double* dkr = dk.data() + ((b * g.heads_kv + hk) * g.seqlen_kv + j) * g.dk;
        const double* dvr = dv.data() + ((b * g.heads_kv + hk) * g.seqlen_kv + j) * g.dv;
        float* dko = grads.dk.row(b, hk, j);
        float* dvo = grads.dv.row(b, hk, j);
        for (int64_t d = 0; d < g.dk; ++d) dko[d] = static_cast<float>(dkr[d]);
        for (int64_t d = 0; d < g.dv; ++d) dvo[d] = static_cast<float>(dvr[d]);
      }
    }
  }
  if (grads.dsinks) {
    for (int64_t h = 0; h < g.heads_q; ++h) grads.dsinks[h] = static_cast<float>(dsink[h]);
  }
}

template <typename KV>
void RefBackward(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                 TensorView<const float> out, TensorView<const float> lse,
                 TensorView<const float> dout, const DenseGrads& grads, const DenseOptions& o) {
  const detail::DenseGeometry g =
      detail::CheckDenseBackwardArgs("ref::DenseBackward", q, k, v, out, lse, dout, grads, o);
  detail::DispatchScoreMods(
      o, [&](const auto& mods) { RefBackwardImpl(q, k, v, out, lse, dout, grads, o, g, mods); });
}

}  // namespace

void DenseBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options) {
  RefBackward(q, k, v, out, lse, dout, grads, options);
}
void DenseBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options) {
  RefBackward(q, k, v, out, lse, dout, grads, options);
}

}  // namespace ref
}  // namespace attnkit
