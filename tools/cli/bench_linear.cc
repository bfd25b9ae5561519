// `attnkit bench linear`: the linear and recurrent engines against dense causal attention —
// time and memory vs sequence length (1k … 1M tokens) with log-log slopes, crossover lengths,
// chunked vs token-by-token Gated DeltaNet, decode time per token vs context, and the Performer
// approximation error vs the number of random features. Measurement code: bench/linear.h.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "attnkit/bench/linear.h"
#include "attnkit/core/error.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "bench.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

// The 1-minute load average (a busy machine makes wall-clock times noisy), or "n/a".
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  return (in >> first) ? first : "n/a";
}

int RunBenchLinear(const std::vector<std::string>& args) {
  ArgParser p("attnkit bench linear [options]",
              "Causal Performer (FAVOR+), elu+1 linear attention and chunked Gated DeltaNet vs "
              "dense causal attention: time and memory against sequence length, fitted log-log "
              "slopes, crossover lengths, chunked vs token-by-token Gated DeltaNet, decode time "
              "per token, and the Performer error against m.");
  p.AddOption("max-seqlen", "1m", "longest sequence (powers of 2 from 1024)");
  p.AddOption("dense-max", "16k", "dense causal is measured up to this length");
  p.AddFlag("full", "longer run: max-seqlen 2m, dense up to 64k, more repeats");
  p.AddOption("heads", "2", "heads (one per thread keeps both cores busy)");
  p.AddOption("head-dim", "128", "head dimension (qk and v)");
  p.AddOption("features", "256", "Performer random features m");
  p.AddOption("gdn-seqlen", "8192", "length of the chunked vs token-by-token comparison");
  p.AddOption("threads", "2", "threads (0 = all cores)");
  p.AddFlag("no-error", "skip the Performer error-vs-m table");
  p.AddFlag("json", "one JSON object per result on stdout");
  p.AddFlag("quiet", "no progress on stderr");
  if (!p.Parse(args)) return 0;
  const bool json = p.Flag("json");
  if (p.Flag("quiet")) SetProgressQuiet(true);

  bench::LinearBenchConfig cfg;
  cfg.threads = ResolveThreads(p.GetThreads());
  cfg.max_seqlen = p.GetInt("max-seqlen");
  cfg.dense_max_seqlen = p.GetInt("dense-max");
  if (p.Flag("full")) {
    if (!p.Given("max-seqlen")) cfg.max_seqlen = 2 << 20;
    if (!p.Given("dense-max")) cfg.dense_max_seqlen = 65536;
    cfg.min_seconds = 1.0;
  }
  cfg.heads = p.GetInt("heads");
  cfg.head_dim = p.GetInt("head-dim");
  cfg.num_features = p.GetInt("features");
  cfg.gdn_compare_seqlen = p.GetInt("gdn-seqlen");
  Require(cfg.max_seqlen >= 1024, "--max-seqlen must be >= 1024, got ", cfg.max_seqlen);

  int64_t cases = 0;
  for (int64_t t = 1024; t <= cfg.max_seqlen; t *= 2) {
    cases += 3 + (t <= cfg.dense_max_seqlen ? 1 : 0);
  }
  Progress bar("bench linear", cases + 1);
  cfg.on_progress = [&](const std::string& note) {
    bar.SetNote(note);
    bar.Advance();
  };
  const bench::LinearBenchResult r = bench::RunLinearBench(cfg);
  std::vector<bench::PerformerErrorPoint> err;
  const int64_t err_len = 512, err_dim = 64;
  if (!p.Flag("no-error")) {
    bar.SetNote("performer error vs m");
    err = bench::PerformerErrorVsFeatures({16, 32, 64, 128, 256, 512, 1024}, err_len, err_dim,
                                          /*causal=*/true, 8, 0.3f, 17);
  }
  bar.Finish();

  const nlohmann::json common = {
      {"threads", cfg.threads},         {"heads", cfg.heads},
      {"head_dim", cfg.head_dim},       {"num_features", cfg.num_features},
      {"sgemm_gflops", r.sgemm_gflops}, {"simd_target", SimdTargetName()},
      {"load_average", LoadAverage()}};
  if (json) {
    for (const auto& s : r.series) {
      for (const auto& pt : s.points) {
        nlohmann::json j = common;
        j.update({{"case", "length"},
                  {"series", s.name},
                  {"seqlen", pt.seqlen},
                  {"ms", pt.seconds * 1e3},
                  {"gflops", pt.gflops},
                  {"ratio_sgemm", pt.gflops / r.sgemm_gflops},
                  {"io_bytes", pt.io_bytes},
                  {"work_bytes", pt.work_bytes},
                  {"decode_us_per_token", pt.decode_us_per_token}});
        std::cout << j.dump() << "\n";
      }
      nlohmann::json j = common;
      j.update({{"case", "fit"},
                {"series", s.name},
                {"slope", s.slope},
                {"decode_slope", s.decode_slope},
                {"crossover_vs_dense", s.crossover},
                {"crossover_extrapolated", s.crossover_extrapolated}});
      std::cout << j.dump() << "\n";
    }
    nlohmann::json g = common;
    g.update({{"case", "gdn_chunked_vs_token"},
              {"seqlen", r.gdn.seqlen},
              {"chunked_ms", r.gdn.chunked_seconds * 1e3},
              {"token_by_token_ms", r.gdn.recurrent_seconds * 1e3},
              {"speedup", r.gdn.speedup},
              {"reference_ms", r.gdn.reference_seconds * 1e3},
              {"speedup_vs_reference", r.gdn.speedup_vs_reference},
              {"chunked_gflops", r.gdn.chunked_gflops},
              {"token_by_token_gflops", r.gdn.recurrent_gflops},
              {"fma_peak_gflops", r.fma_peak_gflops},
              {"speedup_bound_at_fma_peak", r.gdn.speedup_bound}});
    std::cout << g.dump() << "\n";
    for (const auto& e : err) {
      std::cout << nlohmann::json({{"case", "performer_error"},
                                   {"seqlen", err_len},
                                   {"head_dim", err_dim},
                                   {"num_features", e.num_features},
                                   {"orthogonal_error", e.orthogonal_error},
                                   {"iid_error", e.iid_error}})
                       .dump()
                << "\n";
    }
    return 0;
  }

  std::printf(
      "attnkit bench linear: %lld heads, head_dim %lld, Performer m %lld, %d threads, %s; "
      "sgemm ceiling %.1f GFLOP/s, FMA peak %.1f GFLOP/s; load average %s\n\n",
      static_cast<long long>(cfg.heads), static_cast<long long>(cfg.head_dim),
      static_cast<long long>(cfg.num_features), cfg.threads, SimdTargetName().c_str(),
      r.sgemm_gflops, r.fma_peak_gflops, LoadAverage().c_str());
  std::printf("%-18s %9s %11s %9s %7s %9s %10s %11s\n", "series", "seqlen", "prefill_ms", "GFLOP/s",
              "%sgemm", "io_MiB", "work_MiB", "decode_us");
  for (const auto& s : r.series) {
    for (const auto& pt : s.points) {
      std::printf("%-18s %9lld %11.2f %9.1f %6.0f%% %9.1f %10.2f %11.2f\n", s.name.c_str(),
                  static_cast<long long>(pt.seqlen), pt.seconds * 1e3, pt.gflops,
                  100 * pt.gflops / r.sgemm_gflops, pt.io_bytes / 1048576.0,
                  pt.work_bytes / 1048576.0, pt.decode_us_per_token);
    }
  }
  std::printf("\nlog-log slopes (points >= 4096 tokens) and crossover vs dense causal:\n");
  for (const auto& s : r.series) {
    std::printf("  %-18s prefill slope %5.2f   decode slope %5.2f", s.name.c_str(), s.slope,
                s.decode_slope);
    if (s.name != "dense_causal") {
      if (s.crossover > 0) {
        std::printf("   faster than dense from %lld tokens%s", static_cast<long long>(s.crossover),
                    s.crossover_extrapolated ? " (extrapolated from the fits)" : "");
      } else {
        std::printf("   no crossover found");
      }
    }
    std::printf("\n");
  }
  std::printf(
      "\nGated DeltaNet at %lld tokens: chunked %.2f ms (%.1f GFLOP/s), token-by-token "
      "%.2f ms (%.1f GFLOP/s): chunked is %.2fx faster\n",
      static_cast<long long>(r.gdn.seqlen), r.gdn.chunked_seconds * 1e3, r.gdn.chunked_gflops,
      r.gdn.recurrent_seconds * 1e3, r.gdn.recurrent_gflops, r.gdn.speedup);
  std::printf(
      "  (the plain double-precision reference loop takes %.1f ms: chunked is %.1fx faster)\n",
      r.gdn.reference_seconds * 1e3, r.gdn.speedup_vs_reference);
  std::printf(
      "  (chunked runs at %.0f%% of the FMA peak; its state products alone do the token-by-token "
      "FLOPs, so no chunked kernel can beat it by more than peak / %.1f GFLOP/s = %.2fx here)\n",
      100 * r.gdn.chunked_gflops / r.fma_peak_gflops, r.gdn.recurrent_gflops, r.gdn.speedup_bound);
  if (!err.empty()) {
    std::printf(
        "\nPerformer (causal) relative error vs exact softmax, T %lld, head_dim %lld, "
        "q, k ~ N(0, 0.3²), mean of 8 draws:\n  %6s %12s %12s\n",
        static_cast<long long>(err_len), static_cast<long long>(err_dim), "m", "orthogonal", "iid");
    for (const auto& e : err) {
      std::printf("  %6lld %12.4f %12.4f\n", static_cast<long long>(e.num_features),
                  e.orthogonal_error, e.iid_error);
    }
  }
  return 0;
}

const BenchRegistrar kLinear({"linear",
                              "Performer / linear attention / Gated DeltaNet vs dense causal",
                              RunBenchLinear});

}  // namespace
}  // namespace attnkit::cli
