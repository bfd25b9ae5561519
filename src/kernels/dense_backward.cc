// The dense engine's backward kernel: FlashAttention-2's backward with Highway run-time dispatch,
// deterministic (no float atomics) and independent of the thread count.
//
// Tiles are 64 query rows × 64 keys; all group_size query heads of a kv head are processed
// together (R = group_size · 64 rows per tile), so each K/V tile is read once per group and dK,
// dV come out summed over the group. Two passes share one OpenMP region (the first ends without a
// barrier, so threads flow from one to the other):
//  * pass A, one unit per (batch, kv head, key block): packs Kᵀ and Vᵀ of its block once, then
//    visits the query blocks that see the block in ascending order: S = Q Kᵀ, dP = dO Vᵀ,
//    P = exp(s − lse), dS = P (dP − D) · ∂s, dV += Pᵀ dO, dK += dSᵀ Q. Each unit owns its dK/dV
//    rows, so nothing is shared and the order of every sum is fixed.
//  * pass B, one unit per (batch, kv head, query block): packs Qᵀ and dOᵀ of its rows once, then
//    visits its key blocks in ascending order: Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, dSᵀ, dQ += dS K.
// Pass B recomputes S and dP (7 tile GEMMs in all against FlashAttention-2's 5 with atomics):
// the price of determinism without a seqlen_q × seqlen_kv buffer.
//
// Every GEMM is one register-blocked micro-kernel: C[m][cols] (+)= Σ_p A(m, p) · B_p[cols], with
// A broadcast one scalar at a time from rows given by pointers (stride `aps` along p) and B loaded
// as vectors from rows given by pointers; kRows × kVecs accumulators (6 × 4 on AVX-512: 10 loads
// per 24 FMAs, as in the forward). Packing is only ever done once per unit: Kᵀ / Vᵀ in pass A,
// Qᵀ / dOᵀ in pass B (operands are read in place otherwise; bf16 K/V and head dims that are not
// whole vectors are copied to padded f32 tiles).
//
// The tiles come from the mask exactly as in the forward (Mask::KeyTiles per query block,
// Classify per tile: empty tiles are never touched, full ones run without per-element checks,
// partial ones are masked from FillTile). Pass B lists its unit's tiles itself; pass A runs over
// segments of 64 key blocks, for each of which one thread first lists the query blocks that see
// each key block (KeyTiles restricted to the segment's keys): O(N) memory, not one entry per tile.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/dense_backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on

#ifndef ATTNKIT_DENSE_BACKWARD_CC_ONCE
#define ATTNKIT_DENSE_BACKWARD_CC_ONCE
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense_backward.h"
#include "hwy/aligned_allocator.h"
#include "kernels/backward_common.h"
#include "kernels/dense_common.h"

namespace attnkit::detail {

inline constexpr int64_t kBwdBlock = 64;  // query and key block

struct BwdTile {
  int32_t block;  // the other side's block: a key block for pass B, a query block for pass A
  TileKind kind;  // kFull or kPartial
};

// Appends to *out the non-empty tiles of query block qb among key blocks [kb0, kb1), ascending
// (Mask::KeyTiles restricted to those keys, then Classify), and counts the others in *skipped.
// Throws attnkit::Error when the mask's KeyTiles lists tiles out of range or out of order.
inline void ListTiles(const DenseGeometry& g, const Mask* mask, int64_t qb, int64_t kb0,
                      int64_t kb1, std::vector<int64_t>* scratch, std::vector<BwdTile>* out,
                      int64_t* skipped) {
  const int64_t qp0 = g.q_start + qb * kBwdBlock;
  const int64_t qp1 = g.q_start + std::min(g.seqlen_q, (qb + 1) * kBwdBlock);
  const int64_t k_begin = g.k_start + kb0 * kBwdBlock;
  const int64_t k_end = g.k_start + std::min(g.seqlen_kv, kb1 * kBwdBlock);
  scratch->clear();
  if (mask) {
    mask->KeyTiles(qp0, qp1, k_begin, k_end, kBwdBlock, scratch);
  } else {
    for (int64_t t = 0; t < kb1 - kb0; ++t) scratch->push_back(t);
  }
  const std::vector<int64_t>& tiles = *scratch;
  for (size_t t = 0; t < tiles.size(); ++t) {
    Require(tiles[t] >= 0 && tiles[t] < kb1 - kb0 && (t == 0 || tiles[t] > tiles[t - 1]),
            "DenseBackward: mask ", mask ? mask->Describe() : std::string("none"),
            ": KeyTiles must list key tiles in [0, ", kb1 - kb0,
            ") in increasing order without repeats, got ", tiles[t]);
  }
  *skipped += kb1 - kb0 - static_cast<int64_t>(tiles.size());
  for (const int64_t t : tiles) {
    const int64_t kp0 = k_begin + t * kBwdBlock;
    const int64_t kp1 = std::min(k_end, kp0 + kBwdBlock);
    const TileKind kind = mask ? mask->Classify(qp0, qp1, kp0, kp1) : TileKind::kFull;
    if (kind == TileKind::kEmpty) {
      ++*skipped;
      continue;
    }
    out->push_back({static_cast<int32_t>(kb0 + t), kind});
  }
}

// What a call visits, counted once before anything is written (a mask whose KeyTiles is wrong
// throws here): per query block its number of non-empty tiles (to order the units), and the
// tile statistics of one (batch, kv head).
struct BwdPlan {
  int64_t nqb = 0, nkb = 0;
  std::vector<int64_t> q_count;
  int64_t full = 0, partial = 0, skipped = 0;
};

template <typename KV>
struct BwdJob {
  TensorView<const float> q;
  TensorView<const KV> k, v;
  TensorView<const float> dout;
  DenseGrads grads;
  const DenseOptions* options;
  DenseGeometry g;
  const BwdPlan* plan;
  const float* lse;   // [batch·heads_q·seqlen_q]: the saved lse, +inf where it was −inf
  const float* dsum;  // D = rowsum(dO ∘ O), same indexing
  int threads;
  int64_t seg_blocks;  // key blocks per pass-A segment
};

}  // namespace attnkit::detail
#endif  // ATTNKIT_DENSE_BACKWARD_CC_ONCE

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

