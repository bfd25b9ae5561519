// Static sparse attention patterns as Mask objects of the dense engine.
//
// Each pattern is a predicate over absolute (query, key) positions with a tile classification
// that follows its block structure in O(1) or O(blocks in the tile), so the dense kernel skips
// the empty tiles and runs the full ones without per-element checks. The exact definitions (the
// same as the code below) are written out in docs/sparse.md. Positions below 0 are never
// allowed; patterns built for a fixed sequence length (Longformer, BigBird, bitmaps) also refuse
// positions at or past it. Combine with CausalMask() / GQA through the dense kernel as usual:
// the patterns are per position, so every head of a group sees the same pattern.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/core/tensor.h"
#include "attnkit/masks/mask.h"

namespace attnkit {

// Sparse Transformer "strided" (Child et al. 2019), causal. With block = 1, query q sees key k
// iff 0 <= k <= q and (q - k < stride or (q - k) mod stride == 0): the previous `stride` tokens
// (itself included) plus every stride-th earlier token. With block = B > 1 the rule applies to
// block indices (q / B, k / B) — the block-sparse form the paper's kernels run — keeping k <= q.
// Errors: stride < 1, block < 1.
MaskPtr StridedMask(int64_t stride, int64_t block = 1);

// Sparse Transformer "fixed", causal: q sees k iff 0 <= k <= q and (k / block == q / block or
// k mod block >= block - summary): its own block plus the last `summary` positions (c in the
// paper) of every earlier block. Errors: block < 1, summary < 1 or > block.
MaskPtr FixedMask(int64_t block, int64_t summary);

struct LongformerOptions {
  int64_t seqlen = 0;            // positions [0, seqlen); globals must lie inside
  int64_t window = 0;            // sliding window: |q - k| <= window
  int64_t dilation = 1;          // dilated window: |q - k| = m·dilation, 1 <= m <= dilated_window
  int64_t dilated_window = 0;    // number of dilated taps on each side (0 = none)
  std::vector<int64_t> globals;  // positions that see, and are seen by, every position
  bool causal = true;            // additionally k <= q (globals then see earlier keys only)
};
// Longformer (Beltagy et al. 2020). Errors: seqlen < 1, window < 0, dilation < 1,
// dilated_window < 0, a global position outside [0, seqlen).
MaskPtr LongformerMask(const LongformerOptions& options);

struct BigBirdOptions {
  int64_t seqlen = 0;         // positions [0, seqlen), num_blocks = ceil(seqlen / block)
  int64_t block = 64;         // block size in tokens (both axes)
  int64_t window_blocks = 1;  // key blocks |qb - kb| <= window_blocks (BigBird: 3 blocks = 1)
  int64_t global_blocks = 1;  // the first global_blocks blocks see and are seen by all
  int64_t random_blocks = 2;  // r extra key blocks per query block, drawn without replacement
  uint64_t seed = 0;          // the random blocks are a pure function of (seed, query block)
  bool causal = true;         // k <= q, and random blocks are drawn among earlier blocks only
};
// BigBird (Zaheer et al. 2020). Errors: seqlen < 1, block < 1, window_blocks < 0,
// global_blocks < 0, random_blocks < 0.
MaskPtr BigBirdMask(const BigBirdOptions& options);

// A block layout given directly: q sees k iff bitmap[(q / block_q) * num_blocks_kv + k / block_kv]
// != 0, for 0 <= q < num_blocks_q·block_q and 0 <= k < num_blocks_kv·block_kv (and k <= q when
// causal). Errors: block sizes or block counts < 1, bitmap.size() != num_blocks_q·num_blocks_kv.
MaskPtr BlockBitmapMask(int64_t block_q, int64_t block_kv, int64_t num_blocks_q,
                        int64_t num_blocks_kv, std::vector<uint8_t> bitmap, bool causal = false);

// The keys a DSA top-k selection picked, as a mask (for the dense kernel, drawings and tests):
// query position q_start + i sees key position k_start + indices[0, 0, i, j] for every j with
// indices[...] >= 0. indices must be [1, 1, seqlen_q, top_k]: one mask serves every batch and
// head, and any other batch or head count throws attnkit::Error.
MaskPtr SelectionMask(TensorView<const int32_t> indices, int64_t q_start, int64_t k_start = 0);

// Tiles of block_q × block_kv over seqlen_q × seqlen_kv (bottom-right aligned) by kind: what the
// dense kernel will skip, run unchecked and run with per-element checks.
struct TileCounts {
  int64_t total = 0, empty = 0, full = 0, partial = 0;
};
TileCounts CountTiles(const Mask* mask, int64_t seqlen_q, int64_t seqlen_kv, int64_t block_q = 64,
                      int64_t block_kv = 64);

// A pattern by name with its parameters, as the CLI, the retrieval probe and the benchmark build
// them. Fields left unset take defaults scaled to seqlen (see DefaultPatternSpec);
// fields that are set are checked (zero or negative window, stride, block, ... → attnkit::Error
// naming the field). Names: causal, window, chunked, strided, fixed, longformer, bigbird.
struct PatternSpec {
  PatternSpec() = default;
  PatternSpec(std::string pattern_name, int64_t pattern_seqlen)
      : name(std::move(pattern_name)), seqlen(pattern_seqlen) {}
  std::string name;
  int64_t seqlen = 0;
  std::optional<int64_t> block = std::nullopt;     // strided/bigbird block; fixed: its block l
  std::optional<int64_t> window = std::nullopt;    // window/chunked/longformer width in tokens
  std::optional<int64_t> stride = std::nullopt;    // strided stride (in blocks of `block`)
  std::optional<int64_t> summary = std::nullopt;   // fixed: c
  std::optional<int64_t> dilation = std::nullopt;  // longformer
  std::optional<int64_t> dilated_window = std::nullopt;  // longformer
  std::optional<int64_t> window_blocks = std::nullopt;   // bigbird
  std::optional<int64_t> global_blocks = std::nullopt;   // bigbird
  std::optional<int64_t> random_blocks = std::nullopt;   // bigbird
  std::vector<int64_t> globals;                          // longformer (empty: {0})
  uint64_t seed = 0;                                     // bigbird
};
// The spec with every default filled in (for printing exactly what was built).
PatternSpec DefaultPatternSpec(const PatternSpec& spec);
MaskPtr MakePattern(const PatternSpec& spec);
std::vector<std::string> PatternNames();

}  // namespace attnkit
