// The linear engine's fast backward: chunk-wise, every product a SmallGemm.
//
// Notation of linear.cc: φ̃ rows of features (FAVOR+ rows stabilised by their own maximum), key
// stabilisers r_j, prefix maxima M_i, state (S, z) at scale M (the largest key stabiliser
// absorbed). Per query i of a chunk, with E_ij = exp(r_j − M_i) (j ≤ i in the chunk) and
// e_i = exp(M − M_i):
//   num_i = Σ_j (φ̃q_i·φ̃k_j) E_ij v_j + e_i φ̃q_i S,  den_i likewise with 1 and z,  o_i = num_i /
//   den_i.
// The stabilisers cancel in o_i, so they are constants here. With g_i = do_i / den_i and
// h_i = −(do_i · o_i) / den_i (both 0 where den_i = 0):
//   intra   dP = (g Vᵀ + h 1ᵀ) ⊙ mask,  dφ̃q += (dP ⊙ E) φ̃k,  dφ̃k += (dP ⊙ E)ᵀ φ̃q,  dV += Pᵀ g
//   inter   dφ̃q_i += e_i (S g_i + z h_i);   the state's gradient (dS, dz) at scale M collects
//           Σ_i e_i φ̃q_i g_iᵀ (and h_i) of the chunks that read it, and passes to the keys that
//           built it: with c_j = exp(r_j − M'), dφ̃k_j += c_j (dS v_j + dz), dv_j += c_j dSᵀ φ̃k_j,
//           and dS ← exp(M − M') dS going back over a state rescale from M to M'.
// Pass 1 runs the chunks forward (recomputing the forward, finishing dq and the intra parts);
// pass 2 runs them in reverse carrying (dS, dz). Every exponential factor is ≤ 1.
// Through the feature map: FAVOR+ da = dφ̃ ⊙ φ̃, dx = (da W − x Σ_l da_l) · d^(−1/4) (one GEMM);
// elu + 1 and ReLU elementwise.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/runtime.h"
#include "core/scratch.h"
#include "kernels/backward_simd.h"
#include "kernels/linear_backward_common.h"
#include "kernels/linear_simd.h"

namespace attnkit {
namespace {

using detail::GemmArgs;
using detail::LinearGeometry;
using detail::SmallGemm;

GemmArgs Gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
              const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  GemmArgs g;
  g.m = m, g.n = n, g.k = k;
  g.a = a, g.a_rs = a_rs, g.a_cs = a_cs;
  g.b = b, g.ldb = ldb;
  g.c = c, g.ldc = ldc;
  g.accumulate = accumulate;
  return g;
}

struct Workspace {
  // Whole sequence of one (batch, kv head).
  float *fk_all, *rk_all, *mrow_all, *dfk_all, *fq_all, *g_all, *h_all;
  // One chunk / the state.
  float *xs, *hsn, *rq, *escale, *ew, *fkt, *vt, *p, *dp, *num, *den, *fs, *s, *z, *st, *ds, *dz,
      *dst, *tmp, *da;

  static int64_t Floats(const LinearGeometry& geo, int64_t c, int64_t seqlen) {
    Workspace ws;
    return ws.Carve(geo, c, seqlen, nullptr);
  }
  Workspace() = default;
  Workspace(const LinearGeometry& geo, int64_t c, int64_t seqlen, float* base) {
    Carve(geo, c, seqlen, base);
  }