constexpr int64_t kB = detail::kBwdBlock;

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kRows = 6;  // 32 registers: 6 × 4 accumulators + 4 loads + 1 broadcast
constexpr int kVecs = 4;
#else
constexpr int kRows = 4;  // 16 registers: 4 × 2 accumulators + 2 loads + 1 broadcast
constexpr int kVecs = 2;
#endif

// C[m][col, col + C·N) (+)= Σ_{p < np} A(m, p) · B_p[col, col + C·N) for kRows rows, where
// A(m, p) = arows[m][p · aps] and B_p = brows[p].
template <int C>
HWY_INLINE void Micro(const float* const* arows, int64_t aps, const float* const* brows, int64_t np,
                      int64_t col, float* const* crows, bool accumulate) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[kRows][C];
  for (int m = 0; m < kRows; ++m) {
    for (int c = 0; c < C; ++c) {
      acc[m][c] = accumulate ? hn::LoadU(df, crows[m] + col + c * N) : hn::Zero(df);
    }
  }
  const float* a[kRows];
  for (int m = 0; m < kRows; ++m) a[m] = arows[m];
  for (int64_t p = 0; p < np; ++p) {
    const float* bp = brows[p] + col;
    VF bv[C];
    for (int c = 0; c < C; ++c) bv[c] = hn::LoadU(df, bp + c * N);
    const int64_t ap = p * aps;
    for (int m = 0; m < kRows; ++m) {
      const VF av = hn::Set(df, a[m][ap]);
      for (int c = 0; c < C; ++c) acc[m][c] = hn::MulAdd(av, bv[c], acc[m][c]);
    }
  }
  for (int m = 0; m < kRows; ++m) {
    for (int c = 0; c < C; ++c) hn::StoreU(acc[m][c], df, crows[m] + col + c * N);
  }
}

// C (+)= A · B for M rows (any M: the last panel repeats A's first row into `dump`) over
// `width` columns (a multiple of the vector length).
HWY_INLINE void Gemm(int64_t M, int64_t width, const float* const* arows, int64_t aps,
                     const float* const* brows, int64_t np, float* const* crows, bool accumulate,
                     float* dump) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    const float* ar[kRows];
    float* cr[kRows];
    for (int m = 0; m < kRows; ++m) {
      const bool real = m0 + m < M;
      ar[m] = real ? arows[m0 + m] : arows[m0];
      cr[m] = real ? crows[m0 + m] : dump;
    }
    int64_t col = 0;
    for (; col + kVecs * N <= width; col += kVecs * N) {
      Micro<kVecs>(ar, aps, brows, np, col, cr, accumulate);
    }
    switch ((width - col) / N) {
      case 1:
        Micro<1>(ar, aps, brows, np, col, cr, accumulate);
        break;
      case 2:
        Micro<2>(ar, aps, brows, np, col, cr, accumulate);
        break;
      case 3:
        Micro<3>(ar, aps, brows, np, col, cr, accumulate);
        break;
      default:
        break;
    }
  }
}

