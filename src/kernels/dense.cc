// The dense engine's fast kernel: flash-style tiled attention with Highway run-time dispatch.
//
// Work unit: one (batch, kv head, query block of kDenseBlockQ rows, twice that for MHA). All
// group_size query heads that share the kv head are processed together (rows = group_size × block
// rows), so each K/V tile is read from memory once per group. The mask lists the key blocks a
// unit may see (Mask::KeyTiles) and classifies each: empty ones are skipped, full ones run
// without any per-element check, partial ones get their logits masked from the mask's FillTile
// and compute only the key vectors each 6-row panel can see.
// Online softmax keeps, per row, the running max m, the running denominator l and an unnormalised
// f32 output accumulator.
//
// Two ways through a key tile:
//  * packed (prefill): K is packed transposed (kt[d][j]) and V row-major into f32 buffers (this is
//    also where bf16 K/V are widened). S = Q·Kᵀ runs as a GEMM micro-kernel: kRows query rows ×
//    kKeyVecs vectors of keys in registers, broadcasting one q scalar per row and FMA-ing it
//    across the keys, over d. O += P·V is the mirror image: kRows × kDvVecs accumulator vectors
//    over head_dim_v, broadcasting p scalars across V rows. The panel's S/P (kRows × 64 floats)
//    and its accumulator rows stay in L1.
//  * direct (decode, ≤ 4 rows per unit): no packing; each K row is read once, dotted with every
//    row of the group (4 keys × up to 4 rows of vector partial sums, then horizontal sums), and
//    each V row is read once and FMA'd into all rows' accumulators. bf16 rows are widened in
//    registers (a 16-bit shift), so bf16 halves the bytes read.
//
// Performance note (memory-traffic model, f32, head_dim d = 128, block 64 × 64, group size G).
//  Prefill: per tile the kernel reads a K and a V tile (2 · 64 · d · 4 B = 64 KiB) and does
//  4 · (64G) · 64 · d FLOPs (QKᵀ + PV), i.e. 32·G FLOP per byte of K/V: far above a CPU's
//  FLOP-per-byte balance point even for G = 1, so prefill is compute-bound and the goal is GEMM
//  efficiency. Q rows (64G · d · 4 B = 32G KiB) are reused across all key tiles of the unit from
//  L2; the accumulators (64G × d) likewise. The inner loops do one broadcast + kKeyVecs loads per
//  kRows·kKeyVecs FMAs (6 × 4 on AVX-512: 10 loads per 24 FMAs), so the FMA pipes, not the load
//  ports, set the pace. The softmax costs ~15 vector ops per 16 logits against 2·d/16·16 = 256
//  FMA lanes per logit, a small overhead. Packing K transposed costs d · 64 scalar moves per
//  tile, amortised over 64G rows.
//  Decode (1 query token): every K/V byte is read exactly once per group; arithmetic per byte is
//  ~G/2 FLOP, so decode is bandwidth-bound and the keys are split across threads (DenseDecode)
//  to use both cores' share of the memory bandwidth, with an LSE merge at the end.
//  Workspace: per thread O(kRows·64 + d·64 + 64·d + 64G·d) floats, plus the packed tiles of
//  one round or segment (at most 32 MiB, shared by the threads) and two floats per query row of
//  a segmented head, so the peak memory of a call is its inputs plus a bounded constant, never
//  O(N²). The packed tiles come from the scratch pool (core/scratch.h): a loop of calls reuses
//  them instead of page-faulting 16-32 MiB in again each time (which can cost more than a
//  16k-token sliding-window call itself; docs/BENCHMARKS.md, "Measurements behind code choices").
//  Why keep tiles at all: packing a tile (a scalar transpose of K) costs about as much as half
//  a tile's arithmetic. Causal prefill uses each tile in ~N/128 units, a window in ~W/64, so
//  packing per use would add a large share; per-thread caches packed each tile once per thread,
//  and the per-thread rings used before segments thrashed on causal rows longer than themselves
//  (every tile repacked on every unit; figures in docs/BENCHMARKS.md).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/dense.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// clang-format off
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on

#ifndef ATTNKIT_DENSE_CC_ONCE
#define ATTNKIT_DENSE_CC_ONCE
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "core/scratch.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "kernels/dense_common.h"
#include "kernels/nonfinite.h"
#include "kernels/score_mods.h"
#endif

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

constexpr int64_t kBk = detail::kDenseBlockKv;

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kRows = 6;     // 32 vector registers: 6 × 4 accumulators + 4 loads + 1 broadcast
constexpr int kKeyVecs = 4;  // 4 × 16 lanes = one 64-key block per micro-kernel call
constexpr int kDvVecs = 4;
#else
constexpr int kRows = 4;  // 16 registers: 4 × 2 accumulators + 2 loads + 1 broadcast
constexpr int kKeyVecs = 2;
constexpr int kDvVecs = 2;
#endif
constexpr int kDirectRows = 4;  // direct path: at most this many rows per unit
// Packed K/V tiles are kept for the whole call, so that each is packed (about) once: every tile
// a round needs has a slot in one buffer shared by all threads, and whichever thread first needs
// a tile packs it (state 0 = empty, 1 = being packed, 2 = ready); the others use it. Nobody
// waits: a thread that finds a tile being packed packs a private copy for itself (rare: both
// threads asking for the same tile at the same moment). The buffer holds
// detail::GetDensePackBudget() bytes (32 MiB: one head of 65536 keys at d 128 with V read in place,
// or 16 heads of 4096):
//  * heads that fit are processed in rounds of as many heads as fit;
//  * a head that does not fit is processed in segments of its key blocks, one after the other:
//    every query block attends to the segment's keys, keeping its online-softmax state (the
//    running max and sum per row, and the unnormalised output rows, which wait in `out`)
//    between segments. The order of key blocks per row is the same as in one pass, so the
//    result does not depend on the budget or the thread count.
HWY_INLINE VF LoadRow(DF df, const float* p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadRow(DF df, const bf16* p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dbf;
  return hn::PromoteTo(df, hn::LoadU(dbf, reinterpret_cast<const hwy::bfloat16_t*>(p)));
}

// The direct (decode) path streams K and V from memory; touching rows this far ahead keeps the
// memory system busy while the current rows are computed on. Only rows of the current call are
// prefetched: forming a pointer past the end of the tensor would be undefined behaviour.
constexpr int64_t kPrefetchRows = 64;
template <typename T>
HWY_INLINE void PrefetchRow(const T* row, int64_t bytes) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < bytes; b += 64) hwy::Prefetch(p + b);
}