 private:
  int64_t Carve(const LinearGeometry& geo, int64_t c, int64_t t, float* base) {
    const int64_t m = geo.m, dk = geo.dk, dv = geo.dv, gr = geo.group;
    int64_t used = 0;
    auto take = [&](float*& p, int64_t n) {
      p = base ? base + used : nullptr;
      used += (n + 15) / 16 * 16;
    };
    take(fk_all, t * m);
    take(rk_all, t);
    take(mrow_all, t);
    take(dfk_all, t * m);
    take(fq_all, gr * t * m);
    take(g_all, gr * t * dv);
    take(h_all, gr * t);
    take(xs, c * dk);
    take(hsn, c);
    take(rq, c);
    take(escale, c);
    take(ew, c * c);
    take(fkt, m * c);
    take(vt, dv * c);
    take(p, c * c);
    take(dp, c * c);
    take(num, c * dv);
    take(den, c);
    take(fs, c * m);
    take(s, m * dv);
    take(z, m);
    take(st, dv * m);
    take(ds, m * dv);
    take(dz, m);
    take(dst, dv * m);
    take(tmp, c * std::max({m, dv, dk}));
    take(da, c * m);
    return used;
  }
};

// φ̃ of n rows of x (row stride x_rs) into f (n × m), row stabilisers into r.
void FeatureRows(const LinearGeometry& g, const LinearOptions& o, const float* x, int64_t x_rs,
                 int64_t n, float* f, float* r, Workspace& ws) {
  if (o.feature_map == FeatureMap::kFavorPositive) {
    for (int64_t t = 0; t < n; ++t) {
      float sq = 0.0f;
      for (int64_t c = 0; c < g.dk; ++c) {
        const float xv = x[t * x_rs + c] * g.x_scale;
        ws.xs[t * g.dk + c] = xv;
        sq += xv * xv;
      }
      ws.hsn[t] = 0.5f * sq;
    }
    SmallGemm(Gemm(n, g.m, g.dk, ws.xs, g.dk, 1, o.features->w_t(), g.m, f, g.m, false));
    detail::FavorExpRows(f, n, g.m, g.m, ws.hsn, 0.5f * std::log(static_cast<float>(g.m)), r);
    return;
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * x_rs;
    float* fr = f + t * g.m;
    if (o.feature_map == FeatureMap::kEluPlusOne) {
      detail::EluPlusOne(xr, g.dk, fr);
    } else {
      for (int64_t c = 0; c < g.dk; ++c) fr[c] = std::max(xr[c], 0.0f);
    }
    r[t] = 0.0f;
  }
}

// dx rows (stride dx_rs) from dφ̃ (n × m) for rows x (stride x_rs) with features f.
void FeatureRowsBackward(const LinearGeometry& g, const LinearOptions& o, const float* x,
                         int64_t x_rs, int64_t n, const float* f, const float* df, float* dx,
                         int64_t dx_rs, Workspace& ws) {
  if (o.feature_map == FeatureMap::kFavorPositive) {
    for (int64_t i = 0; i < n * g.m; ++i) ws.da[i] = df[i] * f[i];
    SmallGemm(Gemm(n, g.dk, g.m, ws.da, g.m, 1, o.features->w(), g.dk, ws.tmp, g.dk, false));
    const float xs2 = g.x_scale * g.x_scale;
    for (int64_t t = 0; t < n; ++t) {
      const float sum = detail::DotProduct(df + t * g.m, f + t * g.m, g.m);  // Σ_l da_l
      const float* xr = x + t * x_rs;
      float* dr = dx + t * dx_rs;
      for (int64_t c = 0; c < g.dk; ++c) {
        dr[c] = g.x_scale * ws.tmp[t * g.dk + c] - xs2 * xr[c] * sum;
      }
    }
    return;
  }
  const bool elu = o.feature_map == FeatureMap::kEluPlusOne;
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * x_rs;
    const float* fr = f + t * g.m;
    const float* dfr = df + t * g.m;
    float* dr = dx + t * dx_rs;
    for (int64_t c = 0; c < g.dk; ++c) {
      dr[c] = xr[c] > 0.0f ? dfr[c] : (elu ? dfr[c] * fr[c] : 0.0f);
    }
  }
}

