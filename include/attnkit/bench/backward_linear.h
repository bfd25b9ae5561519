// Backward-pass measurements of the linear and recurrent engines: chunked Gated DeltaNet and
// causal Performer (FAVOR+) at 8192 tokens, head_dim 128 (issue 14's cases), forward and backward
// timed separately (medians), against the sgemm rate measured in the same process.
//
// FLOP convention (FlashAttention's, as issue 14 asks): the backward counts as 2.5 × the
// forward's FLOPs (the forward's own count: GatedDeltaFlops, LinearFlops), so
//   backward GFLOP/s = 2.5 · F_fwd / t_bwd,   forward + backward GFLOP/s = 3.5 · F_fwd / (t_fwd +
//   t_bwd).
// The backward's own multiply-add count (including its recomputation of the forward) is
// reported beside it (GatedDeltaBackwardFlops, LinearBackwardFlops).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace attnkit::bench {

struct BackwardLinearConfig {
  int64_t seqlen = 8192;
  int64_t heads = 2;  // batch 1; one head per thread keeps both cores busy
  int64_t head_dim = 128;
  int64_t num_features = 256;  // Performer m
  int threads = 2;
  int repeats = 5;            // medians of this many runs
  int64_t sgemm_size = 1024;  // the sgemm ceiling is measured on n × n × n
  std::function<void(const std::string&)> on_progress;
};

struct BackwardLinearCase {
  std::string name;  // "gdn_chunked_backward", "performer_causal_backward"
  int64_t seqlen = 0, heads = 0, head_dim = 0;
  double forward_seconds = 0, backward_seconds = 0;  // medians
  double forward_flops = 0;                          // the forward kernel's own count
  double backward_own_flops = 0;  // the backward's own count (with its recomputation)
  double backward_gflops = 0;     // 2.5 · forward_flops / backward_seconds
  double total_gflops = 0;        // 3.5 · forward_flops / (forward + backward seconds)
  double backward_own_gflops = 0;
};

struct BackwardLinearResult {
  double sgemm_gflops = 0;  // OpenBLAS sgemm 1024³ on the same threads
  std::vector<BackwardLinearCase> cases;
};

BackwardLinearResult RunBackwardLinearBench(const BackwardLinearConfig& config);

}  // namespace attnkit::bench
