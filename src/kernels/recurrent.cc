// The recurrent engine's fast kernels: chunk-wise (WY / UT) prefill and token-by-token steps.
//
// Chunk of n tokens, state S₀ (dk × dv) at its start, cumulative log decays γ_i = Σ_{t≤i} log α_t
// inside the chunk (a scalar, or a vector over the key channels for KDA), Γ_i = exp(γ_i) ≤ 1.
// Writing u_i for the value the delta rule actually adds at token i (S_i = diag(α_i) S_{i−1} +
// k_i u_iᵀ), the updates unroll to a unit lower-triangular system
//   (I + A) U = diag(β) V − diag(β) (K ⊙ Γ) S₀,   A_ij = β_i Σ_c k_ic k_jc exp(γ_ic − γ_jc), j < i
// so with T = (I + A)⁻¹ (the UT transform; T diag(β) K is the WY factor):
//   U = T diag(β) V − (T diag(β) (K ⊙ Γ)) S₀
//   O = (Q ⊙ Γ) S₀ + P U,           P_ij = Σ_c q_ic k_jc exp(γ_ic − γ_jc), j ≤ i
//   S_n = diag(Γ_n) S₀ + (K ⊙ exp(γ_n − γ))ᵀ U
// Every exponent above is ≤ 0, so nothing overflows however strong the decay. For the scalar
// decay the decay factors of A and P are one n × n matrix of exp(γ_i − γ_j) applied to the
// GEMM products K Kᵀ and Q Kᵀ. For KDA's per-channel decay the factor sits inside the sum over
// channels; it is split at a reference row r of each 16-row block: rows i ≥ r get
// exp(γ_i − γ_r) and keys j < r get exp(γ_r − γ_j), both ≤ 1, so the off-diagonal blocks are
// GEMMs of bounded rescaled copies, and only the 16 × 16 diagonal blocks are summed pairwise
// with exp(γ_i − γ_j) (never exp(+γ), which overflows for strong decay).
// Without the delta rule (gated linear attention) U = V and A, T are not needed.
//
// Performance note: per token the chunked form does ~3·dk·dv multiply-adds in GEMMs (W S₀,
// Q S₀, the state update) plus ~n·(2dk + dk + dv) for the chunk-local products; the token-by-token
// form does ~3·dk·dv as vector FMAs that stream the dk × dv state through L1/L2 twice per token.
#include "attnkit/kernels/recurrent.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/runtime.h"
#include "core/scratch.h"
#include "kernels/linear_simd.h"
#include "kernels/recurrent_chunk.h"
#include "kernels/recurrent_common.h"

namespace attnkit {
namespace {

using detail::DecayedGram;
using detail::DeltaGeometry;
using detail::GemmArgs;
using detail::kTriBlock;
using detail::LowerTriangularAGemm;
using detail::SmallGemm;

// Per-thread scratch, carved out of one pooled block (core/scratch.h) that is allocated before
// the parallel region: nothing inside the region allocates, and a loop of calls reuses memory
// that is already faulted in instead of page-faulting ~0.5 MiB per thread per call.
struct Workspace {
  float *q, *k, *kt, *g, *gam, *tail, *dec, *beta, *alpha, *a, *t, *p, *bk, *u, *w, *xl, *yr, *yrt,
      *s, *scratch;
  // Floats needed for chunk c (each array rounded up to 16 floats, 64 bytes).
  static int64_t Floats(const DeltaGeometry& geo, int64_t c) {
    Workspace ws;
    return ws.Carve(geo, c, nullptr);
  }
  Workspace() = default;
  Workspace(const DeltaGeometry& geo, int64_t c, float* base) { Carve(geo, c, base); }

 private:
  int64_t Carve(const DeltaGeometry& geo, int64_t c, float* base) {
    const int64_t gdim = c * std::max<int64_t>(1, geo.dk);
    int64_t used = 0;
    auto take = [&](float*& p, int64_t n) {
      p = base ? base + used : nullptr;
      used += (n + 15) / 16 * 16;
    };
    take(q, c * geo.dk);
    take(k, c * geo.dk);
    take(kt, geo.dk * c);
    take(g, gdim);
    take(gam, gdim);
    take(tail, gdim);
    take(dec, c * c);
    take(beta, c);
    take(alpha, gdim);
    take(a, c * c);
    take(t, c * c);
    take(p, c * c);
    take(bk, c * geo.dk);
    take(u, c * geo.dv);
    take(w, c * geo.dk);
    take(xl, c * geo.dk);
    take(yr, c * geo.dk);
    take(yrt, geo.dk * c);
    take(s, geo.dk * geo.dv);
    take(scratch, geo.dk + 2 * geo.dv);
    return used;
  }
};

// Loads n normalised, scaled rows of q and k into ws.q / ws.k.
void LoadQk(const DeltaGeometry& g, const GatedDeltaOptions& o, TensorView<const float> q,
            TensorView<const float> k, int64_t b, int64_t hq, int64_t t0, int64_t n,
            Workspace& ws) {
  detail::ScaleRows(q.row(b, hq, t0), q.stride[2], n, g.dk, o.l2_normalize_qk, detail::kL2NormEps,
                    g.scale, ws.q, g.dk);
  detail::ScaleRows(k.row(b, hq, t0), k.stride[2], n, g.dk, o.l2_normalize_qk, detail::kL2NormEps,
                    1.0f, ws.k, g.dk);
}

void Transpose(const float* x, int64_t rows, int64_t cols, float* xt) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t c = 0; c < cols; ++c) xt[c * rows + i] = x[i * cols + c];
  }
}

