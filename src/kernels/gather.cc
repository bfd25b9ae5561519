// The gather engine's fast attention: exact softmax attention over per-query key lists (DSA).
//
// Two work units:
//  * per query (large groups such as MLA's 128 heads on one latent head, decode, bf16 K/V): one
//    (batch, kv head, query row) with all group_size query heads that share the kv head, so each
//    selected K/V row is read once per group. Three passes over the list: logits (Q·Kᵀ, 2 keys ×
//    4 heads register tile), softmax, then P·V (4 keys per pass over each accumulator row). bf16
//    K/V are widened chunk by chunk into a small f32 buffer. The group's q rows and accumulators
//    stay in L2 (128 × 576 f32 = 288 KiB for MLA). With fewer units than threads (decode), the
//    group's heads are split across threads.
//  * per query block (groups of <= 4 heads, f32 K/V, prefill): see BlockGather.
// Memory traffic model: a gathered row is scattered (no tile reuse), so with one head per kv head
// the per-query path reads 2·head_dim·4 bytes per (query, key) pair for 4·head_dim FLOPs —
// latency/bandwidth bound; sharing rows across a query block or across a group's heads is the
// only lever, which is why DSA's design point is MLA's absorbed multi-query form.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gather.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on

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

// out[r] = scale · dot(qrows[r], krow) for r < num_rows (rows of different queries).
void RowsDot(const float* const* qrows, int64_t num_rows, const float* krow, int64_t dim,
             float scale, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t r = 0;
  for (; r + 4 <= num_rows; r += 4) {
    auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    int64_t x = 0;
    for (; x + lanes <= dim; x += lanes) {
      const auto kv = hn::LoadU(d, krow + x);
      a0 = hn::MulAdd(hn::LoadU(d, qrows[r] + x), kv, a0);
      a1 = hn::MulAdd(hn::LoadU(d, qrows[r + 1] + x), kv, a1);
      a2 = hn::MulAdd(hn::LoadU(d, qrows[r + 2] + x), kv, a2);
      a3 = hn::MulAdd(hn::LoadU(d, qrows[r + 3] + x), kv, a3);
    }
    float s[4] = {hn::GetLane(hn::SumOfLanes(d, a0)), hn::GetLane(hn::SumOfLanes(d, a1)),
                  hn::GetLane(hn::SumOfLanes(d, a2)), hn::GetLane(hn::SumOfLanes(d, a3))};
    for (; x < dim; ++x) {
      for (int t = 0; t < 4; ++t) s[t] += qrows[r + t][x] * krow[x];
    }
    for (int t = 0; t < 4; ++t) out[r + t] = s[t] * scale;
  }
  for (; r < num_rows; ++r) {
    auto a = hn::Zero(d);
    int64_t x = 0;
    for (; x + lanes <= dim; x += lanes) {
      a = hn::MulAdd(hn::LoadU(d, qrows[r] + x), hn::LoadU(d, krow + x), a);
    }
    float s = hn::GetLane(hn::SumOfLanes(d, a));
    for (; x < dim; ++x) s += qrows[r][x] * krow[x];
    out[r] = s * scale;
  }
}

