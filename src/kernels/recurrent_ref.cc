// The recurrent engine's argument checks and its reference twin: the token-by-token gated delta
// rule in double precision, exactly as written in recurrent.h.
#include <cmath>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/recurrent.h"
#include "kernels/recurrent_common.h"

namespace attnkit {
namespace detail {

DeltaGeometry CheckDeltaArgs(const char* fn, TensorView<const float> q, TensorView<const float> k,
                             TensorView<const float> v, TensorView<const float> log_alpha,
                             TensorView<const float> beta, TensorView<float> out,
                             TensorView<float> state, const GatedDeltaOptions& o) {
  ProblemRules rules;
  rules.sharing = HeadSharing::kQueryKey;
  rules.equal_seqlen = true;
  rules.scale = o.scale;
  rules.num_threads = o.num_threads;
  DeltaGeometry g;
  static_cast<Problem&>(g) = CheckProblem(fn, q, k, v, out, TensorView<const float>{}, rules);
  Require(k.shape == q.shape, fn, ": q ", q.ShapeString(), " and k ", k.ShapeString(),
          " must have the same shape");
  Require(o.chunk_size >= 1, fn, ": options.chunk_size must be >= 1, got ", o.chunk_size);
  g.decay_dim = 0;
  if (!log_alpha.empty()) {
    CheckView(log_alpha, fn, "log_alpha");
    Require(log_alpha.batch() == g.batch && log_alpha.heads() == g.heads &&
                log_alpha.tokens() == g.seqlen_q &&
                (log_alpha.dim() == 1 || log_alpha.dim() == g.dk),
            fn, ": log_alpha must be [", g.batch, ", ", g.heads, ", ", g.seqlen_q, ", 1 or ", g.dk,
            "], got ", log_alpha.ShapeString());
    g.decay_dim = log_alpha.dim();
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t h = 0; h < g.heads; ++h) {
        for (int64_t t = 0; t < g.seqlen_q; ++t) {
          const float* r = log_alpha.row(b, h, t);
          for (int64_t c = 0; c < g.decay_dim; ++c) {
            Require(std::isfinite(r[c]) && r[c] <= 0.0f, fn,
                    ": log_alpha must be finite and <= 0 (decay α in (0, 1]), got ", r[c], " at [",
                    b, ", ", h, ", ", t, ", ", c, "]");
          }
        }
      }
    }
  }
  if (o.delta_rule) {
    Require(!beta.empty(), fn, ": beta is required with the delta rule");
    CheckView(beta, fn, "beta");
    Require(beta.batch() == g.batch && beta.heads() == g.heads && beta.tokens() == g.seqlen_q &&
                beta.dim() == 1,
            fn, ": beta must be [", g.batch, ", ", g.heads, ", ", g.seqlen_q, ", 1], got ",
            beta.ShapeString());
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t h = 0; h < g.heads; ++h) {
        for (int64_t t = 0; t < g.seqlen_q; ++t) {
          const float x = beta.at(b, h, t, 0);
          Require(x >= 0.0f && x <= 1.0f, fn, ": beta must lie in [0, 1], got ", x, " at [", b,
                  ", ", h, ", ", t, "]");
        }
      }
    }
  } else {
    Require(beta.empty(), fn, ": beta must be empty without the delta rule");
  }
  if (!state.empty()) {
    CheckView(state, fn, "state");
    Require(state.batch() == g.batch && state.heads() == g.heads && state.tokens() == g.dk &&
                state.dim() == g.dv,
            fn, ": state must be [", g.batch, ", ", g.heads, ", ", g.dk, ", ", g.dv, "], got ",
            state.ShapeString());
  }
  return g;
}

}  // namespace detail

