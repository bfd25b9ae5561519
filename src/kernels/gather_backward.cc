// The gather engine's fast backward (DSA): gathered-attention gradients, the indexer's target
// distribution and the indexer's KL gradients, with Highway run-time dispatch.
//
// No float atomics, and the same bits for any thread count: every sum has one owner that adds its
// terms in a fixed order.
//  * dq (and the indexer's dq_index, dweights): one unit per (batch, kv head, query) with all
//    heads of the group, over the query's own list of keys (each K/V row read once per group).
//  * dk, dv (and dk_index): the selection is inverted once per call (for each key, the queries
//    that selected it, in ascending order: 4 bytes per selected pair); one unit per chunk of keys
//    recomputes each pair's probability and adds the pair's terms in that order.
// Each pair's logit is recomputed in both passes by the same dot product, so both see the same P.
// Memory traffic: like the forward, gathered rows are scattered (no tile reuse) and the work per
// pair is a handful of dot products and axpys of head_dim; the group shares each row.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gather_backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include "hwy/highway.h"
// clang-format on

#ifndef ATTNKIT_GATHER_BACKWARD_CC_ONCE
#define ATTNKIT_GATHER_BACKWARD_CC_ONCE
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/gather_backward.h"
#include "kernels/backward_common.h"
#include "kernels/dense_common.h"

namespace attnkit::detail {

// For each (batch, list head, key): the query rows that selected it, ascending (CSR).
struct Inverted {
  int64_t lists = 0, seqlen_kv = 0;
  std::vector<int64_t> off;   // [batch · list heads · seqlen_kv + 1]
  std::vector<int32_t> rows;  // query rows

  Inverted(TensorView<const int32_t> idx, int64_t skv) : lists(idx.heads()), seqlen_kv(skv) {
    const int64_t n = idx.batch() * lists * skv;
    off.assign(static_cast<size_t>(n) + 1, 0);
    for (int64_t b = 0; b < idx.batch(); ++b) {
      for (int64_t l = 0; l < lists; ++l) {
        for (int64_t i = 0; i < idx.tokens(); ++i) {
          const int32_t* r = idx.row(b, l, i);
          for (int64_t j = 0; j < idx.dim(); ++j) {
            if (r[j] >= 0) ++off[static_cast<size_t>((b * lists + l) * skv + r[j]) + 1];
          }
        }
      }
    }
    for (size_t x = 1; x < off.size(); ++x) off[x] += off[x - 1];
    rows.resize(static_cast<size_t>(off.back()));
    std::vector<int64_t> fill(off.begin(), off.end() - 1);
    for (int64_t b = 0; b < idx.batch(); ++b) {
      for (int64_t l = 0; l < lists; ++l) {
        for (int64_t i = 0; i < idx.tokens(); ++i) {
          const int32_t* r = idx.row(b, l, i);
          for (int64_t j = 0; j < idx.dim(); ++j) {
            if (r[j] < 0) continue;
            const size_t key = static_cast<size_t>((b * lists + l) * skv + r[j]);
            rows[static_cast<size_t>(fill[key]++)] = static_cast<int32_t>(i);
          }
        }
      }
    }
  }
  // [begin, end) of rows for (batch b, list l, key s).
  std::pair<int64_t, int64_t> Range(int64_t b, int64_t l, int64_t s) const {
    const size_t x = static_cast<size_t>((b * lists + l) * seqlen_kv + s);
    return {off[x], off[x + 1]};
  }
};

template <typename KV>
struct GatherBwdJob {
  TensorView<const float> q;
  TensorView<const KV> k, v;
  TensorView<const int32_t> idx;
  TensorView<const float> dout;
  GatherGrads grads;
  const Inverted* inv;
  const float* lse;   // [batch · heads_q · seqlen_q], +inf where the saved lse is −inf
  const float* dsum;  // D = rowsum(dO ∘ O)
  float scale;
  int threads;
};

struct IndexerKlJob {
  TensorView<const float> qi, w, ki;
  TensorView<const int32_t> idx;
  TensorView<const float> target;
  IndexerGrads grads;
  const Inverted* inv;
  float* g;        // [batch · seqlen_q · top_k]: ∂L/∂I per selected slot (written by pass 1)
  double* losses;  // [batch · seqlen_q]
  int threads;
};

template <typename KV>
struct TargetJob {
  TensorView<const float> q;
  TensorView<const KV> k;
  TensorView<const int32_t> idx;
  TensorView<const float> lse;
  TensorView<float> target;
  float scale;
  int threads;
};

}  // namespace attnkit::detail
#endif  // ATTNKIT_GATHER_BACKWARD_CC_ONCE

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