// o = num / den, then g = do / den and h = −(do · o) / den (0 where den <= 0).
void OutputGrads(int64_t n, int64_t dv, const float* num, const float* den, const float* dout,
                 int64_t ldo, float* g, float* h) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = den[i];
    const float* dor = dout + i * ldo;
    float* gi = g + i * dv;
    if (!(d > 0.0f)) {
      std::fill(gi, gi + dv, 0.0f);
      h[i] = 0.0f;
      continue;
    }
    for (int64_t e = 0; e < dv; ++e) gi[e] = dor[e] / d;
    h[i] = -detail::DotProduct(gi, num + i * dv, dv) / d;  // −(do · o) / den, o = num / den
  }
}

// num (n × dv) += e_i φ̃q_i S and den += e_i φ̃q_i · z, where fs holds the scaled rows e_i φ̃q_i.
void ReadState(const LinearGeometry& g, const float* fs, int64_t n, const Workspace& ws, float* num,
               float* den, bool accumulate) {
  SmallGemm(Gemm(n, g.dv, g.m, fs, g.m, 1, ws.s, g.dv, num, g.dv, accumulate));
  for (int64_t i = 0; i < n; ++i) {
    float acc = 0.0f;
    for (int64_t l = 0; l < g.m; ++l) acc += fs[i * g.m + l] * ws.z[l];
    den[i] = accumulate ? den[i] + acc : acc;
  }
}

// dφ̃q rows (n × m, into out) = e_i (S g_i + z h_i) (+ out if accumulate); ws.st holds Sᵀ.
void StateGradToQuery(const LinearGeometry& g, const float* gi, const float* hi, const float* e,
                      int64_t n, Workspace& ws, float* out, bool accumulate) {
  SmallGemm(Gemm(n, g.m, g.dv, gi, g.dv, 1, ws.st, g.m, ws.tmp, g.m, false));
  for (int64_t i = 0; i < n; ++i) {
    const float f = e ? e[i] : 1.0f;
    for (int64_t l = 0; l < g.m; ++l) {
      const float val = f * (ws.tmp[i * g.m + l] + ws.z[l] * hi[i]);
      out[i * g.m + l] = accumulate ? out[i * g.m + l] + val : val;
    }
  }
}

// Keys [t0, t0 + n) of the state's gradient (dS, dz) with factors c_j (in ws.den): dφ̃k_j +=
// c_j (dS v_j + dz) into dfk rows, dv_j += c_j dSᵀ φ̃k_j into dv rows (stride ldv).
void StateGradToKeys(const LinearGeometry& g, const float* fk, const float* vc, int64_t ldv,
                     int64_t n, Workspace& ws, float* dfk, float* dvr, int64_t ld_dv) {
  detail::TransposeMatrix(ws.ds, g.m, g.dv, g.dv, ws.dst);
  SmallGemm(Gemm(n, g.m, g.dv, vc, ldv, 1, ws.dst, g.m, ws.tmp, g.m, false));
  for (int64_t j = 0; j < n; ++j) {
    const float c = ws.den[j];
    for (int64_t l = 0; l < g.m; ++l) {
      dfk[j * g.m + l] += c * (ws.tmp[j * g.m + l] + ws.dz[l]);
      ws.fs[j * g.m + l] = c * fk[j * g.m + l];
    }
  }
  SmallGemm(Gemm(n, g.dv, g.m, ws.fs, g.m, 1, ws.ds, g.dv, dvr, ld_dv, true));
}

