// The linear engine's fast kernel: chunk-wise causal and bidirectional linear attention.
//
// Work unit: one (batch, kv head); all group_size query heads sharing it are handled inside, so
// the key features and the state are built once per kv head. Chunks of C tokens:
//   Fk = φ(K_c) (C × m), per-key stabiliser r_j (FAVOR+ only; 0 for elu+1 / ReLU)
//   intra  P = Fq Fkᵀ ⊙ {j ≤ i} ⊙ exp(r_j − M_i),  num = P V_c,  den = P 1
//   inter  num += exp(M − M_i) Fq s,  den += exp(M − M_i) Fq z
//   state  s ← exp(M − M') s + (Fk ⊙ exp(r − M'))ᵀ V_c,  z likewise,  M ← M'
// where M is the largest key stabiliser absorbed into the state, M_i = max(M, r_0..r_i) is the
// prefix maximum up to query i (so the output of query i never depends on later keys, even
// through rounding), and M' the maximum after the chunk. Every product is a SmallGemm.
//
// Performance note: per token and head the work is ~2·(dk·m) for the two feature rows,
// C·(m + dv) for the quadratic chunk part and 2·m·dv for the state read and update; with
// m = 256, dk = dv = 128, C = 64 the state terms dominate, so C = 64 keeps the quadratic part
// small while the GEMMs stay large enough to run near the FMA throughput.
#include "attnkit/kernels/linear.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/runtime.h"
#include "kernels/linear_common.h"
#include "kernels/linear_simd.h"

namespace attnkit {
namespace {

using detail::GemmArgs;
using detail::LinearGeometry;
using detail::SmallGemm;

// Per-thread scratch, sized once per call (before the parallel region).
struct Workspace {
  std::vector<float> xs, hsn, fk, fkt, fq, rq, p, rk, mrow, den, s, z;
  // own_state: room for a state (m × dv) when the caller passes none (decode passes one, and a
  // 128 KiB allocation per decode step would cost more than the step).
  Workspace(const LinearGeometry& g, int64_t chunk, bool own_state) {
    // Checked: an allocation failure is an attnkit::Error, before anything is written.
    auto size = [](std::vector<float>& v, int64_t a, int64_t b) {
      CheckedResize(v, CheckedMul(a, b, "LinearForward", "scratch size"), "LinearForward",
                    "the per-thread scratch");
    };
    size(xs, chunk, g.dk);
    size(hsn, chunk, 1);
    size(fk, chunk, g.m);
    size(fkt, g.m, chunk);
    size(fq, chunk, g.m);
    size(rq, chunk, 1);
    size(p, chunk, chunk);
    size(rk, chunk, 1);
    size(mrow, chunk, 1);
    size(den, 2, chunk);
    size(s, own_state ? g.m : 0, g.dv);
    size(z, own_state ? g.m : 0, 1);
  }
};

// φ of n rows of x (row stride x_rs) into f (n × m), stabiliser of each row into r.
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
    GemmArgs a;
    a.m = n, a.n = g.m, a.k = g.dk;
    a.a = ws.xs.data(), a.a_rs = g.dk, a.a_cs = 1;
    a.b = o.features->w_t(), a.ldb = g.m;
    a.c = f, a.ldc = g.m;
    SmallGemm(a);
    detail::FavorExpRows(f, n, g.m, g.m, ws.hsn.data(), 0.5f * std::log(static_cast<float>(g.m)),
                         r);
    return;
  }
  const bool elu = o.feature_map == FeatureMap::kEluPlusOne;
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * x_rs;
    float* fr = f + t * g.m;
    if (elu) {
      detail::EluPlusOne(xr, g.dk, fr);
    } else {
      for (int64_t c = 0; c < g.dk; ++c) fr[c] = std::max(xr[c], 0.0f);
    }
    r[t] = 0.0f;
  }
}

// num rows (already in out) divided by den; a zero normaliser gives 0.
void Normalise(float* out, int64_t ldo, int64_t n, int64_t dv, const float* den) {
  for (int64_t i = 0; i < n; ++i) {
    // Divide (not multiply by 1 / den): den may be subnormal, where 1 / den overflows.
    const float dn = den[i];
    float* row = out + i * ldo;
    for (int64_t e = 0; e < dv; ++e) row[e] = dn > 0.0f ? row[e] / dn : 0.0f;
  }
}

