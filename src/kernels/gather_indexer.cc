// The lightning indexer (DSA) and its top-k selection, fused so that no seqlen_q × seqlen_kv
// buffer exists: one work unit is a block of kQueryBlock queries, which scores every key it can
// see (32-key tiles packed once per call) and then selects its top-k rows.
//
// Micro-kernels: AVX-512 BF16 (gather_indexer_bf16.cc) when the CPU has it and reduced precision
// is asked for; otherwise a Highway f32 kernel (keys in the lanes, 4 rows × 32 keys per call)
// fed with the same bf16-rounded inputs, so both paths compute the same function up to f32
// summation order. Cost per (query, key) pair: index_heads · index_dim multiply-adds — the
// indexer is cheap only because it is small (V3.2: 64 heads × 128 vs MLA's 128 × (576 + 512)).
//
// Top-k: a three-pass radix select on order-preserving uint32 keys (11 + 11 + 10 bits) finds the
// k-th largest score T; rows above T are taken, then rows equal to T in increasing row order.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gather_indexer.cc"
#include "core/scratch.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/gather_indexer.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <int kRows>
HWY_INLINE void TileF32(const float* const* q, const float* w, float* const* dst, const float* tile,
                        int64_t dim) {
  const hn::ScalableTag<float> d;
  constexpr int64_t lanes = HWY_LANES(float);
  constexpr int64_t nv = detail::kIndexTileKeys / lanes;
  static_assert(nv * lanes == detail::kIndexTileKeys, "tile width must be a multiple of lanes");
  decltype(hn::Zero(d)) acc[kRows][nv];
  for (int r = 0; r < kRows; ++r) {
    for (int64_t v = 0; v < nv; ++v) acc[r][v] = hn::Zero(d);
  }
  for (int64_t x = 0; x < dim; ++x) {
    const float* kx = tile + x * detail::kIndexTileKeys;
    for (int r = 0; r < kRows; ++r) {
      const auto qv = hn::Set(d, q[r][x]);
      for (int64_t v = 0; v < nv; ++v) {
        acc[r][v] = hn::MulAdd(qv, hn::LoadU(d, kx + v * lanes), acc[r][v]);
      }
    }
  }
  const auto zero = hn::Zero(d);
  for (int r = 0; r < kRows; ++r) {
    const auto wv = hn::Set(d, w[r]);
    for (int64_t v = 0; v < nv; ++v) {
      float* p = dst[r] + v * lanes;
      hn::StoreU(hn::MulAdd(wv, hn::Max(acc[r][v], zero), hn::LoadU(d, p)), d, p);
    }
  }
}

// For r < rows: dst[r][j] += w[r] · max(0, q[r] · key_j), j < 32; tile [dim][32] f32.
void IndexTileF32(const float* const* q, const float* w, float* const* dst, int rows,
                  const float* tile, int64_t dim) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) TileF32<4>(q + r, w + r, dst + r, tile, dim);
  for (; r < rows; ++r) TileF32<1>(q + r, w + r, dst + r, tile, dim);
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/gather.h"
#include "kernels/gather_common.h"

