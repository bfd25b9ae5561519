// The linear engine's reference twin: obvious loops, double accumulation, token by token.
//
// Causal form: the recurrence s_t = s_{t−1} + φ(k_t) v_tᵀ, z_t = z_{t−1} + φ(k_t), with the
// running-max key stabiliser kept exactly as the fast kernel defines it (so the state it reads and
// writes has the same meaning); o_t = φ(q_t)ᵀ s_t / φ(q_t)ᵀ z_t. Bidirectional: the sums over all
// keys first, then every query.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/linear.h"
#include "kernels/linear_common.h"

namespace attnkit::ref {
namespace {

// φ(x) in double for one row; returns the row's stabiliser (0 for elu+1 / ReLU).
double Features(const detail::LinearGeometry& g, const LinearOptions& o, const float* x,
                std::vector<double>& f) {
  if (o.feature_map == FeatureMap::kFavorPositive) {
    std::vector<double> xs(static_cast<size_t>(g.dk));
    double sq = 0;
    for (int64_t c = 0; c < g.dk; ++c) {
      xs[c] = static_cast<double>(x[c]) * g.x_scale;
      sq += xs[c] * xs[c];
    }
    double r = -INFINITY;
    for (int64_t l = 0; l < g.m; ++l) {
      double dot = 0;
      for (int64_t c = 0; c < g.dk; ++c)
        dot += static_cast<double>(o.features->w()[l * g.dk + c]) * xs[c];
      f[l] = dot - sq / 2;
      r = std::max(r, f[l]);
    }
    const double norm = 1.0 / std::sqrt(static_cast<double>(g.m));
    for (int64_t l = 0; l < g.m; ++l) f[l] = std::exp(f[l] - r) * norm;
    return r;
  }
  for (int64_t c = 0; c < g.dk; ++c) {
    const double xv = x[c];
    if (o.feature_map == FeatureMap::kEluPlusOne) {
      f[c] = xv > 0 ? xv + 1 : std::exp(xv);
    } else {
      f[c] = std::max(xv, 0.0);
    }
  }
  return 0.0;
}

struct HeadState {
  std::vector<double> s, z;
  double max_shift = -INFINITY;
};

void Absorb(const detail::LinearGeometry& g, const std::vector<double>& fk, double r,
            const float* v, HeadState& st) {
  const double new_max = std::max(st.max_shift, r);
  if (st.max_shift != -INFINITY) {
    const double f = std::exp(st.max_shift - new_max);
    for (auto& x : st.s) x *= f;
    for (auto& x : st.z) x *= f;
  }
  const double c = std::exp(r - new_max);
  for (int64_t l = 0; l < g.m; ++l) {
    st.z[l] += c * fk[l];
    for (int64_t e = 0; e < g.dv; ++e) st.s[l * g.dv + e] += c * fk[l] * v[e];
  }
  st.max_shift = new_max;
}

void Read(const detail::LinearGeometry& g, const std::vector<double>& fq, const HeadState& st,
          float* out) {
  double den = 0;
  for (int64_t l = 0; l < g.m; ++l) den += fq[l] * st.z[l];
  for (int64_t e = 0; e < g.dv; ++e) {
    double num = 0;
    for (int64_t l = 0; l < g.m; ++l) num += fq[l] * st.s[l * g.dv + e];
    out[e] = den > 0 ? static_cast<float>(num / den) : 0.0f;
  }
}

void RefLinear(const detail::LinearGeometry& g, TensorView<const float> q,
               TensorView<const float> k, TensorView<const float> v, TensorView<float> out,
               const LinearOptions& o, LinearState* state) {
  // Every buffer before the first write of `state` (a failure leaves it unchanged).
  constexpr const char* fn = "ref::LinearForward";
  std::vector<double> fk, fq;
  HeadState st;
  CheckedResize(fk, g.m, fn, "the features");
  CheckedResize(fq, g.m, fn, "the features");
  CheckedResize(st.s, CheckedMul(g.m, g.dv, fn, "features*head_dim_v"), fn, "the state");
  CheckedResize(st.z, g.m, fn, "the normaliser");
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t hk = 0; hk < g.heads_kv; ++hk) {
      const int64_t u = b * g.heads_kv + hk;
      std::fill(st.s.begin(), st.s.end(), 0.0);
      std::fill(st.z.begin(), st.z.end(), 0.0);
      st.max_shift = -INFINITY;
      if (state) {
        for (int64_t i = 0; i < g.m * g.dv; ++i) st.s[i] = state->s[u * g.m * g.dv + i];
        for (int64_t l = 0; l < g.m; ++l) st.z[l] = state->z[u * g.m + l];
        st.max_shift = state->max_shift[u];
      }
      if (!o.causal) {
        for (int64_t j = 0; j < g.seqlen_kv; ++j) {
          const double r = Features(g, o, k.row(b, hk, j), fk);
          Absorb(g, fk, r, v.row(b, hk, j), st);
        }
        for (int64_t gh = 0; gh < g.group; ++gh) {
          const int64_t h = hk * g.group + gh;
          for (int64_t i = 0; i < g.seqlen_q; ++i) {
            Features(g, o, q.row(b, h, i), fq);
            Read(g, fq, st, out.row(b, h, i));
          }
        }
        continue;
      }
      for (int64_t t = 0; t < g.seqlen_kv; ++t) {
        const double r = Features(g, o, k.row(b, hk, t), fk);
        Absorb(g, fk, r, v.row(b, hk, t), st);
        for (int64_t gh = 0; gh < g.group; ++gh) {
          const int64_t h = hk * g.group + gh;
          Features(g, o, q.row(b, h, t), fq);
          Read(g, fq, st, out.row(b, h, t));
        }
      }
      if (state) {
        for (int64_t i = 0; i < g.m * g.dv; ++i)
          state->s[u * g.m * g.dv + i] = static_cast<float>(st.s[i]);
        for (int64_t l = 0; l < g.m; ++l) state->z[u * g.m + l] = static_cast<float>(st.z[l]);
        state->max_shift[u] = static_cast<float>(st.max_shift);
      }
    }
  }
  if (state) state->tokens += g.seqlen_kv;
}

}  // namespace

void LinearForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<float> out, const LinearOptions& o, LinearState* state) {
  const detail::LinearGeometry g =
      detail::CheckLinearArgs("ref::LinearForward", q, k, v, out, o, state);
  detail::LinearNonFiniteRule(
      g, q, k, v, out, o.causal, state,
      [&](TensorView<const float> q2, TensorView<const float> k2, TensorView<const float> v2) {
        RefLinear(g, q2, k2, v2, out, o, state);
      });
}

}  // namespace attnkit::ref