void CausalUnit(const LinearGeometry& g, const LinearOptions& o, TensorView<const float> q,
                TensorView<const float> k, TensorView<const float> v, TensorView<const float> dout,
                TensorView<float> dq, TensorView<float> dk, TensorView<float> dv, int64_t b,
                int64_t hk, Workspace& ws) {
  const int64_t chunk = o.chunk_size, T = g.seqlen_kv, m = g.m, dvd = g.dv;
  const bool favor = o.feature_map == FeatureMap::kFavorPositive;
  std::fill(ws.s, ws.s + m * dvd, 0.0f);
  std::fill(ws.z, ws.z + m, 0.0f);
  std::fill(ws.dfk_all, ws.dfk_all + T * m, 0.0f);
  for (int64_t t = 0; t < T; ++t) std::fill(dv.row(b, hk, t), dv.row(b, hk, t) + dvd, 0.0f);
  const int64_t ldv = v.stride[2], ld_dv = dv.stride[2];
  float max_shift = -INFINITY;
  // Pass 1: forward over the chunks.
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    float* fk = ws.fk_all + t0 * m;
    float* rk = ws.rk_all + t0;
    float* mrow = ws.mrow_all + t0;
    FeatureRows(g, o, k.row(b, hk, t0), k.stride[2], n, fk, rk, ws);
    float run = max_shift;
    for (int64_t i = 0; i < n; ++i) mrow[i] = run = std::max(run, rk[i]);
    detail::TransposeMatrix(fk, n, m, m, ws.fkt);
    const float* vc = v.row(b, hk, t0);
    detail::TransposeMatrix(vc, n, dvd, ldv, ws.vt);
    const bool read = max_shift != -INFINITY;
    if (read) {
      detail::TransposeMatrix(ws.s, m, dvd, dvd, ws.st);
      for (int64_t i = 0; i < n; ++i) ws.escale[i] = std::exp(max_shift - mrow[i]);
    }
    // E_ij = exp(r_j − M_i) for j ≤ i (1 without FAVOR+), shared by the group's query heads.
    for (int64_t i = 0; i < n; ++i) {
      float* er = ws.ew + i * n;
      for (int64_t j = 0; j <= i; ++j) er[j] = favor ? rk[j] - mrow[i] : 0.0f;
      detail::ExpInPlace(er, i + 1);
    }
    for (int64_t gh = 0; gh < g.group; ++gh) {
      const int64_t h = hk * g.group + gh;
      float* fq = ws.fq_all + (gh * T + t0) * m;
      float* gi = ws.g_all + (gh * T + t0) * dvd;
      float* hi = ws.h_all + gh * T + t0;
      FeatureRows(g, o, q.row(b, h, t0), q.stride[2], n, fq, ws.rq, ws);
      // P = (φ̃q φ̃kᵀ) ⊙ E, lower triangle.
      SmallGemm(Gemm(n, n, m, fq, m, 1, ws.fkt, n, ws.p, n, false));
      for (int64_t i = 0; i < n; ++i) {
        float* pr = ws.p + i * n;
        const float* er = ws.ew + i * n;
        float sum = 0.0f;
        for (int64_t j = 0; j <= i; ++j) {
          pr[j] *= er[j];
          sum += pr[j];
        }
        std::fill(pr + i + 1, pr + n, 0.0f);
        ws.den[i] = sum;
      }
      SmallGemm(Gemm(n, dvd, n, ws.p, n, 1, vc, ldv, ws.num, dvd, false));
      if (read) {
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t l = 0; l < m; ++l) ws.fs[i * m + l] = fq[i * m + l] * ws.escale[i];
        }
        ReadState(g, ws.fs, n, ws, ws.num, ws.den, true);
      }
      OutputGrads(n, dvd, ws.num, ws.den, dout.row(b, h, t0), dout.stride[2], gi, hi);
      // dP ⊙ E = (g Vᵀ + h) ⊙ mask ⊙ E.
      SmallGemm(Gemm(n, n, dvd, gi, dvd, 1, ws.vt, n, ws.dp, n, false));
      for (int64_t i = 0; i < n; ++i) {
        float* dpr = ws.dp + i * n;
        const float* er = ws.ew + i * n;
        for (int64_t j = 0; j <= i; ++j) dpr[j] = (dpr[j] + hi[i]) * er[j];
        std::fill(dpr + i + 1, dpr + n, 0.0f);
      }
      // dV += Pᵀ g; dφ̃k += (dP ⊙ E)ᵀ φ̃q; dφ̃q = (dP ⊙ E) φ̃k + e (S g + z h).
      SmallGemm(Gemm(n, dvd, n, ws.p, 1, n, gi, dvd, dv.row(b, hk, t0), ld_dv, true));
      SmallGemm(Gemm(n, m, n, ws.dp, 1, n, fq, m, ws.dfk_all + t0 * m, m, true));
      float* dfq_rows = ws.fs;
      SmallGemm(Gemm(n, m, n, ws.dp, n, 1, fk, m, dfq_rows, m, false));
      if (read) StateGradToQuery(g, gi, hi, ws.escale, n, ws, dfq_rows, true);
      FeatureRowsBackward(g, o, q.row(b, h, t0), q.stride[2], n, fq, dfq_rows, dq.row(b, h, t0),
                          dq.stride[2], ws);
    }
    // Absorb the chunk's keys: S ← exp(M − M') S + Σ_j φ̃k_j exp(r_j − M') v_jᵀ, z likewise.
    const float new_max = mrow[n - 1];
    if (read && new_max != max_shift) {
      const float f = std::exp(max_shift - new_max);
      for (int64_t i = 0; i < m * dvd; ++i) ws.s[i] *= f;
      for (int64_t l = 0; l < m; ++l) ws.z[l] *= f;
    }
    for (int64_t j = 0; j < n; ++j) {
      const float c = std::exp(rk[j] - new_max);
      for (int64_t l = 0; l < m; ++l) {
        const float val = fk[j * m + l] * c;
        ws.fs[j * m + l] = val;
        ws.z[l] += val;
      }
    }
    SmallGemm(Gemm(m, dvd, n, ws.fs, 1, m, vc, ldv, ws.s, dvd, true));
    max_shift = new_max;
  }
  // Pass 2: the chunks in reverse with the state's gradient (dS, dz) at the scale of the state
  // after the chunk.
  std::fill(ws.ds, ws.ds + m * dvd, 0.0f);
  std::fill(ws.dz, ws.dz + m, 0.0f);
  const int64_t chunks = (T + chunk - 1) / chunk;
  for (int64_t ci = chunks - 1; ci >= 0; --ci) {
    const int64_t t0 = ci * chunk, n = std::min(chunk, T - t0);
    const float* fk = ws.fk_all + t0 * m;
    const float* rk = ws.rk_all + t0;
    const float* mrow = ws.mrow_all + t0;
    const float m_after = mrow[n - 1];
    const float m_before = t0 > 0 ? ws.mrow_all[t0 - 1] : -INFINITY;
    if (ci < chunks - 1) {
      for (int64_t j = 0; j < n; ++j) ws.den[j] = std::exp(rk[j] - m_after);
      StateGradToKeys(g, fk, v.row(b, hk, t0), v.stride[2], n, ws, ws.dfk_all + t0 * m,
                      dv.row(b, hk, t0), ld_dv);
    }
    FeatureRowsBackward(g, o, k.row(b, hk, t0), k.stride[2], n, fk, ws.dfk_all + t0 * m,
                        dk.row(b, hk, t0), dk.stride[2], ws);
    if (ci == 0) break;
    // Back over the rescale to M' and the reads of this chunk's queries (at scale M).
    const float f = std::exp(m_before - m_after);
    for (int64_t i = 0; i < m * dvd; ++i) ws.ds[i] *= f;
    for (int64_t l = 0; l < m; ++l) ws.dz[l] *= f;
    for (int64_t gh = 0; gh < g.group; ++gh) {
      const float* fq = ws.fq_all + (gh * T + t0) * m;
      const float* gi = ws.g_all + (gh * T + t0) * dvd;
      const float* hi = ws.h_all + gh * T + t0;
      for (int64_t i = 0; i < n; ++i) {
        const float e = std::exp(m_before - mrow[i]);
        for (int64_t l = 0; l < m; ++l) {
          ws.fs[i * m + l] = fq[i * m + l] * e;
          ws.dz[l] += ws.fs[i * m + l] * hi[i];
        }
      }
      SmallGemm(Gemm(m, dvd, n, ws.fs, 1, m, gi, dvd, ws.ds, dvd, true));
    }
  }
}