// s[r][col0 .. col0 + C·N) = Σ_d q_r[d] · kt[d][...] for R rows (pointers may be a zero row).
template <int R, int C>
HWY_INLINE void QkMicro(const float* const* qrows, const float* HWY_RESTRICT kt, int64_t dk,
                        float* HWY_RESTRICT s, int64_t col0) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = hn::Zero(df);
  }
  const float* kp = kt + col0;
  for (int64_t d = 0; d < dk; ++d, kp += kBk) {
    VF kv[C];
    for (int c = 0; c < C; ++c) kv[c] = hn::Load(df, kp + c * N);
    for (int r = 0; r < R; ++r) {
      const VF qb = hn::Set(df, qrows[r][d]);
      for (int c = 0; c < C; ++c) acc[r][c] = hn::MulAdd(qb, kv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) hn::Store(acc[r][c], df, s + r * kBk + col0 + c * N);
  }
}

// acc_r[col0 .. col0 + C·N) += Σ_j p[r][j] · vrow_j[...] for R rows over nk keys; V rows are
// vt + j·ldv (packed f32) or read directly from the tensor (any KV type).
template <int R, int C, typename VRows>
HWY_INLINE void PvMicro(const float* HWY_RESTRICT p, const VRows& vrows, int64_t nk,
                        float* const* accrows, int64_t col0) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = hn::LoadU(df, accrows[r] + col0 + c * N);
  }
  for (int64_t j = 0; j < nk; ++j) {
    if (col0 == 0) vrows.Prefetch(j);
    VF vv[C];
    for (int c = 0; c < C; ++c) vv[c] = vrows.Load(df, j, col0 + c * N);
    for (int r = 0; r < R; ++r) {
      const VF pb = hn::Set(df, p[r * kBk + j]);
      for (int c = 0; c < C; ++c) acc[r][c] = hn::MulAdd(pb, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) hn::StoreU(acc[r][c], df, accrows[r] + col0 + c * N);
  }
}

struct PackedV {
  const float* vt;
  int64_t ld;
  HWY_INLINE VF Load(DF df, int64_t j, int64_t col) const {
    return hn::Load(df, vt + j * ld + col);
  }
  HWY_INLINE void Prefetch(int64_t) const {}
};
template <typename KV>
struct DirectV {
  const KV* base;  // row j at base + j·stride
  int64_t stride;
  HWY_INLINE VF Load(DF df, int64_t j, int64_t col) const {
    return LoadRow(df, base + j * stride + col);
  }
  HWY_INLINE void Prefetch(int64_t j) const {
    if (j + kPrefetchRows < rows) PrefetchRow(base + (j + kPrefetchRows) * stride, bytes);
  }
  int64_t bytes;  // of one row
  int64_t rows;   // rows readable from base (to the end of the call's keys, not just the tile)
};
// V rows read in place by the prefill path: the tile's rows are reused by every panel, and the
// next tile of a sparse pattern is not 64 rows on, so no prefetching.
template <typename KV>
struct InPlaceV {
  const KV* base;  // row j at base + j·stride
  int64_t stride;
  HWY_INLINE VF Load(DF df, int64_t j, int64_t col) const {
    return LoadRow(df, base + j * stride + col);
  }
  HWY_INLINE void Prefetch(int64_t) const {}
};

// O += P·V over width `width` (a multiple of N) in chunks of kDvVecs vectors, then single vectors.
template <int R, typename VRows>
HWY_INLINE void PvPanel(const float* p, const VRows& vrows, int64_t nk, float* const* accrows,
                        int64_t width) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t col = 0;
  for (; col + kDvVecs * N <= width; col += kDvVecs * N) {
    PvMicro<R, kDvVecs>(p, vrows, nk, accrows, col);
  }
  for (; col < width; col += N) PvMicro<R, 1>(p, vrows, nk, accrows, col);
}

// out[0..3] = the lane sums of a, b, c, e. Interleaving the four vectors before the final
// reduction shares its cross-lane steps: ~10 operations instead of 4 full reductions (~40),
// which the decode path does for every 4 keys × up to 4 rows.
HWY_INLINE void Sum4(DF df, VF a, VF b, VF c, VF e, float* out) {
#if HWY_TARGET == HWY_SCALAR
  out[0] = hn::GetLane(a), out[1] = hn::GetLane(b), out[2] = hn::GetLane(c),
  out[3] = hn::GetLane(e);
  (void)df;
#else
  // Per 128-bit block: ab = [a0+a2, b0+b2, a1+a3, b1+b3], ce likewise.
  const VF ab = hn::Add(hn::InterleaveLower(df, a, b), hn::InterleaveUpper(df, a, b));
  const VF ce = hn::Add(hn::InterleaveLower(df, c, e), hn::InterleaveUpper(df, c, e));
  // Per block: [a, b, c, e] partial sums (64-bit interleave keeps the (a, b) and (c, e) pairs).
  const hn::Repartition<double, DF> d64;
  const auto ab64 = hn::BitCast(d64, ab), ce64 = hn::BitCast(d64, ce);
  VF v = hn::Add(hn::BitCast(df, hn::InterleaveLower(d64, ab64, ce64)),
                 hn::BitCast(df, hn::InterleaveUpper(d64, ab64, ce64)));
  // Sum the 128-bit blocks.
  alignas(64) float lanes[hn::MaxLanes(df)];
  hn::Store(v, df, lanes);
  const size_t n = hn::Lanes(df);
  for (int t = 0; t < 4; ++t) {
    float sum = 0.0f;
    for (size_t blk = 0; blk < n; blk += 4) sum += lanes[blk + static_cast<size_t>(t)];
    out[t] = sum;
  }
#endif
}