HWY_INLINE VF LoadAny(DF df, const float* p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadAny(DF df, const bf16* p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dbf;
  return hn::PromoteTo(df, hn::LoadU(dbf, reinterpret_cast<const hwy::bfloat16_t*>(p)));
}

// Σ a[d] · b[d] in f32 (vector partial sums, then the tail).
template <typename T>
HWY_INLINE float Dot(const float* a, const T* b, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  int64_t d = 0;
  for (; d + 2 * N <= n; d += 2 * N) {
    acc0 = hn::MulAdd(hn::LoadU(df, a + d), LoadAny(df, b + d), acc0);
    acc1 = hn::MulAdd(hn::LoadU(df, a + d + N), LoadAny(df, b + d + N), acc1);
  }
  for (; d + N <= n; d += N) acc0 = hn::MulAdd(hn::LoadU(df, a + d), LoadAny(df, b + d), acc0);
  float total = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
  for (; d < n; ++d) total += a[d] * ToFloat(b[d]);
  return total;
}

// y[d] += a · x[d].
template <typename T>
HWY_INLINE void Axpy(float a, const T* x, float* y, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF va = hn::Set(df, a);
  int64_t d = 0;
  for (; d + N <= n; d += N)
    hn::StoreU(hn::MulAdd(va, LoadAny(df, x + d), hn::LoadU(df, y + d)), df, y + d);
  for (; d < n; ++d) y[d] += a * ToFloat(x[d]);
}

// One (pair, head) of the gathered attention: P and dS (with the scale folded in).
struct PairGrad {
  float p, ds;
};
template <typename KV>
HWY_INLINE PairGrad Pair(const detail::GatherBwdJob<KV>& j, const float* qr, const float* dor,
                         const KV* kr, const KV* vr, float lse, float dsum) {
  const float p = std::exp(j.scale * Dot(qr, kr, j.q.dim()) - lse);
  return {p, p * (Dot(dor, vr, j.v.dim()) - dsum) * j.scale};
}

template <typename KV>
void GatherBackwardImpl(const detail::GatherBwdJob<KV>& j) {
  const int64_t batch = j.q.batch(), hq = j.q.heads(), hkv = j.k.heads(), sq = j.q.tokens();
  const int64_t skv = j.k.tokens(), group = hq / hkv, dk = j.q.dim(), dv = j.v.dim();
  const int64_t top = j.idx.dim();
  constexpr int64_t kKeyChunk = 16;
  const int64_t key_chunks = (skv + kKeyChunk - 1) / kKeyChunk;
  const int threads = std::max(1, j.threads);
  std::vector<std::vector<float>> ws(static_cast<size_t>(threads));
  for (auto& w : ws) w.resize(static_cast<size_t>(std::max(group * dk, dk + dv)));
  const auto row = [&](int64_t b, int64_t h, int64_t i) {
    return static_cast<size_t>((b * hq + h) * sq + i);
  };
#pragma omp parallel num_threads(threads)
  {
    std::vector<float>& w = ws[static_cast<size_t>(omp_get_thread_num())];
    // dq: per (batch, kv head, query), all heads of the group, keys in list order.
#pragma omp for schedule(dynamic, 16) nowait
    for (int64_t u = 0; u < batch * hkv * sq; ++u) {
      const int64_t b = u / (hkv * sq), hk = (u / sq) % hkv, i = u % sq;
      const int32_t* sel = j.idx.row(b, j.idx.heads() == 1 ? 0 : hk, i);
      float* acc = w.data();
      std::fill(acc, acc + group * dk, 0.0f);
      for (int64_t s = 0; s < top; ++s) {
        if (sel[s] < 0) continue;
        const KV* kr = j.k.row(b, hk, sel[s]);
        const KV* vr = j.v.row(b, hk, sel[s]);
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = hk * group + g;
          const PairGrad pg = Pair(j, j.q.row(b, h, i), j.dout.row(b, h, i), kr, vr,
                                   j.lse[row(b, h, i)], j.dsum[row(b, h, i)]);
          Axpy(pg.ds, kr, acc + g * dk, dk);
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        std::copy(acc + g * dk, acc + (g + 1) * dk, j.grads.dq.row(b, hk * group + g, i));
      }
    }
    // dk, dv: per chunk of keys, each key over the queries that selected it, in order.
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < batch * hkv * key_chunks; ++u) {
      const int64_t b = u / (hkv * key_chunks), hk = (u / key_chunks) % hkv;
      const int64_t s0 = (u % key_chunks) * kKeyChunk, s1 = std::min(skv, s0 + kKeyChunk);
      float* gk = w.data();
      float* gv = gk + dk;
      for (int64_t s = s0; s < s1; ++s) {
        std::fill(gk, gk + dk + dv, 0.0f);
        const KV* kr = j.k.row(b, hk, s);
        const KV* vr = j.v.row(b, hk, s);
        const auto [r0, r1] = j.inv->Range(b, j.idx.heads() == 1 ? 0 : hk, s);
        for (int64_t e = r0; e < r1; ++e) {
          const int64_t i = j.inv->rows[static_cast<size_t>(e)];
          for (int64_t g = 0; g < group; ++g) {
            const int64_t h = hk * group + g;
            const float* qr = j.q.row(b, h, i);
            const float* dor = j.dout.row(b, h, i);
            const PairGrad pg = Pair(j, qr, dor, kr, vr, j.lse[row(b, h, i)], j.dsum[row(b, h, i)]);
            Axpy(pg.ds, qr, gk, dk);
            Axpy(pg.p, dor, gv, dv);
          }
        }
        std::copy(gk, gk + dk, j.grads.dk.row(b, hk, s));
        std::copy(gv, gv + dv, j.grads.dv.row(b, hk, s));
      }
    }
  }
}

