// The recurrent engine's fast backward: chunk-wise (WY / UT) gradients of the gated delta rule.
//
// Chunk of n tokens with state S₀ at its start (notation of recurrent.cc: cumulative log decays
// γ, Γ = exp(γ), G_ij = Σ_c k_ic k_jc exp(γ_ic − γ_jc) for j < i, A = diag(β) G, T = (I + A)⁻¹,
// P_ij = Σ_c q_ic k_jc exp(γ_ic − γ_jc) for j ≤ i, K̃ = K ⊙ exp(γ_n − γ)):
//   R = diag(β) (V − (K ⊙ Γ) S₀),  U = T R,  O = (Q ⊙ Γ) S₀ + P U,  S_n = diag(Γ_n) S₀ + K̃ᵀ U.
// Given dO and dS_n, in reverse:
//   dU = Pᵀ dO + K̃ dS_n,  dK̃ = U dS_nᵀ,  dR = Tᵀ dU,  dP = dO Uᵀ,  dA = −dR Uᵀ,
//   d(Q⊙Γ) = dO S₀ᵀ,  d(K⊙Γ) = −diag(β) dR S₀ᵀ,  dV = diag(β) dR,
//   dβ_i = dR_i · V_i − (K⊙Γ)_i · (dR S₀ᵀ)_i + Σ_j dA_ij G_ij,  dG = diag(β) dA,
//   dS₀ = diag(Γ_n) dS_n + (Q⊙Γ)ᵀ dO − (diag(β) K⊙Γ)ᵀ dR,
// and each decayed Gram M_ij = Σ_c x_ic y_jc exp(γ_ic − γ_jc) passes dM back as
//   dx_i = Σ_j dM_ij (y_j ⊙ e_ij),  dy_j = Σ_i dM_ij (x_i ⊙ e_ij),  dγ += x ⊙ dx − y ⊙ dy.
// Every exponential factor is ≤ 1, as in the forward. γ is a prefix sum of log α inside the
// chunk, so d log α is the suffix sum of dγ inside the chunk.
//
// Two passes per (batch, value head): forward over the chunks keeping S₀ of each chunk and the
// chunk-local U, T, G, P (O(T·(d_v + 3C) + (T/C)·d_k·d_v) floats, no per-token state), then the
// chunks in reverse. The products share operands where they can: Y = [dO; dR] feeds
// Y Uᵀ (→ dP, dA), Y S₀ᵀ (→ d(Q⊙Γ), d(K⊙Γ), dβ) and Xᵀ Y with X = [Q⊙Γ; −β K⊙Γ] (→ dS₀) as
// three GEMMs of 2n rows instead of six of n. Every product is a SmallGemm.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/runtime.h"
#include "core/scratch.h"
#include "kernels/backward_simd.h"
#include "kernels/linear_simd.h"
#include "kernels/recurrent_backward_common.h"
#include "kernels/recurrent_chunk.h"

namespace attnkit {
namespace {

using detail::DeltaGeometry;
using detail::GemmArgs;
using detail::SmallGemm;

constexpr int64_t kBlock =
    detail::kTriBlock;  // row block of the triangular products and the KDA split

// Per-thread scratch, carved from one pooled block allocated before the parallel region.
struct Workspace {
  // Kept over the whole sequence of one (batch, value head).
  float *states, *ubuf, *tbuf, *gbuf, *pbuf, *dq_acc, *dk_acc;
  // One chunk.
  float *q, *k, *kt, *g, *gam, *tail, *dec, *beta, *tb, *bk, *w, *xl, *yr, *yrt, *s, *ds, *dst,
      *s0t, *du, *y, *ut, *dpa, *z, *x, *ktil, *dktil, *dqh, *dkh, *dgam, *dmd, *tmp, *tmp2, *e;

  static int64_t Floats(const DeltaGeometry& geo, int64_t c, int64_t chunks, bool group_scratch) {
    Workspace ws;
    return ws.Carve(geo, c, chunks, group_scratch, nullptr);
  }
  Workspace() = default;
  Workspace(const DeltaGeometry& geo, int64_t c, int64_t chunks, bool group_scratch, float* base) {
    Carve(geo, c, chunks, group_scratch, base);
  }