// One chunk of n tokens of one head: updates s (dk × dv) and writes out rows.
void Chunk(const DeltaGeometry& geo, const GatedDeltaOptions& o, TensorView<const float> v,
           TensorView<const float> log_alpha, TensorView<const float> beta, TensorView<float> out,
           int64_t b, int64_t h, int64_t t0, int64_t n, float* s, Workspace& ws) {
  const int64_t dk = geo.dk, dv = geo.dv, gd = geo.decay_dim;
  // Cumulative log decays inside the chunk.
  for (int64_t i = 0; i < n && gd > 0; ++i) {
    const float* la = log_alpha.row(b, h, t0 + i);
    for (int64_t c = 0; c < gd; ++c) {
      ws.g[i * gd + c] = (i > 0 ? ws.g[(i - 1) * gd + c] : 0.0f) + la[c];
    }
  }
  // Γ = exp(γ) (n × gd), exp(γ_n − γ_i) (n × gd) and, for a scalar decay, the n × n matrix of
  // exp(γ_i − γ_j) (j ≤ i) shared by A and P; every exponent is <= 0.
  float* gam = ws.gam;
  float* tail = ws.tail;
  if (gd > 0) {
    const float* gn = ws.g + (n - 1) * gd;
    for (int64_t i = 0; i < n * gd; ++i) {
      gam[i] = ws.g[i];
      tail[i] = gn[i % gd] - ws.g[i];
    }
    detail::ExpInPlace(gam, n * gd);
    detail::ExpInPlace(tail, n * gd);
  }
  if (gd == 1) {
    for (int64_t i = 0; i < n; ++i) {
      float* row = ws.dec + i * n;
      for (int64_t j = 0; j <= i; ++j) row[j] = ws.g[i] - ws.g[j];
      detail::ExpInPlace(row, i + 1);
    }
  }
  // dst = src ⊙ f ⊙ Γ_i (Γ_i a scalar or a row over the channels), branch-free inner loops.
  auto scale_by_gamma = [&](int64_t i, const float* src, float f, float* dst) {
    if (gd == dk) {
      const float* gi = gam + i * dk;
      for (int64_t c = 0; c < dk; ++c) dst[c] = src[c] * f * gi[c];
    } else {
      const float fi = gd == 1 ? f * gam[i] : f;
      for (int64_t c = 0; c < dk; ++c) dst[c] = src[c] * fi;
    }
  };
  const float* vc = v.row(b, h, t0);
  const int64_t ldv = v.stride[2];
  float* u = ws.u;
  if (gd <= 1) Transpose(ws.k, n, dk, ws.kt);  // Kᵀ for the Gram matrices K Kᵀ and Q Kᵀ
  const detail::DecayedGramScratch gram{ws.kt, gd == 1 ? ws.dec : nullptr, ws.xl, ws.yr, ws.yrt};
  if (o.delta_rule) {
    for (int64_t i = 0; i < n; ++i) ws.beta[i] = beta.at(b, h, t0 + i, 0);
    // A (strict lower) with β_i on row i, then T = (I + A)⁻¹ by forward substitution.
    DecayedGram(dk, gd > 1, ws.k, ws.k, ws.g, n, /*strict=*/true, ws.a, gram);
    float* t = ws.t;
    detail::UnitLowerInverse(ws.a, ws.beta, n, t);
    // U = T diag(β) V and W = T diag(β) (K ⊙ Γ): diag(β) (and a scalar Γ) are folded into
    // T's columns, so V and K feed the GEMMs as they are; KDA's per-channel Γ scales K's rows.
    float* tb = ws.a;  // A is no longer needed: T diag(β Γ) for W
    for (int64_t i = 0; i < n; ++i) {
      float* ti = t + i * n;
      float* tbi = tb + i * n;
      for (int64_t j = 0; j <= i; ++j) {
        tbi[j] = ti[j] * ws.beta[j] * (gd == 1 ? gam[j] : 1.0f);
        ti[j] *= ws.beta[j];
      }
    }
    const float* wk = ws.k;
    if (gd == dk) {  // per-channel Γ: K ⊙ Γ rows, β already in T
      for (int64_t i = 0; i < n; ++i) scale_by_gamma(i, ws.k + i * dk, 1.0f, ws.bk + i * dk);
      wk = ws.bk;
      tb = t;
    }
    GemmArgs a;  // U = (T diag(β)) V, V read in place
    a.m = n, a.n = dv, a.k = n;
    a.a = t, a.a_rs = n, a.a_cs = 1;
    a.b = vc, a.ldb = ldv;
    a.c = u, a.ldc = dv;
    LowerTriangularAGemm(a);
    a.n = dk;  // W = (T diag(β Γ)) K
    a.a = tb;
    a.b = wk, a.ldb = dk;
    a.c = ws.w, a.ldc = dk;
    LowerTriangularAGemm(a);
    a = GemmArgs{};  // U −= W S₀
    a.m = n, a.n = dv, a.k = dk, a.alpha = -1.0f;
    a.a = ws.w, a.a_rs = dk, a.a_cs = 1;
    a.b = s, a.ldb = dv;
    a.c = u, a.ldc = dv;
    a.accumulate = true;
    SmallGemm(a);
  } else {
    for (int64_t i = 0; i < n; ++i) std::copy(vc + i * ldv, vc + i * ldv + dv, u + i * dv);
  }
  // O = (Q ⊙ Γ) S₀ + P U.
  DecayedGram(dk, gd > 1, ws.q, ws.k, ws.g, n, /*strict=*/false, ws.p, gram);
  for (int64_t i = 0; i < n; ++i) {
    scale_by_gamma(i, ws.q + i * dk, 1.0f, ws.q + i * dk);
  }
  float* orow = out.row(b, h, t0);
  GemmArgs a;
  a.m = n, a.n = dv, a.k = dk;
  a.a = ws.q, a.a_rs = dk, a.a_cs = 1;
  a.b = s, a.ldb = dv;
  a.c = orow, a.ldc = out.stride[2];
  SmallGemm(a);
  a.m = n, a.k = n;
  a.a = ws.p, a.a_rs = n;
  a.b = u, a.ldb = dv;
  a.accumulate = true;
  LowerTriangularAGemm(a);
  // S_n = diag(Γ_n) S₀ + (K ⊙ exp(γ_n − γ))ᵀ U.
  if (gd > 0) {
    const float* gn = ws.g + (n - 1) * gd;
    for (int64_t c = 0; c < dk; ++c) {
      const float f = std::exp(gn[gd == 1 ? 0 : c]);
      for (int64_t e = 0; e < dv; ++e) s[c * dv + e] *= f;
    }
    for (int64_t i = 0; i < n; ++i) {
      float* ki = ws.k + i * dk;
      if (gd == 1) {
        for (int64_t c = 0; c < dk; ++c) ki[c] *= tail[i];
      } else {
        for (int64_t c = 0; c < dk; ++c) ki[c] *= tail[i * dk + c];
      }
    }
  }
  a = GemmArgs{};
  a.m = dk, a.n = dv, a.k = n;
  a.a = ws.k, a.a_rs = 1, a.a_cs = dk;
  a.b = u, a.ldb = dv;
  a.c = s, a.ldc = dv;
  a.accumulate = true;
  SmallGemm(a);
}