// Direct S for R ≤ 4 rows: keys read straight from the tensor, 4 keys at a time. `avail` is the
// number of key rows readable from kbase in this call (to the end of the tensor, beyond the tile's
// nk): rows up to kPrefetchRows ahead are prefetched within it.
template <int R, typename KV>
HWY_INLINE void QkDirect(const float* const* qrows, const KV* kbase, int64_t kstride, int64_t nk,
                         int64_t avail, int64_t dk, float* s) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t j = 0;
  for (; j + 4 <= nk; j += 4) {
    VF acc[R][4];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < 4; ++t) acc[r][t] = hn::Zero(df);
    }
    const KV* k0 = kbase + j * kstride;
    for (int t = 0; t < 4 && j + t + kPrefetchRows < avail; ++t) {
      PrefetchRow(k0 + (t + kPrefetchRows) * kstride, dk * static_cast<int64_t>(sizeof(KV)));
    }
    for (int64_t d = 0; d < dk; d += N) {
      VF kv[4];
      for (int t = 0; t < 4; ++t) kv[t] = LoadRow(df, k0 + t * kstride + d);
      for (int r = 0; r < R; ++r) {
        const VF qv = hn::LoadU(df, qrows[r] + d);
        for (int t = 0; t < 4; ++t) acc[r][t] = hn::MulAdd(qv, kv[t], acc[r][t]);
      }
    }
    for (int r = 0; r < R; ++r) {
      Sum4(df, acc[r][0], acc[r][1], acc[r][2], acc[r][3], s + r * kBk + j);
    }
  }
  for (; j < nk; ++j) {
    VF acc[R];
    for (int r = 0; r < R; ++r) acc[r] = hn::Zero(df);
    const KV* kr = kbase + j * kstride;
    for (int64_t d = 0; d < dk; d += N) {
      const VF kv = LoadRow(df, kr + d);
      for (int r = 0; r < R; ++r) acc[r] = hn::MulAdd(hn::LoadU(df, qrows[r] + d), kv, acc[r]);
    }
    for (int r = 0; r < R; ++r) s[r * kBk + j] = hn::GetLane(hn::SumOfLanes(df, acc[r]));
  }
}

// Per-thread scratch, allocated before the parallel region.
struct Workspace {
  hwy::AlignedFreeUniquePtr<float[]> kt, vt, s, acc, zero_row;
  std::vector<float> m, l;
  std::vector<uint8_t> allowed;
  std::vector<int32_t> row_lo, row_hi;  // partial tile: allowed keys of row i lie in [lo, hi)
  std::vector<const float*> qrows;
  std::vector<float*> accrows;
  std::vector<int64_t> tiles;     // the current unit's key blocks (Mask::KeyTiles)
  int64_t head0 = 0;              // first query head of the current unit's group
  int64_t bh = 0, head_slot = 0;  // current (batch, kv head) and its slot in the shared buffer
  int64_t skipped = 0, full = 0, partial = 0;
};

// Mods: the call's score modifiers as compile-time flags (detail::ScoreMods, resolved once per
// call by detail::DispatchScoreMods), so the softmax loop tests none that is off.
template <typename KV, typename Mods>
class Kernel {
 public:
  Kernel(const detail::DenseJob<KV>& job, const Mods& mods)
      : job_(job), g_(job.g), o_(*job.options), mods_(mods) {
    const DF df;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    dv_pad_ = (g_.dv + N - 1) / N * N;
    // A unit (query block × the kv head's group) should hold >= 128 rows: its per-unit costs
    // (loading Q, starting and finishing the softmax, packing the tiles it is first to need)
    // are then spread over twice the work for MHA. Partial tiles cost only the panels that see
    // keys, so 64-token pattern blocks straddling a 128-row unit waste little (measured: see
    // docs/BENCHMARKS.md, "Measurements behind code choices").
    bq_ = g_.group == 1 ? 2 * detail::kDenseBlockQ : detail::kDenseBlockQ;
    num_qb_ = (g_.seqlen_q + bq_ - 1) / bq_;
    num_kb_ = (g_.seqlen_kv + kBk - 1) / kBk;
    const int64_t rows_max = g_.group * std::min(bq_, g_.seqlen_q);
    direct_ = rows_max <= kDirectRows && g_.dk % N == 0 && g_.dv % N == 0;
    // f32 V rows whose width is whole vectors feed P·V straight from the tensor: packing them
    // would only copy them, and for sparse patterns (a tile used by a few query blocks) the
    // copy's memory traffic cost more than the arithmetic it serves. bf16 V is widened once
    // in the pack instead.
    v_direct_ = std::is_same_v<KV, float> && g_.dv % N == 0;
    const double tile_bytes = static_cast<double>(kBk) * (g_.dk + (v_direct_ ? 0 : dv_pad_)) * 4.0;
    const auto slots =
        std::max<int64_t>(1, static_cast<int64_t>(detail::GetDensePackBudget() / tile_bytes));
    const int64_t heads_all = g_.batch * g_.heads_kv;
    // With one query block per head every tile is used once: nothing to keep.
    shared_ = !direct_ && num_qb_ > 1;
    if (shared_) {
      if (num_kb_ <= slots) {
        heads_per_round_ = std::min(heads_all, slots / num_kb_);
        seg_tiles_ = num_kb_;
      } else {
        heads_per_round_ = 1;
        seg_tiles_ = slots;
      }
      num_segs_ = (num_kb_ + seg_tiles_ - 1) / seg_tiles_;
    }
  }

