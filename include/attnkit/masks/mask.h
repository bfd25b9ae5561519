// Masks: predicates over (query position, key position) pairs, in absolute token positions.
//
// The same object is obeyed by the kernels and drawn by the visual guide, so a picture cannot
// disagree with the code. Besides the per-pair predicate, a mask classifies a rectangular tile of
// pairs as empty (skipped), full (computed without per-element checks) or partial (checked
// element by element), which is how requested sparsity becomes saved compute.
//
// Positions are absolute: with the dense kernel's default bottom-right alignment, query row i of
// a call with seqlen_q queries over seqlen_kv keys sits at position i + seqlen_kv - seqlen_q, key
// row j at position j. So one mask serves prefill, chunked prefill and decode.
//
// Thread safety: kernels call every method of one Mask object from all their threads at once
// (and several kernel calls may share a mask). The methods are const and must be safe to call
// concurrently: a user-defined mask must not mutate shared state without its own synchronisation.
// The masks attnkit provides are immutable after construction.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace attnkit {

enum class TileKind : uint8_t { kEmpty = 0, kPartial = 1, kFull = 2 };

class Mask {
 public:
  virtual ~Mask() = default;

  // True when query position q may attend to key position k.
  virtual bool Allowed(int64_t q, int64_t k) const = 0;

  // Classifies the tile q in [q0, q1), k in [k0, k1). kEmpty only if no pair is allowed, kFull
  // only if every pair is. The default scans the tile; masks override it with O(1) logic.
  virtual TileKind Classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;

  // Writes allowed[(q - q0) * (k1 - k0) + (k - k0)] in {0, 1} for the tile. Default: Allowed().
  virtual void FillTile(int64_t q0, int64_t q1, int64_t k0, int64_t k1, uint8_t* allowed) const;

  // Keys outside the returned [lo, hi) are guaranteed masked for every query in [q0, q1).
  // Lets kernels bound their loop over key tiles. Default: no bound.
  virtual std::pair<int64_t, int64_t> KeyBounds(int64_t q0, int64_t q1) const;

  // Appends to *tiles, in increasing order, the indices t of the key tiles
  // [k_begin + t * block_kv, min(k_end, k_begin + (t + 1) * block_kv)) that may hold an allowed
  // pair for some query in [q0, q1). Every tile not listed is guaranteed empty; a listed tile may
  // still be empty (kernels classify it). Lets a kernel visit only the few non-empty tiles of a
  // very sparse pattern instead of classifying every tile. Default: the tiles inside KeyBounds
  // whose Classify is not kEmpty. Sparse patterns override it with a direct enumeration.
  virtual void KeyTiles(int64_t q0, int64_t q1, int64_t k_begin, int64_t k_end, int64_t block_kv,
                        std::vector<int64_t>* tiles) const;

  // Short description such as "causal" or "window(left=127,right=0)".
  virtual std::string Describe() const = 0;
};

using MaskPtr = std::shared_ptr<const Mask>;

inline constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max() / 4;

// k <= q.
MaskPtr CausalMask();
// q - left <= k <= q + right (left, right >= 0; kUnbounded for no limit). Causal = (kUnbounded, 0).
MaskPtr WindowMask(int64_t left, int64_t right);
// Causal sliding window of `window` keys including the query itself (Mistral, Gemma, gpt-oss):
// q - window < k <= q. Same as WindowMask(window - 1, 0).
MaskPtr CausalWindowMask(int64_t window);
// Block-diagonal chunks (Llama 4 attention_chunk_size): q / chunk == k / chunk, and k <= q.
MaskPtr ChunkedLocalMask(int64_t chunk);
// Intersection and union.
MaskPtr AndMask(MaskPtr a, MaskPtr b);
MaskPtr OrMask(MaskPtr a, MaskPtr b);

// Fraction of allowed pairs for seqlen_q queries over seqlen_kv keys in the bottom-right
// alignment (nullptr = no mask = 1.0). Exact; costs O(tiles) for masks with O(1) Classify.
double MaskDensity(const Mask* mask, int64_t seqlen_q, int64_t seqlen_kv);

}  // namespace attnkit