 private:
  int64_t Carve(const DeltaGeometry& geo, int64_t c, int64_t chunks, bool group_scratch,
                float* base) {
    const int64_t dk = geo.dk, dv = geo.dv, sd = dk * dv, gdim = c * std::max<int64_t>(1, dk);
    int64_t used = 0;
    auto take = [&](float*& p, int64_t n) {
      p = base ? base + used : nullptr;
      used += (n + 15) / 16 * 16;
    };
    take(states, chunks * sd);
    take(ubuf, chunks * c * dv);
    take(tbuf, chunks * c * c);
    take(gbuf, chunks * c * c);
    take(pbuf, chunks * c * c);
    take(dq_acc, group_scratch ? geo.seqlen_q * dk : 0);
    take(dk_acc, group_scratch ? geo.seqlen_q * dk : 0);
    take(q, c * dk);
    take(k, c * dk);
    take(kt, dk * c);
    take(g, gdim);
    take(gam, gdim);
    take(tail, gdim);
    take(dec, c * c);
    take(beta, c);
    take(tb, c * c);
    take(bk, c * dk);
    take(w, c * dk);
    take(xl, c * dk);
    take(yr, c * dk);
    take(yrt, dk * c);
    take(s, sd);
    take(ds, sd);
    take(dst, sd);
    take(s0t, sd);
    take(du, c * dv);
    take(y, 2 * c * dv);
    take(ut, dv * c);
    take(dpa, 2 * c * c);
    take(z, 2 * c * dk);
    take(x, 2 * c * dk);
    take(ktil, c * dk);
    take(dktil, c * dk);
    take(dqh, c * dk);
    take(dkh, c * dk);
    take(dgam, gdim);
    take(dmd, c * c);
    take(tmp, c * dk);
    take(tmp2, c * dk);
    take(e, kBlock * dk);
    return used;
  }
};

// The decays of one chunk: γ (cumulative log α, n × gw with gw = max(gd, 1); zero for DeltaNet),
// Γ = exp(γ), tail = exp(γ_n − γ) and, for gw == 1, dec_ij = exp(γ_i − γ_j), j ≤ i.
void ChunkDecays(const DeltaGeometry& geo, TensorView<const float> log_alpha, int64_t b, int64_t h,
                 int64_t t0, int64_t n, Workspace& ws) {
  const int64_t gd = geo.decay_dim, gw = std::max<int64_t>(gd, 1);
  for (int64_t i = 0; i < n; ++i) {
    const float* la = gd > 0 ? log_alpha.row(b, h, t0 + i) : nullptr;
    for (int64_t c = 0; c < gw; ++c) {
      ws.g[i * gw + c] = (i > 0 ? ws.g[(i - 1) * gw + c] : 0.0f) + (la ? la[c] : 0.0f);
    }
  }
  const float* gn = ws.g + (n - 1) * gw;
  for (int64_t i = 0; i < n * gw; ++i) {
    ws.gam[i] = ws.g[i];
    ws.tail[i] = gn[i % gw] - ws.g[i];
  }
  detail::ExpInPlace(ws.gam, n * gw);
  detail::ExpInPlace(ws.tail, n * gw);
  if (gw == 1) {
    for (int64_t i = 0; i < n; ++i) {
      float* row = ws.dec + i * n;
      for (int64_t j = 0; j <= i; ++j) row[j] = ws.g[i] - ws.g[j];
      detail::ExpInPlace(row, i + 1);
    }
  }
}

// Backward of DecayedGram: given dM (n × n, zero outside the mask) and M itself, accumulates
// dx += ∂/∂x, dy += ∂/∂y and dγ += x ⊙ dx_M − y ⊙ dy_M (summed over channels for a scalar decay;
// skipped without decay). dM is scaled in place for the scalar case.
void DecayedGramBackward(const DeltaGeometry& geo, bool per_channel, const float* x, const float* y,
                         int64_t n, bool strict, float* dm, const float* m, float* dx, float* dy,
                         Workspace& ws) {
  const int64_t dk = geo.dk;
  const bool decay = geo.decay_dim > 0;
  if (!per_channel) {
    if (decay) {  // dγ_i += Σ_j dM_ij M_ij − Σ_j dM_ji M_ji
      for (int64_t i = 0; i < n; ++i) {
        const int64_t last = strict ? i : i + 1;
        for (int64_t j = 0; j < last; ++j) {
          const float p = dm[i * n + j] * m[i * n + j];
          ws.dgam[i] += p;
          ws.dgam[j] -= p;
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {  // dM ⊙ D
      const int64_t last = strict ? i : i + 1;
      for (int64_t j = 0; j < last; ++j) dm[i * n + j] *= ws.dec[i * n + j];
    }
    GemmArgs a;  // dx += (dM ⊙ D) y
    a.m = n, a.n = dk, a.k = n;
    a.a = dm, a.a_rs = n, a.a_cs = 1;
    a.b = y, a.ldb = dk;
    a.c = dx, a.ldc = dk;
    a.accumulate = true;
    detail::LowerTriangularAGemm(a);
    a.a_rs = 1, a.a_cs = n;  // dy += (dM ⊙ D)ᵀ x
    a.b = x;
    a.c = dy;
    detail::UpperTriangularAGemm(a);
    return;
  }
  const float* g = ws.g;
  float* dg = ws.dgam;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock), rows = i1 - i0;
    const float* gr = g + i0 * dk;
    if (i0 > 0) {
      // Factors exp(γ_i − γ_r) (rows) in ws.xl's place, exp(γ_r − γ_j) (j < r) in ws.yr.
      float* fx = ws.e;
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t c = 0; c < dk; ++c) fx[(i - i0) * dk + c] = g[i * dk + c] - gr[c];
      }
      detail::ExpInPlace(fx, rows * dk);
      for (int64_t i = 0; i < rows * dk; ++i) ws.xl[i] = x[i0 * dk + i] * fx[i];
      for (int64_t j = 0; j < i0; ++j) {
        for (int64_t c = 0; c < dk; ++c) ws.yr[j * dk + c] = gr[c] - g[j * dk + c];
      }
      detail::ExpInPlace(ws.yr, i0 * dk);
      for (int64_t j = 0; j < i0 * dk; ++j) ws.w[j] = y[j] * ws.yr[j];  // Yr
      GemmArgs a;                                                       // tmp = dM[block, :r] Yr
      a.m = rows, a.n = dk, a.k = i0;
      a.a = dm + i0 * n, a.a_rs = n, a.a_cs = 1;
      a.b = ws.w, a.ldb = dk;
      a.c = ws.tmp, a.ldc = dk;
      SmallGemm(a);
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t c = 0; c < dk; ++c) {
          const float t = ws.tmp[i * dk + c];
          dx[(i0 + i) * dk + c] += t * fx[i * dk + c];
          if (decay) dg[(i0 + i) * dk + c] += t * ws.xl[i * dk + c];
        }
      }
      a = GemmArgs{};  // tmp2 = dM[block, :r]ᵀ Xl
      a.m = i0, a.n = dk, a.k = rows;
      a.a = dm + i0 * n, a.a_rs = 1, a.a_cs = n;
      a.b = ws.xl, a.ldb = dk;
      a.c = ws.tmp2, a.ldc = dk;
      SmallGemm(a);
      for (int64_t j = 0; j < i0; ++j) {
        for (int64_t c = 0; c < dk; ++c) {
          const float t = ws.tmp2[j * dk + c];
          dy[j * dk + c] += t * ws.yr[j * dk + c];
          if (decay) dg[j * dk + c] -= t * ws.w[j * dk + c];
        }
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t last = strict ? i : i + 1;
      const float* gi = g + i * dk;
      for (int64_t j = i0; j < last; ++j) {
        const float wgt = dm[i * n + j];
        if (wgt == 0.0f) continue;
        const float* gj = g + j * dk;
        for (int64_t c = 0; c < dk; ++c) ws.e[c] = gi[c] - gj[c];
        detail::ExpInPlace(ws.e, dk);
        for (int64_t c = 0; c < dk; ++c) {
          const float f = wgt * ws.e[c];
          const float px = f * y[j * dk + c], py = f * x[i * dk + c];
          dx[i * dk + c] += px;
          dy[j * dk + c] += py;
          if (decay) {
            const float d = px * x[i * dk + c];
            dg[i * dk + c] += d;
            dg[j * dk + c] -= d;
          }
        }
      }
    }
  }
}

