// The linear engine's backward reference twin: double precision, every (query, key) pair
// written out. For query i and each key j it sees (j ≤ i causal, all keys bidirectional):
//   w_ij = φ̃(q_i)·φ̃(k_j) exp(r_j − M_i),  den_i = Σ_j w_ij,  o_i = Σ_j w_ij v_j / den_i
// (φ̃ the row-stabilised features, r_j the key's stabiliser, M_i the largest r_j query i sees: the
// stabilisers cancel in o_i, so the backward treats them as constants). Then
//   dw_ij = do_i · (v_j − o_i) / den_i,  dv_j += (w_ij / den_i) do_i,
//   dφ̃(q_i) += Σ_j dw_ij exp(r_j − M_i) φ̃(k_j),  dφ̃(k_j) += Σ_i dw_ij exp(r_j − M_i) φ̃(q_i),
// and through the feature map: FAVOR+ a_l = w_l·x − ‖x‖²/2, φ̃_l ∝ exp(a_l) so da_l = dφ̃_l φ̃_l,
// dx = Wᵀ da − x Σ_l da_l (x = input · d^(−1/4)); elu + 1: dφ · (x > 0 ? 1 : e^x); ReLU: dφ · [x >
// 0].
#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/kernels/linear_backward.h"
#include "kernels/linear_backward_common.h"