  void Run() {
    const int threads = std::max(1, job_.threads);
    const int64_t rows_max = g_.group * std::min(bq_, g_.seqlen_q);
    std::vector<Workspace> ws(static_cast<size_t>(threads));
    for (auto& w : ws) {
      if (!direct_) {
        w.kt = hwy::AllocateAligned<float>(static_cast<size_t>(g_.dk * kBk));
        if (!v_direct_) w.vt = hwy::AllocateAligned<float>(static_cast<size_t>(kBk * dv_pad_));
      }
      w.s = hwy::AllocateAligned<float>(static_cast<size_t>(kRows * kBk));
      // Zeroed once: a partial tile's panel leaves the key vectors no row sees uncomputed, and
      // Softmax scales (and soft-caps) whole rows before the mask replaces those columns.
      std::fill(w.s.get(), w.s.get() + kRows * kBk, 0.0f);
      w.acc = hwy::AllocateAligned<float>(static_cast<size_t>((rows_max + kRows) * dv_pad_));
      w.zero_row = hwy::AllocateAligned<float>(static_cast<size_t>(std::max(g_.dk, dv_pad_)));
      std::fill(w.zero_row.get(), w.zero_row.get() + std::max(g_.dk, dv_pad_), 0.0f);
      w.m.resize(static_cast<size_t>(rows_max));
      w.l.resize(static_cast<size_t>(rows_max));
      w.allowed.resize(static_cast<size_t>(bq_ * kBk));
      w.row_lo.resize(static_cast<size_t>(bq_));
      w.row_hi.resize(static_cast<size_t>(bq_));
      w.qrows.resize(static_cast<size_t>(rows_max + kRows));
      w.accrows.resize(static_cast<size_t>(rows_max + kRows));
    }
    const int64_t heads_all = g_.batch * g_.heads_kv;
    const int64_t units = heads_all * num_qb_;
    if (shared_) {
      const auto round_floats = static_cast<size_t>(heads_per_round_ * seg_tiles_ * kBk);
      shared_k_ = detail::Scratch<float>(round_floats * static_cast<size_t>(g_.dk));
      if (!v_direct_) {
        shared_v_ = detail::Scratch<float>(round_floats * static_cast<size_t>(dv_pad_));
      }
      state_ = std::make_unique<std::atomic<uint8_t>[]>(static_cast<size_t>(heads_all * num_kb_));
      if (num_segs_ > 1) {  // one head per round: its query rows' softmax state between segments
        saved_m_.resize(static_cast<size_t>(num_qb_ * rows_max));
        saved_l_.resize(static_cast<size_t>(num_qb_ * rows_max));
      }
    }
    // Longest first: with a causal mask the last query blocks see the most keys, so units are
    // ordered by descending query block (all heads' query block qb before qb − 1, so the threads
    // work on the same tiles) and handed out dynamically.
    const int64_t rounds = shared_ ? (heads_all + heads_per_round_ - 1) / heads_per_round_ : 1;
    const int64_t segs = shared_ ? num_segs_ : 1;
    detail::RegionExceptions errors;
#pragma omp parallel num_threads(threads)
    {
      Workspace& w = ws[static_cast<size_t>(omp_get_thread_num())];
      for (int64_t round = 0; round < rounds; ++round) {
        const int64_t bh0 = shared_ ? round * heads_per_round_ : 0;
        const int64_t nh = shared_ ? std::min(heads_per_round_, heads_all - bh0) : heads_all;
        for (int64_t seg = 0; seg < segs; ++seg) {
#pragma omp for schedule(dynamic, 1)
          for (int64_t u = 0; u < nh * num_qb_; ++u) {
            const int64_t qb = num_qb_ - 1 - u / nh;
            const int64_t bh = bh0 + u % nh;
            w.bh = bh;
            w.head_slot = bh - bh0;
            errors.Run([&] { Unit(w, bh / g_.heads_kv, bh % g_.heads_kv, qb, seg); });
          }  // implicit barrier: the buffer is reused only after every unit is done with it
        }
      }
    }
    errors.Rethrow();
    if (o_.stats) {
      DenseStats& st = *o_.stats;
      st = DenseStats{};
      for (const auto& w : ws) {
        st.tiles_skipped += w.skipped;
        st.tiles_full += w.full;
        st.tiles_partial += w.partial;
      }
      st.tiles_total = units * num_kb_;
      st.block_q = bq_;
      st.block_kv = kBk;
    }
  }