// Per-thread scratch, allocated before the parallel region.
struct Workspace {
  hwy::AlignedFreeUniquePtr<float[]> kt, vt;       // pass A: Kᵀ [dk][64], Vᵀ [dv][64]
  hwy::AlignedFreeUniquePtr<float[]> s, dp;        // pass A: [rows][64]; pass B: [64][rows_pad]
  hwy::AlignedFreeUniquePtr<float[]> acc1, acc2;   // pass A: dK, dV [64][d_pad]; B: dQ
  hwy::AlignedFreeUniquePtr<float[]> qpad, dopad;  // row-major padded copies, or Qᵀ / dOᵀ
  hwy::AlignedFreeUniquePtr<float[]> kpad, vpad;   // pass B: f32 copies of a K / V tile
  hwy::AlignedFreeUniquePtr<float[]> rowv;         // pass B: lse, D, slope, position per row
  hwy::AlignedFreeUniquePtr<float[]> dump;
  std::vector<uint8_t> allowed, allowed_t;
  std::vector<const float*> a, b, b2;
  std::vector<float*> c;
  std::vector<int64_t> ids;
  std::vector<detail::BwdTile> tiles;  // pass B: the unit's key tiles
};

template <typename KV>
class Backward {
 public:
  explicit Backward(const detail::BwdJob<KV>& job)
      : job_(job), g_(job.g), o_(*job.options), plan_(*job.plan) {
    const DF df;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    dk_pad_ = (g_.dk + N - 1) / N * N;
    dv_pad_ = (g_.dv + N - 1) / N * N;
    rows_max_ = g_.group * std::min(kB, g_.seqlen_q);
    rows_pad_ = (rows_max_ + N - 1) / N * N;
    q_in_place_ = g_.dk % N == 0;
    do_in_place_ = g_.dv % N == 0;
    k_in_place_ = std::is_same_v<KV, float> && g_.dk % N == 0;
    softcap_ = o_.softcap > 0.0f;
    alibi_ = !o_.alibi_slopes.empty();
  }