namespace attnkit {
namespace detail {

LinearGeometry CheckLinearBackwardArgs(const char* fn, TensorView<const float> q,
                                       TensorView<const float> k, TensorView<const float> v,
                                       TensorView<const float> dout, TensorView<float> dq,
                                       TensorView<float> dk, TensorView<float> dv,
                                       const LinearOptions& o) {
  CheckView(q, fn, "q");
  CheckView(v, fn, "v");
  CheckView(dout, fn, "dout");
  Require(dout.batch() == q.batch() && dout.heads() == q.heads() && dout.tokens() == q.tokens() &&
              dout.dim() == v.dim(),
          fn, ": dout must be [", q.batch(), ", ", q.heads(), ", ", q.tokens(), ", ", v.dim(),
          "] (out's shape), got ", dout.ShapeString());
  const LinearGeometry g = CheckLinearArgs(
      fn, q, k, v, TensorView<float>{const_cast<float*>(dout.data), dout.shape, dout.stride}, o,
      nullptr);
  const struct {
    TensorView<float> g;
    TensorView<const float> x;
    const char *name, *like;
  } grads[] = {{dq, q, "dq", "q"}, {dk, k, "dk", "k"}, {dv, v, "dv", "v"}};
  for (const auto& e : grads) {
    CheckView(e.g, fn, e.name);
    Require(e.g.shape == e.x.shape, fn, ": ", e.name, " must have ", e.like, "'s shape ",
            e.x.ShapeString(), ", got ", e.g.ShapeString());
  }
  return g;
}

}  // namespace detail

namespace ref {
namespace {

// φ̃(x) for one row in double; returns the row's stabiliser (0 for elu+1 / ReLU).
double Features(const detail::LinearGeometry& g, const LinearOptions& o, const float* x,
                std::vector<double>& f) {
  if (o.feature_map == FeatureMap::kFavorPositive) {
    double sq = 0;
    for (int64_t c = 0; c < g.dk; ++c)
      sq += (x[c] * g.x_scale) * static_cast<double>(x[c] * g.x_scale);
    double r = -INFINITY;
    for (int64_t l = 0; l < g.m; ++l) {
      double dot = 0;
      for (int64_t c = 0; c < g.dk; ++c) {
        dot += static_cast<double>(o.features->w()[l * g.dk + c]) * x[c] * g.x_scale;
      }
      f[l] = dot - sq / 2;
      r = std::max(r, f[l]);
    }
    for (int64_t l = 0; l < g.m; ++l) f[l] = std::exp(f[l] - r) / std::sqrt(double(g.m));
    return r;
  }
  for (int64_t c = 0; c < g.dk; ++c) {
    const double xv = x[c];
    f[c] = o.feature_map == FeatureMap::kEluPlusOne ? (xv > 0 ? xv + 1 : std::exp(xv))
                                                    : std::max(xv, 0.0);
  }
  return 0.0;
}

// dx from dφ̃ for one row (f the row's features).
void FeaturesBackward(const detail::LinearGeometry& g, const LinearOptions& o, const float* x,
                      const double* f, const double* df, float* dx) {
  if (o.feature_map == FeatureMap::kFavorPositive) {
    double sum = 0;
    std::vector<double> dxs(static_cast<size_t>(g.dk), 0.0);
    for (int64_t l = 0; l < g.m; ++l) {
      const double da = df[l] * f[l];
      sum += da;
      for (int64_t c = 0; c < g.dk; ++c) dxs[c] += da * o.features->w()[l * g.dk + c];
    }
    for (int64_t c = 0; c < g.dk; ++c) {
      const double xs = static_cast<double>(x[c]) * g.x_scale;
      dx[c] = static_cast<float>(g.x_scale * (dxs[c] - xs * sum));
    }
    return;
  }
  for (int64_t c = 0; c < g.dk; ++c) {
    double d = 0;
    if (x[c] > 0) {
      d = df[c];
    } else if (o.feature_map == FeatureMap::kEluPlusOne) {
      d = df[c] * f[c];
    }
    dx[c] = static_cast<float>(d);
  }
}

}  // namespace

void LinearBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const float> dout, TensorView<float> dq, TensorView<float> dk,
                    TensorView<float> dv, const LinearOptions& o) {
  const char* fn = "ref::LinearBackward";
  const detail::LinearGeometry g =
      detail::CheckLinearBackwardArgs(fn, q, k, v, dout, dq, dk, dv, o);
  const int64_t m = g.m, tk = g.seqlen_kv;
  std::vector<double> fk(static_cast<size_t>(tk * m)), rk(static_cast<size_t>(tk));
  std::vector<double> dfk(fk.size()), dvacc(static_cast<size_t>(tk * g.dv));
  std::vector<double> fq(static_cast<size_t>(m)), dfq(static_cast<size_t>(m)), w, o_row(g.dv);
  std::vector<double> fj(static_cast<size_t>(m));
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t hk = 0; hk < g.heads_kv; ++hk) {
      for (int64_t j = 0; j < tk; ++j) {
        rk[j] = Features(g, o, k.row(b, hk, j), fj);
        std::copy(fj.begin(), fj.end(), fk.begin() + j * m);
      }
      std::fill(dfk.begin(), dfk.end(), 0.0);
      std::fill(dvacc.begin(), dvacc.end(), 0.0);
      for (int64_t gh = 0; gh < g.group; ++gh) {
        const int64_t h = hk * g.group + gh;
        for (int64_t i = 0; i < g.seqlen_q; ++i) {
          Features(g, o, q.row(b, h, i), fq);
          const int64_t nvis = o.causal ? i + 1 : tk;
          double mi = -INFINITY;
          for (int64_t j = 0; j < nvis; ++j) mi = std::max(mi, rk[j]);
          w.assign(static_cast<size_t>(nvis), 0.0);
          double den = 0;
          std::fill(o_row.begin(), o_row.end(), 0.0);
          for (int64_t j = 0; j < nvis; ++j) {
            double dot = 0;
            for (int64_t l = 0; l < m; ++l) dot += fq[l] * fk[j * m + l];
            w[j] = dot * std::exp(rk[j] - mi);
            den += w[j];
            for (int64_t e = 0; e < g.dv; ++e) o_row[e] += w[j] * v.at(b, hk, j, e);
          }
          std::fill(dfq.begin(), dfq.end(), 0.0);
          if (den > 0) {
            const float* dor = dout.row(b, h, i);
            double do_o = 0;
            for (int64_t e = 0; e < g.dv; ++e) {
              o_row[e] /= den;
              do_o += dor[e] * o_row[e];
            }
            for (int64_t j = 0; j < nvis; ++j) {
              double do_v = 0;
              for (int64_t e = 0; e < g.dv; ++e) {
                do_v += dor[e] * static_cast<double>(v.at(b, hk, j, e));
                dvacc[j * g.dv + e] += w[j] / den * dor[e];
              }
              const double dw = (do_v - do_o) / den * std::exp(rk[j] - mi);
              for (int64_t l = 0; l < m; ++l) {
                dfq[l] += dw * fk[j * m + l];
                dfk[j * m + l] += dw * fq[l];
              }
            }
          }
          FeaturesBackward(g, o, q.row(b, h, i), fq.data(), dfq.data(), dq.row(b, h, i));
        }
      }
      for (int64_t j = 0; j < tk; ++j) {
        FeaturesBackward(g, o, k.row(b, hk, j), fk.data() + j * m, dfk.data() + j * m,
                         dk.row(b, hk, j));
        for (int64_t e = 0; e < g.dv; ++e)
          dv.at(b, hk, j, e) = static_cast<float>(dvacc[j * g.dv + e]);
      }
    }
  }
}

}  // namespace ref
}  // namespace attnkit
