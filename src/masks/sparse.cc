// Static sparse patterns (strided, fixed, Longformer, BigBird, bitmaps, DSA selections).
//
// Block-structured patterns share BlockPatternMask: a block-level predicate BlockAllowed(qb, kb)
// plus an element-level causal cut and a valid range. Its Classify visits the block pairs a tile
// covers (one pair when the pattern's blocks are at least the kernel's tiles and aligned to
// them), and KeyTiles enumerates a query range's key blocks directly instead of classifying
// every tile of the row.
#include "attnkit/masks/sparse.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "attnkit/core/error.h"

namespace attnkit {
namespace {

// Appends the tiles of [k_begin, k_end) (tiles of block_kv) that intersect [lo, hi).
void AppendTilesOf(int64_t lo, int64_t hi, int64_t k_begin, int64_t k_end, int64_t block_kv,
                   std::vector<int64_t>* tiles) {
  lo = std::max(lo, k_begin);
  hi = std::min(hi, k_end);
  if (lo >= hi) return;
  const int64_t t0 = (lo - k_begin) / block_kv, t1 = (hi - 1 - k_begin) / block_kv;
  for (int64_t t = t0; t <= t1; ++t) tiles->push_back(t);  // callers sort and dedupe
}

void SortUnique(std::vector<int64_t>* v, size_t from) {
  std::sort(v->begin() + static_cast<std::ptrdiff_t>(from), v->end());
  v->erase(std::unique(v->begin() + static_cast<std::ptrdiff_t>(from), v->end()), v->end());
}

// A pattern defined on blocks of block_q × block_kv positions, restricted to
// [0, limit_q) × [0, limit_kv) and, when causal, to k <= q.
class BlockPatternMask : public Mask {
 public:
  BlockPatternMask(int64_t block_q, int64_t block_kv, int64_t limit_q, int64_t limit_kv,
                   bool causal)
      : bq_(block_q), bk_(block_kv), limit_q_(limit_q), limit_kv_(limit_kv), causal_(causal) {}

  virtual bool BlockAllowed(int64_t qb, int64_t kb) const = 0;
  // Appends every kb with BlockAllowed(qb, kb), kb <= last_kb (any order, duplicates allowed).
  virtual void KeyBlocksOf(int64_t qb, int64_t last_kb, std::vector<int64_t>* kbs) const = 0;

  bool Allowed(int64_t q, int64_t k) const override {
    if (q < 0 || k < 0 || q >= limit_q_ || k >= limit_kv_) return false;
    if (causal_ && k > q) return false;
    return BlockAllowed(q / bq_, k / bk_);
  }

  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    const bool inside = q0 >= 0 && k0 >= 0 && q1 <= limit_q_ && k1 <= limit_kv_;
    q0 = std::max<int64_t>(q0, 0);
    k0 = std::max<int64_t>(k0, 0);
    q1 = std::min(q1, limit_q_);
    k1 = std::min(k1, limit_kv_);
    if (q0 >= q1 || k0 >= k1) return TileKind::kEmpty;
    if (causal_ && k0 > q1 - 1) return TileKind::kEmpty;
    const bool causal_all = !causal_ || k1 - 1 <= q0;
    bool any = false, all = true;
    for (int64_t qb = q0 / bq_; qb <= (q1 - 1) / bq_; ++qb) {
      const int64_t q_max = std::min(q1 - 1, (qb + 1) * bq_ - 1);
      for (int64_t kb = k0 / bk_; kb <= (k1 - 1) / bk_; ++kb) {
        const bool a = BlockAllowed(qb, kb);
        // The pair of blocks holds a causal pair iff its smallest key <= its largest query.
        if (!causal_ || std::max(k0, kb * bk_) <= q_max) any |= a;
        all &= a;
        if (any && !all) return TileKind::kPartial;
      }
    }
    if (!any) return TileKind::kEmpty;
    return all && causal_all && inside ? TileKind::kFull : TileKind::kPartial;
  }

  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    const int64_t w = k1 - k0;
    std::fill(allowed, allowed + (q1 - q0) * w, uint8_t{0});
    for (int64_t q = std::max<int64_t>(q0, 0); q < std::min(q1, limit_q_); ++q) {
      uint8_t* row = allowed + (q - q0) * w;
      const int64_t lo = std::max<int64_t>(k0, 0);
      const int64_t hi = std::min({k1 - 1, limit_kv_ - 1, causal_ ? q : kUnbounded});
      const int64_t qb = q / bq_;
      for (int64_t kb = lo / bk_; lo <= hi && kb <= hi / bk_; ++kb) {
        if (!BlockAllowed(qb, kb)) continue;
        const int64_t a = std::max(lo, kb * bk_), b = std::min(hi, kb * bk_ + bk_ - 1);
        std::fill(row + (a - k0), row + (b - k0) + 1, uint8_t{1});
      }
    }
  }

