// Measurements of the linear and recurrent engines, shared by `attnkit bench linear` and the
// visual guide: time and memory against sequence length with fitted log-log slopes, crossover
// lengths against dense causal attention, chunked vs token-by-token Gated DeltaNet, decode time
// per token against context length, and the Performer approximation error against m.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace attnkit::bench {

struct LinearBenchConfig {
  std::vector<int64_t> seqlens;  // empty → powers of 2 from 1024 to max_seqlen
  int64_t max_seqlen = 1 << 20;
  int64_t dense_max_seqlen = 16384;  // dense causal is measured up to here
  int64_t heads = 2;
  int64_t head_dim = 128;
  int64_t num_features = 256;         // Performer m
  int64_t gdn_compare_seqlen = 8192;  // chunked vs token-by-token Gated DeltaNet
  int64_t decode_steps = 16;          // decode tokens timed after each prefill
  int threads = 2;
  double min_seconds = 0.2;  // repeat each case until this much time, at most max_repeats
  int max_repeats = 5;
  std::function<void(const std::string&)> on_progress;  // called once per measured case
};

struct LengthPoint {
  int64_t seqlen = 0;
  double seconds = 0;              // median prefill time
  double gflops = 0;               // the kernel's own FLOP count / time
  double io_bytes = 0;             // q, k, v, out (and gates) of this length
  double work_bytes = 0;           // extra resident memory measured during the call (sampled RSS)
  double decode_us_per_token = 0;  // median time of one decode step at this context, one
                                   // thread (0 = n/a)
};

struct LengthSeries {
  std::string name;  // "performer_causal", "linear_elu_causal", "gdn_chunked", "dense_causal"
  std::vector<LengthPoint> points;
  double slope = 0;         // least-squares slope of log(time) vs log(seqlen), points >= 4096
  double decode_slope = 0;  // the same for decode time per token (≈ 0 when flat)
  int64_t crossover = 0;    // first length where this is faster than dense causal (0 = none)
  bool crossover_extrapolated = false;  // from the fitted lines, beyond the dense range
};

struct GdnComparison {
  int64_t seqlen = 0;
  double chunked_seconds = 0, recurrent_seconds = 0, speedup = 0;
  // The plain reference loop (double precision, obvious loops): what a straightforward
  // token-by-token implementation costs.
  double reference_seconds = 0, speedup_vs_reference = 0;
  double chunked_gflops = 0, recurrent_gflops = 0;
  // The most the chunked form could gain on this machine: its three state products alone do
  // the token-by-token form's 6·dk·dv FLOPs per token, so even with free chunk-local work at
  // the FMA peak it takes at least recurrent FLOPs / peak: speed-up <= peak / recurrent GFLOP/s.
  double speedup_bound = 0;
};

struct LinearBenchResult {
  std::vector<LengthSeries> series;
  GdnComparison gdn;
  double sgemm_gflops = 0;     // ceiling: OpenBLAS sgemm 1024³ on the same threads
  double fma_peak_gflops = 0;  // ceiling: register-only vector FMAs on the same threads
};

LinearBenchResult RunLinearBench(const LinearBenchConfig& config);

// Least-squares slope of log(y) against log(x) (both positive).
double LogLogSlope(const std::vector<double>& x, const std::vector<double>& y);

struct PerformerErrorPoint {
  int64_t num_features = 0;
  double orthogonal_error = 0, iid_error = 0;  // mean relative Frobenius error over draws
};
// Performer FAVOR+ vs exact softmax attention on random inputs (q, k ~ N(0, qk_std²)): the mean
// over `draws` feature draws of ‖O − O_exact‖_F / ‖O_exact‖_F for each m.
std::vector<PerformerErrorPoint> PerformerErrorVsFeatures(const std::vector<int64_t>& ms,
                                                          int64_t seqlen, int64_t head_dim,
                                                          bool causal, int draws, float qk_std,
                                                          uint64_t seed);

}  // namespace attnkit::bench
