// Measurements of whole attention blocks (layer 4), shared by `attnkit bench blocks`, the
// `attnkit stack` runner and the visual guide: per-token decode time and cache bytes at long
// contexts for Llama-3-8B-shaped GQA / MHA layers and a DeepSeek-V3-shaped MLA layer on its naive
// and absorbed paths, prefill throughput, and a stack runner (prefill then decode).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/layers/gqa.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/mla.h"

namespace attnkit::bench {

// Plain-line progress sink (the CLI prints them on stderr); may be empty.
using ProgressFn = std::function<void(const std::string& line)>;

// Layer shapes of the benchmark.
GqaConfig Llama3_8bLayer();     // hidden 4096, 32 q heads, 8 KV heads, head_dim 128, theta 5e5
GqaConfig Llama3_8bLayerMha();  // the same with 32 KV heads
MlaConfig DeepSeekV3Layer();    // hidden 7168, 128 heads, q_lora 1536, kv_lora 512, 128/64/128

struct BlocksBenchOptions {
  std::vector<int64_t> contexts = {4096, 32768};  // cached tokens when decode is timed
  int64_t prefill_tokens = 256;        // prompt length of the prefill measurement (empty cache)
  int decode_steps = 5;                // timed decode tokens per (layer, context) (median reported)
  double max_seconds_per_point = 4.0;  // stop timing a point early once this much time is spent
  double memory_limit_gib = 0;         // 0 → 80% of MemAvailable; a point needing more is skipped
  bool include_naive = true;           // the naive MLA path (slow at long contexts, by design)
  uint64_t seed = 1;
  int num_threads = 0;  // 0 → GetNumThreads()
};

// One (layer, path, context) point.
struct BlocksBenchRow {
  std::string layer;     // "llama3-8b gqa", "llama3-8b mha", "deepseek-v3 mla"
  std::string path;      // "-" for GQA layers; "naive" / "absorbed" for MLA
  std::string describe;  // the block's Describe()
  int64_t context = 0;   // cached tokens before the timed decode step
  int64_t cache_bytes_per_token = 0;
  double cache_bytes = 0;    // at `context` tokens (f32 storage)
  double scratch_bytes = 0;  // per-step materialisation (naive MLA: per-head K and V)
  double weight_bytes = 0;
  double decode_ms = 0;  // median per decode token
  int decode_samples = 0;
  double decode_gflop = 0;   // FLOPs of one decode token (projections + attention [+ up-proj])
  double decode_gflops = 0;  // decode_gflop / decode time
  double decode_bytes = 0;   // least memory traffic of one decode token: weights + cache
                             // (+ scratch written and read back)
  double decode_gbps = 0;    // decode_bytes / decode time
  double prefill_tokens_per_s = 0;  // of the prefill measurement (same for every context row)
  bool skipped = false;
  std::string note;  // why skipped, or anything worth saying
};

// The machine's ceilings, measured in the same run (with attnkit/bench/dense.h's routines).
struct Ceilings {
  double sgemm_gflops = 0;  // OpenBLAS sgemm 1536³, all threads
  double read_gbps = 0;     // streaming read of a buffer far larger than the caches
};
Ceilings MeasureCeilings(int num_threads = 0);

struct BlocksBenchResult {
  Ceilings ceilings;
  int threads = 0;
  std::vector<BlocksBenchRow> rows;
};

// Runs the whole benchmark: for each layer, prefill throughput once, then decode at each context
// with the cache filled with random values (decode time depends on the cache's size, not its
// contents). The naive MLA path materialises per-head K and V for every cached token at every
// step; a point whose memory would exceed the limit is reported as skipped with what it needs.
BlocksBenchResult RunBlocksBench(const BlocksBenchOptions& options,
                                 const ProgressFn& progress = {});

// FLOPs (×2 multiply-adds) of one decode token at `context` cached tokens.
double GqaDecodeFlops(const GqaConfig& config, int64_t context);
double MlaDecodeFlops(const MlaConfig& config, MlaPath path, int64_t context);

// The stack runner: prefill of `prompt` tokens then `decode` tokens one at a time (inputs are
// seeded random hidden states; there is no vocabulary). Batch 1.
struct StackRunResult {
  int64_t prompt = 0, decode = 0;
  double prefill_seconds = 0, prefill_tokens_per_s = 0;
  double decode_ms_median = 0, decode_tokens_per_s = 0;
  double decode_ms_q1 = 0, decode_ms_q3 = 0;  // quartiles of the decode steps (the spread)
  double cache_bytes = 0, weight_bytes = 0;
};
StackRunResult RunStack(Stack& stack, int64_t prompt, int64_t decode, uint64_t seed,
                        const ProgressFn& progress = {});

// Soak: decodes `tokens` tokens one at a time through `stack` (from its current position; each
// output fed back as the next input, as RunStack does) and reports every `every` tokens the
// interval's median ms per token, the resident size (VmRSS; -1 off Linux) and whether every
// output so far was finite. Memory of windowed and recurrent layers must stay flat over the run.
struct SoakPoint {
  int64_t tokens = 0;      // decoded so far
  double ms_median = 0;    // median ms per token over the interval
  int64_t rss_bytes = -1;  // VmRSS at the end of the interval
  size_t cache_bytes = 0;  // the stack's CacheBytes()
  bool all_finite = true;  // every output of the run so far
};
std::vector<SoakPoint> SoakStack(Stack& stack, int64_t tokens, int64_t every, uint64_t seed,
                                 const std::function<void(const SoakPoint&)>& on_point = {});

}  // namespace attnkit::bench