namespace attnkit {
HWY_EXPORT(IndexTileF32);

namespace detail {
namespace {
std::atomic<bool> g_bf16_allowed{true};
}  // namespace
void SetIndexerBf16Allowed(bool allowed) { g_bf16_allowed.store(allowed); }
}  // namespace detail

bool IndexerUsesAvx512Bf16() {
  static const bool has = detail::CpuHasAvx512Bf16();
  return has && detail::g_bf16_allowed.load();
}

namespace {

constexpr int64_t kQueryBlock = 16;
constexpr int64_t kTile = detail::kIndexTileKeys;

// Order-preserving uint32 of a float (larger float → larger key); NaN below everything, −0 == +0.
// Branch-free, so the loop over a row vectorises (scores have random signs).
inline uint32_t OrderKey(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u;
  uint32_t key = u ^ flip;
  key = (u & 0x7fffffffu) == 0 ? 0x80000000u : key;  // ±0
  key = (u & 0x7fffffffu) > 0x7f800000u ? 0u : key;  // NaN
  return key;
}

// Finds the k-th largest key by radix select (11 + 11 + 10 bits): the first pass histograms all
// keys, the later ones only the candidates left in the chosen bin. Branch-free inner loops.
void TopKScratch(const float* s, int64_t n, int64_t top_k, int32_t* out,
                 std::vector<uint32_t>& keys) {
  if (n <= top_k) {
    for (int64_t j = 0; j < top_k; ++j) out[j] = j < n ? static_cast<int32_t>(j) : -1;
    return;
  }
  keys.resize(static_cast<size_t>(2 * n));
  uint32_t* key = keys.data();
  uint32_t* cand = keys.data() + n;
  uint32_t hist[2048];
  std::fill(hist, hist + 2048, 0u);
  for (int64_t j = 0; j < n; ++j) key[j] = OrderKey(s[j]);
  for (int64_t j = 0; j < n; ++j) ++hist[key[j] >> 21];
  int64_t need = top_k;
  uint32_t prefix = 0;
  int64_t num_cand = 0;
  const uint32_t* src = key;
  int64_t num_src = n;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const int bits = pass == 2 ? 10 : 11;
    const uint32_t bin_mask = (1u << bits) - 1;
    if (pass > 0) {
      std::fill(hist, hist + (1 << bits), 0u);
      for (int64_t j = 0; j < num_src; ++j) ++hist[(src[j] >> shift) & bin_mask];
    }
    int64_t above = 0;
    int64_t bin = bin_mask;
    for (; bin > 0 && above + hist[bin] < need; --bin) above += hist[bin];
    need -= above;
    prefix |= static_cast<uint32_t>(bin) << shift;
    if (pass == 2) break;
    // Keep the candidates whose bits so far equal the prefix (compacted in place into cand).
    const uint32_t high_mask = ~((1u << shift) - 1);
    num_cand = 0;
    for (int64_t j = 0; j < num_src; ++j) {
      cand[num_cand] = src[j];
      num_cand += (src[j] & high_mask) == prefix;
    }
    src = cand;
    num_src = num_cand;
  }
  // prefix is the k-th largest key T; `need` rows equal to T complete the k (lowest rows first).
  int64_t m = 0;
  for (int64_t j = 0; j < n && m < top_k; ++j) {
    const bool eq = key[j] == prefix;
    const bool take = key[j] > prefix || (eq && need > 0);
    out[m] = static_cast<int32_t>(j);
    m += take;
    need -= eq && take;
  }
  for (; m < top_k; ++m) out[m] = -1;
}

// Keys packed into 32-key tiles: bf16 pairs [tiles][depth][32] (u32) or f32 [tiles][dim][32].
template <typename KI>
void PackKeys(TensorView<const KI> ki, int64_t b, bool bf16_pairs, bool round,
              std::vector<uint32_t>& pairs, std::vector<float>& f32, int threads) {
  const int64_t n = ki.tokens(), dim = ki.dim(), tiles = (n + kTile - 1) / kTile;
  const int64_t depth = bf16_pairs ? (dim + 1) / 2 : dim;
  if (bf16_pairs) {
    pairs.assign(static_cast<size_t>(tiles * depth * kTile), 0u);
  } else {
    f32.assign(static_cast<size_t>(tiles * depth * kTile), 0.0f);
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    for (int64_t j = 0; j < kTile && t * kTile + j < n; ++j) {
      const KI* r = ki.row(b, 0, t * kTile + j);
      for (int64_t x = 0; x < dim; ++x) {
        const float v = ToFloat(r[x]);
        if (bf16_pairs) {
          const uint32_t bits = ToBf16(v).bits;
          pairs[(t * depth + x / 2) * kTile + j] |= (x % 2 == 0) ? bits : (bits << 16);
        } else {
          f32[(t * depth + x) * kTile + j] = round ? ToFloat(ToBf16(v)) : v;
        }
      }
    }
  }
}

// One thread's scratch for FastIndexer. srows (kQueryBlock rows of ld scores) is cleared per unit
// as far as the unit reads it; the query rows are written before they are read (only the pair
// or the f32 form, whichever the call uses); scratch has room for TopKScratch's largest row.
struct IndexerWorkspace {
  detail::Scratch<float> srows;
  std::vector<uint32_t> qpairs;
  std::vector<float> qf;
  std::vector<uint32_t> scratch;
  std::vector<const void*> qp;
  std::vector<float> wr;
  std::vector<float*> dst;
  IndexerWorkspace(int64_t ld, int64_t heads, int64_t depth, bool bf16, int64_t top_k,
                   int64_t seqlen_kv)
      : srows(static_cast<size_t>(kQueryBlock * ld)),
        qpairs(bf16 ? static_cast<size_t>(kQueryBlock * heads * depth) : 0),
        qf(bf16 ? 0 : static_cast<size_t>(kQueryBlock * heads * depth)),
        qp(static_cast<size_t>(kQueryBlock * heads)),
        wr(static_cast<size_t>(kQueryBlock * heads)),
        dst(static_cast<size_t>(kQueryBlock * heads)) {
    if (top_k > 0 && seqlen_kv > top_k) scratch.reserve(static_cast<size_t>(2 * seqlen_kv));
  }
};

// Scores (top_k == 0: into `scores`) or selects (top_k >= 1: into `indices`).
// cache: where the keys came from an IndexerCache, whose packed tiles the bf16 path reads as is.
template <typename KI>
void FastIndexer(TensorView<const float> qi, TensorView<const float> w, TensorView<const KI> ki,
                 int64_t top_k, TensorView<float> scores, TensorView<int32_t> indices,
                 const IndexerOptions& o, int64_t q_start, const IndexerCache* cache = nullptr) {
  const int64_t batch = qi.batch(), heads = qi.heads(), sq = qi.tokens(), dim = qi.dim();
  const int64_t skv = ki.tokens();
  const bool bf16 = o.reduced_precision && IndexerUsesAvx512Bf16();
  const int64_t depth = bf16 ? (dim + 1) / 2 : dim;
  const int threads = ResolveThreads(o.num_threads);
  const int64_t num_qb = (sq + kQueryBlock - 1) / kQueryBlock;
  const int64_t max_tiles = (skv + kTile - 1) / kTile;
  std::vector<uint32_t> kpairs;
  std::vector<float> kf32;
  auto visible = [&](int64_t i) {
    return std::clamp<int64_t>(q_start + i - o.k_start + 1, 0, skv);
  };
  // Per-thread scratch, allocated before the parallel regions (nothing may throw inside them).
  const int64_t ld = max_tiles * kTile;
  // Few query blocks (decode): split each block's key tiles over the threads instead.
  const bool split_keys = num_qb < threads && max_tiles >= 2 * threads;
  const int team = static_cast<int>(split_keys ? threads : std::min<int64_t>(threads, num_qb));
  std::vector<IndexerWorkspace> ws;
  ws.reserve(static_cast<size_t>(team));
  for (int t = 0; t < team; ++t) ws.emplace_back(ld, heads, depth, bf16, top_k, skv);
  for (int64_t b = 0; b < batch; ++b) {
    const uint32_t* packed = nullptr;
    if (bf16 && cache != nullptr) {
      packed = cache->packed_tiles(b);
    } else {
      PackKeys(ki, b, bf16, o.reduced_precision, kpairs, kf32, threads);
      packed = kpairs.data();
    }
    // One query block: its query rows (bf16 pairs or rounded f32) into the workspace, then the
    // scores of its rows over tiles [t0, t1) (rows whose query sees none of a tile skip it).
    auto load_queries = [&](IndexerWorkspace& wk, int64_t i0, int64_t nq) {
      for (int64_t i = 0; i < nq; ++i) {
        for (int64_t h = 0; h < heads; ++h) {
          const float* src = qi.row(b, h, i0 + i);
          const int64_t r = i * heads + h;
          for (int64_t x = 0; x < depth; ++x) {
            if (bf16) {
              const uint32_t lo = ToBf16(src[2 * x]).bits;
              const uint32_t hi = 2 * x + 1 < dim ? ToBf16(src[2 * x + 1]).bits : 0u;
              wk.qpairs[r * depth + x] = lo | (hi << 16);
            } else {
              wk.qf[r * depth + x] = o.reduced_precision ? ToFloat(ToBf16(src[x])) : src[x];
            }
          }
        }
      }
    };
    auto score_tiles = [&](IndexerWorkspace& wk, const IndexerWorkspace& qsrc, float* srows,
                           int64_t i0, int64_t nq, int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int rows = 0;
        for (int64_t i = 0; i < nq; ++i) {
          if (visible(i0 + i) <= t * kTile) continue;
          for (int64_t h = 0; h < heads; ++h) {
            const int64_t r = i * heads + h;
            wk.qp[rows] = bf16 ? static_cast<const void*>(qsrc.qpairs.data() + r * depth)
                               : static_cast<const void*>(qsrc.qf.data() + r * depth);
            wk.wr[rows] = w.at(b, 0, i0 + i, h);
            wk.dst[rows] = srows + i * ld + t * kTile;
            ++rows;
          }
        }
        for (int r0 = 0; r0 < rows; r0 += detail::kIndexRowsBf16) {
          const int nr = std::min(rows - r0, detail::kIndexRowsBf16);
          if (bf16) {
            detail::IndexTileBf16(reinterpret_cast<const uint32_t* const*>(wk.qp.data() + r0),
                                  wk.wr.data() + r0, wk.dst.data() + r0, nr,
                                  packed + t * depth * kTile, depth);
          } else {
            HWY_DYNAMIC_DISPATCH(IndexTileF32)
            (reinterpret_cast<const float* const*>(wk.qp.data() + r0), wk.wr.data() + r0,
             wk.dst.data() + r0, nr, kf32.data() + t * depth * kTile, depth);
          }
        }
      }
    };
    auto finish_rows = [&](IndexerWorkspace& wk, const float* srows, int64_t i0, int64_t nq) {
      for (int64_t i = 0; i < nq; ++i) {
        const float* s = srows + i * ld;
        const int64_t vis = visible(i0 + i);
        if (top_k == 0) {
          float* out = scores.row(b, 0, i0 + i);
          std::copy(s, s + vis, out);
          std::fill(out + vis, out + skv, -std::numeric_limits<float>::infinity());
        } else {
          TopKScratch(s, vis, top_k, indices.row(b, 0, i0 + i), wk.scratch);
        }
      }
    };
    if (split_keys) {
      // Fewer query blocks than threads (decode): the threads share each block's key tiles in
      // contiguous ranges (disjoint score columns), then select the block's rows' top-k.
      IndexerWorkspace& w0 = ws[0];
      float* const srows = w0.srows.get();
      for (int64_t qb = 0; qb < num_qb; ++qb) {
        const int64_t i0 = qb * kQueryBlock, i1 = std::min(sq, i0 + kQueryBlock), nq = i1 - i0;
        const int64_t tiles = (visible(i1 - 1) + kTile - 1) / kTile;
        for (int64_t i = 0; i < nq; ++i) {
          std::fill(srows + i * ld, srows + i * ld + tiles * kTile, 0.0f);
        }
        load_queries(w0, i0, nq);
#pragma omp parallel num_threads(team)
        {
          const int64_t tid = omp_get_thread_num();
          const int64_t t0 = tiles * tid / team, t1 = tiles * (tid + 1) / team;
          score_tiles(ws[static_cast<size_t>(tid)], w0, srows, i0, nq, t0, t1);
        }
        finish_rows(w0, srows, i0, nq);
      }
      continue;
    }
#pragma omp parallel num_threads(team)
    {
      IndexerWorkspace& wk = ws[static_cast<size_t>(omp_get_thread_num())];
      float* const srows = wk.srows.get();
#pragma omp for schedule(dynamic, 1)
      for (int64_t qb = num_qb - 1; qb >= 0; --qb) {  // longest rows first
        const int64_t i0 = qb * kQueryBlock, i1 = std::min(sq, i0 + kQueryBlock), nq = i1 - i0;
        const int64_t tiles = (visible(i1 - 1) + kTile - 1) / kTile;
        for (int64_t i = 0; i < nq; ++i) {
          std::fill(srows + i * ld, srows + i * ld + tiles * kTile, 0.0f);
        }
        load_queries(wk, i0, nq);
        score_tiles(wk, wk, srows, i0, nq, 0, tiles);
        finish_rows(wk, srows, i0, nq);
      }
    }
  }
}

