// Built-in masks (causal, windows, chunked-local, and/or) and the generic tile helpers.
#include "attnkit/masks/mask.h"

#include <algorithm>

#include "attnkit/core/error.h"

namespace attnkit {

TileKind Mask::Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  bool any = false, all = true;
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t k = k0; k < k1; ++k) {
      const bool a = Allowed(q, k);
      any |= a;
      all &= a;
    }
  }
  return !any ? TileKind::kEmpty : (all ? TileKind::kFull : TileKind::kPartial);
}

void Mask::FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const {
  const int64_t w = k1 - k0;
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t k = k0; k < k1; ++k) allowed[(q - q0) * w + (k - k0)] = Allowed(q, k) ? 1 : 0;
  }
}

std::pair<int64_t, int64_t> Mask::KeyBounds(int64_t, int64_t) const {
  return {-kUnbounded, kUnbounded};
}

void Mask::KeyTiles(int64_t q0, int64_t q1, int64_t k_begin, int64_t k_end, int64_t block_kv,
                    std::vector<int64_t>* tiles) const {
  Require(block_kv >= 1, "Mask::KeyTiles: block_kv must be >= 1, got ", block_kv);
  if (q1 <= q0 || k_end <= k_begin) return;
  const int64_t num_tiles = (k_end - k_begin + block_kv - 1) / block_kv;
  const auto [lo, hi] = KeyBounds(q0, q1);
  const int64_t t0 =
      std::clamp<int64_t>(lo <= k_begin ? 0 : (lo - k_begin) / block_kv, 0, num_tiles);
  const int64_t t1 = std::clamp<int64_t>(
      hi >= k_end ? num_tiles : (hi - k_begin + block_kv - 1) / block_kv, 0, num_tiles);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t k0 = k_begin + t * block_kv, k1 = std::min(k_end, k0 + block_kv);
    if (Classify(q0, q1, k0, k1) != TileKind::kEmpty) tiles->push_back(t);
  }
}

namespace {

// q - left <= k <= q + right; with chunk > 0 additionally q / chunk == k / chunk.
class BandMask final : public Mask {
 public:
  BandMask(int64_t left, int64_t right, int64_t chunk, std::string name)
      : left_(left), right_(right), chunk_(chunk), name_(std::move(name)) {}

  bool Allowed(int64_t q, int64_t k) const override {
    if (k < q - left_ || k > q + right_) return false;
    return chunk_ == 0 || FloorDiv(q, chunk_) == FloorDiv(k, chunk_);
  }

  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    // Band: allowed k for query q is [q - left, q + right]. Over the tile, the union of those
    // ranges is [q0 - left, q1 - 1 + right], the intersection [q1 - 1 - left, q0 + right].
    if (k1 - 1 < q0 - left_ || k0 > q1 - 1 + right_) return TileKind::kEmpty;
    bool full = k0 >= q1 - 1 - left_ && k1 - 1 <= q0 + right_;
    if (chunk_ > 0) {
      const int64_t cq0 = FloorDiv(q0, chunk_), cq1 = FloorDiv(q1 - 1, chunk_);
      const int64_t ck0 = FloorDiv(k0, chunk_), ck1 = FloorDiv(k1 - 1, chunk_);
      if (cq1 < ck0 || ck1 < cq0) return TileKind::kEmpty;
      full = full && cq0 == cq1 && ck0 == ck1 && cq0 == ck0;
      if (!full) return Mask::Classify(q0, q1, k0, k1);  // rare: exact scan at chunk edges
    }
    return full ? TileKind::kFull : TileKind::kPartial;
  }

  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    const int64_t w = k1 - k0;
    for (int64_t q = q0; q < q1; ++q) {
      uint8_t* row = allowed + (q - q0) * w;
      int64_t lo = std::max(k0, q - left_), hi = std::min(k1 - 1, q + right_);
      if (chunk_ > 0) {
        const int64_t c = FloorDiv(q, chunk_);
        lo = std::max(lo, c * chunk_);
        hi = std::min(hi, c * chunk_ + chunk_ - 1);
      }
      std::fill(row, row + w, uint8_t{0});
      for (int64_t k = lo; k <= hi; ++k) row[k - k0] = 1;
    }
  }

  std::pair<int64_t, int64_t> KeyBounds(int64_t q0, int64_t q1) const override {
    int64_t lo = q0 - left_, hi = q1 - 1 + right_ + 1;
    if (chunk_ > 0) {
      lo = std::max(lo, FloorDiv(q0, chunk_) * chunk_);
      hi = std::min(hi, FloorDiv(q1 - 1, chunk_) * chunk_ + chunk_);
    }
    return {lo, hi};
  }

  std::string Describe() const override { return name_; }

 private:
  static int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
  int64_t left_, right_, chunk_;
  std::string name_;
};