  std::pair<int64_t, int64_t> KeyBounds(int64_t, int64_t q1) const override {
    return {0, causal_ ? std::min(q1, limit_kv_) : limit_kv_};
  }

  void KeyTiles(int64_t q0, int64_t q1, int64_t k_begin, int64_t k_end, int64_t block_kv,
                std::vector<int64_t>* tiles) const override {
    Require(block_kv >= 1, "Mask::KeyTiles: block_kv must be >= 1, got ", block_kv);
    q0 = std::max<int64_t>(q0, 0);
    q1 = std::min(q1, limit_q_);
    if (q0 >= q1) return;
    const int64_t hi = std::min({k_end, limit_kv_, causal_ ? q1 : kUnbounded});
    if (hi <= std::max<int64_t>(k_begin, 0)) return;
    const int64_t last_kb = (hi - 1) / bk_;
    std::vector<int64_t> kbs;
    for (int64_t qb = q0 / bq_; qb <= (q1 - 1) / bq_; ++qb) KeyBlocksOf(qb, last_kb, &kbs);
    std::sort(kbs.begin(), kbs.end());
    kbs.erase(std::unique(kbs.begin(), kbs.end()), kbs.end());
    const size_t from = tiles->size();
    for (const int64_t kb : kbs) {
      if (kb < 0 || kb > last_kb) continue;
      AppendTilesOf(kb * bk_, std::min(hi, kb * bk_ + bk_), k_begin, k_end, block_kv, tiles);
    }
    SortUnique(tiles, from);
  }

 protected:
  int64_t bq_, bk_, limit_q_, limit_kv_;
  bool causal_;
};

// ------------------------------------------------------------------------------ strided
class StridedPattern final : public BlockPatternMask {
 public:
  StridedPattern(int64_t stride, int64_t block)
      : BlockPatternMask(block, block, kUnbounded, kUnbounded, true), stride_(stride) {}

  bool Related(int64_t delta) const {
    return delta >= 0 && (delta < stride_ || delta % stride_ == 0);
  }
  bool BlockAllowed(int64_t qb, int64_t kb) const override { return Related(qb - kb); }

  void KeyBlocksOf(int64_t qb, int64_t last_kb, std::vector<int64_t>* kbs) const override {
    for (int64_t kb = std::max<int64_t>(0, qb - stride_ + 1); kb <= std::min(qb, last_kb); ++kb) {
      kbs->push_back(kb);
    }
    for (int64_t kb = qb - stride_; kb >= 0; kb -= stride_) {
      if (kb <= last_kb) kbs->push_back(kb);
    }
  }

  // O(1): the block distances in the tile form one interval [dmin, dmax].
  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    const bool inside = q0 >= 0 && k0 >= 0;
    q0 = std::max<int64_t>(q0, 0);
    k0 = std::max<int64_t>(k0, 0);
    if (q0 >= q1 || k0 >= k1 || k0 > q1 - 1) return TileKind::kEmpty;
    const int64_t dmin = q0 / bq_ - (std::min(k1 - 1, q1 - 1)) / bk_;
    const int64_t dmax = (q1 - 1) / bq_ - k0 / bk_;
    const int64_t lo = std::max<int64_t>(dmin, 0);
    const bool any = lo < stride_ || (dmax / stride_) * stride_ >= lo;
    if (!any) return TileKind::kEmpty;
    const bool all = dmin >= 0 && (dmax < stride_ || (dmin == dmax && Related(dmin)));
    return all && inside && k1 - 1 <= q0 ? TileKind::kFull : TileKind::kPartial;
  }

  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    if (bq_ > 1) {
      BlockPatternMask::FillTile(q0, q1, k0, k1, allowed);
      return;
    }
    const int64_t w = k1 - k0;
    std::fill(allowed, allowed + (q1 - q0) * w, uint8_t{0});
    for (int64_t q = std::max<int64_t>(q0, 0); q < q1; ++q) {
      uint8_t* row = allowed + (q - q0) * w;
      const int64_t lo = std::max<int64_t>(k0, 0), hi = std::min(k1 - 1, q);
      if (lo > hi) continue;
      for (int64_t k = std::max(lo, q - stride_ + 1); k <= hi; ++k) row[k - k0] = 1;
      // Largest k <= hi with (q - k) mod stride == 0, then every stride-th below it.
      for (int64_t k = q - ((q - hi + stride_ - 1) / stride_) * stride_; k >= lo; k -= stride_) {
        row[k - k0] = 1;
      }
    }
  }

  std::string Describe() const override {
    return "strided(stride=" + std::to_string(stride_) + ",block=" + std::to_string(bq_) + ")";
  }

 private:
  int64_t stride_;
};