// Softmax of s[0, n) over the entries whose bits[u] has `bit` set; the others become 0. Returns
// the max in *max_out (−inf if none) and the sum of exp(s − max) in *sum_out.
void MaskedSoftmax(float* s, const uint16_t* bits, int64_t n, uint32_t bit, float* max_out,
                   float* sum_out) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::Rebind<uint16_t, decltype(d)> d16;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto vbit = hn::Set(du, bit);
  const auto neg_inf = hn::Set(d, -std::numeric_limits<float>::infinity());
  auto vmax = neg_inf;
  int64_t x = 0;
  for (; x + lanes <= n; x += lanes) {
    const auto m =
        hn::RebindMask(d, hn::TestBit(hn::PromoteTo(du, hn::LoadU(d16, bits + x)), vbit));
    vmax = hn::Max(vmax, hn::IfThenElse(m, hn::LoadU(d, s + x), neg_inf));
  }
  float mval = hn::GetLane(hn::MaxOfLanes(d, vmax));
  for (int64_t t = x; t < n; ++t) {
    if (bits[t] & bit) mval = std::max(mval, s[t]);
  }
  *max_out = mval;
  if (mval == -std::numeric_limits<float>::infinity()) {
    *sum_out = 0.0f;
    return;
  }
  const auto vm = hn::Set(d, mval);
  auto vsum = hn::Zero(d);
  x = 0;
  for (; x + lanes <= n; x += lanes) {
    const auto m =
        hn::RebindMask(d, hn::TestBit(hn::PromoteTo(du, hn::LoadU(d16, bits + x)), vbit));
    const auto p = hn::IfThenElseZero(m, hn::Exp(d, hn::Sub(hn::LoadU(d, s + x), vm)));
    hn::StoreU(p, d, s + x);
    vsum = hn::Add(vsum, p);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
  for (int64_t t = x; t < n; ++t) {
    s[t] = (bits[t] & bit) ? std::exp(s[t] - mval) : 0.0f;
    sum += s[t];
  }
  *sum_out = sum;
}

