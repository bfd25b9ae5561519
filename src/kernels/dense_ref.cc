// The dense engine's plain reference twin, argument checks, FLOP count and the LSE merge.
//
// ref::DenseForward is deliberately obvious: one query row at a time, every logit in double,
// a two-pass softmax. It is the yardstick the tiled kernel is tested against.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "kernels/dense_common.h"
#include "kernels/nonfinite.h"
#include "kernels/score_mods.h"

namespace attnkit {

namespace detail {

template <typename KV>
DenseGeometry CheckDenseArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                             TensorView<const KV> v, TensorView<float> out, const DenseOptions& o,
                             TensorView<float> lse) {
  ProblemRules rules;
  rules.scale = o.scale;
  rules.num_threads = o.num_threads;
  rules.k_start = o.k_start;
  rules.q_start = o.q_start;
  const DenseGeometry g = CheckProblem(fn, q, k, v, out, lse, rules);
  Require(std::isfinite(o.softcap) && o.softcap >= 0.0f, fn,
          ": softcap must be finite and >= 0 (0 = off), got ", o.softcap);
  CheckPerHead(fn, "alibi_slopes", o.alibi_slopes, g.heads_q, "num_heads_q");
  CheckPerHead(fn, "sinks", o.sinks, g.heads_q, "num_heads_q", {.allow_neg_inf = true});
  return g;
}

template DenseGeometry CheckDenseArgs<float>(const char*, TensorView<const float>,
                                             TensorView<const float>, TensorView<const float>,
                                             TensorView<float>, const DenseOptions&,
                                             TensorView<float>);
template DenseGeometry CheckDenseArgs<bf16>(const char*, TensorView<const float>,
                                            TensorView<const bf16>, TensorView<const bf16>,
                                            TensorView<float>, const DenseOptions&,
                                            TensorView<float>);

}  // namespace detail

double DenseFlops(int64_t batch, int64_t num_heads_q, int64_t seqlen_q, int64_t seqlen_kv,
                  int64_t head_dim_qk, int64_t head_dim_v, const Mask* mask) {
  const double pairs = MaskDensity(mask, seqlen_q, seqlen_kv) * static_cast<double>(seqlen_q) *
                       static_cast<double>(seqlen_kv);
  return 2.0 * pairs * static_cast<double>(batch * num_heads_q) *
         static_cast<double>(head_dim_qk + head_dim_v);
}

namespace ref {
namespace {

template <typename KV, typename Mods>
void RefImpl(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
             TensorView<float> out, const DenseOptions& o, TensorView<float> lse,
             const detail::DenseGeometry& g, const Mods& mods) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double> logits(static_cast<size_t>(g.seqlen_kv));
  std::vector<double> acc(static_cast<size_t>(g.dv));
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads_q; ++h) {
      const int64_t hk = h / g.group;
      for (int64_t i = 0; i < g.seqlen_q; ++i) {
        const int64_t qp = g.q_start + i;
        const float* qr = q.row(b, h, i);
        double mx = kNegInf;
        for (int64_t j = 0; j < g.seqlen_kv; ++j) {
          const int64_t kp = g.k_start + j;
          if (o.mask && !o.mask->Allowed(qp, kp)) {
            logits[j] = kNegInf;
            continue;
          }
          const KV* kr = k.row(b, hk, j);
          double dot = 0;
          for (int64_t d = 0; d < g.dk; ++d) dot += double{qr[d]} * double{ToFloat(kr[d])};
          logits[j] = mods.Logit(dot * g.scale, h, qp, kp);
          mx = std::max(mx, logits[j]);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double denom = 0;
        if (mx != kNegInf) {
          for (int64_t j = 0; j < g.seqlen_kv; ++j) {
            if (logits[j] == kNegInf) continue;
            const double p = std::exp(logits[j] - mx);
            denom += p;
            const KV* vr = v.row(b, hk, j);
            for (int64_t d = 0; d < g.dv; ++d) acc[d] += p * double{ToFloat(vr[d])};
          }
        }
        const double corr = mods.Normaliser(h, mx, denom);
        float* orow = out.row(b, h, i);
        if (denom == 0) {  // every key masked, no sink
          for (int64_t d = 0; d < g.dv; ++d) orow[d] = 0.0f;
          if (!lse.empty()) lse.at(b, h, i, 0) = -std::numeric_limits<float>::infinity();
          continue;
        }
        for (int64_t d = 0; d < g.dv; ++d) orow[d] = static_cast<float>(acc[d] * corr / denom);
        if (!lse.empty()) lse.at(b, h, i, 0) = static_cast<float>(mx + std::log(denom));
      }
    }
  }
}

template <typename KV>
void Ref(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
         TensorView<float> out, const DenseOptions& o, TensorView<float> lse, bool rule) {
  const detail::DenseGeometry g = detail::CheckDenseArgs("ref::DenseForward", q, k, v, out, o, lse);
  auto run = [&](TensorView<const float> q2, TensorView<const KV> k2, TensorView<const KV> v2) {
    detail::DispatchScoreMods(o,
                              [&](const auto& mods) { RefImpl(q2, k2, v2, out, o, lse, g, mods); });
  };
  if (rule) {
    detail::DenseNonFiniteRule(g, q, k, v, out, o, lse, run);
  } else {
    run(q, k, v);
  }
}

}  // namespace

}  // namespace ref