// ------------------------------------------------------------------------------ fixed
class FixedPattern final : public Mask {
 public:
  FixedPattern(int64_t block, int64_t summary) : l_(block), c_(summary) {}

  bool Summary(int64_t k) const { return k % l_ >= l_ - c_; }
  bool Allowed(int64_t q, int64_t k) const override {
    if (q < 0 || k < 0 || k > q) return false;
    return k / l_ == q / l_ || Summary(k);
  }

  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    const bool inside = q0 >= 0 && k0 >= 0;
    q0 = std::max<int64_t>(q0, 0);
    k0 = std::max<int64_t>(k0, 0);
    if (q0 >= q1 || k0 >= k1 || k0 > q1 - 1) return TileKind::kEmpty;
    // Own blocks of the queries: [first block start, last block end).
    const bool own = k1 > (q0 / l_) * l_;  // keys are <= q1 - 1 < end of the last own block
    const int64_t next_summary = (k0 / l_) * l_ + l_ - c_;
    const bool summary_any = Summary(k0) || next_summary < k1;
    if (!own && !summary_any) return TileKind::kEmpty;
    const bool causal_all = k1 - 1 <= q0 && inside;
    const bool all_summary = k0 / l_ == (k1 - 1) / l_ && Summary(k0);
    const bool all_own = q0 / l_ == (q1 - 1) / l_ && k0 / l_ == q0 / l_ && (k1 - 1) / l_ == q0 / l_;
    return causal_all && (all_summary || all_own) ? TileKind::kFull : TileKind::kPartial;
  }

  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    const int64_t w = k1 - k0;
    std::fill(allowed, allowed + (q1 - q0) * w, uint8_t{0});
    for (int64_t q = std::max<int64_t>(q0, 0); q < q1; ++q) {
      uint8_t* row = allowed + (q - q0) * w;
      const int64_t lo = std::max<int64_t>(k0, 0), hi = std::min(k1 - 1, q);
      if (lo > hi) continue;
      // Summary columns of each block met: [b·l + l − c, b·l + l).
      for (int64_t b = lo / l_; b <= hi / l_; ++b) {
        const int64_t a = std::max(lo, b * l_ + l_ - c_), e = std::min(hi, b * l_ + l_ - 1);
        for (int64_t k = a; k <= e; ++k) row[k - k0] = 1;
      }
      for (int64_t k = std::max(lo, (q / l_) * l_); k <= hi; ++k) row[k - k0] = 1;
    }
  }

  std::pair<int64_t, int64_t> KeyBounds(int64_t, int64_t q1) const override { return {0, q1}; }

  void KeyTiles(int64_t q0, int64_t q1, int64_t k_begin, int64_t k_end, int64_t block_kv,
                std::vector<int64_t>* tiles) const override {
    Require(block_kv >= 1, "Mask::KeyTiles: block_kv must be >= 1, got ", block_kv);
    q0 = std::max<int64_t>(q0, 0);
    if (q0 >= q1) return;
    const size_t from = tiles->size();
    const int64_t hi = std::min(k_end, q1);
    for (int64_t b = 0; b * l_ < hi; ++b) {
      AppendTilesOf(b * l_ + l_ - c_, std::min(hi, b * l_ + l_), k_begin, k_end, block_kv, tiles);
    }
    AppendTilesOf((q0 / l_) * l_, hi, k_begin, k_end, block_kv, tiles);
    SortUnique(tiles, from);
  }

  std::string Describe() const override {
    return "fixed(block=" + std::to_string(l_) + ",summary=" + std::to_string(c_) + ")";
  }

 private:
  int64_t l_, c_;
};

// ------------------------------------------------------------------------------ Longformer
class LongformerPattern final : public Mask {
 public:
  explicit LongformerPattern(LongformerOptions o) : o_(std::move(o)) {
    std::sort(o_.globals.begin(), o_.globals.end());
    o_.globals.erase(std::unique(o_.globals.begin(), o_.globals.end()), o_.globals.end());
    span_ = o_.dilation > 1 ? o_.dilated_window * o_.dilation : 0;
  }

  bool IsGlobal(int64_t p) const {
    return std::binary_search(o_.globals.begin(), o_.globals.end(), p);
  }
  int64_t GlobalsIn(int64_t a, int64_t b) const {  // count in [a, b)
    return std::lower_bound(o_.globals.begin(), o_.globals.end(), b) -
           std::lower_bound(o_.globals.begin(), o_.globals.end(), a);
  }
  bool Local(int64_t dist) const {
    if (dist <= o_.window) return true;
    return span_ > 0 && dist <= span_ && dist % o_.dilation == 0;
  }

