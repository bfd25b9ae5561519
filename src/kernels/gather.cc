// The gather engine's fast attention: exact softmax attention over per-query key lists (DSA).
//
// Work unit: one (batch, kv head, query row), with all group_size query heads that share the kv
// head, so each selected K/V row is read once per group (MLA's absorbed form: once for all 128
// heads). Three passes over the list, in chunks of kChunk keys: logits (Q·Kᵀ, 2 keys × 4 heads
// register tile), softmax, then P·V (4 keys per pass over each accumulator row). bf16 K/V are
// widened chunk by chunk into a small f32 buffer. Memory traffic: each selected row once per
// unit; the group's q rows and accumulators stay in L2 (128 × 576 f32 = 288 KiB for MLA).
// When there are fewer units than threads (decode), the group's heads are split across threads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gather.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Gathered rows are scattered in memory: fetch each row a few keys ahead of its use.
constexpr int64_t kAhead = 6;
HWY_INLINE void PrefetchRow(const float* row, int64_t dim) {
  for (int64_t x = 0; x < dim; x += 16) __builtin_prefetch(row + x);
}

// scores[g * ld + j] = scale · dot(q + g * q_stride, krows[j]) for g < num_heads, j < n.
template <int kHeads, int kKeys>
HWY_INLINE void DotTile(const float* q, int64_t q_stride, const float* const* krows, int64_t dim,
                        float scale, float* scores, int64_t ld) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  decltype(hn::Zero(d)) acc[kHeads][kKeys];
  for (int h = 0; h < kHeads; ++h) {
    for (int k = 0; k < kKeys; ++k) acc[h][k] = hn::Zero(d);
  }
  int64_t x = 0;
  for (; x + lanes <= dim; x += lanes) {
    decltype(hn::Zero(d)) kv[kKeys];
    for (int k = 0; k < kKeys; ++k) kv[k] = hn::LoadU(d, krows[k] + x);
    for (int h = 0; h < kHeads; ++h) {
      const auto qv = hn::LoadU(d, q + h * q_stride + x);
      for (int k = 0; k < kKeys; ++k) acc[h][k] = hn::MulAdd(qv, kv[k], acc[h][k]);
    }
  }
  for (int h = 0; h < kHeads; ++h) {
    for (int k = 0; k < kKeys; ++k) {
      float s = hn::GetLane(hn::SumOfLanes(d, acc[h][k]));
      for (int64_t t = x; t < dim; ++t) s += q[h * q_stride + t] * krows[k][t];
      scores[h * ld + k] = s * scale;
    }
  }
}

void Logits(const float* q, int64_t q_stride, int64_t num_heads, const float* const* krows,
            int64_t n, int64_t dim, float scale, float* scores, int64_t ld) {
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    if (j + kAhead + 1 < n) {
      PrefetchRow(krows[j + kAhead], dim);
      PrefetchRow(krows[j + kAhead + 1], dim);
    }
    int64_t h = 0;
    for (; h + 4 <= num_heads; h += 4) {
      DotTile<4, 2>(q + h * q_stride, q_stride, krows + j, dim, scale, scores + h * ld + j, ld);
    }
    for (; h < num_heads; ++h) {
      DotTile<1, 2>(q + h * q_stride, q_stride, krows + j, dim, scale, scores + h * ld + j, ld);
    }
  }
  for (; j < n; ++j) {
    for (int64_t h = 0; h < num_heads; ++h) {
      DotTile<1, 1>(q + h * q_stride, q_stride, krows + j, dim, scale, scores + h * ld + j, ld);
    }
  }
}