// Float twin of detail::NormalizeBackward for one row.
void NormalizeRowBackward(const float* x, const float* dxh, int64_t dim, bool l2, float scale,
                          float* dx) {
  float f = 1.0f, corr = 0.0f;
  if (l2) {
    const float sq = detail::DotProduct(x, x, dim), dot = detail::DotProduct(x, dxh, dim);
    f = 1.0f / std::sqrt(sq + detail::kL2NormEps);
    corr = f * f * f * dot;
  }
  for (int64_t c = 0; c < dim; ++c) {
    dx[c] = scale * (f * dxh[c] - corr * x[c]);
  }
}

struct Inputs {
  TensorView<const float> q, k, v, log_alpha, beta, initial_state, dout, dfinal_state;
};

void LoadQk(const DeltaGeometry& geo, const GatedDeltaOptions& o, const Inputs& in, int64_t b,
            int64_t hq, int64_t t0, int64_t n, Workspace& ws) {
  detail::ScaleRows(in.q.row(b, hq, t0), in.q.stride[2], n, geo.dk, o.l2_normalize_qk,
                    detail::kL2NormEps, geo.scale, ws.q, geo.dk);
  detail::ScaleRows(in.k.row(b, hq, t0), in.k.stride[2], n, geo.dk, o.l2_normalize_qk,
                    detail::kL2NormEps, 1.0f, ws.k, geo.dk);
}