template <typename KV>
void TargetImpl(const detail::TargetJob<KV>& j) {
  const int64_t batch = j.q.batch(), hq = j.q.heads(), sq = j.q.tokens(), top = j.idx.dim();
  const int64_t group = hq / j.k.heads(), dk = j.q.dim();
#pragma omp parallel num_threads(std::max(1, j.threads))
  {
    std::vector<double> p(static_cast<size_t>(top));
#pragma omp for schedule(dynamic, 16)
    for (int64_t u = 0; u < batch * sq; ++u) {
      const int64_t b = u / sq, i = u % sq;
      const int32_t* sel = j.idx.row(b, 0, i);
      std::fill(p.begin(), p.end(), 0.0);
      double total = 0;
      for (int64_t h = 0; h < hq; ++h) {
        const float l = j.lse.at(b, h, i, 0);
        if (l == detail::kNegInf) continue;
        for (int64_t s = 0; s < top; ++s) {
          if (sel[s] < 0) continue;
          const double e =
              std::exp(j.scale * Dot(j.q.row(b, h, i), j.k.row(b, h / group, sel[s]), dk) - l);
          p[static_cast<size_t>(s)] += e;
          total += e;
        }
      }
      float* t = j.target.row(b, 0, i);
      for (int64_t s = 0; s < top; ++s) {
        t[s] = total > 0 ? static_cast<float>(p[static_cast<size_t>(s)] / total) : 0.0f;
      }
    }
  }
}