 private:
  // Query block qb of (batch b, kv head hk) against the key blocks of segment `seg` (all of
  // them when the head is not split). Its first segment with keys starts the online softmax,
  // its last one finishes it; in between the state waits in saved_m_/saved_l_ and `out`.
  void Unit(Workspace& w, int64_t b, int64_t hk, int64_t qb, int64_t seg) {
    const int64_t i0 = qb * bq_, i1 = std::min(g_.seqlen_q, i0 + bq_);
    const int64_t nq = i1 - i0;
    const int64_t rows = g_.group * nq;  // row r = gh · nq + (i − i0)
    const int64_t qp0 = g_.q_start + i0, qp1 = g_.q_start + i1;
    w.tiles.clear();
    if (o_.mask) {  // only the key blocks that may hold an allowed pair; the rest are skipped
      o_.mask->KeyTiles(qp0, qp1, g_.k_start, g_.k_start + g_.seqlen_kv, kBk, &w.tiles);
    } else {
      for (int64_t jb = 0; jb < num_kb_; ++jb) w.tiles.push_back(jb);
    }
    // A user Mask's KeyTiles indexes our buffers: it must list valid tiles, ascending, once.
    for (size_t t = 0; t < w.tiles.size(); ++t) {
      Require(w.tiles[t] >= 0 && w.tiles[t] < num_kb_ && (t == 0 || w.tiles[t] > w.tiles[t - 1]),
              "DenseForward: mask ", o_.mask ? o_.mask->Describe() : std::string("none"),
              ": KeyTiles must list key tiles in [0, ", num_kb_,
              ") in increasing order without repeats, got ", w.tiles[t]);
    }
    const int64_t seg_tiles = shared_ ? seg_tiles_ : num_kb_;
    const int64_t first_seg = w.tiles.empty() ? 0 : w.tiles.front() / seg_tiles;
    const int64_t last_seg = w.tiles.empty() ? 0 : w.tiles.back() / seg_tiles;
    if (seg < first_seg || seg > last_seg) return;
    if (seg == first_seg) w.skipped += num_kb_ - static_cast<int64_t>(w.tiles.size());
    w.head0 = hk * g_.group;
    for (int64_t r = 0; r < rows; ++r) {
      w.qrows[r] = job_.q.row(b, hk * g_.group + r / nq, i0 + r % nq);
      w.accrows[r] = w.acc.get() + r * dv_pad_;
    }
    for (int64_t r = rows; r < rows + kRows; ++r) {  // padding rows of the last panel
      w.qrows[r] = w.zero_row.get();
      w.accrows[r] = w.acc.get() + rows * dv_pad_;
    }
    std::fill(w.acc.get(), w.acc.get() + (rows + 1) * dv_pad_, 0.0f);
    const int64_t rows_max = static_cast<int64_t>(w.m.size());
    if (seg == first_seg) {
      std::fill(w.m.begin(), w.m.begin() + rows, detail::kNegInf);
      std::fill(w.l.begin(), w.l.begin() + rows, 0.0f);
    } else {  // resume: the unnormalised output rows wait in `out`
      for (int64_t r = 0; r < rows; ++r) {
        const float* orow = job_.out.row(b, hk * g_.group + r / nq, i0 + r % nq);
        std::copy(orow, orow + g_.dv, w.accrows[r]);
        w.m[r] = saved_m_[static_cast<size_t>(qb * rows_max + r)];
        w.l[r] = saved_l_[static_cast<size_t>(qb * rows_max + r)];
      }
    }
    for (const int64_t jb : w.tiles) {
      if (jb / seg_tiles != seg) continue;
      const int64_t j0 = jb * kBk, j1 = std::min(g_.seqlen_kv, j0 + kBk);
      const int64_t kp0 = g_.k_start + j0, kp1 = g_.k_start + j1;
      TileKind kind = TileKind::kFull;
      if (o_.mask) kind = o_.mask->Classify(qp0, qp1, kp0, kp1);
      if (kind == TileKind::kEmpty) {
        ++w.skipped;
        continue;
      }
      if (kind == TileKind::kPartial) {
        ++w.partial;
        o_.mask->FillTile(qp0, qp1, kp0, kp1, w.allowed.data());
        RowBounds(w, i1 - i0, kp1 - kp0);
      } else {
        ++w.full;
      }
      Tile(w, b, hk, i0, nq, rows, jb, j1 - j0, kind == TileKind::kPartial);
    }
    if (seg == last_seg) {
      Finish(w, b, hk, i0, nq, rows);
      return;
    }
    for (int64_t r = 0; r < rows; ++r) {  // park the state until the next segment
      float* orow = job_.out.row(b, hk * g_.group + r / nq, i0 + r % nq);
      std::copy(w.accrows[r], w.accrows[r] + g_.dv, orow);
      saved_m_[static_cast<size_t>(qb * rows_max + r)] = w.m[r];
      saved_l_[static_cast<size_t>(qb * rows_max + r)] = w.l[r];
    }
  }