// accrows[r][x] += p[r] · vrow[x] for r < num_rows.
void RowsAxpy(const float* p, float* const* accrows, int64_t num_rows, const float* vrow,
              int64_t dim) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < num_rows; ++r) {
    const auto pv = hn::Set(d, p[r]);
    float* a = accrows[r];
    int64_t x = 0;
    for (; x + lanes <= dim; x += lanes) {
      hn::StoreU(hn::MulAdd(pv, hn::LoadU(d, vrow + x), hn::LoadU(d, a + x)), d, a + x);
    }
    for (; x < dim; ++x) a[x] += p[r] * vrow[x];
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/gather.h"
#include "core/scratch.h"
#include "kernels/dense_common.h"  // kNegInf
#include "kernels/gather_common.h"
#include "kernels/nonfinite.h"

namespace attnkit {
HWY_EXPORT(Logits);
HWY_EXPORT(Accumulate);
HWY_EXPORT(RowsDot);
HWY_EXPORT(RowsAxpy);
HWY_EXPORT(MaskedSoftmax);

namespace {

constexpr int64_t kChunk = 64;  // bf16 rows widened per chunk

// Pointers to f32 rows of the chunk's keys (widened into buf when KV is bf16).
template <typename KV>
void ChunkRows(TensorView<const KV> t, int64_t b, int64_t h, const int32_t* sel, int64_t n,
               float* buf, std::vector<const float*>& rows) {
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
      float* dst = buf + j * dim;
      for (int64_t x = 0; x < dim; ++x) dst[x] = ToFloat(r[x]);
      rows[j] = dst;
    }
  }
}

// Query-block path for small groups (MHA/GQA prefill, f32 K/V): a unit is up to kBlockQueries
// consecutive queries of one (batch, kv head). Their lists are merged into one set of distinct key
// rows with a bit per query, and each selected K/V row is read once per block and used by every
// query that selected it (neighbouring queries' selections overlap), instead of once per query.
// Only member (query, key) pairs are computed, so the arithmetic is the same as the per-query path.
constexpr int64_t kBlockQueries = 16;
// Per-key membership of the block's queries is one bit per query in a uint16_t (mark, bits).
static_assert(kBlockQueries <= 16, "the uint16_t membership masks hold at most 16 queries");

// One thread's scratch for BlockGather, allocated before the parallel region (nothing may throw
// inside it). mark must start all zero (each unit clears what it set); the rest is written before
// it is used (MaskedSoftmax loads a row's entries for keys it did not select and discards them, as
// it did when they held stale values from the thread's previous unit).
struct BlockWorkspace {
  std::vector<uint16_t> mark;
  std::vector<int32_t> keys;
  std::vector<uint16_t> bits;
  detail::Scratch<float> scores, acc;
  std::vector<float> mx, denom, tmp;
  std::vector<const float*> qrows, mq;
  std::vector<float*> accrows, macc;
  std::vector<int64_t> mrow;
  BlockWorkspace(int64_t seqlen_kv, int64_t ld, int64_t max_rows, int64_t dv)
      : mark(static_cast<size_t>(seqlen_kv), 0),
        keys(static_cast<size_t>(ld)),
        bits(static_cast<size_t>(ld)),
        scores(static_cast<size_t>(max_rows * ld)),
        acc(static_cast<size_t>(max_rows * dv)),
        mx(static_cast<size_t>(max_rows)),
        denom(static_cast<size_t>(max_rows)),
        tmp(static_cast<size_t>(max_rows)),
        qrows(static_cast<size_t>(max_rows)),
        mq(static_cast<size_t>(max_rows)),
        accrows(static_cast<size_t>(max_rows)),
        macc(static_cast<size_t>(max_rows)),
        mrow(static_cast<size_t>(max_rows)) {}
};

void BlockGather(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                 TensorView<const int32_t> idx, TensorView<float> out, TensorView<float> lse,
                 float scale, int threads) {
  const int64_t batch = q.batch(), hkv = k.heads(), group = q.heads() / hkv, sq = q.tokens();
  const int64_t dk = q.dim(), dv = v.dim(), top_k = idx.dim();
  const int64_t qb_len = std::max<int64_t>(1, kBlockQueries / group);  // group <= 4 → >= 4
  const int64_t num_qb = (sq + qb_len - 1) / qb_len;
  const int64_t units = batch * hkv * num_qb;
  const int64_t max_rows = qb_len * group, ld = qb_len * top_k;
  const int team = static_cast<int>(std::min<int64_t>(threads, units));
  std::vector<BlockWorkspace> ws;
  ws.reserve(static_cast<size_t>(team));
  for (int t = 0; t < team; ++t) ws.emplace_back(k.tokens(), ld, max_rows, dv);
#pragma omp parallel num_threads(team)
  {
    BlockWorkspace& w = ws[static_cast<size_t>(omp_get_thread_num())];
    std::vector<uint16_t>&mark = w.mark, &bits = w.bits;
    std::vector<int32_t>& keys = w.keys;
    std::vector<float>&mx = w.mx, &denom = w.denom, &tmp = w.tmp;
    std::vector<const float*>&qrows = w.qrows, &mq = w.mq;
    std::vector<float*>&accrows = w.accrows, &macc = w.macc;
    std::vector<int64_t>& mrow = w.mrow;
    float* const scores = w.scores.get();
    float* const acc = w.acc.get();
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t qbi = unit % num_qb, hk = (unit / num_qb) % hkv, b = unit / (num_qb * hkv);
      const int64_t i0 = qbi * qb_len, nq = std::min(qb_len, sq - i0), rows = nq * group;
      for (int64_t r = 0; r < rows; ++r) {  // row r = query (r / group), head (r % group)
        qrows[r] = q.row(b, hk * group + r % group, i0 + r / group);
        accrows[r] = acc + r * dv;
      }
      int64_t nu = 0;  // distinct selected key rows of the block, in first-seen order
      for (int64_t qq = 0; qq < nq; ++qq) {
        const int32_t* raw = idx.row(b, idx.heads() == 1 ? 0 : hk, i0 + qq);
        for (int64_t j = 0; j < top_k; ++j) {
          const int32_t key = raw[j];
          if (key < 0) continue;
          if (mark[key] == 0) keys[nu++] = key;
          mark[key] |= static_cast<uint16_t>(1u << qq);
        }
      }
      for (int64_t u = 0; u < nu; ++u) {
        bits[u] = mark[keys[u]];
        mark[keys[u]] = 0;
      }
      auto members = [&](int64_t u) {  // fills mq/mrow with the (query, head) rows using key u
        int64_t m = 0;
        for (uint32_t bb = bits[u]; bb != 0; bb &= bb - 1) {
          const int64_t qq = __builtin_ctz(bb);
          for (int64_t g = 0; g < group; ++g) mrow[m++] = qq * group + g;
        }
        return m;
      };
      for (int64_t u = 0; u < nu; ++u) {
        if (u + 6 < nu) {
          const float* ahead = k.row(b, hk, keys[u + 6]);
          for (int64_t x = 0; x < dk; x += 16) __builtin_prefetch(ahead + x);
        }
        const int64_t m = members(u);
        for (int64_t t = 0; t < m; ++t) mq[t] = qrows[mrow[t]];
        HWY_DYNAMIC_DISPATCH(RowsDot)(mq.data(), m, k.row(b, hk, keys[u]), dk, scale, tmp.data());
        for (int64_t t = 0; t < m; ++t) scores[mrow[t] * ld + u] = tmp[t];
      }
      for (int64_t r = 0; r < rows; ++r) {  // softmax over the row's own keys
        HWY_DYNAMIC_DISPATCH(MaskedSoftmax)
        (scores + r * ld, bits.data(), nu, 1u << (r / group), &mx[r], &denom[r]);
      }
      std::fill(acc, acc + rows * dv, 0.0f);
      for (int64_t u = 0; u < nu; ++u) {
        if (u + 6 < nu) {
          const float* ahead = v.row(b, hk, keys[u + 6]);
          for (int64_t x = 0; x < dv; x += 16) __builtin_prefetch(ahead + x);
        }
        const int64_t m = members(u);
        for (int64_t t = 0; t < m; ++t) {
          tmp[t] = scores[mrow[t] * ld + u];
          macc[t] = accrows[mrow[t]];
        }
        HWY_DYNAMIC_DISPATCH(RowsAxpy)(tmp.data(), macc.data(), m, v.row(b, hk, keys[u]), dv);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = hk * group + r % group, i = i0 + r / group;
        float* orow = out.row(b, h, i);
        const float inv = denom[r] > 0.0f ? 1.0f / denom[r] : 0.0f;
        for (int64_t x = 0; x < dv; ++x) orow[x] = acc[r * dv + x] * inv;
        if (!lse.empty()) {
          lse.at(b, h, i, 0) = denom[r] > 0.0f ? mx[r] + std::log(denom[r]) : detail::kNegInf;
        }
      }
    }
  }
}