void IndexerKlImpl(const detail::IndexerKlJob& j) {
  const int64_t batch = j.qi.batch(), hi = j.qi.heads(), sq = j.qi.tokens();
  const int64_t skv = j.ki.tokens(), dim = j.qi.dim(), top = j.idx.dim();
  constexpr int64_t kKeyChunk = 16;
  const int64_t key_chunks = (skv + kKeyChunk - 1) / kKeyChunk;
  const int threads = std::max(1, j.threads);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> dots(static_cast<size_t>(hi * top)), acc(static_cast<size_t>(hi * dim));
    std::vector<double> score(static_cast<size_t>(top));
    // Pass 1, per query: I(t, s), the row's KL, ∂L/∂I, dweights and dq_index.
#pragma omp for schedule(dynamic, 16)
    for (int64_t u = 0; u < batch * sq; ++u) {
      const int64_t b = u / sq, i = u % sq;
      const int32_t* sel = j.idx.row(b, 0, i);
      const float* p = j.target.row(b, 0, i);
      float* g = j.g + u * top;
      double mx = -std::numeric_limits<double>::infinity(), psum = 0;
      for (int64_t s = 0; s < top; ++s) {
        g[s] = 0.0f;
        if (sel[s] < 0) continue;
        double total = 0;
        for (int64_t h = 0; h < hi; ++h) {
          const float d = Dot(j.qi.row(b, h, i), j.ki.row(b, 0, sel[s]), dim);
          dots[static_cast<size_t>(h * top + s)] = d;
          total += double{j.w.at(b, 0, i, h)} * std::max(d, 0.0f);
        }
        score[static_cast<size_t>(s)] = total;
        mx = std::max(mx, total);
        psum += p[s];
      }
      double loss = 0;
      std::fill(acc.begin(), acc.end(), 0.0f);
      float* dw = j.grads.dweights.row(b, 0, i);
      std::fill(dw, dw + hi, 0.0f);
      if (mx != -std::numeric_limits<double>::infinity()) {
        double denom = 0;
        for (int64_t s = 0; s < top; ++s) {
          if (sel[s] >= 0) denom += std::exp(score[static_cast<size_t>(s)] - mx);
        }
        const double log_denom = mx + std::log(denom);
        for (int64_t s = 0; s < top; ++s) {
          if (sel[s] < 0) continue;
          const double logq = score[static_cast<size_t>(s)] - log_denom;
          if (p[s] > 0) loss += double{p[s]} * (std::log(double{p[s]}) - logq);
          g[s] = static_cast<float>(std::exp(logq) * psum - p[s]);
          const float* kr = j.ki.row(b, 0, sel[s]);
          for (int64_t h = 0; h < hi; ++h) {
            const float d = dots[static_cast<size_t>(h * top + s)];
            if (d <= 0.0f) continue;
            dw[h] += g[s] * d;
            Axpy(g[s] * j.w.at(b, 0, i, h), kr, acc.data() + h * dim, dim);
          }
        }
      }
      j.losses[u] = loss;
      for (int64_t h = 0; h < hi; ++h) {
        std::copy(acc.data() + h * dim, acc.data() + (h + 1) * dim, j.grads.dq_index.row(b, h, i));
      }
    }  // barrier: pass 2 reads every row's ∂L/∂I
       // Pass 2, per chunk of keys: dk_index over the queries that selected each key, in order.
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < batch * key_chunks; ++u) {
      const int64_t b = u / key_chunks, s0 = (u % key_chunks) * kKeyChunk;
      for (int64_t s = s0; s < std::min(skv, s0 + kKeyChunk); ++s) {
        float* gk = acc.data();
        std::fill(gk, gk + dim, 0.0f);
        const float* kr = j.ki.row(b, 0, s);
        const auto [r0, r1] = j.inv->Range(b, 0, s);
        for (int64_t e = r0; e < r1; ++e) {
          const int64_t i = j.inv->rows[static_cast<size_t>(e)];
          const int32_t* sel = j.idx.row(b, 0, i);
          const int64_t slot = std::find(sel, sel + top, static_cast<int32_t>(s)) - sel;
          const float gs = j.g[(b * sq + i) * top + slot];
          for (int64_t h = 0; h < hi; ++h) {
            const float* qr = j.qi.row(b, h, i);
            if (Dot(qr, kr, dim) <= 0.0f) continue;
            Axpy(gs * j.w.at(b, 0, i, h), qr, gk, dim);
          }
        }
        std::copy(gk, gk + dim, j.grads.dk_index.row(b, 0, s));
      }
    }
  }
}

}  // namespace