template <typename KI>
void IndexerEntry(TensorView<const float> qi, TensorView<const float> w, TensorView<const KI> ki,
                  TensorView<float> scores, const IndexerOptions& o,
                  const IndexerCache* cache = nullptr) {
  if (o.backend == Backend::kReference) {
    ref::LightningIndexer(qi, w, ki, scores, o);
    return;
  }
  const int64_t q_start = detail::CheckIndexerArgs("LightningIndexer", qi, w, ki, o);
  CheckView(scores, "LightningIndexer", "scores");
  Require(scores.batch() == qi.batch() && scores.heads() == 1 && scores.tokens() == qi.tokens() &&
              scores.dim() == ki.tokens(),
          "LightningIndexer: scores must be [batch, 1, seqlen_q, seqlen_kv] = [", qi.batch(),
          ", 1, ", qi.tokens(), ", ", ki.tokens(), "], got ", scores.ShapeString());
  FastIndexer(qi, w, ki, 0, scores, TensorView<int32_t>{}, o, q_start, cache);
}

template <typename KI>
void SelectEntry(TensorView<const float> qi, TensorView<const float> w, TensorView<const KI> ki,
                 int64_t top_k, TensorView<int32_t> indices, const IndexerOptions& o,
                 const IndexerCache* cache = nullptr) {
  if (o.backend == Backend::kReference) {
    ref::DsaSelect(qi, w, ki, top_k, indices, o);
    return;
  }
  Require(top_k >= 1, "DsaSelect: top_k must be >= 1, got ", top_k);
  const int64_t q_start = detail::CheckIndexerArgs("DsaSelect", qi, w, ki, o);
  CheckView(indices, "DsaSelect", "indices");
  Require(indices.batch() == qi.batch() && indices.heads() == 1 &&
              indices.tokens() == qi.tokens() && indices.dim() == top_k,
          "DsaSelect: indices must be [batch, 1, seqlen_q, top_k] = [", qi.batch(), ", 1, ",
          qi.tokens(), ", ", top_k, "], got ", indices.ShapeString());
  FastIndexer(qi, w, ki, top_k, TensorView<float>{}, indices, o, q_start, cache);
}

}  // namespace

