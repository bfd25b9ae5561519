// Measurements for sparse attention, shared by `attnkit bench sparse`, `attnkit probe` and the
// visual guide: the static patterns and DSA against dense causal attention, and the retrieval
// probe that shows what each pattern can and cannot see.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/masks/sparse.h"

namespace attnkit::bench {

struct SparseBenchConfig {
  std::vector<int64_t> seqlens = {16384, 65536};
  int64_t batch = 1;
  int64_t num_heads = 1;  // query heads = kv heads (MHA), the same for every case
  int64_t head_dim = 128;
  int threads = 0;       // 0 → GetNumThreads()
  int repeats = 3;       // timed runs (median) for seqlen <= 16384, after one warm-up run
  int long_repeats = 3;  // timed runs for longer sequences (median), no warm-up: 65536 is long
  // Static patterns by PatternSpec name, built with the defaults for each seqlen.
  std::vector<std::string> patterns = {"window", "strided", "bigbird", "fixed", "longformer"};
  bool dsa = true;
  int64_t top_k = 2048;
  int64_t index_heads = 1;
  int64_t index_dim = 32;
  uint64_t seed = 1;
  // Called before the static patterns of each seqlen and before its DSA run (progress).
  std::function<void(const std::string&)> on_case;
};

struct SparseBenchRow {
  int64_t seqlen = 0;
  std::string pattern;      // "causal", a PatternSpec name, or "dsa"
  std::string description;  // mask->Describe() (DSA: its parameters)
  double density = 0;       // allowed pairs / seqlen² (DSA: selected pairs / seqlen²)
  double causal_density = 0;
  double median_ms = 0;  // the pattern's time (DSA: indexer + top-k + attention)
  double causal_ms = 0;  // dense causal at the same seqlen, same run
  // (causal_ms × density / causal_density) / median_ms: 1 = the skipped pairs cost nothing.
  double efficiency = 0;
  DenseStats tiles;  // from the kernel (static patterns)
  // DSA only.
  double indexer_ms = 0, attention_ms = 0;        // DsaSelect (indexer + top-k), GatherForward
  double indexer_share = 0, attention_share = 0;  // each / causal_ms
  int64_t top_k = 0;
};

// Times dense causal attention and each pattern through DenseForward (interleaved within each
// repeat, so that all meet the same machine conditions), and DSA (DsaSelect +
// GatherForward in query chunks of 4096) on seeded random data. Rows are in seqlen order, causal
// first.
std::vector<SparseBenchRow> BenchSparse(const SparseBenchConfig& config);

// ------------------------------------------------------- DSA decode in DeepSeek V3.2's shape
// One decode step (one new token) of one layer at each context: DSA over the absorbed MLA latent
// (one 576-wide row = 512 latent + 64 rope serves all query heads; v is a view of its first 512
// dims) against dense absorbed MLA over the same latent cache (DenseForward, multi-query). The
// indexer reads a bf16 key cache (IndexerCache); DSA = indexer + top-k (DsaSelect) + attention
// over the selected rows (GatherForward). Defaults: DeepSeek V3.2 (128 heads, indexer 64 × 128,
// top-k 2048).
struct MlaDsaDecodeConfig {
  std::vector<int64_t> contexts = {8192, 32768, 131072};
  int64_t num_heads = 128;
  int64_t kv_lora_rank = 512;
  int64_t rope_dim = 64;
  int64_t index_heads = 64;
  int64_t index_dim = 128;
  int64_t top_k = 2048;
  bool bf16_latent = true;  // the latent cache in bf16 (both paths read the same cache)
  int threads = 0;          // 0 → GetNumThreads()
  int repeats = 5;          // timed steps per path and context (median, min, max), after a warm-up
  uint64_t seed = 1;
  std::function<void(const std::string&)> on_case;
};

// One context of a DSA-against-dense-absorbed-MLA comparison (decode or prefill).
struct DsaVsDenseRow {
  int64_t context = 0;
  double dense_ms = 0, dense_min_ms = 0, dense_max_ms = 0;  // dense absorbed MLA
  double indexer_ms = 0, attention_ms = 0;                  // DSA parts (medians)
  double dsa_ms = 0, dsa_min_ms = 0, dsa_max_ms = 0;        // indexer + top-k + attention
  double speedup = 0;                                       // dense_ms / dsa_ms
  double dense_flops = 0, dsa_flops = 0;                    // multiply-adds × 2 of each path
};

struct MlaDsaDecodeRow : DsaVsDenseRow {};

std::vector<MlaDsaDecodeRow> BenchMlaDsaDecode(const MlaDsaDecodeConfig& config);

// ------------------------------------------------------ DSA prefill in DeepSeek V3.2's shape
// Prefill of one layer over `context` tokens: DSA over the absorbed MLA latent (DsaSelect over
// the whole sequence, causal, then GatherForward of every query over its top-k rows) against
// dense absorbed MLA causal prefill over the same latent (DenseForward, CausalMask). The full
// V3.2 shape is hours of prefill on two cores at 64k, so the query heads AND the indexer heads
// are divided by `head_divisor` (default 16: 8 query heads, indexer 4 × 128), which keeps the
// two paths' work ratio at DeepSeek's while making each case seconds; the widths (576 / 512,
// index_dim 128) and top-k 2048 are DeepSeek's.
struct MlaDsaPrefillConfig {
  std::vector<int64_t> contexts = {4096, 8192, 16384};
  int64_t num_heads = 128;   // before the divisor
  int64_t index_heads = 64;  // before the divisor
  int64_t head_divisor = 16;
  int64_t kv_lora_rank = 512;
  int64_t rope_dim = 64;
  int64_t index_dim = 128;
  int64_t top_k = 2048;
  int threads = 0;
  int repeats = 3;  // timed runs per path and context (median, min, max), after a warm-up
  uint64_t seed = 1;
  std::function<void(const std::string&)> on_case;
};

struct MlaDsaPrefillRow : DsaVsDenseRow {
  int64_t num_heads = 0, index_heads = 0;  // after the divisor
};

std::vector<MlaDsaPrefillRow> BenchMlaDsaPrefill(const MlaDsaPrefillConfig& config);

// ----------------------------------------------------------------------------- retrieval probe
// One query at the last position t = seqlen − 1; one key at t − D is planted to match it (same
// random direction, scaled so its logit beats every other by a wide margin) and carries a random
// value v*. A method retrieves the key when its attention output has cosine similarity > 0.9 with
// v*. Exact and reproducible: the data is a pure function of (seed, D).
struct ProbeConfig {
  int64_t seqlen = 4096;
  int64_t head_dim = 64;
  std::vector<int64_t> distances;  // empty → 1, 2, 4, … < seqlen, plus seqlen − 1
  int64_t window = 256;            // the sliding-window method's window (keys incl. the query)
  int64_t top_k = 64;              // DSA
  int64_t index_dim = 16;          // DSA indexer: 1 head, k_I = P·k and q_I = P·q (P random)
  double indexer_noise = 0.0;      // added to q_I, k_I (× their RMS): an imperfect indexer
  std::vector<std::string> patterns = {"strided", "fixed", "longformer", "bigbird"};
  uint64_t seed = 1;
};

struct ProbeRow {
  std::string method;       // "causal", "window", a pattern name, or "dsa"
  std::string description;  // the mask or DSA parameters
  int64_t distance = 0;
  bool visible = false;    // the mask allows (t, t − D) / DSA selected the key
  bool retrieved = false;  // cosine > 0.9
  double cosine = 0;
  int64_t indexer_rank = -1;  // DSA: rank of the planted key among the indexer scores (0 = best)
};

struct ProbeResult {
  ProbeConfig config;  // with distances filled in
  std::vector<std::string> methods;
  std::vector<ProbeRow> rows;  // distances × methods, distance-major
};

ProbeResult RetrievalProbe(const ProbeConfig& config);

}  // namespace attnkit::bench