// n tokens of one head, token by token (the decode path).
void Steps(const DeltaGeometry& geo, const GatedDeltaOptions& o, TensorView<const float> v,
           TensorView<const float> log_alpha, TensorView<const float> beta, TensorView<float> out,
           int64_t b, int64_t h, int64_t t0, int64_t n, float* s, Workspace& ws) {
  const int64_t gd = geo.decay_dim;
  for (int64_t i = 0; i < n && gd > 0; ++i) {
    const float* la = log_alpha.row(b, h, t0 + i);
    for (int64_t c = 0; c < gd; ++c) ws.alpha[i * gd + c] = std::exp(la[c]);
  }
  detail::DeltaStepArgs a;
  a.tokens = n, a.dk = geo.dk, a.dv = geo.dv;
  a.q = ws.q, a.q_rs = geo.dk;
  a.k = ws.k, a.k_rs = geo.dk;
  a.v = v.row(b, h, t0), a.v_rs = v.stride[2];
  a.alpha = gd > 0 ? ws.alpha : nullptr;
  a.alpha_stride = gd, a.alpha_dim = std::max<int64_t>(gd, 1);
  a.delta = o.delta_rule;
  if (o.delta_rule) a.beta = beta.row(b, h, t0), a.beta_stride = beta.stride[2];
  a.s = s;
  a.out = out.row(b, h, t0), a.out_rs = out.stride[2];
  a.scratch = ws.scratch;
  detail::DeltaRecurrentSteps(a);
}

}  // namespace