// Absorbs n keys (features fk with stabilisers rk, values v) into the state (s, z, max_shift).
// fk is scaled in place.
void AbsorbKeys(const LinearGeometry& g, float* fk, const float* rk, int64_t n, const float* v,
                int64_t v_rs, float* s, float* z, float& max_shift) {
  float new_max = max_shift;
  for (int64_t j = 0; j < n; ++j) new_max = std::max(new_max, rk[j]);
  if (max_shift != -INFINITY && new_max != max_shift) {
    const float f = std::exp(max_shift - new_max);
    for (int64_t i = 0; i < g.m * g.dv; ++i) s[i] *= f;
    for (int64_t l = 0; l < g.m; ++l) z[l] *= f;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float c = std::exp(rk[j] - new_max);
    float* row = fk + j * g.m;
    for (int64_t l = 0; l < g.m; ++l) {
      row[l] *= c;
      z[l] += row[l];
    }
  }
  GemmArgs a;  // s += fkᵀ v
  a.m = g.m, a.n = g.dv, a.k = n;
  a.a = fk, a.a_rs = 1, a.a_cs = g.m;
  a.b = v, a.ldb = v_rs;
  a.c = s, a.ldc = g.dv;
  a.accumulate = true;
  SmallGemm(a);
  max_shift = new_max;
}

// num += fq · s (rows of fq already scaled by their decay), den += fq · z.
void ReadState(const LinearGeometry& g, const float* fq, int64_t n, const float* s, const float* z,
               float* out, int64_t ldo, float* den, bool accumulate) {
  GemmArgs a;
  a.m = n, a.n = g.dv, a.k = g.m;
  a.a = fq, a.a_rs = g.m, a.a_cs = 1;
  a.b = s, a.ldb = g.dv;
  a.c = out, a.ldc = ldo;
  a.accumulate = accumulate;
  SmallGemm(a);
  for (int64_t i = 0; i < n; ++i) {
    float acc = 0.0f;
    for (int64_t l = 0; l < g.m; ++l) acc += fq[i * g.m + l] * z[l];
    den[i] = accumulate ? den[i] + acc : acc;
  }
}

void CausalUnit(const LinearGeometry& g, const LinearOptions& o, TensorView<const float> q,
                TensorView<const float> k, TensorView<const float> v, TensorView<float> out,
                int64_t b, int64_t hk, float* s, float* z, float& max_shift, Workspace& ws) {
  const int64_t chunk = o.chunk_size;
  for (int64_t c0 = 0; c0 < g.seqlen_kv; c0 += chunk) {
    const int64_t n = std::min(chunk, g.seqlen_kv - c0);
    FeatureRows(g, o, k.row(b, hk, c0), k.stride[2], n, ws.fk.data(), ws.rk.data(), ws);
    float run = max_shift;
    for (int64_t i = 0; i < n; ++i) ws.mrow[i] = run = std::max(run, ws.rk[i]);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t l = 0; l < g.m; ++l) ws.fkt[l * n + j] = ws.fk[j * g.m + l];
    }
    const float* vc = v.row(b, hk, c0);
    for (int64_t gh = 0; gh < g.group; ++gh) {
      const int64_t h = hk * g.group + gh;
      FeatureRows(g, o, q.row(b, h, c0), q.stride[2], n, ws.fq.data(), ws.rq.data(), ws);
      GemmArgs a;  // p = fq · fkᵀ
      a.m = n, a.n = n, a.k = g.m;
      a.a = ws.fq.data(), a.a_rs = g.m, a.a_cs = 1;
      a.b = ws.fkt.data(), a.ldb = n;
      a.c = ws.p.data(), a.ldc = n;
      SmallGemm(a);
      const bool favor = o.feature_map == FeatureMap::kFavorPositive;
      for (int64_t i = 0; i < n; ++i) {
        float* pr = ws.p.data() + i * n;
        if (favor) {                     // key stabilisers relative to this query's prefix maximum
          float* f = ws.den.data() + n;  // scratch row of n factors
          for (int64_t j = 0; j <= i; ++j) f[j] = ws.rk[j] - ws.mrow[i];
          detail::ExpInPlace(f, i + 1);
          for (int64_t j = 0; j <= i; ++j) pr[j] *= f[j];
        }
        float sum = 0.0f;
        for (int64_t j = 0; j <= i; ++j) sum += pr[j];
        for (int64_t j = i + 1; j < n; ++j) pr[j] = 0.0f;
        ws.den[i] = sum;
      }
      float* orow = out.row(b, h, c0);
      const int64_t ldo = out.stride[2];
      a = GemmArgs{};  // num = p · v
      a.m = n, a.n = g.dv, a.k = n;
      a.a = ws.p.data(), a.a_rs = n, a.a_cs = 1;
      a.b = vc, a.ldb = v.stride[2];
      a.c = orow, a.ldc = ldo;
      SmallGemm(a);
      if (max_shift != -INFINITY) {
        for (int64_t i = 0; i < n; ++i) {
          const float f = std::exp(max_shift - ws.mrow[i]);
          for (int64_t l = 0; l < g.m; ++l) ws.fq[i * g.m + l] *= f;
        }
        ReadState(g, ws.fq.data(), n, s, z, orow, ldo, ws.den.data(), /*accumulate=*/true);
      }
      Normalise(orow, ldo, n, g.dv, ws.den.data());
    }
    AbsorbKeys(g, ws.fk.data(), ws.rk.data(), n, vc, v.stride[2], s, z, max_shift);
  }
}