  bool Allowed(int64_t q, int64_t k) const override {
    if (q < 0 || k < 0 || q >= o_.seqlen || k >= o_.seqlen) return false;
    if (o_.causal && k > q) return false;
    return Local(q > k ? q - k : k - q) || IsGlobal(q) || IsGlobal(k);
  }

  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    const bool inside = q0 >= 0 && k0 >= 0 && q1 <= o_.seqlen && k1 <= o_.seqlen;
    q0 = std::max<int64_t>(q0, 0);
    k0 = std::max<int64_t>(k0, 0);
    q1 = std::min(q1, o_.seqlen);
    k1 = std::min(k1, o_.seqlen);
    if (q0 >= q1 || k0 >= k1) return TileKind::kEmpty;
    if (o_.causal && k0 > q1 - 1) return TileKind::kEmpty;
    const bool causal_all = !o_.causal || k1 - 1 <= q0;
    const int64_t dmin = std::max<int64_t>({0, k0 - (q1 - 1), q0 - (k1 - 1)});
    const int64_t dmax = std::max(q1 - 1 - k0, k1 - 1 - q0);
    const int64_t g_rows = GlobalsIn(q0, q1), g_cols = GlobalsIn(k0, k1);
    if (causal_all && inside && (dmax <= o_.window || g_rows == q1 - q0 || g_cols == k1 - k0)) {
      return TileKind::kFull;
    }
    const bool local_any = dmin <= std::max(o_.window, span_);
    return local_any || g_rows > 0 || g_cols > 0 ? TileKind::kPartial : TileKind::kEmpty;
  }

  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    const int64_t w = k1 - k0;
    std::fill(allowed, allowed + (q1 - q0) * w, uint8_t{0});
    const auto g_begin = std::lower_bound(o_.globals.begin(), o_.globals.end(), k0);
    const auto g_end = std::lower_bound(o_.globals.begin(), o_.globals.end(), k1);
    for (int64_t q = std::max<int64_t>(q0, 0); q < std::min(q1, o_.seqlen); ++q) {
      uint8_t* row = allowed + (q - q0) * w;
      const int64_t lo = std::max<int64_t>(k0, 0);
      const int64_t hi = std::min({k1 - 1, o_.seqlen - 1, o_.causal ? q : kUnbounded});
      if (lo > hi) continue;
      if (IsGlobal(q)) {
        std::fill(row + (lo - k0), row + (hi - k0) + 1, uint8_t{1});
        continue;
      }
      for (int64_t k = std::max(lo, q - o_.window); k <= std::min(hi, q + o_.window); ++k) {
        row[k - k0] = 1;
      }
      for (int64_t m = 1; span_ > 0 && m <= o_.dilated_window; ++m) {
        for (const int64_t k : {q - m * o_.dilation, q + m * o_.dilation}) {
          if (k >= lo && k <= hi) row[k - k0] = 1;
        }
      }
      for (auto g = g_begin; g != g_end; ++g) {
        if (*g >= lo && *g <= hi) row[*g - k0] = 1;
      }
    }
  }

  std::pair<int64_t, int64_t> KeyBounds(int64_t q0, int64_t q1) const override {
    const int64_t hi = o_.causal ? std::min(q1, o_.seqlen) : o_.seqlen;
    if (!o_.globals.empty()) return {0, hi};
    return {std::max<int64_t>(0, q0 - std::max(o_.window, span_)),
            std::min(hi, q1 + std::max(o_.window, span_))};
  }

  void KeyTiles(int64_t q0, int64_t q1, int64_t k_begin, int64_t k_end, int64_t block_kv,
                std::vector<int64_t>* tiles) const override {
    Require(block_kv >= 1, "Mask::KeyTiles: block_kv must be >= 1, got ", block_kv);
    q0 = std::max<int64_t>(q0, 0);
    q1 = std::min(q1, o_.seqlen);
    if (q0 >= q1) return;
    const int64_t hi = std::min(k_end, o_.causal ? q1 : o_.seqlen);
    const size_t from = tiles->size();
    if (GlobalsIn(q0, q1) > 0) {
      AppendTilesOf(0, hi, k_begin, k_end, block_kv, tiles);
      return;
    }
    const int64_t reach = std::max(o_.window, span_);
    AppendTilesOf(q0 - reach, std::min(hi, q1 + reach), k_begin, k_end, block_kv, tiles);
    for (const int64_t g : o_.globals) {
      if (g >= hi) break;
      AppendTilesOf(g, g + 1, k_begin, k_end, block_kv, tiles);
    }
    SortUnique(tiles, from);
  }

  std::string Describe() const override {
    return "longformer(window=" + std::to_string(o_.window) +
           ",dilation=" + std::to_string(o_.dilation) +
           ",dilated_window=" + std::to_string(o_.dilated_window) +
           ",globals=" + std::to_string(o_.globals.size()) + (o_.causal ? ",causal)" : ")");
  }

 private:
  LongformerOptions o_;
  int64_t span_ = 0;
};