namespace ref {

namespace {
void RefDelta(const detail::DeltaGeometry& g, TensorView<const float> q, TensorView<const float> k,
              TensorView<const float> v, TensorView<const float> log_alpha,
              TensorView<const float> beta, TensorView<float> out, TensorView<float> state,
              const GatedDeltaOptions& o) {
  const int64_t dk = g.dk, dv = g.dv;
  constexpr const char* fn = "ref::GatedDeltaForward";
  std::vector<double> s, qn, kn, alpha, sk, u;  // all allocated before `state` is written
  CheckedResize(s, CheckedMul(dk, dv, fn, "head_dim_qk*head_dim_v"), fn, "the state");
  for (auto* w : {&qn, &kn, &alpha}) CheckedResize(*w, dk, fn, "a key-sized row");
  for (auto* w : {&sk, &u}) CheckedResize(*w, dv, fn, "a value-sized row");
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads; ++h) {
      const int64_t hq = h / g.group;
      for (int64_t c = 0; c < dk; ++c) {
        for (int64_t e = 0; e < dv; ++e) s[c * dv + e] = state.empty() ? 0.0 : state.at(b, h, c, e);
      }
      for (int64_t t = 0; t < g.seqlen_q; ++t) {
        double nq = 0, nk = 0;
        for (int64_t c = 0; c < dk; ++c) {
          qn[c] = q.at(b, hq, t, c);
          kn[c] = k.at(b, hq, t, c);
          nq += qn[c] * qn[c];
          nk += kn[c] * kn[c];
        }
        const double fq = o.l2_normalize_qk ? 1.0 / std::sqrt(nq + detail::kL2NormEps) : 1.0;
        const double fk = o.l2_normalize_qk ? 1.0 / std::sqrt(nk + detail::kL2NormEps) : 1.0;
        for (int64_t c = 0; c < dk; ++c) {
          qn[c] *= fq * g.scale;
          kn[c] *= fk;
          alpha[c] =
              g.decay_dim == 0
                  ? 1.0
                  : std::exp(static_cast<double>(log_alpha.at(b, h, t, g.decay_dim == 1 ? 0 : c)));
        }
        // S ← diag(α) S
        for (int64_t c = 0; c < dk; ++c) {
          for (int64_t e = 0; e < dv; ++e) s[c * dv + e] *= alpha[c];
        }
        // u = β (v − Sᵀ k) or v
        for (int64_t e = 0; e < dv; ++e) {
          double acc = 0;
          for (int64_t c = 0; c < dk; ++c) acc += s[c * dv + e] * kn[c];
          const double ve = v.at(b, h, t, e);
          u[e] = o.delta_rule ? beta.at(b, h, t, 0) * (ve - acc) : ve;
        }
        // S ← S + k uᵀ;  o = Sᵀ q
        for (int64_t c = 0; c < dk; ++c) {
          for (int64_t e = 0; e < dv; ++e) s[c * dv + e] += kn[c] * u[e];
        }
        for (int64_t e = 0; e < dv; ++e) {
          double acc = 0;
          for (int64_t c = 0; c < dk; ++c) acc += s[c * dv + e] * qn[c];
          out.at(b, h, t, e) = static_cast<float>(acc);
        }
      }
      if (!state.empty()) {
        for (int64_t c = 0; c < dk; ++c) {
          for (int64_t e = 0; e < dv; ++e) state.at(b, h, c, e) = static_cast<float>(s[c * dv + e]);
        }
      }
    }
  }
}
}  // namespace

void GatedDeltaForward(TensorView<const float> q, TensorView<const float> k,
                       TensorView<const float> v, TensorView<const float> log_alpha,
                       TensorView<const float> beta, TensorView<float> out, TensorView<float> state,
                       const GatedDeltaOptions& o) {
  const detail::DeltaGeometry g =
      detail::CheckDeltaArgs("ref::GatedDeltaForward", q, k, v, log_alpha, beta, out, state, o);
  detail::DeltaNonFiniteRule(
      g, q, k, v, out, state,
      [&](TensorView<const float> q2, TensorView<const float> k2, TensorView<const float> v2) {
        RefDelta(g, q2, k2, v2, log_alpha, beta, out, state, o);
      });
}

}  // namespace ref
}  // namespace attnkit
