// Measurement routines for the dense engine, shared by `attnkit bench dense` and the visual guide.
//
// Every routine runs in this process, with the thread count it is given, and returns plain
// structs; formatting is the caller's business. Times are medians over `repeats` runs after one
// warm-up run. FLOPs follow the convention: 4 · seqlen_q · seqlen_kv · head_dim ·
// num_heads_q · batch × the fraction of unmasked pairs (so causal counts about half).
#pragma once

#include <cstdint>
#include <string>

#include "attnkit/kernels/dense.h"
#include "attnkit/masks/mask.h"

namespace attnkit::bench {

// OpenBLAS's worker threads keep spinning for a while after each call, and after the library
// starts them (about 2^28 TSC cycles, ~0.1 s): anything timed in that window runs on a machine
// with a core less (an FMA-peak run at process start measured half the peak). Benchmarks call
// this (a 0.25 s sleep) before their first measurement and after their OpenBLAS calls.
void SettleAfterBlas();

// The machine's practical compute ceiling: OpenBLAS sgemm on n × n × n, GFLOP/s (median).
// Ends with SettleAfterBlas().
double MeasureSgemmGflops(int threads, int64_t n = 2560, int repeats = 5);
// The arithmetic peak: independent chains of vector FMAs on registers (no memory), on the SIMD
// target in use, all `threads` threads at once, GFLOP/s (median). No kernel can exceed it.
double MeasureFmaPeakGflops(int threads, int repeats = 5);
// Sustained memory read bandwidth: `threads` threads summing a `bytes` buffer, GB/s (median).
double MeasureReadGbps(int threads, int64_t bytes = int64_t{512} << 20, int repeats = 7);

// "none" → nullptr, "causal", "window:W" (causal sliding window of W keys, including the query),
// "chunk:C" (chunked-local). Throws attnkit::Error on anything else.
MaskPtr ParseMaskSpec(const std::string& spec);

struct DenseBenchConfig {
  std::string mask = "causal";  // see ParseMaskSpec
  int64_t batch = 1;
  int64_t seqlen_q = 4096;   // decode: number of new query tokens (usually 1)
  int64_t seqlen_kv = 4096;  // decode: tokens in the cache, including the new ones
  int64_t num_heads_q = 8;
  int64_t num_heads_kv = 8;
  int64_t head_dim = 128;
  bool decode = false;   // through KvCache + DenseDecode (bytes/s is the figure of merit)
  bool bf16_kv = false;  // K/V stored in bf16
  bool baseline = true;  // also time the naive BLAS baseline (skipped when S would be > 1 GiB)
  int threads = 0;       // 0 → GetNumThreads()
  int repeats = 5;
};

// The checks BenchDense makes before it measures anything (sizes, mask spec, estimated memory
// against what the machine has available): front ends call it before measuring ceilings.
void CheckDenseBenchConfig(const DenseBenchConfig& config);
// Bytes of the tensors one case allocates (q, k, v, out; decode: plus its f32 staging).
double DenseBenchBytes(const DenseBenchConfig& config);

struct DenseBenchResult {
  DenseBenchConfig config;
  std::string mask_description;
  double density = 1;   // fraction of (query, key) pairs the mask allows
  double flops = 0;     // counted FLOPs per call
  double kv_bytes = 0;  // bytes of K and V, each counted once
  double median_ms = 0, min_ms = 0;
  double gflops = 0;  // flops / median time
  double gbps = 0;    // kv_bytes / median time (the decode figure)
  bool baseline_ran = false;
  double baseline_ms = 0, baseline_gflops = 0, baseline_gbps = 0;
  DenseStats stats;  // tiles of one call (prefill only)
  std::string simd_target;
};

// Times the dense kernel (and, if asked, the naive BLAS baseline: per head sgemm Q·Kᵀ, a row
// softmax under the mask, sgemm P·V; for decode per head sgemv, softmax, sgemv) on random data.
DenseBenchResult BenchDense(const DenseBenchConfig& config);

// Peak resident memory of one causal prefill call: allocates Q, K, V, O [1, num_heads, seqlen,
// head_dim] f32 and runs the kernel while a thread samples the resident set every millisecond
// (Linux /proc/self/statm; elsewhere measured = false).
struct PeakMemoryResult {
  int64_t seqlen = 0, num_heads = 0, head_dim = 0;
  double input_output_bytes = 0;  // Q, K, V and O
  double rss_before_bytes = 0;    // resident before the tensors were allocated
  double peak_bytes = 0;          // largest resident set seen during allocation + the call
  double extra_bytes = 0;         // peak − before − tensors: the kernel's workspace (+ noise)
  double seconds = 0;
  bool measured = false;
};
PeakMemoryResult MeasurePeakMemory(int64_t seqlen, int64_t num_heads, int64_t head_dim,
                                   int threads);

}  // namespace attnkit::bench