void BidirectionalUnit(const LinearGeometry& g, const LinearOptions& o, TensorView<const float> q,
                       TensorView<const float> k, TensorView<const float> v,
                       TensorView<const float> dout, TensorView<float> dq, TensorView<float> dk,
                       TensorView<float> dv, int64_t b, int64_t hk, Workspace& ws) {
  const int64_t chunk = o.chunk_size, tk = g.seqlen_kv, m = g.m, dvd = g.dv;
  float mx = -INFINITY;
  for (int64_t t0 = 0; t0 < tk; t0 += chunk) {
    const int64_t n = std::min(chunk, tk - t0);
    FeatureRows(g, o, k.row(b, hk, t0), k.stride[2], n, ws.fk_all + t0 * m, ws.rk_all + t0, ws);
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, ws.rk_all[t0 + j]);
  }
  std::fill(ws.s, ws.s + m * dvd, 0.0f);
  std::fill(ws.z, ws.z + m, 0.0f);
  for (int64_t t0 = 0; t0 < tk; t0 += chunk) {
    const int64_t n = std::min(chunk, tk - t0);
    for (int64_t j = 0; j < n; ++j) {
      const float c = std::exp(ws.rk_all[t0 + j] - mx);
      for (int64_t l = 0; l < m; ++l) {
        const float val = ws.fk_all[(t0 + j) * m + l] * c;
        ws.fs[j * m + l] = val;
        ws.z[l] += val;
      }
    }
    SmallGemm(Gemm(m, dvd, n, ws.fs, 1, m, v.row(b, hk, t0), v.stride[2], ws.s, dvd, true));
  }
  detail::TransposeMatrix(ws.s, m, dvd, dvd, ws.st);
  std::fill(ws.ds, ws.ds + m * dvd, 0.0f);
  std::fill(ws.dz, ws.dz + m, 0.0f);
  for (int64_t gh = 0; gh < g.group; ++gh) {
    const int64_t h = hk * g.group + gh;
    for (int64_t t0 = 0; t0 < g.seqlen_q; t0 += chunk) {
      const int64_t n = std::min(chunk, g.seqlen_q - t0);
      float* fq = ws.fq_all;  // one chunk of query features at a time
      float* gi = ws.g_all;
      float* hi = ws.h_all;
      FeatureRows(g, o, q.row(b, h, t0), q.stride[2], n, fq, ws.rq, ws);
      ReadState(g, fq, n, ws, ws.num, ws.den, false);
      OutputGrads(n, dvd, ws.num, ws.den, dout.row(b, h, t0), dout.stride[2], gi, hi);
      StateGradToQuery(g, gi, hi, nullptr, n, ws, ws.fs, false);
      FeatureRowsBackward(g, o, q.row(b, h, t0), q.stride[2], n, fq, ws.fs, dq.row(b, h, t0),
                          dq.stride[2], ws);
      SmallGemm(Gemm(m, dvd, n, fq, 1, m, gi, dvd, ws.ds, dvd, true));
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t l = 0; l < m; ++l) ws.dz[l] += fq[i * m + l] * hi[i];
      }
    }
  }
  for (int64_t t0 = 0; t0 < tk; t0 += chunk) {
    const int64_t n = std::min(chunk, tk - t0);
    for (int64_t j = 0; j < n; ++j) {
      ws.den[j] = std::exp(ws.rk_all[t0 + j] - mx);
      float* dfk = ws.dfk_all + (t0 + j) * m;
      std::fill(dfk, dfk + m, 0.0f);
      std::fill(dv.row(b, hk, t0 + j), dv.row(b, hk, t0 + j) + dvd, 0.0f);
    }
    StateGradToKeys(g, ws.fk_all + t0 * m, v.row(b, hk, t0), v.stride[2], n, ws,
                    ws.dfk_all + t0 * m, dv.row(b, hk, t0), dv.stride[2]);
    FeatureRowsBackward(g, o, k.row(b, hk, t0), k.stride[2], n, ws.fk_all + t0 * m,
                        ws.dfk_all + t0 * m, dk.row(b, hk, t0), dk.stride[2], ws);
  }
}

}  // namespace