  void Run() {
    const int threads = std::max(1, job_.threads);
    std::vector<Workspace> ws(static_cast<size_t>(threads));
    const auto sz = [](int64_t n) { return static_cast<size_t>(n); };
    const int64_t rows_ext = rows_max_ + kRows;
    const int64_t wide = std::max(dk_pad_, dv_pad_);
    for (auto& w : ws) {
      w.kt = hwy::AllocateAligned<float>(sz(g_.dk * kB));
      w.vt = hwy::AllocateAligned<float>(sz(g_.dv * kB));
      const int64_t sbuf = std::max(rows_ext * kB, (kB + kRows) * rows_pad_);
      w.s = hwy::AllocateAligned<float>(sz(sbuf));
      w.dp = hwy::AllocateAligned<float>(sz(sbuf));
      const int64_t accn = std::max((kB + kRows) * wide, rows_ext * dk_pad_);
      w.acc1 = hwy::AllocateAligned<float>(sz(accn));
      w.acc2 = hwy::AllocateAligned<float>(sz(accn));
      const int64_t padn = std::max(rows_max_ * wide, wide * rows_pad_);
      w.qpad = hwy::AllocateAligned<float>(sz(padn));
      w.dopad = hwy::AllocateAligned<float>(sz(padn));
      w.kpad = hwy::AllocateAligned<float>(sz(kB * dk_pad_));
      w.vpad = hwy::AllocateAligned<float>(sz(kB * dv_pad_));
      w.rowv = hwy::AllocateAligned<float>(sz(4 * rows_pad_));
      w.dump = hwy::AllocateAligned<float>(sz(std::max(wide, rows_pad_) + kVecs * 64));
      w.allowed.resize(sz(kB * kB));
      w.allowed_t.resize(sz(kB * rows_pad_));
      const size_t ptrs = sz(std::max({rows_ext, kB + kRows, wide, rows_pad_}));
      w.a.resize(ptrs);
      w.b.resize(ptrs);
      w.b2.resize(ptrs);
      w.c.resize(ptrs);
    }
    const int64_t heads_all = g_.batch * g_.heads_kv;
    // Pass A runs over segments of job_.seg_blocks key blocks: the lists of query blocks that see
    // each key block of the segment are built (by one thread) before the segment's units run, so
    // they take O(query blocks × job_.seg_blocks) memory, linear in N. Within a segment, and in
    // pass B, the longest units go first (by tile count), heads inner, handed out dynamically.
    const int64_t num_segs = (plan_.nkb + job_.seg_blocks - 1) / job_.seg_blocks;
    std::vector<int64_t> qb_order(static_cast<size_t>(plan_.nqb));
    std::iota(qb_order.begin(), qb_order.end(), 0);
    std::stable_sort(qb_order.begin(), qb_order.end(), [&](int64_t x, int64_t y) {
      return plan_.q_count[static_cast<size_t>(x)] > plan_.q_count[static_cast<size_t>(y)];
    });
    seg_lists_.resize(static_cast<size_t>(std::min(job_.seg_blocks, plan_.nkb)));
    std::vector<int64_t> kb_order;
    std::vector<int64_t> scratch;
    detail::RegionExceptions errors;
#pragma omp parallel num_threads(threads)
    {
      Workspace& w = ws[static_cast<size_t>(omp_get_thread_num())];
      for (int64_t seg = 0; seg < num_segs; ++seg) {
        const int64_t kb0 = seg * job_.seg_blocks, kb1 = std::min(plan_.nkb, kb0 + job_.seg_blocks);
#pragma omp single
        errors.Run([&] { BuildSegment(kb0, kb1, &scratch, &kb_order); });
        // implicit barrier: the lists are ready
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < (kb1 - kb0) * heads_all; ++u) {
          const int64_t kb = kb_order[static_cast<size_t>(u / heads_all)], bh = u % heads_all;
          errors.Run([&] { KeyUnit(w, bh / g_.heads_kv, bh % g_.heads_kv, kb, kb0); });
        }  // implicit barrier: the lists are rebuilt only after every unit is done with them
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t u = 0; u < heads_all * plan_.nqb; ++u) {
        const int64_t qb = qb_order[static_cast<size_t>(u / heads_all)], bh = u % heads_all;
        errors.Run([&] { QueryUnit(w, bh / g_.heads_kv, bh % g_.heads_kv, qb); });
      }
    }
    errors.Rethrow();
  }

 private:
  int64_t RowIndex(int64_t b, int64_t h, int64_t i) const {
    return (b * g_.heads_q + h) * g_.seqlen_q + i;
  }

  // The elementwise step on one vector: raw dot products s and dO·v products dp → P, dS.
  HWY_INLINE void Grad(DF df, VF s, VF dp, VF lse, VF dsum, VF slope, VF dist, hn::Mask<DF> valid,
                       VF& p, VF& ds) const {
    VF t = hn::Mul(s, hn::Set(df, g_.scale));
    VF der = hn::Set(df, g_.scale);
    if (softcap_) {
      const VF th = hn::Tanh(df, hn::Mul(t, hn::Set(df, 1.0f / o_.softcap)));
      t = hn::Mul(th, hn::Set(df, o_.softcap));
      der = hn::Mul(der, hn::NegMulAdd(th, th, hn::Set(df, 1.0f)));
    }
    if (alibi_) t = hn::NegMulAdd(slope, dist, t);
    t = hn::IfThenElse(valid, t, hn::Set(df, detail::kNegInf));
    p = hn::Exp(df, hn::Sub(t, lse));
    ds = hn::Mul(hn::Mul(p, hn::Sub(dp, dsum)), der);
  }

  // For key blocks [kb0, kb1): the query blocks that see each (ascending, with the tile's
  // kind) into seg_lists_, and the key blocks ordered by descending list length into *order.
  void BuildSegment(int64_t kb0, int64_t kb1, std::vector<int64_t>* scratch,
                    std::vector<int64_t>* order) {
    for (auto& l : seg_lists_) l.clear();
    std::vector<detail::BwdTile> row;
    int64_t skipped = 0;
    for (int64_t qb = 0; qb < plan_.nqb; ++qb) {
      row.clear();
      detail::ListTiles(g_, o_.mask, qb, kb0, kb1, scratch, &row, &skipped);
      for (const auto& t : row) {
        seg_lists_[static_cast<size_t>(t.block - kb0)].push_back(
            {static_cast<int32_t>(qb), t.kind});
      }
    }
    order->resize(static_cast<size_t>(kb1 - kb0));
    std::iota(order->begin(), order->end(), kb0);
    std::stable_sort(order->begin(), order->end(), [&](int64_t x, int64_t y) {
      return seg_lists_[static_cast<size_t>(x - kb0)].size() >
             seg_lists_[static_cast<size_t>(y - kb0)].size();
    });
  }

  // Pass A: dK and dV of key block kb of (batch b, kv head hk); kb0 is its segment's first block.
  void KeyUnit(Workspace& w, int64_t b, int64_t hk, int64_t kb, int64_t kb0) {
    const DF df;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    const int64_t j0 = kb * kB, nk = std::min(kB, g_.seqlen_kv - j0);
    float* dkacc = w.acc1.get();
    float* dvacc = w.acc2.get();
    std::fill(dkacc, dkacc + (kB + kRows) * dk_pad_, 0.0f);
    std::fill(dvacc, dvacc + (kB + kRows) * dv_pad_, 0.0f);
    const std::vector<detail::BwdTile>& list = seg_lists_[static_cast<size_t>(kb - kb0)];
    if (!list.empty()) PackTransposed(b, hk, j0, nk, w.kt.get(), w.vt.get());
    for (const detail::BwdTile tile : list) {
      const int64_t i0 = tile.block * kB, nq = std::min(kB, g_.seqlen_q - i0);
      const int64_t rows = g_.group * nq;
      const bool partial = tile.kind == TileKind::kPartial;
      if (partial) {
        o_.mask->FillTile(g_.q_start + i0, g_.q_start + i0 + nq, g_.k_start + j0,
                          g_.k_start + j0 + nk, w.allowed.data());
      }
      // Row pointers: Q and dO rows in place, or padded copies when a head dim is ragged.
      const float** qrows = w.a.data();
      const float** dorows = w.b2.data();
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = hk * g_.group + r / nq, i = i0 + r % nq;
        qrows[r] = job_.q.row(b, h, i);
        dorows[r] = job_.dout.row(b, h, i);
        if (!q_in_place_) qrows[r] = PadRow(qrows[r], g_.dk, dk_pad_, w.qpad.get() + r * dk_pad_);
        if (!do_in_place_) {
          dorows[r] = PadRow(dorows[r], g_.dv, dv_pad_, w.dopad.get() + r * dv_pad_);
        }
      }
      // S = Q Kᵀ and dP = dO Vᵀ, [rows][64].
      const float** bt = w.b.data();
      float** cr = w.c.data();
      for (int64_t r = 0; r < rows; ++r) cr[r] = w.s.get() + r * kB;
      for (int64_t d = 0; d < g_.dk; ++d) bt[d] = w.kt.get() + d * kB;
      Gemm(rows, kB, qrows, 1, bt, g_.dk, cr, false, w.dump.get());
      for (int64_t r = 0; r < rows; ++r) cr[r] = w.dp.get() + r * kB;
      for (int64_t d = 0; d < g_.dv; ++d) bt[d] = w.vt.get() + d * kB;
      Gemm(rows, kB, dorows, 1, bt, g_.dv, cr, false, w.dump.get());
      // P and dS in place of S and dP.
      const hn::Rebind<uint8_t, DF> d8;
      const hn::RebindToUnsigned<DF> du;
      const hn::RebindToSigned<DF> di;
      const VF iota = hn::ConvertTo(df, hn::Iota(di, 0));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = hk * g_.group + r / nq, i = i0 + r % nq;
        const int64_t ri = RowIndex(b, h, i);
        const VF lse = hn::Set(df, job_.lse[ri]), dsum = hn::Set(df, job_.dsum[ri]);
        const VF slope = hn::Set(df, alibi_ ? o_.alibi_slopes[h] : 0.0f);
        // key j of the tile sits at distance |qrel − j| from the query.
        const float qrel = static_cast<float>(g_.q_start + i - g_.k_start - j0);
        float* srow = w.s.get() + r * kB;
        float* dprow = w.dp.get() + r * kB;
        const uint8_t* al = w.allowed.data() + (r % nq) * nk;
        for (int64_t j = 0; j < kB; j += N) {
          auto valid = hn::Lt(hn::Add(iota, hn::Set(df, static_cast<float>(j))),
                              hn::Set(df, static_cast<float>(nk)));
          if (partial) {
            if (j + N <= nk) {
              valid = hn::And(
                  valid, hn::RebindMask(
                             df, hn::Ne(hn::PromoteTo(du, hn::LoadU(d8, al + j)), hn::Zero(du))));
            } else {
              alignas(64) uint8_t tail[hn::MaxLanes(d8)] = {};
              for (int64_t x = j; x < nk; ++x) tail[x - j] = al[x];
              valid = hn::And(
                  valid,
                  hn::RebindMask(df, hn::Ne(hn::PromoteTo(du, hn::Load(d8, tail)), hn::Zero(du))));
            }
          }
          const VF dist = hn::Abs(
              hn::Sub(hn::Set(df, qrel), hn::Add(iota, hn::Set(df, static_cast<float>(j)))));
          VF p, ds;
          Grad(df, hn::Load(df, srow + j), hn::Load(df, dprow + j), lse, dsum, slope, dist, valid,
               p, ds);
          hn::Store(p, df, srow + j);
          hn::Store(ds, df, dprow + j);
        }
      }
      // dV += Pᵀ dO and dK += dSᵀ Q: rows j of the block, inner dimension r.
      const float** ar = w.b.data();
      for (int64_t j = 0; j < nk; ++j) {
        ar[j] = w.s.get() + j;
        cr[j] = dvacc + j * dv_pad_;
      }
      Gemm(nk, dv_pad_, ar, kB, dorows, rows, cr, true, w.dump.get());
      for (int64_t j = 0; j < nk; ++j) {
        ar[j] = w.dp.get() + j;
        cr[j] = dkacc + j * dk_pad_;
      }
      Gemm(nk, dk_pad_, ar, kB, qrows, rows, cr, true, w.dump.get());
    }
    for (int64_t j = 0; j < nk; ++j) {
      std::copy(dkacc + j * dk_pad_, dkacc + j * dk_pad_ + g_.dk, job_.grads.dk.row(b, hk, j0 + j));
      std::copy(dvacc + j * dv_pad_, dvacc + j * dv_pad_ + g_.dv, job_.grads.dv.row(b, hk, j0 + j));
    }
  }

  // Pass B: dQ of query block qb of (batch b, kv head hk), all heads of the group.
  void QueryUnit(Workspace& w, int64_t b, int64_t hk, int64_t qb) {
    const DF df;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    const int64_t i0 = qb * kB, nq = std::min(kB, g_.seqlen_q - i0);
    const int64_t rows = g_.group * nq, rp = (rows + N - 1) / N * N;
    float* dqacc = w.acc1.get();
    std::fill(dqacc, dqacc + (rows + kRows) * dk_pad_, 0.0f);
    w.tiles.clear();
    int64_t skipped = 0;
    detail::ListTiles(g_, o_.mask, qb, 0, plan_.nkb, &w.ids, &w.tiles, &skipped);
    // Qᵀ [dk][rp] and dOᵀ [dv][rp], zero in the padding columns; per-row lse, D, slope and
    // position relative to key row 0.
    float* qt = w.qpad.get();
    float* dot = w.dopad.get();
    float* lse = w.rowv.get();
    float* dsum = lse + rows_pad_;
    float* slope = dsum + rows_pad_;
    float* qrel = slope + rows_pad_;
    if (!w.tiles.empty()) {
      for (int64_t r = 0; r < rp; ++r) {
        if (r >= rows) {
          for (int64_t d = 0; d < g_.dk; ++d) qt[d * rp + r] = 0.0f;
          for (int64_t d = 0; d < g_.dv; ++d) dot[d * rp + r] = 0.0f;
          lse[r] = std::numeric_limits<float>::infinity();
          dsum[r] = slope[r] = qrel[r] = 0.0f;
          continue;
        }
        const int64_t h = hk * g_.group + r / nq, i = i0 + r % nq;
        const float* qr = job_.q.row(b, h, i);
        const float* dr = job_.dout.row(b, h, i);
        for (int64_t d = 0; d < g_.dk; ++d) qt[d * rp + r] = qr[d];
        for (int64_t d = 0; d < g_.dv; ++d) dot[d * rp + r] = dr[d];
        lse[r] = job_.lse[RowIndex(b, h, i)];
        dsum[r] = job_.dsum[RowIndex(b, h, i)];
        slope[r] = alibi_ ? o_.alibi_slopes[h] : 0.0f;
        qrel[r] = static_cast<float>(g_.q_start + i - g_.k_start);
      }
    }
    const hn::Rebind<uint8_t, DF> d8;
    const hn::RebindToUnsigned<DF> du;
    for (const detail::BwdTile tile : w.tiles) {
      const int64_t j0 = tile.block * kB, nk = std::min(kB, g_.seqlen_kv - j0);
      const bool partial = tile.kind == TileKind::kPartial;
      if (partial) {
        o_.mask->FillTile(g_.q_start + i0, g_.q_start + i0 + nq, g_.k_start + j0,
                          g_.k_start + j0 + nk, w.allowed.data());
        for (int64_t j = 0; j < nk; ++j) {
          uint8_t* at = w.allowed_t.data() + j * rp;
          for (int64_t r = 0; r < rows; ++r) at[r] = w.allowed[(r % nq) * nk + j];
          for (int64_t r = rows; r < rp; ++r) at[r] = 0;
        }
      }
      // K and V rows of the tile (in place, or f32 copies padded to whole vectors).
      const float** krows = w.a.data();
      const float** vrows = w.b2.data();
      for (int64_t j = 0; j < nk; ++j) {
        const KV* kr = job_.k.row(b, hk, j0 + j);
        const KV* vr = job_.v.row(b, hk, j0 + j);
        if constexpr (std::is_same_v<KV, float>) {
          krows[j] = k_in_place_ ? kr : PadRow(kr, g_.dk, dk_pad_, w.kpad.get() + j * dk_pad_);
          vrows[j] = vr;
        } else {
          krows[j] = PadRow(kr, g_.dk, dk_pad_, w.kpad.get() + j * dk_pad_);
          vrows[j] = PadRow(vr, g_.dv, dv_pad_, w.vpad.get() + j * dv_pad_);
        }
      }
      // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, [nk][rp].
      const float** bt = w.b.data();
      float** cr = w.c.data();
      for (int64_t j = 0; j < nk; ++j) cr[j] = w.s.get() + j * rp;
      for (int64_t d = 0; d < g_.dk; ++d) bt[d] = qt + d * rp;
      Gemm(nk, rp, krows, 1, bt, g_.dk, cr, false, w.dump.get());
      for (int64_t j = 0; j < nk; ++j) cr[j] = w.dp.get() + j * rp;
      for (int64_t d = 0; d < g_.dv; ++d) bt[d] = dot + d * rp;
      Gemm(nk, rp, vrows, 1, bt, g_.dv, cr, false, w.dump.get());
      // dSᵀ in place of dPᵀ.
      for (int64_t j = 0; j < nk; ++j) {
        float* srow = w.s.get() + j * rp;
        float* dprow = w.dp.get() + j * rp;
        const VF kpos = hn::Set(df, static_cast<float>(j0 + j));
        const uint8_t* at = w.allowed_t.data() + j * rp;
        for (int64_t r = 0; r < rp; r += N) {
          auto valid = hn::Eq(kpos, kpos);  // all true (padding rows have P = 0 through lse)
          if (partial) {
            valid =
                hn::RebindMask(df, hn::Ne(hn::PromoteTo(du, hn::LoadU(d8, at + r)), hn::Zero(du)));
          }
          const VF dist = hn::Abs(hn::Sub(hn::Load(df, qrel + r), kpos));
          VF p, ds;
          Grad(df, hn::Load(df, srow + r), hn::Load(df, dprow + r), hn::Load(df, lse + r),
               hn::Load(df, dsum + r), hn::Load(df, slope + r), dist, valid, p, ds);
          hn::Store(ds, df, dprow + r);
        }
      }
      // dQ += dS K: rows r, inner dimension j.
      const float** ar = w.b.data();
      for (int64_t r = 0; r < rows; ++r) {
        ar[r] = w.dp.get() + r;
        cr[r] = dqacc + r * dk_pad_;
      }
      Gemm(rows, dk_pad_, ar, rp, krows, nk, cr, true, w.dump.get());
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = hk * g_.group + r / nq, i = i0 + r % nq;
      std::copy(dqacc + r * dk_pad_, dqacc + r * dk_pad_ + g_.dk, job_.grads.dq.row(b, h, i));
    }
  }

  // Copies a row of n values (widened to f32) into dst, zero-padded to `pad`; returns dst.
  template <typename T>
  static const float* PadRow(const T* src, int64_t n, int64_t pad, float* dst) {
    for (int64_t d = 0; d < n; ++d) dst[d] = ToFloat(src[d]);
    for (int64_t d = n; d < pad; ++d) dst[d] = 0.0f;
    return dst;
  }

  // Kᵀ [dk][64] and Vᵀ [dv][64] of a key block, widened to f32, zero beyond nk keys.
  void PackTransposed(int64_t b, int64_t hk, int64_t j0, int64_t nk, float* kt, float* vt) const {
    for (int64_t j = 0; j < nk; ++j) {
      const KV* kr = job_.k.row(b, hk, j0 + j);
      const KV* vr = job_.v.row(b, hk, j0 + j);
      for (int64_t d = 0; d < g_.dk; ++d) kt[d * kB + j] = ToFloat(kr[d]);
      for (int64_t d = 0; d < g_.dv; ++d) vt[d * kB + j] = ToFloat(vr[d]);
    }
    if (nk < kB) {
      for (int64_t d = 0; d < g_.dk; ++d) std::fill(kt + d * kB + nk, kt + (d + 1) * kB, 0.0f);
      for (int64_t d = 0; d < g_.dv; ++d) std::fill(vt + d * kB + nk, vt + (d + 1) * kB, 0.0f);
    }
  }

  const detail::BwdJob<KV>& job_;
  const detail::DenseGeometry& g_;
  const DenseOptions& o_;
  const detail::BwdPlan& plan_;
  int64_t dk_pad_, dv_pad_, rows_max_, rows_pad_;
  bool q_in_place_, do_in_place_, k_in_place_, softcap_, alibi_;
  std::vector<std::vector<detail::BwdTile>> seg_lists_;  // pass A: per key block of the segment
};

}  // namespace