// ------------------------------------------------------------------------------ BigBird
// SplitMix64: a portable, well-mixed hash so the random blocks are the same on every platform.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class BigBirdPattern final : public BlockPatternMask {
 public:
  explicit BigBirdPattern(const BigBirdOptions& o)
      : BlockPatternMask(o.block, o.block, o.seqlen, o.seqlen, o.causal), o_(o) {
    nb_ = (o.seqlen + o.block - 1) / o.block;
    random_.assign(static_cast<size_t>(nb_ * o.random_blocks), -1);
    std::vector<int64_t> candidates;
    for (int64_t qb = 0; qb < nb_; ++qb) {
      if (qb < o.global_blocks) continue;  // a global block already sees everything
      candidates.clear();
      const int64_t end = o.causal ? qb : nb_;
      for (int64_t kb = o.global_blocks; kb < end; ++kb) {
        if (std::abs(qb - kb) > o.window_blocks) candidates.push_back(kb);
      }
      // Partial Fisher–Yates with a counter-based stream: pick min(r, n) distinct blocks.
      const int64_t n = static_cast<int64_t>(candidates.size());
      const int64_t take = std::min(o.random_blocks, n);
      uint64_t state = SplitMix64(o.seed ^ SplitMix64(static_cast<uint64_t>(qb)));
      for (int64_t i = 0; i < take; ++i) {
        state = SplitMix64(state);
        const int64_t j = i + static_cast<int64_t>(state % static_cast<uint64_t>(n - i));
        std::swap(candidates[i], candidates[j]);
      }
      std::sort(candidates.begin(), candidates.begin() + take);
      for (int64_t i = 0; i < take; ++i) random_[qb * o.random_blocks + i] = candidates[i];
    }
  }

  bool BlockAllowed(int64_t qb, int64_t kb) const override {
    if (qb >= nb_ || kb >= nb_) return false;
    if (std::abs(qb - kb) <= o_.window_blocks) return true;
    if (qb < o_.global_blocks || kb < o_.global_blocks) return true;
    const int64_t* r = random_.data() + qb * o_.random_blocks;
    return std::find(r, r + o_.random_blocks, kb) != r + o_.random_blocks;
  }

  void KeyBlocksOf(int64_t qb, int64_t last_kb, std::vector<int64_t>* kbs) const override {
    last_kb = std::min(last_kb, nb_ - 1);
    if (qb < o_.global_blocks) {
      for (int64_t kb = 0; kb <= last_kb; ++kb) kbs->push_back(kb);
      return;
    }
    for (int64_t kb = 0; kb < std::min(o_.global_blocks, last_kb + 1); ++kb) kbs->push_back(kb);
    for (int64_t kb = std::max<int64_t>(0, qb - o_.window_blocks);
         kb <= std::min(last_kb, qb + o_.window_blocks); ++kb) {
      kbs->push_back(kb);
    }
    for (int64_t i = 0; i < o_.random_blocks; ++i) {
      const int64_t kb = random_[qb * o_.random_blocks + i];
      if (kb >= 0 && kb <= last_kb) kbs->push_back(kb);
    }
  }

  std::string Describe() const override {
    return "bigbird(block=" + std::to_string(o_.block) +
           ",window_blocks=" + std::to_string(o_.window_blocks) +
           ",global_blocks=" + std::to_string(o_.global_blocks) +
           ",random_blocks=" + std::to_string(o_.random_blocks) +
           ",seed=" + std::to_string(o_.seed) + (o_.causal ? ",causal)" : ")");
  }

 private:
  BigBirdOptions o_;
  int64_t nb_;
  std::vector<int64_t> random_;  // [num_blocks, random_blocks], -1 = none
};

// ------------------------------------------------------------------------------ bitmap
class BitmapPattern final : public BlockPatternMask {
 public:
  BitmapPattern(int64_t bq, int64_t bk, int64_t nqb, int64_t nkb, std::vector<uint8_t> bitmap,
                bool causal)
      : BlockPatternMask(bq, bk, nqb * bq, nkb * bk, causal),
        nqb_(nqb),
        nkb_(nkb),
        bits_(std::move(bitmap)) {}