void BidirectionalUnit(const LinearGeometry& g, const LinearOptions& o, TensorView<const float> q,
                       TensorView<const float> k, TensorView<const float> v, TensorView<float> out,
                       int64_t b, int64_t hk, Workspace& ws) {
  const int64_t chunk = o.chunk_size;
  float* s = ws.s.data();
  float* z = ws.z.data();
  std::fill(ws.s.begin(), ws.s.end(), 0.0f);
  std::fill(ws.z.begin(), ws.z.end(), 0.0f);
  float max_shift = -INFINITY;
  for (int64_t c0 = 0; c0 < g.seqlen_kv; c0 += chunk) {
    const int64_t n = std::min(chunk, g.seqlen_kv - c0);
    FeatureRows(g, o, k.row(b, hk, c0), k.stride[2], n, ws.fk.data(), ws.rk.data(), ws);
    AbsorbKeys(g, ws.fk.data(), ws.rk.data(), n, v.row(b, hk, c0), v.stride[2], s, z, max_shift);
  }
  for (int64_t gh = 0; gh < g.group; ++gh) {
    const int64_t h = hk * g.group + gh;
    for (int64_t c0 = 0; c0 < g.seqlen_q; c0 += chunk) {
      const int64_t n = std::min(chunk, g.seqlen_q - c0);
      FeatureRows(g, o, q.row(b, h, c0), q.stride[2], n, ws.fq.data(), ws.rq.data(), ws);
      float* orow = out.row(b, h, c0);
      ReadState(g, ws.fq.data(), n, s, z, orow, out.stride[2], ws.den.data(), false);
      Normalise(orow, out.stride[2], n, g.dv, ws.den.data());
    }
  }
}

void FastLinear(const LinearGeometry& g, TensorView<const float> q, TensorView<const float> k,
                TensorView<const float> v, TensorView<float> out, const LinearOptions& o,
                LinearState* state) {
  const int threads = ResolveThreads(o.num_threads);
  const int64_t units = g.batch * g.heads_kv;
  const int64_t chunk = std::min(o.chunk_size, std::max(g.seqlen_q, g.seqlen_kv));
  LinearOptions opt = o;
  opt.chunk_size = chunk;
  // A fork/join costs microseconds; a decode step of a few heads is about that much work.
  const double work = static_cast<double>(units * g.group * std::max(g.seqlen_q, g.seqlen_kv) *
                                          g.m * (g.dk + g.dv));
  const int team = work < double{1 << 20} ? 1 : static_cast<int>(std::min<int64_t>(threads, units));
  // Per-thread scratch, allocated before the parallel region (nothing may throw inside it).
  std::vector<Workspace> workspaces;
  workspaces.reserve(static_cast<size_t>(team));
  for (int t = 0; t < team; ++t) workspaces.emplace_back(g, chunk, /*own_state=*/state == nullptr);
#pragma omp parallel num_threads(team)
  {
    Workspace& ws = workspaces[static_cast<size_t>(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t b = u / g.heads_kv, hk = u % g.heads_kv;
      if (!opt.causal) {
        BidirectionalUnit(g, opt, q, k, v, out, b, hk, ws);
        continue;
      }
      if (state) {
        CausalUnit(g, opt, q, k, v, out, b, hk, state->s.data() + u * g.m * g.dv,
                   state->z.data() + u * g.m, state->max_shift[u], ws);
      } else {
        std::fill(ws.s.begin(), ws.s.end(), 0.0f);
        std::fill(ws.z.begin(), ws.z.end(), 0.0f);
        float max_shift = -INFINITY;
        CausalUnit(g, opt, q, k, v, out, b, hk, ws.s.data(), ws.z.data(), max_shift, ws);
      }
    }
  }
  if (state) state->tokens += g.seqlen_kv;
}

}  // namespace

void LinearForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<float> out, const LinearOptions& o, LinearState* state) {
  if (o.backend == Backend::kReference) {
    ref::LinearForward(q, k, v, out, o, state);
    return;
  }
  const LinearGeometry g = detail::CheckLinearArgs("LinearForward", q, k, v, out, o, state);
  detail::LinearNonFiniteRule(
      g, q, k, v, out, o.causal, state,
      [&](TensorView<const float> q2, TensorView<const float> k2, TensorView<const float> v2) {
        FastLinear(g, q2, k2, v2, out, o, state);
      });
}

}  // namespace attnkit