// Forward over one chunk: stores G, T, P and U, advances s (dk × dv).
void ForwardChunk(const DeltaGeometry& geo, const GatedDeltaOptions& o, const Inputs& in, int64_t b,
                  int64_t h, int64_t t0, int64_t n, float* gm, float* tm, float* pm, float* u,
                  Workspace& ws) {
  const int64_t dk = geo.dk, dv = geo.dv;
  const bool per_channel = geo.decay_dim == dk && dk > 1;
  const float* vc = in.v.row(b, h, t0);
  const int64_t ldv = in.v.stride[2];
  if (!per_channel) detail::TransposeMatrix(ws.k, n, dk, dk, ws.kt);
  // dec is all ones for DeltaNet (ChunkDecays), so the scalar path needs no special case.
  const detail::DecayedGramScratch gram{ws.kt, ws.dec, ws.xl, ws.yr, ws.yrt};
  if (o.delta_rule) {
    for (int64_t i = 0; i < n; ++i) ws.beta[i] = in.beta.at(b, h, t0 + i, 0);
    detail::DecayedGram(dk, per_channel, ws.k, ws.k, ws.g, n, /*strict=*/true, gm, gram);
    detail::UnitLowerInverse(gm, ws.beta, n, tm);
    // tb = T diag(β) (and diag(Γ) for a scalar decay, for W = T diag(β) (K ⊙ Γ)).
    float* tvb = ws.tb;  // T diag(β) for U
    float* twb = ws.dmd;
    // (T is unit lower triangular with zeros above: the products stay zero there.)
    for (int64_t i = 0; i < n * n; ++i) {
      const int64_t j = i % n;
      tvb[i] = tm[i] * ws.beta[j];
      twb[i] = per_channel ? tvb[i] : tvb[i] * ws.gam[j];
    }
    const float* wk = ws.k;
    if (per_channel) {
      for (int64_t i = 0; i < n * dk; ++i) ws.bk[i] = ws.k[i] * ws.gam[i];
      wk = ws.bk;
    }
    GemmArgs a;  // U = T diag(β) V
    a.m = n, a.n = dv, a.k = n;
    a.a = tvb, a.a_rs = n, a.a_cs = 1;
    a.b = vc, a.ldb = ldv;
    a.c = u, a.ldc = dv;
    detail::LowerTriangularAGemm(a);
    a.n = dk;  // W = T diag(β) (K ⊙ Γ)
    a.a = twb;
    a.b = wk, a.ldb = dk;
    a.c = ws.w, a.ldc = dk;
    detail::LowerTriangularAGemm(a);
    a = GemmArgs{};  // U −= W S₀
    a.m = n, a.n = dv, a.k = dk, a.alpha = -1.0f;
    a.a = ws.w, a.a_rs = dk, a.a_cs = 1;
    a.b = ws.s, a.ldb = dv;
    a.c = u, a.ldc = dv;
    a.accumulate = true;
    SmallGemm(a);
  } else {
    for (int64_t i = 0; i < n; ++i) std::copy(vc + i * ldv, vc + i * ldv + dv, u + i * dv);
  }
  detail::DecayedGram(dk, per_channel, ws.q, ws.k, ws.g, n, /*strict=*/false, pm, gram);
  // S_n = diag(Γ_n) S₀ + K̃ᵀ U.
  const int64_t gw = std::max<int64_t>(geo.decay_dim, 1);
  const float* gn = ws.gam + (n - 1) * gw;
  for (int64_t c = 0; c < dk; ++c) {
    const float f = gn[gw == 1 ? 0 : c];
    for (int64_t e = 0; e < dv; ++e) ws.s[c * dv + e] *= f;
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < dk; ++c)
      ws.ktil[i * dk + c] = ws.k[i * dk + c] * ws.tail[i * gw + (gw == 1 ? 0 : c)];
  }
  GemmArgs a;
  a.m = dk, a.n = dv, a.k = n;
  a.a = ws.ktil, a.a_rs = 1, a.a_cs = dk;
  a.b = u, a.ldb = dv;
  a.c = ws.s, a.ldc = dv;
  a.accumulate = true;
  SmallGemm(a);
}