double LinearBackwardFlops(int64_t batch, int64_t num_heads_q, int64_t num_heads_kv, int64_t seqlen,
                           int64_t head_dim_qk, int64_t head_dim_v, const LinearOptions& options) {
  const double m = static_cast<double>(LinearNumFeatures(options, head_dim_qk));
  const double dk = static_cast<double>(head_dim_qk), dv = static_cast<double>(head_dim_v);
  const double c = static_cast<double>(std::min<int64_t>(options.chunk_size, seqlen));
  const bool favor = options.feature_map == FeatureMap::kFavorPositive;
  const double feature = favor ? 2 * dk * m : 0.0;  // the feature rows and their backward
  // Per key: its features, the state update, and (dS v, dSᵀ φ̃k) in pass 2.
  const double per_key = feature + 3 * m * dv;
  // Per query: its features, the state read, dφ̃q's state part, its share of dS; causal also
  // the chunk products P, P V, g Vᵀ, Pᵀ g, (dP⊙E)ᵀ φ̃q and (dP⊙E) φ̃k.
  double per_query = feature + 3 * m * dv;
  if (options.causal) per_query += c * (3 * m + 3 * dv);
  return 2.0 * static_cast<double>(batch * seqlen) *
         (static_cast<double>(num_heads_kv) * per_key +
          static_cast<double>(num_heads_q) * per_query);
}

void LinearBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const float> dout, TensorView<float> dq, TensorView<float> dk,
                    TensorView<float> dv, const LinearOptions& o) {
  if (o.backend == Backend::kReference) {
    ref::LinearBackward(q, k, v, dout, dq, dk, dv, o);
    return;
  }
  const LinearGeometry g =
      detail::CheckLinearBackwardArgs("LinearBackward", q, k, v, dout, dq, dk, dv, o);
  const int64_t units = g.batch * g.heads_kv;
  const int64_t chunk = std::min(o.chunk_size, std::max(g.seqlen_q, g.seqlen_kv));
  LinearOptions opt = o;
  opt.chunk_size = chunk;
  const double work = static_cast<double>(units * g.group * std::max(g.seqlen_q, g.seqlen_kv) *
                                          g.m * (g.dk + g.dv));
  const int team = work < double{1 << 20}
                       ? 1
                       : static_cast<int>(std::min<int64_t>(ResolveThreads(o.num_threads), units));
  // Per-thread scratch: the feature rows of the whole sequence (the bidirectional form uses a
  // chunk of the query rows only), allocated before the parallel region.
  const int64_t seq = std::max(g.seqlen_q, g.seqlen_kv);
  const int64_t ws_floats = Workspace::Floats(g, chunk, seq);
  detail::Scratch<float> block(static_cast<size_t>(ws_floats * team));
#pragma omp parallel num_threads(team)
  {
    Workspace ws(g, chunk, seq, block.get() + ws_floats * omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t b = u / g.heads_kv, hk = u % g.heads_kv;
      if (opt.causal) {
        CausalUnit(g, opt, q, k, v, dout, dq, dk, dv, b, hk, ws);
      } else {
        BidirectionalUnit(g, opt, q, k, v, dout, dq, dk, dv, b, hk, ws);
      }
    }
  }
}

}  // namespace attnkit