void TopKRow(const float* scores, int64_t n, int64_t top_k, int32_t* out) {
  Require(top_k >= 1, "TopKRow: top_k must be >= 1, got ", top_k);
  Require(n >= 0, "TopKRow: n must be >= 0, got ", n);
  std::vector<uint32_t> scratch;
  TopKScratch(scores, n, top_k, out, scratch);
}

template <typename KI>
void LightningIndexer(TensorView<const float> q_index, TensorView<const float> weights,
                      TensorView<KI> k_index, TensorView<float> scores,
                      const IndexerOptions& options) {
  IndexerEntry<std::remove_const_t<KI>>(q_index, weights, k_index, scores, options);
}
template void LightningIndexer<float>(TensorView<const float>, TensorView<const float>,
                                      TensorView<float>, TensorView<float>, const IndexerOptions&);
template void LightningIndexer<const float>(TensorView<const float>, TensorView<const float>,
                                            TensorView<const float>, TensorView<float>,
                                            const IndexerOptions&);
template void LightningIndexer<bf16>(TensorView<const float>, TensorView<const float>,
                                     TensorView<bf16>, TensorView<float>, const IndexerOptions&);
template void LightningIndexer<const bf16>(TensorView<const float>, TensorView<const float>,
                                           TensorView<const bf16>, TensorView<float>,
                                           const IndexerOptions&);