// Backward over one chunk: ws.ds holds dS_n on entry and dS₀ on exit; s0 is the chunk's S₀.
// Writes dv, dβ, d log α rows of the chunk; adds the chunk's dq, dk rows to dq_out / dk_out.
void BackwardChunk(const DeltaGeometry& geo, const GatedDeltaOptions& o, const Inputs& in,
                   const GatedDeltaGrads& grads, int64_t b, int64_t h, int64_t t0, int64_t n,
                   const float* s0, const float* gm, const float* tm, const float* pm,
                   const float* u, float* dq_out, int64_t ld_q, float* dk_out, int64_t ld_k,
                   Workspace& ws) {
  const int64_t dk = geo.dk, dv = geo.dv, gd = geo.decay_dim, gw = std::max<int64_t>(gd, 1);
  const bool per_channel = gd == dk && dk > 1;
  const bool delta = o.delta_rule;
  const int64_t ny = delta ? 2 * n : n;
  auto gamma = [&](int64_t i, int64_t c) { return ws.gam[i * gw + (gw == 1 ? 0 : c)]; };
  std::fill(ws.dqh, ws.dqh + n * dk, 0.0f);
  std::fill(ws.dkh, ws.dkh + n * dk, 0.0f);
  std::fill(ws.dgam, ws.dgam + n * gw, 0.0f);
  // Y = [dO; dR] (ny × dv); dO copied so that one leading dimension serves both halves.
  for (int64_t i = 0; i < n; ++i) {
    const float* r = in.dout.row(b, h, t0 + i);
    std::copy(r, r + dv, ws.y + i * dv);
  }
  // K̃ = K ⊙ exp(γ_n − γ).
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < dk; ++c) {
      ws.ktil[i * dk + c] = ws.k[i * dk + c] * ws.tail[i * gw + (gw == 1 ? 0 : c)];
    }
  }
  GemmArgs a;  // dU = Pᵀ dO + K̃ dS_n
  a.m = n, a.n = dv, a.k = n;
  a.a = pm, a.a_rs = 1, a.a_cs = n;
  a.b = ws.y, a.ldb = dv;
  a.c = ws.du, a.ldc = dv;
  detail::UpperTriangularAGemm(a);
  a = GemmArgs{};
  a.m = n, a.n = dv, a.k = dk;
  a.a = ws.ktil, a.a_rs = dk, a.a_cs = 1;
  a.b = ws.ds, a.ldb = dv;
  a.c = ws.du, a.ldc = dv;
  a.accumulate = true;
  SmallGemm(a);
  // dK̃ = U dS_nᵀ.
  detail::TransposeMatrix(ws.ds, dk, dv, dv, ws.dst);
  a = GemmArgs{};
  a.m = n, a.n = dk, a.k = dv;
  a.a = u, a.a_rs = dv, a.a_cs = 1;
  a.b = ws.dst, a.ldb = dk;
  a.c = ws.dktil, a.ldc = dk;
  SmallGemm(a);
  float* dg_last = ws.dgam + (n - 1) * gw;
  for (int64_t i = 0; i < n; ++i) {
    const float* dkt = ws.dktil + i * dk;
    const float* kt = ws.ktil + i * dk;
    float* dkh = ws.dkh + i * dk;
    if (per_channel) {
      const float* tl = ws.tail + i * dk;
      float* dg = ws.dgam + i * dk;
      for (int64_t c = 0; c < dk; ++c) {
        dkh[c] += dkt[c] * tl[c];
        const float p = dkt[c] * kt[c];
        dg[c] -= p;
        dg_last[c] += p;
      }
    } else {
      const float tl = ws.tail[i];
      for (int64_t c = 0; c < dk; ++c) dkh[c] += dkt[c] * tl;
      if (gd > 0) {
        const float p = detail::DotProduct(dkt, kt, dk);
        ws.dgam[i] -= p;
        dg_last[0] += p;
      }
    }
  }
  if (gd > 0) {  // S_n's diag(Γ_n) S₀ term
    for (int64_t c = 0; c < dk; ++c) {
      dg_last[per_channel ? c : 0] +=
          gamma(n - 1, c) * detail::DotProduct(ws.ds + c * dv, s0 + c * dv, dv);
    }
  }
  float* dr = ws.y + n * dv;
  if (delta) {
    a = GemmArgs{};  // dR = Tᵀ dU
    a.m = n, a.n = dv, a.k = n;
    a.a = tm, a.a_rs = 1, a.a_cs = n;
    a.b = ws.du, a.ldb = dv;
    a.c = dr, a.ldc = dv;
    detail::UpperTriangularAGemm(a);
  }
  // [dP; −dA] = Y Uᵀ (lower triangles only).
  detail::TransposeMatrix(u, n, dv, dv, ws.ut);
  a = GemmArgs{};
  a.m = n, a.n = n, a.k = dv;
  a.a = ws.y, a.a_rs = dv, a.a_cs = 1;
  a.b = ws.ut, a.ldb = n;
  a.c = ws.dpa, a.ldc = n;
  detail::LowerTriangularCGemm(a);
  if (delta) {
    a.a = dr;
    a.c = ws.dpa + n * n;
    detail::LowerTriangularCGemm(a);
  }
  // Z = Y S₀ᵀ: [d(Q⊙Γ); dR S₀ᵀ].
  detail::TransposeMatrix(s0, dk, dv, dv, ws.s0t);
  a = GemmArgs{};
  a.m = ny, a.n = dk, a.k = dv;
  a.a = ws.y, a.a_rs = dv, a.a_cs = 1;
  a.b = ws.s0t, a.ldb = dk;
  a.c = ws.z, a.ldc = dk;
  SmallGemm(a);
  // X = [Q ⊙ Γ; −β K ⊙ Γ], the (Q⊙Γ) and (K⊙Γ) terms of dq, dk, dγ and dβ.
  for (int64_t i = 0; i < n; ++i) {
    const float* zq = ws.z + i * dk;
    const float* qi = ws.q + i * dk;
    float* xi = ws.x + i * dk;
    float* dq = ws.dqh + i * dk;
    if (per_channel) {
      const float* gi = ws.gam + i * dk;
      float* dg = ws.dgam + i * dk;
      for (int64_t c = 0; c < dk; ++c) {
        xi[c] = qi[c] * gi[c];
        dq[c] += zq[c] * gi[c];
        dg[c] += zq[c] * xi[c];
      }
    } else {
      const float gi = ws.gam[i];
      for (int64_t c = 0; c < dk; ++c) {
        xi[c] = qi[c] * gi;
        dq[c] += zq[c] * gi;
      }
      if (gd > 0) ws.dgam[i] += detail::DotProduct(zq, xi, dk);
    }
  }
  if (delta) {
    for (int64_t i = 0; i < n; ++i) {
      const float bi = ws.beta[i];
      const float* zk = ws.z + (n + i) * dk;
      const float* vi = in.v.row(b, h, t0 + i);
      const float* dri = dr + i * dv;
      float* xk = ws.x + (n + i) * dk;  // −β K ⊙ Γ
      const float* ki = ws.k + i * dk;
      float* dkh = ws.dkh + i * dk;
      float kgz = 0.0f;  // (K⊙Γ)_i · (dR S₀ᵀ)_i
      if (per_channel) {
        const float* gi = ws.gam + i * dk;
        float* dg = ws.dgam + i * dk;
        for (int64_t c = 0; c < dk; ++c) {
          const float kg = ki[c] * gi[c];
          xk[c] = -bi * kg;
          dkh[c] -= bi * zk[c] * gi[c];
          dg[c] += zk[c] * xk[c];
          kgz += kg * zk[c];
        }
      } else {
        const float gi = ws.gam[i];
        for (int64_t c = 0; c < dk; ++c) {
          xk[c] = -bi * ki[c] * gi;
          dkh[c] -= bi * zk[c] * gi;
        }
        kgz = gi * detail::DotProduct(ki, zk, dk);
        if (gd > 0) ws.dgam[i] -= bi * kgz;
      }
      float dbeta = detail::DotProduct(dri, vi, dv) - kgz;
      // dA = −dR Uᵀ (strict lower): Σ_j dA_ij G_ij into dβ; dG = diag(β) dA in place.
      float* dai = ws.dpa + (n + i) * n;
      for (int64_t j = 0; j < i; ++j) {
        const float da = -dai[j];
        dbeta += da * gm[i * n + j];
        dai[j] = bi * da;
      }
      std::fill(dai + i, dai + n, 0.0f);
      grads.dbeta.at(b, h, t0 + i, 0) = dbeta;
      float* dvi = grads.dv.row(b, h, t0 + i);
      for (int64_t e = 0; e < dv; ++e) dvi[e] = bi * dri[e];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      std::copy(ws.du + i * dv, ws.du + (i + 1) * dv, grads.dv.row(b, h, t0 + i));
    }
  }
  for (int64_t i = 0; i < n; ++i) std::fill(ws.dpa + i * n + i + 1, ws.dpa + (i + 1) * n, 0.0f);
  // dS₀ = diag(Γ_n) dS_n + Xᵀ Y.
  for (int64_t c = 0; c < dk; ++c) {
    const float f = gamma(n - 1, c);
    for (int64_t e = 0; e < dv; ++e) ws.ds[c * dv + e] *= f;
  }
  a = GemmArgs{};
  a.m = dk, a.n = dv, a.k = ny;
  a.a = ws.x, a.a_rs = 1, a.a_cs = dk;
  a.b = ws.y, a.ldb = dv;
  a.c = ws.ds, a.ldc = dv;
  a.accumulate = true;
  SmallGemm(a);
  // The decayed Grams: P (q, k, j ≤ i) and G (k, k, j < i).
  DecayedGramBackward(geo, per_channel, ws.q, ws.k, n, /*strict=*/false, ws.dpa, pm, ws.dqh, ws.dkh,
                      ws);
  if (delta) {
    DecayedGramBackward(geo, per_channel, ws.k, ws.k, n, /*strict=*/true, ws.dpa + n * n, gm,
                        ws.dkh, ws.dkh, ws);
  }
  // d log α: suffix sums of dγ inside the chunk.
  if (gd > 0) {
    for (int64_t i = n - 1; i >= 0; --i) {
      float* dst = grads.dlog_alpha.row(b, h, t0 + i);
      for (int64_t c = 0; c < gw; ++c) {
        if (i < n - 1) ws.dgam[i * gw + c] += ws.dgam[(i + 1) * gw + c];
        dst[c] = ws.dgam[i * gw + c];
      }
    }
  }
  const int64_t hq = h / geo.group;
  for (int64_t i = 0; i < n; ++i) {
    NormalizeRowBackward(in.q.row(b, hq, t0 + i), ws.dqh + i * dk, dk, o.l2_normalize_qk, geo.scale,
                         dq_out + (t0 + i) * ld_q);
    NormalizeRowBackward(in.k.row(b, hq, t0 + i), ws.dkh + i * dk, dk, o.l2_normalize_qk, 1.0f,
                         dk_out + (t0 + i) * ld_k);
  }
}

}  // namespace