class CombinedMask final : public Mask {
 public:
  CombinedMask(MaskPtr a, MaskPtr b, bool is_and)
      : a_(std::move(a)), b_(std::move(b)), and_(is_and) {
    Require(a_ != nullptr && b_ != nullptr, is_and ? "AndMask" : "OrMask",
            ": both masks must be non-null");
  }
  bool Allowed(int64_t q, int64_t k) const override {
    return and_ ? (a_->Allowed(q, k) && b_->Allowed(q, k))
                : (a_->Allowed(q, k) || b_->Allowed(q, k));
  }
  TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    const TileKind x = a_->Classify(q0, q1, k0, k1);
    if (and_) {
      if (x == TileKind::kEmpty) return x;
      const TileKind y = b_->Classify(q0, q1, k0, k1);
      if (y == TileKind::kEmpty) return y;
      if (x == TileKind::kFull && y == TileKind::kFull) return TileKind::kFull;
      if (x == TileKind::kFull || y == TileKind::kFull) return TileKind::kPartial;
      return Mask::Classify(q0, q1, k0, k1);  // both partial: the intersection may be empty
    }
    if (x == TileKind::kFull) return x;
    const TileKind y = b_->Classify(q0, q1, k0, k1);
    if (y == TileKind::kFull) return y;
    if (x == TileKind::kEmpty && y == TileKind::kEmpty) return TileKind::kEmpty;
    if (x == TileKind::kEmpty || y == TileKind::kEmpty) return TileKind::kPartial;
    return Mask::Classify(q0, q1, k0, k1);  // both partial: the union may be full
  }
  void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const override {
    const size_t n = static_cast<size_t>((q1 - q0) * (k1 - k0));
    std::vector<uint8_t> other(n);
    a_->FillTile(q0, q1, k0, k1, allowed);
    b_->FillTile(q0, q1, k0, k1, other.data());
    for (size_t i = 0; i < n; ++i)
      allowed[i] = and_ ? (allowed[i] & other[i]) : (allowed[i] | other[i]);
  }
  std::pair<int64_t, int64_t> KeyBounds(int64_t q0, int64_t q1) const override {
    const auto [alo, ahi] = a_->KeyBounds(q0, q1);
    const auto [blo, bhi] = b_->KeyBounds(q0, q1);
    if (and_) return {std::max(alo, blo), std::min(ahi, bhi)};
    return {std::min(alo, blo), std::max(ahi, bhi)};
  }
  std::string Describe() const override {
    return (and_ ? "and(" : "or(") + a_->Describe() + ", " + b_->Describe() + ")";
  }

 private:
  MaskPtr a_, b_;
  bool and_;
};

}  // namespace

MaskPtr CausalMask() { return std::make_shared<BandMask>(kUnbounded, 0, 0, "causal"); }

MaskPtr WindowMask(int64_t left, int64_t right) {
  Require(left >= 0, "WindowMask: left must be >= 0, got ", left);
  Require(right >= 0, "WindowMask: right must be >= 0, got ", right);
  return std::make_shared<BandMask>(
      std::min(left, kUnbounded), std::min(right, kUnbounded), 0,
      "window(left=" + std::to_string(left) + ",right=" + std::to_string(right) + ")");
}

MaskPtr CausalWindowMask(int64_t window) {
  Require(window >= 1, "CausalWindowMask: window must be >= 1, got ", window);
  return std::make_shared<BandMask>(window - 1, 0, 0,
                                    "causal_window(" + std::to_string(window) + ")");
}

MaskPtr ChunkedLocalMask(int64_t chunk) {
  Require(chunk >= 1, "ChunkedLocalMask: chunk must be >= 1, got ", chunk);
  return std::make_shared<BandMask>(kUnbounded, 0, chunk,
                                    "chunked_local(" + std::to_string(chunk) + ")");
}

MaskPtr AndMask(MaskPtr a, MaskPtr b) { return std::make_shared<CombinedMask>(a, b, true); }
MaskPtr OrMask(MaskPtr a, MaskPtr b) { return std::make_shared<CombinedMask>(a, b, false); }

double MaskDensity(const Mask* mask, int64_t seqlen_q, int64_t seqlen_kv) {
  Require(seqlen_q > 0 && seqlen_kv > 0, "MaskDensity: seqlen_q and seqlen_kv must be positive");
  if (mask == nullptr) return 1.0;
  const int64_t q_off = seqlen_kv - seqlen_q;
  constexpr int64_t kB = 64;
  std::vector<uint8_t> tile(kB * kB);
  double allowed = 0;
  for (int64_t i0 = 0; i0 < seqlen_q; i0 += kB) {
    const int64_t i1 = std::min(seqlen_q, i0 + kB);
    for (int64_t j0 = 0; j0 < seqlen_kv; j0 += kB) {
      const int64_t j1 = std::min(seqlen_kv, j0 + kB);
      switch (mask->Classify(i0 + q_off, i1 + q_off, j0, j1)) {
        case TileKind::kEmpty:
          break;
        case TileKind::kFull:
          allowed += static_cast<double>((i1 - i0) * (j1 - j0));
          break;
        case TileKind::kPartial:
          mask->FillTile(i0 + q_off, i1 + q_off, j0, j1, tile.data());
          for (int64_t t = 0; t < (i1 - i0) * (j1 - j0); ++t) allowed += tile[t];
          break;
      }
    }
  }
  return allowed / (static_cast<double>(seqlen_q) * static_cast<double>(seqlen_kv));
}

}  // namespace attnkit
