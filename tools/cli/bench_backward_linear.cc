// `attnkit bench backward-linear`: the backward passes of the linear and recurrent engines —
// chunked Gated DeltaNet and causal Performer at 8192 tokens, head_dim 128 — forward and backward
// times, GFLOP/s (backward counted as 2.5 × the forward's FLOPs) against the sgemm rate measured
// in the same run. Measurement code: bench/backward_linear.h.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "attnkit/bench/backward_linear.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "bench.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

std::string LoadAverage1() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  return (in >> first) ? first : "n/a";
}

int RunBenchBackwardLinear(const std::vector<std::string>& args) {
  ArgParser p("attnkit bench backward-linear [options]",
              "Backward passes of chunked Gated DeltaNet and causal Performer (FAVOR+): forward "
              "and backward time, GFLOP/s with the backward counted as 2.5x the forward's FLOPs "
              "(FlashAttention's convention), against the sgemm rate of the same run.");
  p.AddOption("seqlen", "8192", "tokens");
  p.AddOption("heads", "2", "heads (batch 1)");
  p.AddOption("head-dim", "128", "head dimension (qk and v)");
  p.AddOption("features", "256", "Performer random features m");
  p.AddOption("repeats", "5", "timed runs per case (median)");
  p.AddOption("threads", "2", "threads (0 = all cores)");
  p.AddFlag("json", "one JSON object per case on stdout");
  p.AddFlag("quiet", "no progress on stderr");
  if (!p.Parse(args)) return 0;
  if (p.Flag("quiet")) SetProgressQuiet(true);
  bench::BackwardLinearConfig cfg;
  cfg.seqlen = p.GetInt("seqlen");
  cfg.heads = p.GetInt("heads");
  cfg.head_dim = p.GetInt("head-dim");
  cfg.num_features = p.GetInt("features");
  cfg.repeats = static_cast<int>(p.GetInt("repeats"));
  cfg.threads = ResolveThreads(p.GetThreads());
  Progress bar("bench backward-linear", 2);
  cfg.on_progress = [&](const std::string& note) {
    bar.SetNote(note);
    bar.Advance();
  };
  const std::string load_before = LoadAverage1();
  const bench::BackwardLinearResult r = bench::RunBackwardLinearBench(cfg);
  bar.Finish();
  const std::string load_after = LoadAverage1();
  if (p.Flag("json")) {
    for (const auto& c : r.cases) {
      std::cout << nlohmann::json({{"case", c.name},
                                   {"seqlen", c.seqlen},
                                   {"heads", c.heads},
                                   {"head_dim", c.head_dim},
                                   {"threads", cfg.threads},
                                   {"forward_ms", c.forward_seconds * 1e3},
                                   {"backward_ms", c.backward_seconds * 1e3},
                                   {"backward_gflops", c.backward_gflops},
                                   {"fwd_bwd_gflops", c.total_gflops},
                                   {"backward_own_gflops", c.backward_own_gflops},
                                   {"sgemm_gflops", r.sgemm_gflops},
                                   {"backward_ratio_sgemm", c.backward_gflops / r.sgemm_gflops},
                                   {"flop_convention", "backward = 2.5 x forward FLOPs"},
                                   {"simd_target", SimdTargetName()},
                                   {"load_average", load_before + " -> " + load_after}})
                       .dump()
                << "\n";
    }
    return 0;
  }
  std::printf(
      "attnkit bench backward-linear: batch 1, %lld heads, head_dim %lld, %d threads, %s; sgemm "
      "%.1f GFLOP/s; load average %s -> %s\n"
      "GFLOP/s count the backward as 2.5x the forward's FLOPs (FlashAttention's convention); "
      "'own' uses the backward's own count (with its recomputation)\n\n",
      static_cast<long long>(cfg.heads), static_cast<long long>(cfg.head_dim), cfg.threads,
      SimdTargetName().c_str(), r.sgemm_gflops, load_before.c_str(), load_after.c_str());
  std::printf("%-27s %7s %8s %8s %9s %7s %9s %9s\n", "case", "seqlen", "fwd_ms", "bwd_ms",
              "bwd_GF/s", "%sgemm", "f+b_GF/s", "own_GF/s");
  for (const auto& c : r.cases) {
    std::printf("%-27s %7lld %8.2f %8.2f %9.1f %6.0f%% %9.1f %9.1f\n", c.name.c_str(),
                static_cast<long long>(c.seqlen), c.forward_seconds * 1e3, c.backward_seconds * 1e3,
                c.backward_gflops, 100 * c.backward_gflops / r.sgemm_gflops, c.total_gflops,
                c.backward_own_gflops);
  }
  return 0;
}

const BenchRegistrar kBackwardLinear({"backward-linear",
                                      "backward of chunked Gated DeltaNet and causal Performer",
                                      RunBenchBackwardLinear});

}  // namespace
}  // namespace attnkit::cli