double GatedDeltaBackwardFlops(int64_t batch, int64_t num_heads_v, int64_t seqlen,
                               int64_t head_dim_qk, int64_t head_dim_v,
                               const GatedDeltaOptions& o) {
  const double dk = static_cast<double>(head_dim_qk), dv = static_cast<double>(head_dim_v);
  const int64_t ci = std::min(o.chunk_size, seqlen);
  const double c = static_cast<double>(ci);
  double area = 0;  // lower-triangular row blocks, as in GatedDeltaFlops
  for (int64_t i0 = 0; i0 < ci; i0 += kBlock) {
    area += static_cast<double>(std::min(ci, i0 + kBlock) * (std::min(ci, i0 + kBlock) - i0));
  }
  const double tri = area / c;
  // Forward pass: P (tri dk), state update (dk dv); delta rule: G (tri dk), T (c²/6), T V and
  // T K (tri (dv + dk)), W S₀ (dk dv).
  double fwd = tri * dk + dk * dv;
  if (o.delta_rule) fwd += tri * dk + c * c / 6 + tri * (dv + dk) + dk * dv;
  // Reverse pass: K̃ dS and U dSᵀ (2 dk dv), Y S₀ᵀ and Xᵀ Y per row of Y (2 dk dv), Pᵀ dO and
  // dO Uᵀ (2 tri dv: the upper-triangular blocks have the same mean width), the P Gram backward
  // (2 tri dk); with the delta rule Y has 2C rows (2 dk dv more), Tᵀ dU and dR Uᵀ (2 tri dv) and
  // the G Gram backward (2 tri dk).
  double bwd = 4 * dk * dv + 2 * tri * (dk + dv);
  if (o.delta_rule) bwd += 2 * dk * dv + 2 * tri * (dk + dv);
  return 2.0 * static_cast<double>(batch * num_heads_v * seqlen) * (fwd + bwd);
}