// One thread's scratch for the per-query path, allocated before the parallel region (nothing may
// throw inside it). Everything is written before it is read. f32: one row pointer per selected
// key (no copy, no buf); bf16: rows of the current widened chunk, in buf.
struct GroupWorkspace {
  std::vector<int32_t> sel;
  detail::Scratch<float> scores, acc, buf;
  std::vector<const float*> rows;
  std::vector<float> mx, denom;
  GroupWorkspace(int64_t top_k, int64_t heads_per, int64_t dv, int64_t buf_floats, int64_t chunk)
      : sel(static_cast<size_t>(top_k)),
        scores(static_cast<size_t>(heads_per * top_k)),
        acc(static_cast<size_t>(heads_per * dv)),
        buf(static_cast<size_t>(buf_floats)),
        rows(static_cast<size_t>(chunk)),
        mx(static_cast<size_t>(heads_per)),
        denom(static_cast<size_t>(heads_per)) {}
};

template <typename KV>
void FastGather(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                TensorView<const int32_t> idx, TensorView<float> out, const GatherOptions& o,
                TensorView<float> lse, const detail::Problem& p) {
  const int64_t batch = p.batch, hkv = p.heads_kv, group = p.group, sq = p.seqlen_q;
  const int64_t dk = p.dk, dv = p.dv, top_k = idx.dim();
  const float scale = p.scale;
  const int threads = ResolveThreads(o.num_threads);
  if constexpr (std::is_same_v<KV, float>) {
    if (group <= 4 && sq >= 2 && batch * hkv * sq >= 8 * threads) {
      BlockGather(q, k, v, idx, out, lse, scale, threads);
      return;
    }
  }
  // Split the group's heads when there are too few (batch, kv head, query) units for the threads.
  const int64_t base_units = batch * hkv * sq;
  int64_t head_split = 1;
  while (base_units * head_split < threads && head_split < group) head_split *= 2;
  head_split = std::min(head_split, group);
  const int64_t heads_per = (group + head_split - 1) / head_split;
  const int64_t units = base_units * head_split;
  // The query heads of a group must be equally spaced to be read as one strided block.
  const int64_t q_stride = q.stride[1];

  constexpr bool kF32 = std::is_same_v<KV, float>;
  const int64_t chunk = kF32 ? top_k : kChunk;
  const int team = static_cast<int>(std::min<int64_t>(threads, units));
  std::vector<GroupWorkspace> ws;
  ws.reserve(static_cast<size_t>(team));
  for (int t = 0; t < team; ++t) {
    ws.emplace_back(top_k, heads_per, dv, kF32 ? 0 : kChunk * std::max(dk, dv), chunk);
  }
#pragma omp parallel num_threads(team)
  {
    GroupWorkspace& w = ws[static_cast<size_t>(omp_get_thread_num())];
    std::vector<int32_t>& sel = w.sel;
    std::vector<const float*>& rows = w.rows;
    std::vector<float>&mx = w.mx, &denom = w.denom;
    float* const scores = w.scores.get();
    float* const acc = w.acc.get();
    float* const buf = w.buf.get();
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
        (qbase, q_stride, nh, rows.data(), nc, dk, scale, scores + c, top_k);
      }
      for (int64_t g = 0; g < nh; ++g) {
        float* s = scores + g * top_k;
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
      std::fill(acc, acc + nh * dv, 0.0f);
      for (int64_t c = 0; c < n; c += chunk) {
        const int64_t nc = std::min(chunk, n - c);
        ChunkRows(v, b, hk, sel.data() + c, nc, buf, rows);
        HWY_DYNAMIC_DISPATCH(Accumulate)
        (scores + c, top_k, nh, rows.data(), nc, dv, acc);
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
  const detail::Problem p = detail::CheckGatherArgs("GatherForward", q, k, v, idx, out, lse, o);
  detail::GatherNonFiniteRule(
      p, q, k, v, idx, out, lse,
      [&](TensorView<const float> q2, TensorView<const KV> k2, TensorView<const KV> v2) {
        FastGather(q2, k2, v2, idx, out, o, lse, p);
      });
}

}  // namespace

template <typename KV>
void GatherForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                   TensorView<const int32_t> indices, TensorView<float> out,
                   const GatherOptions& options, TensorView<float> lse) {
  Dispatch<std::remove_const_t<KV>>(q, k, v, indices, out, options, lse);
}
template void GatherForward<float>(TensorView<const float>, TensorView<float>, TensorView<float>,
                                   TensorView<const int32_t>, TensorView<float>,
                                   const GatherOptions&, TensorView<float>);
template void GatherForward<const float>(TensorView<const float>, TensorView<const float>,
                                         TensorView<const float>, TensorView<const int32_t>,
                                         TensorView<float>, const GatherOptions&,
                                         TensorView<float>);
template void GatherForward<bf16>(TensorView<const float>, TensorView<bf16>, TensorView<bf16>,
                                  TensorView<const int32_t>, TensorView<float>,
                                  const GatherOptions&, TensorView<float>);
template void GatherForward<const bf16>(TensorView<const float>, TensorView<const bf16>,
                                        TensorView<const bf16>, TensorView<const int32_t>,
                                        TensorView<float>, const GatherOptions&, TensorView<float>);

}  // namespace attnkit
#endif  // HWY_ONCE