double GatedDeltaFlops(int64_t batch, int64_t num_heads_v, int64_t seqlen, int64_t head_dim_qk,
                       int64_t head_dim_v, bool per_channel_decay, const GatedDeltaOptions& o) {
  const double dk = static_cast<double>(head_dim_qk), dv = static_cast<double>(head_dim_v);
  const double tokens = static_cast<double>(batch * num_heads_v * seqlen);
  const bool chunked = o.algorithm == DeltaAlgorithm::kChunked ||
                       (o.algorithm == DeltaAlgorithm::kAuto && seqlen > o.chunk_size / 4);
  if (!chunked) return 2.0 * tokens * (o.delta_rule ? 3.0 : 2.0) * dk * dv;
  const int64_t ci = std::min(o.chunk_size, seqlen);
  const double c = static_cast<double>(ci);
  // The chunk-local products run over the lower-triangular row blocks only: for each block of
  // kTriBlock rows, the columns below its end. tri = that area / c (per token).
  double area = 0;
  for (int64_t i0 = 0; i0 < ci; i0 += kTriBlock) {
    area += static_cast<double>(std::min(ci, i0 + kTriBlock) * (std::min(ci, i0 + kTriBlock) - i0));
  }
  const double tri = area / c;
  // Per token: Q S₀ and the state update (2 dk dv), P (tri dk) and P U (tri dv); with the delta
  // rule also W S₀ (dk dv), K Kᵀ (tri dk), T (c²/6), T V and T K (tri (dv + dk)).
  double per_token = 2 * dk * dv + tri * dk + tri * dv;
  if (o.delta_rule) per_token += dk * dv + tri * dk + c * c / 6 + tri * (dk + dv);
  (void)per_channel_decay;  // same GEMM work; KDA adds exponentials, not multiply-adds
  return 2.0 * tokens * per_token;
}

namespace {
void FastDelta(const detail::DeltaGeometry& g, TensorView<const float> q, TensorView<const float> k,
               TensorView<const float> v, TensorView<const float> log_alpha,
               TensorView<const float> beta, TensorView<float> out, TensorView<float> state,
               const GatedDeltaOptions& o) {
  const bool chunked = o.algorithm == DeltaAlgorithm::kChunked ||
                       (o.algorithm == DeltaAlgorithm::kAuto && g.seqlen_q > o.chunk_size / 4);
  const int64_t chunk = std::min(o.chunk_size, g.seqlen_q);
  const int64_t units = g.batch * g.heads;
  // A fork/join costs microseconds; a decode step of a few heads is about that much work.
  const double work = static_cast<double>(units * g.seqlen_q * g.dk * g.dv);
  const int threads =
      work < double{1 << 20}
          ? 1
          : static_cast<int>(std::min<int64_t>(ResolveThreads(o.num_threads), units));
  const int64_t ws_floats = Workspace::Floats(g, chunk);
  detail::Scratch<float> block(static_cast<size_t>(ws_floats * threads));
  std::fill(block.get(), block.get() + ws_floats * threads, 0.0f);
#pragma omp parallel num_threads(threads)
  {
    Workspace ws(g, chunk, block.get() + ws_floats * omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t b = unit / g.heads, h = unit % g.heads, hq = h / g.group;
      float* s = ws.s;
      if (!state.empty()) {
        for (int64_t c = 0; c < g.dk; ++c) {
          std::copy(state.row(b, h, c), state.row(b, h, c) + g.dv, s + c * g.dv);
        }
      } else {
        std::fill(ws.s, ws.s + g.dk * g.dv, 0.0f);
      }
      for (int64_t t0 = 0; t0 < g.seqlen_q; t0 += chunk) {
        const int64_t n = std::min(chunk, g.seqlen_q - t0);
        LoadQk(g, o, q, k, b, hq, t0, n, ws);
        if (chunked) {
          Chunk(g, o, v, log_alpha, beta, out, b, h, t0, n, s, ws);
        } else {
          Steps(g, o, v, log_alpha, beta, out, b, h, t0, n, s, ws);
        }
      }
      if (!state.empty()) {
        for (int64_t c = 0; c < g.dk; ++c) {
          std::copy(s + c * g.dv, s + (c + 1) * g.dv, state.row(b, h, c));
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
  if (o.backend == Backend::kReference) {
    ref::GatedDeltaForward(q, k, v, log_alpha, beta, out, state, o);
    return;
  }
  const DeltaGeometry g =
      detail::CheckDeltaArgs("GatedDeltaForward", q, k, v, log_alpha, beta, out, state, o);
  detail::DeltaNonFiniteRule(
      g, q, k, v, out, state,
      [&](TensorView<const float> q2, TensorView<const float> k2, TensorView<const float> v2) {
        FastDelta(g, q2, k2, v2, log_alpha, beta, out, state, o);
      });
}

}  // namespace attnkit