  bool BlockAllowed(int64_t qb, int64_t kb) const override {
    return qb < nqb_ && kb < nkb_ && bits_[qb * nkb_ + kb] != 0;
  }
  void KeyBlocksOf(int64_t qb, int64_t last_kb, std::vector<int64_t>* kbs) const override {
    if (qb >= nqb_) return;
    for (int64_t kb = 0; kb <= std::min(last_kb, nkb_ - 1); ++kb) {
      if (bits_[qb * nkb_ + kb]) kbs->push_back(kb);
    }
  }
  std::string Describe() const override {
    return "bitmap(" + std::to_string(nqb_) + "x" + std::to_string(nkb_) + " blocks of " +
           std::to_string(bq_) + "x" + std::to_string(bk_) + (causal_ ? ",causal)" : ")");
  }

 private:
  int64_t nqb_, nkb_;
  std::vector<uint8_t> bits_;
};

// ------------------------------------------------------------------------------ selection
class SelectionPattern final : public Mask {
 public:
  SelectionPattern(std::vector<std::vector<int64_t>> rows, int64_t q_start)
      : rows_(std::move(rows)), q_start_(q_start) {}

  const std::vector<int64_t>* Row(int64_t q) const {
    const int64_t i = q - q_start_;
    return i >= 0 && i < static_cast<int64_t>(rows_.size()) ? &rows_[i] : nullptr;
  }
  int64_t CountIn(const std::vector<int64_t>& r, int64_t k0, int64_t k1) const {
    return std::lower_bound(r.begin(), r.end(), k1) - std::lower_bound(r.begin(), r.end(), k0);
  }
  bool Allowed(int64_t q, int64_t k) const override {
    const auto* r = Row(q);
    return r != nullptr && std::binary_search(r->begin(), r->end(), k);
  }
  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    bool any = false, all = true;
    for (int64_t q = q0; q < q1; ++q) {
      const auto* r = Row(q);
      const int64_t n = r ? CountIn(*r, k0, k1) : 0;
      any |= n > 0;
      all &= n == k1 - k0;
    }
    return !any ? TileKind::kEmpty : (all ? TileKind::kFull : TileKind::kPartial);
  }
  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    const int64_t w = k1 - k0;
    std::fill(allowed, allowed + (q1 - q0) * w, uint8_t{0});
    for (int64_t q = q0; q < q1; ++q) {
      const auto* r = Row(q);
      if (!r) continue;
      for (auto it = std::lower_bound(r->begin(), r->end(), k0); it != r->end() && *it < k1; ++it) {
        allowed[(q - q0) * w + (*it - k0)] = 1;
      }
    }
  }
  std::pair<int64_t, int64_t> KeyBounds(int64_t q0, int64_t q1) const override {
    int64_t lo = kUnbounded, hi = -kUnbounded;
    for (int64_t q = q0; q < q1; ++q) {
      const auto* r = Row(q);
      if (!r || r->empty()) continue;
      lo = std::min(lo, r->front());
      hi = std::max(hi, r->back() + 1);
    }
    return lo <= hi ? std::make_pair(lo, hi) : std::make_pair(int64_t{0}, int64_t{0});
  }
  std::string Describe() const override {
    size_t k = 0;
    for (const auto& r : rows_) k = std::max(k, r.size());
    return "selection(rows=" + std::to_string(rows_.size()) + ",top_k<=" + std::to_string(k) + ")";
  }

 private:
  std::vector<std::vector<int64_t>> rows_;  // sorted absolute key positions per query row
  int64_t q_start_;
};

}  // namespace

MaskPtr StridedMask(int64_t stride, int64_t block) {
  Require(stride >= 1, "StridedMask: stride must be >= 1, got ", stride);
  Require(block >= 1, "StridedMask: block must be >= 1, got ", block);
  return std::make_shared<StridedPattern>(stride, block);
}

MaskPtr FixedMask(int64_t block, int64_t summary) {
  Require(block >= 1, "FixedMask: block must be >= 1, got ", block);
  Require(summary >= 1 && summary <= block, "FixedMask: summary must be in [1, block = ", block,
          "], got ", summary);
  return std::make_shared<FixedPattern>(block, summary);
}

MaskPtr LongformerMask(const LongformerOptions& o) {
  Require(o.seqlen >= 1, "LongformerMask: seqlen must be >= 1, got ", o.seqlen);
  Require(o.window >= 0, "LongformerMask: window must be >= 0, got ", o.window);
  Require(o.dilation >= 1, "LongformerMask: dilation must be >= 1, got ", o.dilation);
  Require(o.dilated_window >= 0, "LongformerMask: dilated_window must be >= 0, got ",
          o.dilated_window);
  for (size_t i = 0; i < o.globals.size(); ++i) {
    Require(o.globals[i] >= 0 && o.globals[i] < o.seqlen, "LongformerMask: globals[", i,
            "] = ", o.globals[i], " is outside [0, seqlen = ", o.seqlen, ")");
  }
  return std::make_shared<LongformerPattern>(o);
}