  void Tile(Workspace& w, int64_t b, int64_t hk, int64_t i0, int64_t nq, int64_t rows, int64_t jb,
            int64_t nk, bool partial) {
    const int64_t j0 = jb * kBk;
    const KV* kbase = job_.k.row(b, hk, j0);
    const KV* vbase = job_.v.row(b, hk, j0);
    const int64_t kstride = job_.k.stride[2], vstride = job_.v.stride[2];
    if (direct_) {
      // Key rows readable from kbase in this call: the prefetches reach past the tile (the next
      // tile's rows) but never past the tensor.
      const int64_t avail = job_.k.shape[2] - j0;
      float* const* accrows = w.accrows.data();
      const float* const* qrows = w.qrows.data();
      switch (rows) {
        case 1:
          QkDirect<1>(qrows, kbase, kstride, nk, avail, g_.dk, w.s.get());
          break;
        case 2:
          QkDirect<2>(qrows, kbase, kstride, nk, avail, g_.dk, w.s.get());
          break;
        case 3:
          QkDirect<3>(qrows, kbase, kstride, nk, avail, g_.dk, w.s.get());
          break;
        default:
          QkDirect<4>(qrows, kbase, kstride, nk, avail, g_.dk, w.s.get());
          break;
      }
      for (int64_t r = 0; r < rows; ++r) Softmax(w, r, r, i0, nq, j0, nk, partial);
      const DirectV<KV> vr{vbase, vstride, g_.dv * static_cast<int64_t>(sizeof(KV)), avail};
      switch (rows) {
        case 1:
          PvPanel<1>(w.s.get(), vr, nk, accrows, g_.dv);
          break;
        case 2:
          PvPanel<2>(w.s.get(), vr, nk, accrows, g_.dv);
          break;
        case 3:
          PvPanel<3>(w.s.get(), vr, nk, accrows, g_.dv);
          break;
        default:
          PvPanel<4>(w.s.get(), vr, nk, accrows, g_.dv);
          break;
      }
      return;
    }
    float* kt = w.kt.get();
    float* vt = w.vt.get();
    if (shared_) {
      const int64_t slot = w.head_slot * seg_tiles_ + jb % seg_tiles_;
      kt = shared_k_.get() + slot * kBk * g_.dk;
      vt = v_direct_ ? nullptr : shared_v_.get() + slot * kBk * dv_pad_;
      std::atomic<uint8_t>& state = state_[static_cast<size_t>(w.bh * num_kb_ + jb)];
      if (state.load(std::memory_order_acquire) != kReady) {
        uint8_t expected = kEmpty;
        if (state.compare_exchange_strong(expected, kPacking, std::memory_order_acq_rel)) {
          Pack(kbase, kstride, vbase, vstride, nk, kt, vt);  // cannot throw
          state.store(kReady, std::memory_order_release);
        } else if (expected == kPacking) {
          // Another thread is packing this tile right now: pack a private copy rather than
          // wait (a descheduled packer could otherwise cost a whole time slice).
          kt = w.kt.get();
          vt = w.vt.get();
          Pack(kbase, kstride, vbase, vstride, nk, kt, vt);
        }  // else expected == kReady: it finished between the load and the exchange
      }
    } else {
      Pack(kbase, kstride, vbase, vstride, nk, kt, vt);
    }
    const DF df;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
      const float* const* qrows = w.qrows.data() + r0;
      const int64_t pr = std::min<int64_t>(kRows, rows - r0);
      // Key vectors [v0, v1) of the tile. In a partial tile only those that some row of this
      // panel may see: a triangular tile (the causal diagonal, a window's far edge) then costs
      // about half. Columns outside are masked for every row of the panel, so their S is
      // replaced by −∞ in Softmax and P·V skips them; a panel that sees nothing is skipped
      // whole (its rows' running state would not change).
      int64_t v0 = 0, v1 = kBk / N;
      if (partial) {
        int64_t lo = kBk, hi = 0;
        for (int64_t r = r0; r < r0 + pr; ++r) {
          lo = std::min<int64_t>(lo, w.row_lo[static_cast<size_t>(r % nq)]);
          hi = std::max<int64_t>(hi, w.row_hi[static_cast<size_t>(r % nq)]);
        }
        if (hi <= lo) continue;
        v0 = lo / N;
        v1 = (hi + N - 1) / N;
      }
      int64_t v = v0;
      for (; v + kKeyVecs <= v1; v += kKeyVecs) {
        QkMicro<kRows, kKeyVecs>(qrows, kt, g_.dk, w.s.get(), v * N);
      }
      switch (v1 - v) {  // at most kKeyVecs − 1 vectors left
        case 1:
          QkMicro<kRows, 1>(qrows, kt, g_.dk, w.s.get(), v * N);
          break;
        case 2:
          QkMicro<kRows, 2>(qrows, kt, g_.dk, w.s.get(), v * N);
          break;
        case 3:
          QkMicro<kRows, 3>(qrows, kt, g_.dk, w.s.get(), v * N);
          break;
        default:
          break;
      }
      for (int64_t r = 0; r < pr; ++r) Softmax(w, r, r0 + r, i0, nq, j0, nk, partial);
      for (int64_t r = pr; r < kRows; ++r)
        std::fill(w.s.get() + r * kBk, w.s.get() + (r + 1) * kBk, 0.0f);
      const int64_t k_lo = v0 * N, k_hi = std::min(nk, v1 * N);
      if (v_direct_) {
        const InPlaceV<KV> pv{vbase + k_lo * vstride, vstride};
        PvPanel<kRows>(w.s.get() + k_lo, pv, k_hi - k_lo, w.accrows.data() + r0, dv_pad_);
      } else {
        const PackedV pv{vt + k_lo * dv_pad_, dv_pad_};
        PvPanel<kRows>(w.s.get() + k_lo, pv, k_hi - k_lo, w.accrows.data() + r0, dv_pad_);
      }
    }
  }

  // For the partial tile in w.allowed (nq rows of nk bytes): each row's first and one-past-last
  // allowed key (lo = hi = 0 when none), scanning 8 bytes at a time from both ends.
  static void RowBounds(Workspace& w, int64_t nq, int64_t nk) {
    for (int64_t i = 0; i < nq; ++i) {
      const uint8_t* a = w.allowed.data() + i * nk;
      int64_t lo = 0;
      for (; lo + 8 <= nk; lo += 8) {
        uint64_t word;
        std::memcpy(&word, a + lo, 8);
        if (word != 0) break;
      }
      while (lo < nk && a[lo] == 0) ++lo;
      int64_t hi = nk;
      if (lo < nk) {
        for (; hi - 8 > lo; hi -= 8) {
          uint64_t word;
          std::memcpy(&word, a + hi - 8, 8);
          if (word != 0) break;
        }
        while (a[hi - 1] == 0) --hi;
      } else {
        lo = hi = 0;
      }
      w.row_lo[static_cast<size_t>(i)] = static_cast<int32_t>(lo);
      w.row_hi[static_cast<size_t>(i)] = static_cast<int32_t>(hi);
    }
  }

  // Packs a K tile transposed (kt[d][j]) and, unless V is read in place, a V tile row-major
  // (widening bf16), zero-padded to a
  // full block.
  void Pack(const KV* kbase, int64_t kstride, const KV* vbase, int64_t vstride, int64_t nk,
            float* HWY_RESTRICT kt, float* HWY_RESTRICT vt) const {
    int64_t j4 = 0;
#if HWY_TARGET != HWY_SCALAR
    if constexpr (std::is_same_v<KV, float>) {
      // 4 keys × 4 dims at a time: four 128-bit loads, a 4 × 4 transpose in registers, four
      // 128-bit stores (half the instructions of the scalar loop, which bound the pack).
      const hn::Full128<float> d4;
      for (; j4 + 4 <= nk; j4 += 4) {
        const float* r0 = kbase + j4 * kstride;
        const float* r1 = r0 + kstride;
        const float* r2 = r1 + kstride;
        const float* r3 = r2 + kstride;
        int64_t d = 0;
        for (; d + 4 <= g_.dk; d += 4) {
          const auto a = hn::LoadU(d4, r0 + d), b = hn::LoadU(d4, r1 + d);
          const auto c = hn::LoadU(d4, r2 + d), e = hn::LoadU(d4, r3 + d);
          const auto ab_lo = hn::InterleaveLower(d4, a, b), ab_hi = hn::InterleaveUpper(d4, a, b);
          const auto ce_lo = hn::InterleaveLower(d4, c, e), ce_hi = hn::InterleaveUpper(d4, c, e);
          float* out = kt + d * kBk + j4;
          hn::StoreU(hn::ConcatLowerLower(d4, ce_lo, ab_lo), d4, out);
          hn::StoreU(hn::ConcatUpperUpper(d4, ce_lo, ab_lo), d4, out + kBk);
          hn::StoreU(hn::ConcatLowerLower(d4, ce_hi, ab_hi), d4, out + 2 * kBk);
          hn::StoreU(hn::ConcatUpperUpper(d4, ce_hi, ab_hi), d4, out + 3 * kBk);
        }
        for (; d < g_.dk; ++d) {
          for (int64_t t = 0; t < 4; ++t) kt[d * kBk + j4 + t] = kbase[(j4 + t) * kstride + d];
        }
      }
    }
#endif
    for (int64_t j = 0; j < nk; ++j) {
      if (j >= j4) {
        const KV* kr = kbase + j * kstride;
        for (int64_t d = 0; d < g_.dk; ++d) kt[d * kBk + j] = ToFloat(kr[d]);
      }
      if (v_direct_) continue;
      const KV* vr = vbase + j * vstride;
      float* vd = vt + j * dv_pad_;
      for (int64_t d = 0; d < g_.dv; ++d) vd[d] = ToFloat(vr[d]);
      for (int64_t d = g_.dv; d < dv_pad_; ++d) vd[d] = 0.0f;
    }
    if (nk < kBk) {
      for (int64_t d = 0; d < g_.dk; ++d) std::fill(kt + d * kBk + nk, kt + (d + 1) * kBk, 0.0f);
    }
  }

  // Turns the logits of panel row `pr` (unit row `r`) into probabilities in place and rescales
  // the row's accumulator; masked and padding columns become exactly 0.
  void Softmax(Workspace& w, int64_t pr, int64_t r, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
               bool partial) {
    const DF df;
    const int64_t N = static_cast<int64_t>(hn::Lanes(df));
    float* s = w.s.get() + pr * kBk;
    const int64_t i = r % nq;
    const int64_t qpos = g_.q_start + i0 + i;
    const VF vscale = hn::Set(df, g_.scale);
    for (int64_t j = 0; j < kBk; j += N) hn::Store(hn::Mul(hn::Load(df, s + j), vscale), df, s + j);
    if constexpr (Mods::kRewritesLogits) {
      const int64_t head = w.head0 + r / nq;
      for (int64_t j = 0; j < nk; ++j) s[j] = mods_.Logit(s[j], head, qpos, g_.k_start + j0 + j);
    }
    if (partial) {  // masked logits become −inf, N at a time
      const uint8_t* a = w.allowed.data() + i * nk;
      const hn::Rebind<uint8_t, DF> d8;
      const hn::RebindToUnsigned<DF> du;
      const VF neg_inf = hn::Set(df, detail::kNegInf);
      int64_t j = 0;
      for (; j + N <= nk; j += N) {
        const auto masked =
            hn::RebindMask(df, hn::Eq(hn::PromoteTo(du, hn::LoadU(d8, a + j)), hn::Zero(du)));
        hn::Store(hn::IfThenElse(masked, neg_inf, hn::Load(df, s + j)), df, s + j);
      }
      for (; j < nk; ++j) {
        if (!a[j]) s[j] = detail::kNegInf;
      }
    }
    for (int64_t j = nk; j < kBk; ++j) s[j] = detail::kNegInf;
    VF vmax = hn::Load(df, s);
    for (int64_t j = N; j < kBk; j += N) vmax = hn::Max(vmax, hn::Load(df, s + j));
    const float row_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
    if (row_max == detail::kNegInf) {  // nothing visible in this tile for this row
      std::fill(s, s + kBk, 0.0f);
      return;
    }
    const float m_old = w.m[r];
    const float m_new = std::max(m_old, row_max);
    if (m_new != m_old) {
      const float corr = std::exp(m_old - m_new);  // 0 on the row's first visible tile
      float* acc = w.accrows[r];
      const VF vc = hn::Set(df, corr);
      for (int64_t d = 0; d < dv_pad_; d += N)
        hn::StoreU(hn::Mul(hn::LoadU(df, acc + d), vc), df, acc + d);
      w.l[r] *= corr;
      w.m[r] = m_new;
    }
    const VF vm = hn::Set(df, m_new);
    VF vsum = hn::Zero(df);
    for (int64_t j = 0; j < kBk; j += N) {
      const VF p = hn::Exp(df, hn::Sub(hn::Load(df, s + j), vm));  // exp(−inf) = 0
      hn::Store(p, df, s + j);
      vsum = hn::Add(vsum, p);
    }
    w.l[r] += hn::GetLane(hn::SumOfLanes(df, vsum));
  }

  // Folds in the sink, normalises and writes out (and lse).
  void Finish(Workspace& w, int64_t b, int64_t hk, int64_t i0, int64_t nq, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = hk * g_.group + r / nq;
      const int64_t i = i0 + r % nq;
      float mr = w.m[r], lr = w.l[r];
      float* ar = w.accrows[r];
      if constexpr (Mods::kHasSinks) {  // the sink joins the normaliser only
        const float corr = mods_.Normaliser(h, mr, lr);
        if (corr != 1.0f) {
          for (int64_t d = 0; d < g_.dv; ++d) ar[d] *= corr;
        }
      }
      float* orow = job_.out.row(b, h, i);
      const float inv = lr > 0.0f ? 1.0f / lr : 0.0f;
      for (int64_t d = 0; d < g_.dv; ++d) orow[d] = ar[d] * inv;
      if (!job_.lse.empty()) {
        job_.lse.at(b, h, i, 0) = lr > 0.0f ? mr + std::log(lr) : detail::kNegInf;
      }
    }
  }

  static constexpr uint8_t kEmpty = 0, kPacking = 1, kReady = 2;

  const detail::DenseJob<KV>& job_;
  const detail::DenseGeometry& g_;
  const DenseOptions& o_;
  const Mods mods_;
  int64_t dv_pad_, bq_, num_qb_, num_kb_, heads_per_round_ = 0, seg_tiles_ = 0, num_segs_ = 1;
  bool direct_, shared_ = false, v_direct_ = false;
  detail::Scratch<float> shared_k_, shared_v_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;  // per (batch·kv head, key block)
  std::vector<float> saved_m_, saved_l_;           // segmented heads: per (query block, row)
};