void LightningIndexer(TensorView<const float> q_index, TensorView<const float> weights,
                      const IndexerCache& k_index, TensorView<float> scores,
                      const IndexerOptions& options) {
  IndexerEntry<bf16>(q_index, weights, k_index.view(), scores, options, &k_index);
}

void DsaSelect(TensorView<const float> q_index, TensorView<const float> weights,
               const IndexerCache& k_index, int64_t top_k, TensorView<int32_t> indices,
               const IndexerOptions& options) {
  SelectEntry<bf16>(q_index, weights, k_index.view(), top_k, indices, options, &k_index);
}

template <typename KI>
void DsaSelect(TensorView<const float> q_index, TensorView<const float> weights,
               TensorView<KI> k_index, int64_t top_k, TensorView<int32_t> indices,
               const IndexerOptions& options) {
  SelectEntry<std::remove_const_t<KI>>(q_index, weights, k_index, top_k, indices, options);
}
template void DsaSelect<float>(TensorView<const float>, TensorView<const float>, TensorView<float>,
                               int64_t, TensorView<int32_t>, const IndexerOptions&);
template void DsaSelect<const float>(TensorView<const float>, TensorView<const float>,
                                     TensorView<const float>, int64_t, TensorView<int32_t>,
                                     const IndexerOptions&);
template void DsaSelect<bf16>(TensorView<const float>, TensorView<const float>, TensorView<bf16>,
                              int64_t, TensorView<int32_t>, const IndexerOptions&);
template void DsaSelect<const bf16>(TensorView<const float>, TensorView<const float>,
                                    TensorView<const bf16>, int64_t, TensorView<int32_t>,
                                    const IndexerOptions&);

}  // namespace attnkit
#endif  // HWY_ONCE