MaskPtr BigBirdMask(const BigBirdOptions& o) {
  Require(o.seqlen >= 1, "BigBirdMask: seqlen must be >= 1, got ", o.seqlen);
  Require(o.block >= 1, "BigBirdMask: block must be >= 1, got ", o.block);
  Require(o.window_blocks >= 0, "BigBirdMask: window_blocks must be >= 0, got ", o.window_blocks);
  Require(o.global_blocks >= 0, "BigBirdMask: global_blocks must be >= 0, got ", o.global_blocks);
  Require(o.random_blocks >= 0, "BigBirdMask: random_blocks must be >= 0, got ", o.random_blocks);
  return std::make_shared<BigBirdPattern>(o);
}

MaskPtr BlockBitmapMask(int64_t block_q, int64_t block_kv, int64_t num_blocks_q,
                        int64_t num_blocks_kv, std::vector<uint8_t> bitmap, bool causal) {
  Require(block_q >= 1, "BlockBitmapMask: block_q must be >= 1, got ", block_q);
  Require(block_kv >= 1, "BlockBitmapMask: block_kv must be >= 1, got ", block_kv);
  Require(num_blocks_q >= 1, "BlockBitmapMask: num_blocks_q must be >= 1, got ", num_blocks_q);
  Require(num_blocks_kv >= 1, "BlockBitmapMask: num_blocks_kv must be >= 1, got ", num_blocks_kv);
  Require(static_cast<int64_t>(bitmap.size()) == num_blocks_q * num_blocks_kv,
          "BlockBitmapMask: bitmap has ", bitmap.size(),
          " entries, expected num_blocks_q × "
          "num_blocks_kv = ",
          num_blocks_q, " × ", num_blocks_kv, " = ", num_blocks_q * num_blocks_kv);
  return std::make_shared<BitmapPattern>(block_q, block_kv, num_blocks_q, num_blocks_kv,
                                         std::move(bitmap), causal);
}

MaskPtr SelectionMask(TensorView<const int32_t> indices, int64_t q_start, int64_t k_start) {
  CheckView(indices, "SelectionMask", "indices");
  Require(indices.batch() == 1 && indices.heads() == 1,
          "SelectionMask: indices must be [1, 1, seqlen_q, top_k] (one mask serves every batch "
          "and head), got ",
          indices.ShapeString());
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(indices.tokens()));
  for (int64_t i = 0; i < indices.tokens(); ++i) {
    const int32_t* r = indices.row(0, 0, i);
    for (int64_t j = 0; j < indices.dim(); ++j) {
      if (r[j] >= 0) rows[i].push_back(k_start + r[j]);
    }
    std::sort(rows[i].begin(), rows[i].end());
    rows[i].erase(std::unique(rows[i].begin(), rows[i].end()), rows[i].end());
  }
  return std::make_shared<SelectionPattern>(std::move(rows), q_start);
}

}  // namespace attnkit