void GatedDeltaBackward(TensorView<const float> q, TensorView<const float> k,
                        TensorView<const float> v, TensorView<const float> log_alpha,
                        TensorView<const float> beta, TensorView<const float> initial_state,
                        TensorView<const float> dout, TensorView<const float> dfinal_state,
                        const GatedDeltaGrads& grads, const GatedDeltaOptions& o) {
  if (o.backend == Backend::kReference) {
    ref::GatedDeltaBackward(q, k, v, log_alpha, beta, initial_state, dout, dfinal_state, grads, o);
    return;
  }
  const DeltaGeometry g = detail::CheckDeltaBackwardArgs(
      "GatedDeltaBackward", q, k, v, log_alpha, beta, initial_state, dout, dfinal_state, grads, o);
  const Inputs in{q, k, v, log_alpha, beta, initial_state, dout, dfinal_state};
  const int64_t chunk = std::min(o.chunk_size, g.seqlen_q);
  const int64_t chunks = (g.seqlen_q + chunk - 1) / chunk;
  const int64_t units = g.batch * g.heads;
  const double work = static_cast<double>(units * g.seqlen_q * g.dk * g.dv);
  const int threads =
      work < double{1 << 20}
          ? 1
          : static_cast<int>(std::min<int64_t>(ResolveThreads(o.num_threads), units));
  const bool group_scratch = g.group > 1;
  const int64_t ws_floats = Workspace::Floats(g, chunk, chunks, group_scratch);
  detail::Scratch<float> block(static_cast<size_t>(ws_floats * threads));
  // Value heads of a group each add their dq, dk to a per-head buffer; they are summed after the
  // parallel region in head order, so the result does not depend on the thread count.
  std::vector<float> group_dqk;
  if (group_scratch) group_dqk.assign(static_cast<size_t>(2 * units * g.seqlen_q * g.dk), 0.0f);
#pragma omp parallel num_threads(threads)
  {
    Workspace ws(g, chunk, chunks, group_scratch, block.get() + ws_floats * omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t b = unit / g.heads, h = unit % g.heads, hq = h / g.group;
      const int64_t sd = g.dk * g.dv;
      for (int64_t c = 0; c < g.dk; ++c) {
        for (int64_t e = 0; e < g.dv; ++e) {
          ws.s[c * g.dv + e] = initial_state.empty() ? 0.0f : initial_state.at(b, h, c, e);
        }
      }
      for (int64_t ci = 0; ci < chunks; ++ci) {
        const int64_t t0 = ci * chunk, n = std::min(chunk, g.seqlen_q - t0);
        std::copy(ws.s, ws.s + sd, ws.states + ci * sd);
        LoadQk(g, o, in, b, hq, t0, n, ws);
        ChunkDecays(g, log_alpha, b, h, t0, n, ws);
        ForwardChunk(g, o, in, b, h, t0, n, ws.gbuf + ci * chunk * chunk,
                     ws.tbuf + ci * chunk * chunk, ws.pbuf + ci * chunk * chunk,
                     ws.ubuf + t0 * g.dv, ws);
      }
      for (int64_t c = 0; c < g.dk; ++c) {
        for (int64_t e = 0; e < g.dv; ++e) {
          ws.ds[c * g.dv + e] = dfinal_state.empty() ? 0.0f : dfinal_state.at(b, h, c, e);
        }
      }
      // A group's value heads write dq, dk to their own rows of the scratch; without a group
      // the gradients go straight to the caller's views.
      float *dq_out, *dk_out;
      int64_t ld_q = g.dk, ld_k = g.dk;
      if (group_scratch) {
        dq_out = group_dqk.data() + (2 * unit) * g.seqlen_q * g.dk;
        dk_out = group_dqk.data() + (2 * unit + 1) * g.seqlen_q * g.dk;
      } else {
        dq_out = grads.dq.row(b, hq, 0);
        dk_out = grads.dk.row(b, hq, 0);
        ld_q = grads.dq.stride[2];
        ld_k = grads.dk.stride[2];
      }
      for (int64_t ci = chunks - 1; ci >= 0; --ci) {
        const int64_t t0 = ci * chunk, n = std::min(chunk, g.seqlen_q - t0);
        LoadQk(g, o, in, b, hq, t0, n, ws);
        ChunkDecays(g, log_alpha, b, h, t0, n, ws);
        if (o.delta_rule) {
          for (int64_t i = 0; i < n; ++i) ws.beta[i] = beta.at(b, h, t0 + i, 0);
        }
        BackwardChunk(g, o, in, grads, b, h, t0, n, ws.states + ci * sd,
                      ws.gbuf + ci * chunk * chunk, ws.tbuf + ci * chunk * chunk,
                      ws.pbuf + ci * chunk * chunk, ws.ubuf + t0 * g.dv, dq_out, ld_q, dk_out, ld_k,
                      ws);
      }
      if (!grads.dstate.empty()) {
        for (int64_t c = 0; c < g.dk; ++c) {
          std::copy(ws.ds + c * g.dv, ws.ds + (c + 1) * g.dv, grads.dstate.row(b, h, c));
        }
      }
    }
  }
  if (group_scratch) {
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t hq = 0; hq < g.heads_q; ++hq) {
        for (int64_t t = 0; t < g.seqlen_q; ++t) {
          float* dq = grads.dq.row(b, hq, t);
          float* dkr = grads.dk.row(b, hq, t);
          std::fill(dq, dq + g.dk, 0.0f);
          std::fill(dkr, dkr + g.dk, 0.0f);
          for (int64_t j = 0; j < g.group; ++j) {
            const int64_t unit = b * g.heads + hq * g.group + j;
            const float* sq = group_dqk.data() + ((2 * unit) * g.seqlen_q + t) * g.dk;
            const float* sk = group_dqk.data() + ((2 * unit + 1) * g.seqlen_q + t) * g.dk;
            for (int64_t c = 0; c < g.dk; ++c) {
              dq[c] += sq[c];
              dkr[c] += sk[c];
            }
          }
        }
      }
    }
  }
}

}  // namespace attnkit