// acc[g * dim + x] += Σ_j p[g * ld + j] · vrows[j][x].
void Accumulate(const float* p, int64_t ld, int64_t num_heads, const float* const* vrows, int64_t n,
                int64_t dim, float* acc) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int64_t a = j + kAhead; a < std::min(n, j + kAhead + 4); ++a) PrefetchRow(vrows[a], dim);
    const float *v0 = vrows[j], *v1 = vrows[j + 1], *v2 = vrows[j + 2], *v3 = vrows[j + 3];
    for (int64_t g = 0; g < num_heads; ++g) {
      const float* pg = p + g * ld + j;
      if (pg[0] == 0.0f && pg[1] == 0.0f && pg[2] == 0.0f && pg[3] == 0.0f) continue;
      const auto p0 = hn::Set(d, pg[0]), p1 = hn::Set(d, pg[1]), p2 = hn::Set(d, pg[2]),
                 p3 = hn::Set(d, pg[3]);
      float* a = acc + g * dim;
      int64_t x = 0;
      for (; x + lanes <= dim; x += lanes) {
        auto s = hn::LoadU(d, a + x);
        s = hn::MulAdd(p0, hn::LoadU(d, v0 + x), s);
        s = hn::MulAdd(p1, hn::LoadU(d, v1 + x), s);
        s = hn::MulAdd(p2, hn::LoadU(d, v2 + x), s);
        s = hn::MulAdd(p3, hn::LoadU(d, v3 + x), s);
        hn::StoreU(s, d, a + x);
      }
      for (; x < dim; ++x) a[x] += pg[0] * v0[x] + pg[1] * v1[x] + pg[2] * v2[x] + pg[3] * v3[x];
    }
  }
  for (; j < n; ++j) {
    for (int64_t g = 0; g < num_heads; ++g) {
      const float pj = p[g * ld + j];
      if (pj == 0.0f) continue;
      const auto pv = hn::Set(d, pj);
      float* a = acc + g * dim;
      int64_t x = 0;
      for (; x + lanes <= dim; x += lanes) {
        hn::StoreU(hn::MulAdd(pv, hn::LoadU(d, vrows[j] + x), hn::LoadU(d, a + x)), d, a + x);
      }
      for (; x < dim; ++x) a[x] += pj * vrows[j][x];
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/gather.h"
#include "kernels/dense_common.h"

namespace attnkit {
HWY_EXPORT(Logits);
HWY_EXPORT(Accumulate);

namespace {

constexpr int64_t kChunk = 64;  // bf16 rows widened per chunk

// Pointers to f32 rows of the chunk's keys (widened into buf when KV is bf16).
template <typename KV>
void ChunkRows(TensorView<const KV> t, int64_t b, int64_t h, const int32_t* sel, int64_t n,
               std::vector<float>& buf, std::vector<const float*>& rows) {
  const int64_t dim = t.dim();
  for (int64_t j = 0; j < n; ++j) {
    const KV* r = t.row(b, h, sel[j]);
    if (!std::is_same_v<KV, float> && j + 4 < n) {  // f32 rows are prefetched by the kernels
      const KV* ahead = t.row(b, h, sel[j + 4]);
      for (int64_t x = 0; x < dim; x += 64 / static_cast<int64_t>(sizeof(KV))) {
        __builtin_prefetch(ahead + x);
      }
    }
    if constexpr (std::is_same_v<KV, float>) {
      rows[j] = r;
    } else {
      float* dst = buf.data() + j * dim;
      for (int64_t x = 0; x < dim; ++x) dst[x] = ToFloat(r[x]);
      rows[j] = dst;
    }
  }
}

template <typename KV>
void FastGather(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                TensorView<const int32_t> idx, TensorView<float> out, const GatherOptions& o,
                TensorView<float> lse) {
  const int64_t batch = q.batch(), hkv = k.heads(), group = q.heads() / hkv, sq = q.tokens();
  const int64_t dk = q.dim(), dv = v.dim(), top_k = idx.dim();
  const float scale = o.scale != 0.0f ? o.scale : 1.0f / std::sqrt(static_cast<float>(dk));
  const int threads = ResolveThreads(o.num_threads);
  // Split the group's heads when there are too few (batch, kv head, query) units for the threads.
  const int64_t base_units = batch * hkv * sq;
  int64_t head_split = 1;
  while (base_units * head_split < threads && head_split < group) head_split *= 2;
  head_split = std::min(head_split, group);
  const int64_t heads_per = (group + head_split - 1) / head_split;
  const int64_t units = base_units * head_split;
  // The query heads of a group must be equally spaced to be read as one strided block.
  const int64_t q_stride = q.stride[1];

#pragma omp parallel num_threads(threads)
  {
    std::vector<int32_t> sel(static_cast<size_t>(top_k));
    std::vector<float> scores(static_cast<size_t>(heads_per * top_k));
    std::vector<float> acc(static_cast<size_t>(heads_per * dv));
    std::vector<float> buf(
        std::is_same_v<KV, float> ? 0 : static_cast<size_t>(kChunk * std::max(dk, dv)));
    // f32: one pointer per selected row (no copy); bf16: rows of the current widened chunk.
    constexpr bool kF32 = std::is_same_v<KV, float>;
    const int64_t chunk = kF32 ? top_k : kChunk;
    std::vector<const float*> rows(static_cast<size_t>(chunk));
    std::vector<float> mx(static_cast<size_t>(heads_per)), denom(static_cast<size_t>(heads_per));
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t part = u % head_split;
      const int64_t i = (u / head_split) % sq;
      const int64_t hk = (u / (head_split * sq)) % hkv;
      const int64_t b = u / (head_split * sq * hkv);
      const int64_t g0 = part * heads_per, g1 = std::min(group, g0 + heads_per);
      if (g0 >= g1) continue;
      const int64_t nh = g1 - g0, h0 = hk * group + g0;
      const int32_t* raw = idx.row(b, idx.heads() == 1 ? 0 : hk, i);
      int64_t n = 0;
      for (int64_t j = 0; j < top_k; ++j) {
        if (raw[j] >= 0) sel[n++] = raw[j];
      }
      if (n == 0) {
        for (int64_t h = h0; h < h0 + nh; ++h) {
          std::fill(out.row(b, h, i), out.row(b, h, i) + dv, 0.0f);
          if (!lse.empty()) lse.at(b, h, i, 0) = detail::kNegInf;
        }
        continue;
      }
      const float* qbase = q.row(b, h0, i);
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t nc = std::min(chunk, n - c);
        ChunkRows(k, b, hk, sel.data() + c, nc, buf, rows);
        HWY_DYNAMIC_DISPATCH(Logits)
        (qbase, q_stride, nh, rows.data(), nc, dk, scale, scores.data() + c, top_k);
      }
      for (int64_t g = 0; g < nh; ++g) {
        float* s = scores.data() + g * top_k;
        float m = detail::kNegInf;
        for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
        float l = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          s[j] = std::exp(s[j] - m);
          l += s[j];
        }
        mx[g] = m;
        denom[g] = l;
      }
      std::fill(acc.begin(), acc.begin() + nh * dv, 0.0f);
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t nc = std::min(chunk, n - c);
        ChunkRows(v, b, hk, sel.data() + c, nc, buf, rows);
        HWY_DYNAMIC_DISPATCH(Accumulate)
        (scores.data() + c, top_k, nh, rows.data(), nc, dv, acc.data());
      }
      for (int64_t g = 0; g < nh; ++g) {
        float* orow = out.row(b, h0 + g, i);
        const float inv = 1.0f / denom[g];
        for (int64_t x = 0; x < dv; ++x) orow[x] = acc[g * dv + x] * inv;
        if (!lse.empty()) lse.at(b, h0 + g, i, 0) = mx[g] + std::log(denom[g]);
      }
    }
  }
}

template <typename KV>
void Dispatch(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
              TensorView<const int32_t> idx, TensorView<float> out, const GatherOptions& o,
              TensorView<float> lse) {
  if (o.backend == Backend::kReference) {
    ref::GatherForward(q, k, v, idx, out, o, lse);
    return;
  }
  detail::CheckGatherArgs("GatherForward", q, k, v, idx, out, lse, o);
  FastGather(q, k, v, idx, out, o, lse);
}

}  // namespace

void GatherForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<const int32_t> indices, TensorView<float> out,
                   const GatherOptions& options, TensorView<float> lse) {
  Dispatch(q, k, v, indices, out, options, lse);
}
void GatherForward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                   TensorView<const int32_t> indices, TensorView<float> out,
                   const GatherOptions& options, TensorView<float> lse) {
  Dispatch(q, k, v, indices, out, options, lse);
}

}  // namespace attnkit
#endif  // HWY_ONCE
