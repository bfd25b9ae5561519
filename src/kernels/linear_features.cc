// The linear engine's feature maps: drawing FAVOR+ random projections (orthogonal or i.i.d.),
// the decode state, argument checks shared by the fast kernel and the reference, and the
// stand-alone feature map LinearFeatureMap.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "attnkit/kernels/linear.h"
#include "kernels/linear_common.h"

namespace attnkit {

namespace {

// Rows of an orthonormal basis of R^d from a d × d Gaussian matrix (modified Gram–Schmidt in
// double; a Gaussian matrix is full rank with probability 1, and a degenerate row is redrawn).
std::vector<double> OrthonormalRows(int64_t d, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> q(static_cast<size_t>(d * d));
  for (int64_t i = 0; i < d; ++i) {
    double* row = q.data() + i * d;
    for (;;) {
      for (int64_t c = 0; c < d; ++c) row[c] = normal(rng);
      for (int pass = 0; pass < 2; ++pass) {  // twice is enough for full orthogonality
        for (int64_t j = 0; j < i; ++j) {
          const double* prev = q.data() + j * d;
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += row[c] * prev[c];
          for (int64_t c = 0; c < d; ++c) row[c] -= dot * prev[c];
        }
      }
      double norm = 0;
      for (int64_t c = 0; c < d; ++c) norm += row[c] * row[c];
      norm = std::sqrt(norm);
      if (norm > 1e-6) {
        for (int64_t c = 0; c < d; ++c) row[c] /= norm;
        break;
      }
    }
  }
  return q;
}

}  // namespace

PerformerFeatures::PerformerFeatures(int64_t num_features, int64_t head_dim_qk,
                                     RandomFeatureKind kind, uint64_t seed)
    : m_(num_features), d_(head_dim_qk), kind_(kind) {
  Require(num_features > 0, "PerformerFeatures: num_features must be > 0, got ", num_features);
  Require(head_dim_qk > 0, "PerformerFeatures: head_dim_qk must be > 0, got ", head_dim_qk);
  Redraw(seed);
}

void PerformerFeatures::Redraw(uint64_t seed) {
  Require(m_ > 0 && d_ > 0, "PerformerFeatures::Redraw: the features have no shape");
  seed_ = seed;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  w_.assign(static_cast<size_t>(m_ * d_), 0.0f);
  if (kind_ == RandomFeatureKind::kIid) {
    for (auto& x : w_) x = static_cast<float>(normal(rng));
  } else {
    // Blocks of d orthogonal directions; each row gets the norm of an independent Gaussian
    // vector (chi distribution with d degrees of freedom), so rows are marginally N(0, I).
    for (int64_t r0 = 0; r0 < m_; r0 += d_) {
      const std::vector<double> basis = OrthonormalRows(d_, rng);
      for (int64_t i = 0; i < d_ && r0 + i < m_; ++i) {
        double sq = 0;
        for (int64_t c = 0; c < d_; ++c) {
          const double g = normal(rng);
          sq += g * g;
        }
        const double norm = std::sqrt(sq);
        for (int64_t c = 0; c < d_; ++c) {
          w_[(r0 + i) * d_ + c] = static_cast<float>(basis[i * d_ + c] * norm);
        }
      }
    }
  }
  wt_.assign(w_.size(), 0.0f);
  for (int64_t l = 0; l < m_; ++l) {
    for (int64_t c = 0; c < d_; ++c) wt_[c * m_ + l] = w_[l * d_ + c];
  }
}

LinearState::LinearState(int64_t batch_, int64_t num_heads_kv_, int64_t num_features_,
                         int64_t head_dim_v_)
    : batch(batch_),
      num_heads_kv(num_heads_kv_),
      num_features(num_features_),
      head_dim_v(head_dim_v_) {
  Require(batch > 0 && num_heads_kv > 0 && num_features > 0 && head_dim_v > 0,
          "LinearState: every size must be positive, got batch ", batch, ", num_heads_kv ",
          num_heads_kv, ", num_features ", num_features, ", head_dim_v ", head_dim_v);
  Reset();
}

void LinearState::Reset() {
  tokens = 0;
  s.assign(static_cast<size_t>(batch * num_heads_kv * num_features * head_dim_v), 0.0f);
  z.assign(static_cast<size_t>(batch * num_heads_kv * num_features), 0.0f);
  max_shift.assign(static_cast<size_t>(batch * num_heads_kv), -INFINITY);
}

int64_t LinearNumFeatures(const LinearOptions& options, int64_t head_dim_qk) {
  if (options.feature_map == FeatureMap::kFavorPositive) {
    Require(options.features != nullptr,
            "LinearForward: options.features must be set for the FAVOR+ feature map");
    return options.features->num_features();
  }
  return head_dim_qk;
}

double LinearFlops(int64_t batch, int64_t num_heads_q, int64_t num_heads_kv, int64_t seqlen,
                   int64_t head_dim_qk, int64_t head_dim_v, const LinearOptions& options) {
  const double m = static_cast<double>(LinearNumFeatures(options, head_dim_qk));
  const double dk = static_cast<double>(head_dim_qk), dv = static_cast<double>(head_dim_v);
  const double chunk = static_cast<double>(std::min<int64_t>(options.chunk_size, seqlen));
  const bool favor = options.feature_map == FeatureMap::kFavorPositive;
  const double feature = favor ? dk * m : 0.0;
  // Per key (per kv head): its feature row and its state update φ(k) vᵀ.
  const double per_key = feature + m * dv;
  // Per query (per q head): its feature row, the state read φ(q)ᵀ s, and in the causal form the
  // chunk's masked quadratic product (scores over the chunk and their product with V).
  double per_query = feature + m * dv;
  if (options.causal) per_query += chunk * (m + dv);
  return 2.0 * static_cast<double>(batch * seqlen) *
         (static_cast<double>(num_heads_kv) * per_key +
          static_cast<double>(num_heads_q) * per_query);
}

namespace detail {

LinearGeometry CheckLinearArgs(const char* fn, TensorView<const float> q, TensorView<const float> k,
                               TensorView<const float> v, TensorView<float> out,
                               const LinearOptions& o, const LinearState* state) {
  ProblemRules rules;
  rules.num_threads = o.num_threads;
  LinearGeometry g;
  static_cast<Problem&>(g) = CheckProblem(fn, q, k, v, out, TensorView<const float>{}, rules);
  Require(o.chunk_size >= 1, fn, ": options.chunk_size must be >= 1, got ", o.chunk_size);
  g.m = LinearNumFeatures(o, g.dk);
  if (o.feature_map == FeatureMap::kFavorPositive) {
    Require(o.features->num_features() > 0, fn, ": options.features has num_features <= 0");
    Require(o.features->head_dim_qk() == g.dk, fn, ": options.features were drawn for head_dim_qk ",
            o.features->head_dim_qk(), " but q has head_dim_qk ", g.dk);
    g.x_scale = 1.0f / std::sqrt(std::sqrt(static_cast<float>(g.dk)));
  } else {
    g.x_scale = 1.0f;
  }
  if (o.causal) {
    Require(g.seqlen_q == g.seqlen_kv, fn, ": the causal form needs seqlen_q == seqlen_kv, got ",
            g.seqlen_q, " and ", g.seqlen_kv);
  } else {
    Require(state == nullptr, fn, ": a LinearState is only used by the causal form");
  }
  if (state) {
    Require(state->batch == g.batch && state->num_heads_kv == g.heads_kv &&
                state->num_features == g.m && state->head_dim_v == g.dv,
            fn, ": state has shape [batch ", state->batch, ", num_heads_kv ", state->num_heads_kv,
            ", num_features ", state->num_features, ", head_dim_v ", state->head_dim_v,
            "] but the call needs [", g.batch, ", ", g.heads_kv, ", ", g.m, ", ", g.dv, "]");
    Require(state->s.size() == static_cast<size_t>(g.batch * g.heads_kv * g.m * g.dv) &&
                state->z.size() == static_cast<size_t>(g.batch * g.heads_kv * g.m) &&
                state->max_shift.size() == static_cast<size_t>(g.batch * g.heads_kv),
            fn, ": state buffers do not match its declared shape");
  }
  return g;
}

}  // namespace detail

void LinearFeatureMap(TensorView<const float> x, TensorView<float> out,
                      const LinearOptions& options, TensorView<float> row_shift) {
  const char* fn = "LinearFeatureMap";
  CheckView(x, fn, "x");
  CheckView(out, fn, "out");
  const int64_t dk = x.dim();
  const int64_t m = LinearNumFeatures(options, dk);
  Require(out.batch() == x.batch() && out.heads() == x.heads() && out.tokens() == x.tokens() &&
              out.dim() == m,
          fn, ": out must be [", x.batch(), ", ", x.heads(), ", ", x.tokens(), ", ", m, "], got ",
          out.ShapeString());
  if (!row_shift.empty()) {
    Require(row_shift.batch() == x.batch() && row_shift.heads() == x.heads() &&
                row_shift.tokens() == x.tokens() && row_shift.dim() == 1,
            fn, ": row_shift must be [", x.batch(), ", ", x.heads(), ", ", x.tokens(), ", 1]");
  }
  const bool favor = options.feature_map == FeatureMap::kFavorPositive;
  if (favor) {
    Require(options.features->head_dim_qk() == dk, fn, ": features were drawn for head_dim_qk ",
            options.features->head_dim_qk(), " but x has ", dk);
  }
  const double xs = favor ? 1.0 / std::sqrt(std::sqrt(static_cast<double>(dk))) : 1.0;
  std::vector<double> a(static_cast<size_t>(m));
  for (int64_t b = 0; b < x.batch(); ++b) {
    for (int64_t h = 0; h < x.heads(); ++h) {
      for (int64_t t = 0; t < x.tokens(); ++t) {
        const float* xr = x.row(b, h, t);
        float* orow = out.row(b, h, t);
        double shift = 0;
        if (favor) {
          double sq = 0;
          for (int64_t c = 0; c < dk; ++c) sq += (xs * xr[c]) * (xs * xr[c]);
          shift = -INFINITY;
          for (int64_t l = 0; l < m; ++l) {
            double dot = 0;
            for (int64_t c = 0; c < dk; ++c) dot += options.features->w()[l * dk + c] * xs * xr[c];
            a[l] = dot - sq / 2;
            shift = std::max(shift, a[l]);
          }
          const double norm = 1.0 / std::sqrt(static_cast<double>(m));
          for (int64_t l = 0; l < m; ++l)
            orow[l] = static_cast<float>(std::exp(a[l] - shift) * norm);
        } else if (options.feature_map == FeatureMap::kEluPlusOne) {
          for (int64_t l = 0; l < m; ++l) orow[l] = xr[l] > 0 ? xr[l] + 1.0f : std::exp(xr[l]);
        } else {
          for (int64_t l = 0; l < m; ++l) orow[l] = std::max(xr[l], 0.0f);
        }
        if (!row_shift.empty()) row_shift.at(b, h, t, 0) = static_cast<float>(shift);
      }
    }
  }
}

}  // namespace attnkit