namespace detail {
template <typename KV>
void RefDenseForwardFinite(TensorView<const float> q, TensorView<const KV> k,
                           TensorView<const KV> v, TensorView<float> out, const DenseOptions& o,
                           TensorView<float> lse) {
  ref::Ref<KV>(q, k, v, out, o, lse, /*rule=*/false);
}
template void RefDenseForwardFinite<float>(TensorView<const float>, TensorView<const float>,
                                           TensorView<const float>, TensorView<float>,
                                           const DenseOptions&, TensorView<float>);
template void RefDenseForwardFinite<bf16>(TensorView<const float>, TensorView<const bf16>,
                                          TensorView<const bf16>, TensorView<float>,
                                          const DenseOptions&, TensorView<float>);
}  // namespace detail

namespace ref {

template <typename KV>
void DenseForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                  TensorView<float> out, const DenseOptions& options, TensorView<float> lse) {
  Ref<std::remove_const_t<KV>>(q, k, v, out, options, lse, /*rule=*/true);
}
template void DenseForward<float>(TensorView<const float>, TensorView<float>, TensorView<float>,
                                  TensorView<float>, const DenseOptions&, TensorView<float>);
template void DenseForward<const float>(TensorView<const float>, TensorView<const float>,
                                        TensorView<const float>, TensorView<float>,
                                        const DenseOptions&, TensorView<float>);
template void DenseForward<bf16>(TensorView<const float>, TensorView<bf16>, TensorView<bf16>,
                                 TensorView<float>, const DenseOptions&, TensorView<float>);
template void DenseForward<const bf16>(TensorView<const float>, TensorView<const bf16>,
                                       TensorView<const bf16>, TensorView<float>,
                                       const DenseOptions&, TensorView<float>);

}  // namespace ref

void MergeAttention(std::span<const TensorView<const float>> outs,
                    std::span<const TensorView<const float>> lses, TensorView<float> out,
                    TensorView<float> lse_out) {
  constexpr const char* fn = "MergeAttention";
  Require(!outs.empty(), fn, ": outs is empty");
  Require(outs.size() == lses.size(), fn, ": outs (", outs.size(), ") and lses (", lses.size(),
          ") differ in length");
  CheckView(out, fn, "out");
  for (size_t p = 0; p < outs.size(); ++p) {
    CheckView(outs[p], fn, "outs[i]");
    CheckView(lses[p], fn, "lses[i]");
    Require(outs[p].shape == out.shape, fn, ": outs[", p, "] ", outs[p].ShapeString(),
            " differs from out ", out.ShapeString());
    Require(lses[p].batch() == out.batch() && lses[p].heads() == out.heads() &&
                lses[p].tokens() == out.tokens() && lses[p].dim() == 1,
            fn, ": lses[", p, "] must be [batch, num_heads_q, seqlen_q, 1], got ",
            lses[p].ShapeString());
  }
  if (!lse_out.empty()) {
    CheckView(lse_out, fn, "lse_out");
    Require(lse_out.batch() == out.batch() && lse_out.heads() == out.heads() &&
                lse_out.tokens() == out.tokens() && lse_out.dim() == 1,
            fn, ": lse_out must be [batch, num_heads_q, seqlen_q, 1], got ", lse_out.ShapeString());
  }
  const int64_t dv = out.dim();
  std::vector<float> w(outs.size());
  std::vector<float> acc(static_cast<size_t>(dv));
  for (int64_t b = 0; b < out.batch(); ++b) {
    for (int64_t h = 0; h < out.heads(); ++h) {
      for (int64_t i = 0; i < out.tokens(); ++i) {
        float mx = detail::kNegInf;
        for (const auto& l : lses) mx = std::max(mx, l.at(b, h, i, 0));
        float* orow = out.row(b, h, i);
        if (mx == detail::kNegInf) {
          std::fill(orow, orow + dv, 0.0f);
          if (!lse_out.empty()) lse_out.at(b, h, i, 0) = detail::kNegInf;
          continue;
        }
        double total = 0;
        for (size_t p = 0; p < outs.size(); ++p) {
          w[p] = std::exp(lses[p].at(b, h, i, 0) - mx);
          total += w[p];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (size_t p = 0; p < outs.size(); ++p) {
          const float wp = static_cast<float>(w[p] / total);
          const float* r = outs[p].row(b, h, i);
          for (int64_t d = 0; d < dv; ++d) acc[d] += wp * r[d];
        }
        std::copy(acc.begin(), acc.end(), orow);
        if (!lse_out.empty()) lse_out.at(b, h, i, 0) = mx + static_cast<float>(std::log(total));
      }
    }
  }
}

}  // namespace attnkit
