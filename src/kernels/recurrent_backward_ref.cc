// The recurrent engine's backward: argument checks and the reference twin, reverse mode through
// the token-by-token recurrence of ref::GatedDeltaForward in double precision. Per token t (q̂, k̂
// normalised as the forward does):
//   S'_t = diag(α_t) S_{t−1},  u_t = β_t (v_t − S'_tᵀ k̂_t) (or v_t),  S_t = S'_t + k̂_t u_tᵀ,
//   o_t = S_tᵀ q̂_t
// and in reverse, with dS the gradient of S_t:
//   dS += q̂ doᵀ, dq̂ = S_t do;  du = dSᵀ k̂, dk̂ = dS u;
//   dv = β du, dβ = du · (v − S'ᵀ k̂), dS' = dS − β k̂ duᵀ, dk̂ −= β S' du   (delta rule)
//   d log α_c = Σ_e dS'_ce S'_ce (summed over c for a scalar decay),  dS_{t−1} = diag(α) dS'.
#include <cmath>
#include <vector>

#include "kernels/recurrent_backward_common.h"

namespace attnkit {
namespace detail {
namespace {

TensorView<float> Mutable(TensorView<const float> x) {
  return TensorView<float>{const_cast<float*>(x.data), x.shape, x.stride};
}

void RequireShape(const char* fn, const char* name, TensorView<float> g,
                  const std::array<int64_t, 4>& shape, const char* like) {
  Require(!g.empty(), fn, ": grads.", name, " is required (", like, "'s shape)");
  CheckView(g, fn, (std::string("grads.") + name).c_str());
  Require(g.shape == shape, fn, ": grads.", name, " must have ", like, "'s shape [", shape[0], ", ",
          shape[1], ", ", shape[2], ", ", shape[3], "], got ", g.ShapeString());
}

}  // namespace

DeltaGeometry CheckDeltaBackwardArgs(const char* fn, TensorView<const float> q,
                                     TensorView<const float> k, TensorView<const float> v,
                                     TensorView<const float> log_alpha,
                                     TensorView<const float> beta,
                                     TensorView<const float> initial_state,
                                     TensorView<const float> dout,
                                     TensorView<const float> dfinal_state,
                                     const GatedDeltaGrads& grads, const GatedDeltaOptions& o) {
  // dout and initial_state first, so that errors name them (the forward's checks below call
  // them out and state).
  CheckView(q, fn, "q");
  CheckView(v, fn, "v");
  CheckView(dout, fn, "dout");
  Require(dout.shape == v.shape, fn, ": dout must have v's shape ", v.ShapeString(), ", got ",
          dout.ShapeString());
  if (!initial_state.empty()) {
    CheckView(initial_state, fn, "initial_state");
    Require(initial_state.batch() == v.batch() && initial_state.heads() == v.heads() &&
                initial_state.tokens() == q.dim() && initial_state.dim() == v.dim(),
            fn, ": initial_state must be [", v.batch(), ", ", v.heads(), ", ", q.dim(), ", ",
            v.dim(), "], got ", initial_state.ShapeString());
  }
  // The forward's checks, with dout in the place of out and initial_state in that of state
  // (both are only read here).
  const DeltaGeometry g =
      CheckDeltaArgs(fn, q, k, v, log_alpha, beta, Mutable(dout), Mutable(initial_state), o);
  const std::array<int64_t, 4> state_shape = {g.batch, g.heads, g.dk, g.dv};
  if (!dfinal_state.empty()) {
    CheckView(dfinal_state, fn, "dfinal_state");
    Require(dfinal_state.shape == state_shape, fn, ": dfinal_state must be [", g.batch, ", ",
            g.heads, ", ", g.dk, ", ", g.dv, "], got ", dfinal_state.ShapeString());
  }
  RequireShape(fn, "dq", grads.dq, q.shape, "q");
  RequireShape(fn, "dk", grads.dk, k.shape, "k");
  RequireShape(fn, "dv", grads.dv, v.shape, "v");
  if (log_alpha.empty()) {
    Require(grads.dlog_alpha.empty(), fn, ": grads.dlog_alpha must be empty without log_alpha");
  } else {
    RequireShape(fn, "dlog_alpha", grads.dlog_alpha, log_alpha.shape, "log_alpha");
  }
  if (o.delta_rule) {
    RequireShape(fn, "dbeta", grads.dbeta, beta.shape, "beta");
  } else {
    Require(grads.dbeta.empty(), fn, ": grads.dbeta must be empty without the delta rule");
  }
  if (!grads.dstate.empty()) RequireShape(fn, "dstate", grads.dstate, state_shape, "the state");
  return g;
}

// x̂ = scale · x / sqrt(‖x‖² + eps) (or scale · x): dx from dx̂, in double.
void NormalizeBackward(const float* x, const double* dxh, int64_t dim, bool l2, double scale,
                       float* dx) {
  if (!l2) {
    for (int64_t c = 0; c < dim; ++c) dx[c] = static_cast<float>(scale * dxh[c]);
    return;
  }
  double sq = 0, dot = 0;
  for (int64_t c = 0; c < dim; ++c) {
    sq += static_cast<double>(x[c]) * x[c];
    dot += static_cast<double>(x[c]) * dxh[c];
  }
  const double f = 1.0 / std::sqrt(sq + kL2NormEps);
  for (int64_t c = 0; c < dim; ++c) {
    dx[c] = static_cast<float>(scale * (f * dxh[c] - f * f * f * x[c] * dot));
  }
}

}  // namespace detail

namespace ref {

void GatedDeltaBackward(TensorView<const float> q, TensorView<const float> k,
                        TensorView<const float> v, TensorView<const float> log_alpha,
                        TensorView<const float> beta, TensorView<const float> initial_state,
                        TensorView<const float> dout, TensorView<const float> dfinal_state,
                        const GatedDeltaGrads& grads, const GatedDeltaOptions& o) {
  const detail::DeltaGeometry g =
      detail::CheckDeltaBackwardArgs("ref::GatedDeltaBackward", q, k, v, log_alpha, beta,
                                     initial_state, dout, dfinal_state, grads, o);
  const int64_t dk = g.dk, dv = g.dv, T = g.seqlen_q, sd = dk * dv;
  // dq̂, dk̂ per (batch, q/k head), summed over the value heads of the group.
  std::vector<double> dqh(static_cast<size_t>(g.batch * g.heads_q * T * dk), 0.0);
  std::vector<double> dkh(dqh.size(), 0.0);
  std::vector<double> states(static_cast<size_t>((T + 1) * sd));  // S_{−1} .. S_{T−1}
  std::vector<double> qn(static_cast<size_t>(T * dk)), kn(static_cast<size_t>(T * dk));
  std::vector<double> alpha(static_cast<size_t>(T * dk)), u(static_cast<size_t>(T * dv));
  std::vector<double> ds(static_cast<size_t>(sd)), sp(static_cast<size_t>(sd));
  std::vector<double> du(static_cast<size_t>(dv)), pred(static_cast<size_t>(dv));
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads; ++h) {
      const int64_t hq = h / g.group;
      for (int64_t t = 0; t < T; ++t) {
        double nq = 0, nk = 0;
        for (int64_t c = 0; c < dk; ++c) {
          nq += static_cast<double>(q.at(b, hq, t, c)) * q.at(b, hq, t, c);
          nk += static_cast<double>(k.at(b, hq, t, c)) * k.at(b, hq, t, c);
        }
        const double fq = o.l2_normalize_qk ? 1.0 / std::sqrt(nq + detail::kL2NormEps) : 1.0;
        const double fk = o.l2_normalize_qk ? 1.0 / std::sqrt(nk + detail::kL2NormEps) : 1.0;
        for (int64_t c = 0; c < dk; ++c) {
          qn[t * dk + c] = q.at(b, hq, t, c) * fq * g.scale;
          kn[t * dk + c] = k.at(b, hq, t, c) * fk;
          alpha[t * dk + c] =
              g.decay_dim == 0
                  ? 1.0
                  : std::exp(static_cast<double>(log_alpha.at(b, h, t, g.decay_dim == 1 ? 0 : c)));
        }
      }
      // Forward, keeping every state.
      for (int64_t c = 0; c < dk; ++c) {
        for (int64_t e = 0; e < dv; ++e) {
          states[c * dv + e] = initial_state.empty() ? 0.0 : initial_state.at(b, h, c, e);
        }
      }
      for (int64_t t = 0; t < T; ++t) {
        const double* prev = states.data() + t * sd;
        double* cur = states.data() + (t + 1) * sd;
        const double* kt = kn.data() + t * dk;
        for (int64_t i = 0; i < sd; ++i) sp[i] = alpha[t * dk + i / dv] * prev[i];
        for (int64_t e = 0; e < dv; ++e) {
          double acc = 0;
          for (int64_t c = 0; c < dk; ++c) acc += sp[c * dv + e] * kt[c];
          const double ve = v.at(b, h, t, e);
          u[t * dv + e] = o.delta_rule ? beta.at(b, h, t, 0) * (ve - acc) : ve;
        }
        for (int64_t c = 0; c < dk; ++c) {
          for (int64_t e = 0; e < dv; ++e) cur[c * dv + e] = sp[c * dv + e] + kt[c] * u[t * dv + e];
        }
      }
      // Reverse.
      for (int64_t c = 0; c < dk; ++c) {
        for (int64_t e = 0; e < dv; ++e) {
          ds[c * dv + e] = dfinal_state.empty() ? 0.0 : dfinal_state.at(b, h, c, e);
        }
      }
      double* dq_acc = dqh.data() + (b * g.heads_q + hq) * T * dk;
      double* dk_acc = dkh.data() + (b * g.heads_q + hq) * T * dk;
      for (int64_t t = T - 1; t >= 0; --t) {
        const double* prev = states.data() + t * sd;
        const double* cur = states.data() + (t + 1) * sd;
        const double* qt = qn.data() + t * dk;
        const double* kt = kn.data() + t * dk;
        const float* dot = dout.row(b, h, t);
        for (int64_t c = 0; c < dk; ++c) {
          double acc = 0;
          for (int64_t e = 0; e < dv; ++e) {
            acc += cur[c * dv + e] * dot[e];
            ds[c * dv + e] += qt[c] * dot[e];
          }
          dq_acc[t * dk + c] += acc;
        }
        for (int64_t e = 0; e < dv; ++e) {
          double acc = 0;
          for (int64_t c = 0; c < dk; ++c) acc += ds[c * dv + e] * kt[c];
          du[e] = acc;
        }
        for (int64_t c = 0; c < dk; ++c) {
          double acc = 0;
          for (int64_t e = 0; e < dv; ++e) acc += ds[c * dv + e] * u[t * dv + e];
          dk_acc[t * dk + c] += acc;
        }
        for (int64_t i = 0; i < sd; ++i) sp[i] = alpha[t * dk + i / dv] * prev[i];
        if (o.delta_rule) {
          const double bt = beta.at(b, h, t, 0);
          double dbeta = 0;
          for (int64_t e = 0; e < dv; ++e) {
            double acc = 0;
            for (int64_t c = 0; c < dk; ++c) acc += sp[c * dv + e] * kt[c];
            pred[e] = acc;
            dbeta += du[e] * (v.at(b, h, t, e) - acc);
            grads.dv.at(b, h, t, e) = static_cast<float>(bt * du[e]);
          }
          grads.dbeta.at(b, h, t, 0) = static_cast<float>(dbeta);
          for (int64_t c = 0; c < dk; ++c) {
            double acc = 0;
            for (int64_t e = 0; e < dv; ++e) {
              acc += sp[c * dv + e] * du[e];
              ds[c * dv + e] -= bt * kt[c] * du[e];
            }
            dk_acc[t * dk + c] -= bt * acc;
          }
        } else {
          for (int64_t e = 0; e < dv; ++e) grads.dv.at(b, h, t, e) = static_cast<float>(du[e]);
        }
        if (g.decay_dim > 0) {
          double total = 0;
          for (int64_t c = 0; c < dk; ++c) {
            double acc = 0;
            for (int64_t e = 0; e < dv; ++e) acc += ds[c * dv + e] * sp[c * dv + e];
            if (g.decay_dim == dk) grads.dlog_alpha.at(b, h, t, c) = static_cast<float>(acc);
            total += acc;
          }
          if (g.decay_dim == 1) grads.dlog_alpha.at(b, h, t, 0) = static_cast<float>(total);
        }
        for (int64_t i = 0; i < sd; ++i) ds[i] *= alpha[t * dk + i / dv];
      }
      if (!grads.dstate.empty()) {
        for (int64_t c = 0; c < dk; ++c) {
          for (int64_t e = 0; e < dv; ++e) {
            grads.dstate.at(b, h, c, e) = static_cast<float>(ds[c * dv + e]);
          }
        }
      }
    }
  }
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t hq = 0; hq < g.heads_q; ++hq) {
      for (int64_t t = 0; t < T; ++t) {
        const size_t at = static_cast<size_t>(((b * g.heads_q + hq) * T + t) * dk);
        detail::NormalizeBackward(q.row(b, hq, t), dqh.data() + at, dk, o.l2_normalize_qk, g.scale,
                                  grads.dq.row(b, hq, t));
        detail::NormalizeBackward(k.row(b, hq, t), dkh.data() + at, dk, o.l2_normalize_qk, 1.0,
                                  grads.dk.row(b, hq, t));
      }
    }
  }
}

}  // namespace ref
}  // namespace attnkit