void BackwardF32(const detail::BwdJob<float>& job) { Backward<float>(job).Run(); }
void BackwardBf16(const detail::BwdJob<bf16>& job) { Backward<bf16>(job).Run(); }

// D = rowsum(dO ∘ O) for one row.
float RowDot(const float* a, const float* b, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc = hn::Zero(df);
  int64_t d = 0;
  for (; d + N <= n; d += N) acc = hn::MulAdd(hn::LoadU(df, a + d), hn::LoadU(df, b + d), acc);
  float total = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; d < n; ++d) total += a[d] * b[d];
  return total;
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace {
constexpr int64_t kSegBlocks = 64;  // key blocks per pass-A segment (4096 keys)
std::atomic<int64_t> g_seg_blocks{kSegBlocks};
}  // namespace

namespace detail {
void SetDenseBackwardSegmentForTesting(int64_t key_blocks) {
  g_seg_blocks = key_blocks > 0 ? key_blocks : kSegBlocks;
}
}  // namespace detail

namespace {
HWY_EXPORT(BackwardF32);
HWY_EXPORT(BackwardBf16);
HWY_EXPORT(RowDot);

void Launch(const detail::BwdJob<float>& job) { HWY_DYNAMIC_DISPATCH(BackwardF32)(job); }
void Launch(const detail::BwdJob<bf16>& job) { HWY_DYNAMIC_DISPATCH(BackwardBf16)(job); }

// Counts the non-empty tiles per query block (validating the mask's KeyTiles) before anything is
// written.
detail::BwdPlan MakePlan(const detail::DenseGeometry& g, const Mask* mask) {
  constexpr int64_t kB = detail::kBwdBlock;
  detail::BwdPlan plan;
  plan.nqb = (g.seqlen_q + kB - 1) / kB;
  plan.nkb = (g.seqlen_kv + kB - 1) / kB;
  plan.q_count.resize(static_cast<size_t>(plan.nqb));
  std::vector<int64_t> scratch;
  std::vector<detail::BwdTile> tiles;
  for (int64_t qb = 0; qb < plan.nqb; ++qb) {
    tiles.clear();
    detail::ListTiles(g, mask, qb, 0, plan.nkb, &scratch, &tiles, &plan.skipped);
    plan.q_count[static_cast<size_t>(qb)] = static_cast<int64_t>(tiles.size());
    for (const auto& t : tiles) (t.kind == TileKind::kFull ? plan.full : plan.partial) += 1;
  }
  return plan;
}

template <typename KV>
void Dispatch(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
              TensorView<const float> out, TensorView<const float> lse,
              TensorView<const float> dout, const DenseGrads& grads, const DenseOptions& o) {
  if (o.backend == Backend::kReference) {
    ref::DenseBackward(q, k, v, out, lse, dout, grads, o);
    return;
  }
  const detail::DenseGeometry g =
      detail::CheckDenseBackwardArgs("DenseBackward", q, k, v, out, lse, dout, grads, o);
  const detail::BwdPlan plan = MakePlan(g, o.mask);  // may throw (a bad user mask): nothing written
  const int threads = ResolveThreads(o.num_threads);
  const int64_t nrows = g.batch * g.heads_q * g.seqlen_q;
  std::vector<float> lse_buf(static_cast<size_t>(nrows)), dsum(static_cast<size_t>(nrows));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t bh = 0; bh < g.batch * g.heads_q; ++bh) {
    const int64_t b = bh / g.heads_q, h = bh % g.heads_q;
    for (int64_t i = 0; i < g.seqlen_q; ++i) {
      const float l = lse.at(b, h, i, 0);
      const size_t ri = static_cast<size_t>(bh * g.seqlen_q + i);
      lse_buf[ri] = l == detail::kNegInf ? std::numeric_limits<float>::infinity() : l;
      dsum[ri] = HWY_DYNAMIC_DISPATCH(RowDot)(dout.row(b, h, i), out.row(b, h, i), g.dv);
    }
  }
  const detail::BwdJob<KV> job{q,           k,       v,
                               dout,        grads,   &o,
                               g,           &plan,   lse_buf.data(),
                               dsum.data(), threads, g_seg_blocks.load(std::memory_order_relaxed)};
  Launch(job);
  if (grads.dsinks) {  // dsink_h = −Σ_rows exp(sink_h − lse) · D, in a fixed order
    for (int64_t h = 0; h < g.heads_q; ++h) {
      double total = 0;
      if (o.sinks[h] != detail::kNegInf) {
        for (int64_t b = 0; b < g.batch; ++b) {
          for (int64_t i = 0; i < g.seqlen_q; ++i) {
            const size_t ri = static_cast<size_t>((b * g.heads_q + h) * g.seqlen_q + i);
            total -= std::exp(double{o.sinks[h]} - double{lse_buf[ri]}) * double{dsum[ri]};
          }
        }
      }
      grads.dsinks[h] = static_cast<float>(total);
    }
  }
  if (o.stats) {
    DenseStats& st = *o.stats;
    const int64_t heads_all = g.batch * g.heads_kv;
    st = DenseStats{};
    st.tiles_total = heads_all * plan.nqb * plan.nkb;
    st.tiles_skipped = heads_all * plan.skipped;
    st.tiles_full = heads_all * plan.full;
    st.tiles_partial = heads_all * plan.partial;
    st.block_q = st.block_kv = detail::kBwdBlock;
  }
}

}  // namespace

void DenseBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options) {
  Dispatch(q, k, v, out, lse, dout, grads, options);
}
void DenseBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options) {
  Dispatch(q, k, v, out, lse, dout, grads, options);
}

}  // namespace attnkit
#endif  // HWY_ONCE