template <typename KV>
void Run(const detail::DenseJob<KV>& job) {
  detail::DispatchScoreMods(*job.options, [&](const auto& mods) {
    Kernel<KV, std::decay_t<decltype(mods)>>(job, mods).Run();
  });
}

}  // namespace

void DenseF32(const detail::DenseJob<float>& job) { Run(job); }
void DenseBf16(const detail::DenseJob<bf16>& job) { Run(job); }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {
namespace {
HWY_EXPORT(DenseF32);
constexpr double kSharedPackBytes = 32.0 * 1024 * 1024;
std::atomic<double> g_pack_bytes{kSharedPackBytes};
HWY_EXPORT(DenseBf16);

// rule: apply the non-finite rule (kernels/nonfinite.h); false when the caller knows the inputs
// are finite (decode over a cache that holds no non-finite row).
template <typename KV>
void Dispatch(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
              TensorView<float> out, const DenseOptions& o, TensorView<float> lse, bool rule) {
  if (o.backend == Backend::kReference) {
    if (rule) {
      ref::DenseForward(q, k, v, out, o, lse);
    } else {
      detail::RefDenseForwardFinite(q, k, v, out, o, lse);
    }
    return;
  }
  const detail::DenseGeometry g = detail::CheckDenseArgs("DenseForward", q, k, v, out, o, lse);
  auto run = [&](TensorView<const float> q2, TensorView<const KV> k2, TensorView<const KV> v2) {
    const detail::DenseJob<KV> job{q2, k2, v2, out, lse, &o, g, ResolveThreads(o.num_threads)};
    detail::DenseFastUnchecked(job);
  };
  if (rule) {
    detail::DenseNonFiniteRule(g, q, k, v, out, o, lse, run);
  } else {
    run(q, k, v);
  }
}

}  // namespace

namespace detail {
double GetDensePackBudget() { return g_pack_bytes.load(std::memory_order_relaxed); }
void SetDensePackBudgetForTesting(double bytes) {
  g_pack_bytes = bytes > 0 ? bytes : kSharedPackBytes;
}
void DenseFastUnchecked(const DenseJob<float>& job) { HWY_DYNAMIC_DISPATCH(DenseF32)(job); }
void DenseFastUnchecked(const DenseJob<bf16>& job) { HWY_DYNAMIC_DISPATCH(DenseBf16)(job); }
template <typename KV>
void DenseForwardFinite(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                        TensorView<float> out, const DenseOptions& o, TensorView<float> lse) {
  Dispatch<KV>(q, k, v, out, o, lse, /*rule=*/false);
}
template void DenseForwardFinite<float>(TensorView<const float>, TensorView<const float>,
                                        TensorView<const float>, TensorView<float>,
                                        const DenseOptions&, TensorView<float>);
template void DenseForwardFinite<bf16>(TensorView<const float>, TensorView<const bf16>,
                                       TensorView<const bf16>, TensorView<float>,
                                       const DenseOptions&, TensorView<float>);
}  // namespace detail

template <typename KV>
void DenseForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                  TensorView<float> out, const DenseOptions& options, TensorView<float> lse) {
  Dispatch<std::remove_const_t<KV>>(q, k, v, out, options, lse, /*rule=*/true);
}
template void DenseForward<float>(TensorView<const float>, TensorView<float>, TensorView<float>,
                                  TensorView<float>, const DenseOptions&, TensorView<float>);
template void DenseForward<const float>(TensorView<const float>, TensorView<const float>,
                                        TensorView<const float>, TensorView<float>,
                                        const DenseOptions&, TensorView<float>);
template void DenseForward<bf16>(TensorView<const float>, TensorView<bf16>, TensorView<bf16>,
                                 TensorView<float>, const DenseOptions&, TensorView<float>);
template void DenseForward<const bf16>(TensorView<const float>, TensorView<const bf16>,
                                       TensorView<const bf16>, TensorView<float>,
                                       const DenseOptions&, TensorView<float>);

}  // namespace attnkit
#endif  // HWY_ONCE