namespace attnkit {
namespace {

int64_t RoundSqrt(int64_t x) {
  int64_t r = 1;
  while ((r + 1) * (r + 1) <= x) ++r;
  return (r * r + r < x) ? r + 1 : r;  // nearest integer to sqrt(x)
}

void RequirePositive(int64_t v, const char* field, const std::string& name) {
  Require(v >= 1, "pattern ", name, ": ", field, " must be >= 1, got ", v);
}

}  // namespace

std::vector<std::string> PatternNames() {
  return {"causal", "window", "chunked", "strided", "fixed", "longformer", "bigbird"};
}

PatternSpec DefaultPatternSpec(const PatternSpec& in) {
  PatternSpec s = in;
  const auto names = PatternNames();
  Require(std::find(names.begin(), names.end(), s.name) != names.end(), "unknown pattern '", s.name,
          "' (known: causal, window, chunked, strided, fixed, longformer, bigbird)");
  Require(s.seqlen >= 1, "pattern ", s.name, ": seqlen must be >= 1, got ", s.seqlen);
  // Block size of the block patterns for large seqlen: a multiple of the dense kernel's query
  // tiles (64 rows, 128 for MHA) so that a tile never straddles two pattern blocks.
  constexpr int64_t kLargeBlock = 128;
  const int64_t n = s.seqlen;
  const bool large = n > 512;
  // Small sequences (pictures) use token-level patterns; large ones the block forms the kernels
  // run at tile granularity (block 64 = the dense kernel's tile).
  if (s.name == "strided") {
    if (!s.block) s.block = large ? kLargeBlock : 1;
    RequirePositive(*s.block, "block", s.name);
    if (!s.stride) s.stride = std::max<int64_t>(1, RoundSqrt((n + *s.block - 1) / *s.block));
  } else if (s.name == "fixed") {
    const int64_t tile = large ? kLargeBlock : 1;
    if (!s.block) s.block = tile * std::max<int64_t>(2, RoundSqrt((n + tile - 1) / tile));
    RequirePositive(*s.block, "block", s.name);
    if (!s.summary)
      s.summary = large ? std::min<int64_t>(64, *s.block) : std::max<int64_t>(1, *s.block / 4);
  } else if (s.name == "window" || s.name == "chunked") {
    if (!s.window) s.window = std::max<int64_t>(1, n / 16);
  } else if (s.name == "longformer") {
    if (!s.window) s.window = std::max<int64_t>(1, n / 32);
    if (!s.dilation) s.dilation = 4;
    if (!s.dilated_window) s.dilated_window = std::max<int64_t>(1, *s.window / 2);
    if (s.globals.empty()) s.globals = {0};
  } else if (s.name == "bigbird") {
    if (!s.block) s.block = large ? kLargeBlock : std::max<int64_t>(1, n / 16);
    if (!s.window_blocks) s.window_blocks = 1;
    if (!s.global_blocks) s.global_blocks = 2;  // BigBird-ITC: 3-block window,
    if (!s.random_blocks) s.random_blocks = 3;  // 2 global and 3 random blocks
  }
  return s;
}

MaskPtr MakePattern(const PatternSpec& in) {
  const PatternSpec s = DefaultPatternSpec(in);
  if (s.name == "causal") return CausalMask();
  if (s.name == "window") {
    RequirePositive(*s.window, "window", s.name);
    return CausalWindowMask(*s.window);
  }
  if (s.name == "chunked") {
    RequirePositive(*s.window, "window", s.name);
    return ChunkedLocalMask(*s.window);
  }
  if (s.name == "strided") {
    RequirePositive(*s.stride, "stride", s.name);
    return StridedMask(*s.stride, *s.block);
  }
  if (s.name == "fixed") {
    RequirePositive(*s.summary, "summary", s.name);
    return FixedMask(*s.block, *s.summary);
  }
  if (s.name == "longformer") {
    RequirePositive(*s.window, "window", s.name);
    RequirePositive(*s.dilation, "dilation", s.name);
    Require(*s.dilated_window >= 0, "pattern longformer: dilated_window must be >= 0, got ",
            *s.dilated_window);
    LongformerOptions o;
    o.seqlen = s.seqlen;
    o.window = *s.window - 1;  // `window` tokens including the query itself, as CausalWindowMask
    o.dilation = *s.dilation;
    o.dilated_window = *s.dilated_window;
    o.globals = s.globals;
    o.causal = true;
    return LongformerMask(o);
  }
  // bigbird
  RequirePositive(*s.block, "block", s.name);
  Require(*s.window_blocks >= 0, "pattern bigbird: window_blocks must be >= 0, got ",
          *s.window_blocks);
  Require(*s.global_blocks >= 0, "pattern bigbird: global_blocks must be >= 0, got ",
          *s.global_blocks);
  Require(*s.random_blocks >= 0, "pattern bigbird: random_blocks must be >= 0, got ",
          *s.random_blocks);
  BigBirdOptions o;
  o.seqlen = s.seqlen;
  o.block = *s.block;
  o.window_blocks = *s.window_blocks;
  o.global_blocks = *s.global_blocks;
  o.random_blocks = *s.random_blocks;
  o.seed = s.seed;
  o.causal = true;
  return BigBirdMask(o);
}

}  // namespace attnkit

namespace attnkit {

TileCounts CountTiles(const Mask* mask, int64_t seqlen_q, int64_t seqlen_kv, int64_t block_q,
                      int64_t block_kv) {
  Require(seqlen_q >= 1 && seqlen_kv >= 1, "CountTiles: seqlen_q and seqlen_kv must be >= 1");
  Require(block_q >= 1 && block_kv >= 1, "CountTiles: block_q and block_kv must be >= 1");
  TileCounts c;
  const int64_t q_off = seqlen_kv - seqlen_q;
  for (int64_t i0 = 0; i0 < seqlen_q; i0 += block_q) {
    const int64_t i1 = std::min(seqlen_q, i0 + block_q);
    for (int64_t j0 = 0; j0 < seqlen_kv; j0 += block_kv) {
      ++c.total;
      const TileKind kind =
          mask ? mask->Classify(i0 + q_off, i1 + q_off, j0, std::min(seqlen_kv, j0 + block_kv))
               : TileKind::kFull;
      c.empty += kind == TileKind::kEmpty;
      c.full += kind == TileKind::kFull;
      c.partial += kind == TileKind::kPartial;
    }
  }
  return c;
}

}  // namespace attnkit