void GatherBwdF32(const detail::GatherBwdJob<float>& j) { GatherBackwardImpl(j); }
void GatherBwdBf16(const detail::GatherBwdJob<bf16>& j) { GatherBackwardImpl(j); }
void TargetF32(const detail::TargetJob<float>& j) { TargetImpl(j); }
void TargetBf16(const detail::TargetJob<bf16>& j) { TargetImpl(j); }
void IndexerKl(const detail::IndexerKlJob& j) { IndexerKlImpl(j); }
float RowDotF32(const float* a, const float* b, int64_t n) { return Dot(a, b, n); }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace {
HWY_EXPORT(GatherBwdF32);
HWY_EXPORT(GatherBwdBf16);
HWY_EXPORT(TargetF32);
HWY_EXPORT(TargetBf16);
HWY_EXPORT(IndexerKl);
HWY_EXPORT(RowDotF32);

void Launch(const detail::GatherBwdJob<float>& j) { HWY_DYNAMIC_DISPATCH(GatherBwdF32)(j); }
void Launch(const detail::GatherBwdJob<bf16>& j) { HWY_DYNAMIC_DISPATCH(GatherBwdBf16)(j); }
void Launch(const detail::TargetJob<float>& j) { HWY_DYNAMIC_DISPATCH(TargetF32)(j); }
void Launch(const detail::TargetJob<bf16>& j) { HWY_DYNAMIC_DISPATCH(TargetBf16)(j); }

float Scale(std::optional<float> scale, int64_t dk) {
  return scale ? *scale : 1.0f / std::sqrt(static_cast<float>(dk));
}

template <typename KV>
void DispatchGather(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                    TensorView<const int32_t> idx, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& o) {
  if (o.backend == Backend::kReference) {
    ref::GatherBackward(q, k, v, idx, out, lse, dout, grads, o);
    return;
  }
  detail::CheckGatherBackwardArgs("GatherBackward", q, k, v, idx, out, lse, dout, grads, o);
  const int threads = ResolveThreads(o.num_threads);
  const int64_t hq = q.heads(), sq = q.tokens();
  std::vector<float> lse_buf(static_cast<size_t>(q.batch() * hq * sq)), dsum(lse_buf.size());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t bh = 0; bh < q.batch() * hq; ++bh) {
    for (int64_t i = 0; i < sq; ++i) {
      const float l = lse.at(bh / hq, bh % hq, i, 0);
      const size_t r = static_cast<size_t>(bh * sq + i);
      lse_buf[r] = l == detail::kNegInf ? std::numeric_limits<float>::infinity() : l;
      dsum[r] = HWY_DYNAMIC_DISPATCH(RowDotF32)(dout.row(bh / hq, bh % hq, i),
                                                out.row(bh / hq, bh % hq, i), v.dim());
    }
  }
  const detail::Inverted inv(idx, k.tokens());
  const detail::GatherBwdJob<KV> job{
      q,      k, v, idx, dout, grads, &inv, lse_buf.data(), dsum.data(), Scale(o.scale, q.dim()),
      threads};
  Launch(job);
}

template <typename KV>
void DispatchTarget(TensorView<const float> q, TensorView<const KV> k,
                    TensorView<const int32_t> idx, TensorView<const float> lse,
                    TensorView<float> target, const GatherOptions& o) {
  if (o.backend == Backend::kReference) {
    ref::IndexerTarget(q, k, idx, lse, target, o);
    return;
  }
  detail::CheckIndexerTargetArgs("IndexerTarget", q, k, idx, lse, target, o);
  Launch(detail::TargetJob<KV>{q, k, idx, lse, target, Scale(o.scale, q.dim()),
                               ResolveThreads(o.num_threads)});
}

}  // namespace

void GatherBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options) {
  DispatchGather(q, k, v, indices, out, lse, dout, grads, options);
}
void GatherBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options) {
  DispatchGather(q, k, v, indices, out, lse, dout, grads, options);
}
void IndexerTarget(TensorView<const float> q, TensorView<const float> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options) {
  DispatchTarget(q, k, indices, lse, target, options);
}
void IndexerTarget(TensorView<const float> q, TensorView<const bf16> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options) {
  DispatchTarget(q, k, indices, lse, target, options);
}

double IndexerKlBackward(TensorView<const float> q_index, TensorView<const float> weights,
                         TensorView<const float> k_index, TensorView<const int32_t> indices,
                         TensorView<const float> target, const IndexerGrads& grads,
                         const IndexerOptions& options) {
  if (options.backend == Backend::kReference) {
    return ref::IndexerKlBackward(q_index, weights, k_index, indices, target, grads, options);
  }
  detail::CheckIndexerKlArgs("IndexerKlBackward", q_index, weights, k_index, indices, target, grads,
                             options);
  const detail::Inverted inv(indices, k_index.tokens());
  std::vector<float> g(static_cast<size_t>(indices.batch() * indices.tokens() * indices.dim()));
  std::vector<double> losses(static_cast<size_t>(indices.batch() * indices.tokens()));
  const detail::IndexerKlJob job{
      q_index, weights, k_index,  indices,       target,
      grads,   &inv,    g.data(), losses.data(), ResolveThreads(options.num_threads)};
  HWY_DYNAMIC_DISPATCH(IndexerKl)(job);
  double loss = 0;
  for (const double l : losses) loss += l;  // in row order: independent of the thread count
  return loss;
}

}  // namespace attnkit
#endif  // HWY_ONCE
