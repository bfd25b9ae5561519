// `attnkit bench blocks`: whole attention layers at long contexts — Llama-3-8B-shaped GQA and MHA
// layers and a DeepSeek-V3-shaped MLA layer (naive and absorbed paths): bytes per cached token,
// decode ms/token, prefill tokens/s, against the machine's ceilings measured in the same run.
// The measurements live in the library (attnkit/bench/blocks.h); this file only formats them.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "attnkit/bench/blocks.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "bench.h"
#include "command.h"
#include "list_args.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

std::vector<int64_t> ParseContexts(const std::string& text) {
  return ParseSizeList(text, "--contexts");
}

nlohmann::json RowJson(const bench::BlocksBenchRow& r, const bench::Ceilings& c) {
  nlohmann::json j = {{"family", "blocks"},
                      {"layer", r.layer},
                      {"path", r.path},
                      {"config", r.describe},
                      {"context", r.context},
                      {"skipped", r.skipped},
                      {"note", r.note},
                      {"cache_bytes_per_token", r.cache_bytes_per_token},
                      {"cache_bytes", r.cache_bytes},
                      {"scratch_bytes", r.scratch_bytes},
                      {"weight_bytes", r.weight_bytes}};
  if (!r.skipped) {
    j["decode_ms"] = r.decode_ms;
    j["decode_samples"] = r.decode_samples;
    j["decode_gflop"] = r.decode_gflop;
    j["decode_gflops"] = r.decode_gflops;
    j["decode_gbps"] = r.decode_gbps;
    j["ratio_gflops_to_sgemm"] = r.decode_gflops / c.sgemm_gflops;
    j["ratio_gbps_to_read"] = r.decode_gbps / c.read_gbps;
    j["prefill_tokens_per_s"] = r.prefill_tokens_per_s;
  }
  return j;
}

int RunBenchBlocks(const std::vector<std::string>& args) {
  ArgParser p("attnkit bench blocks [options]",
              "Attention layers of real models at long contexts: Llama-3-8B-shaped GQA and MHA "
              "layers, a DeepSeek-V3-shaped MLA layer (naive and absorbed paths). Reports bytes "
              "per cached token, decode ms/token (median), prefill tokens/s, and decode GFLOP/s "
              "and GB/s against sgemm and memory-read ceilings measured in the same run. The "
              "cache is filled with random values before timing decode.");
  p.AddOption("contexts", "4k,32k", "cached tokens at which decode is timed (comma list)");
  p.AddOption("prefill", "256", "prompt tokens of the prefill measurement");
  p.AddOption("steps", "5", "timed decode tokens per point (median reported)");
  p.AddOption("max-seconds", "4", "stop timing a point after this many seconds (>= 1 sample)");
  p.AddOption("memory-gib", "0", "memory limit for a point (0 = 80% of MemAvailable)");
  p.AddOption("threads", "0", "threads (0 = all)");
  p.AddOption("seed", "1", "seed of the random weights and caches");
  p.AddFlag("no-naive", "skip the naive MLA path");
  p.AddFlag("json", "one JSON object per point on stdout");
  p.AddFlag("quiet", "no progress on stderr");
  if (!p.Parse(args)) return 0;
  bench::BlocksBenchOptions o;
  o.contexts = ParseContexts(p.Get("contexts"));
  o.prefill_tokens = p.GetInt("prefill");
  o.decode_steps = static_cast<int>(p.GetInt("steps"));
  o.max_seconds_per_point = p.GetDouble("max-seconds");
  o.memory_limit_gib = p.GetDouble("memory-gib");
  o.num_threads = p.GetThreads();
  o.seed = p.GetSeed();
  o.include_naive = !p.Flag("no-naive");
  const bool json = p.Flag("json");
  if (p.Flag("quiet")) SetProgressQuiet(true);
  Progress bar("bench blocks", 0);
  const auto res = bench::RunBlocksBench(o, [&bar](const std::string& line) {
    bar.SetNote(line);
    bar.Advance();
  });
  bar.Finish();
  const auto& c = res.ceilings;
  if (json) {
    for (const auto& r : res.rows) std::cout << RowJson(r, c).dump() << "\n";
    return 0;
  }
  std::printf("machine: %s, %d threads, SIMD %s; ceilings: sgemm %.1f GFLOP/s, read %.1f GB/s\n",
              CpuModelName().c_str(), res.threads, SimdTargetName().c_str(), c.sgemm_gflops,
              c.read_gbps);
  std::printf("%-16s %-8s %7s %10s %10s %11s %9s %8s %7s %8s %7s %10s\n", "layer", "path",
              "context", "B/token", "cache MiB", "scratch MiB", "decode ms", "GFLOP/s", "%sgemm",
              "GB/s", "%read", "prefill t/s");
  for (const auto& r : res.rows) {
    if (r.skipped) {
      std::printf("%-16s %-8s %7lld  skipped: %s\n", r.layer.c_str(), r.path.c_str(),
                  static_cast<long long>(r.context), r.note.c_str());
      continue;
    }
    std::printf("%-16s %-8s %7lld %10lld %10.1f %11.1f %9.2f %8.1f %6.0f%% %8.1f %6.0f%% %10.1f\n",
                r.layer.c_str(), r.path.c_str(), static_cast<long long>(r.context),
                static_cast<long long>(r.cache_bytes_per_token), r.cache_bytes / 1048576.0,
                r.scratch_bytes / 1048576.0, r.decode_ms, r.decode_gflops,
                100 * r.decode_gflops / c.sgemm_gflops, r.decode_gbps,
                100 * r.decode_gbps / c.read_gbps, r.prefill_tokens_per_s);
  }
  // Ratios that carry the story: cache per token, and decode time, of each layer vs GQA.
  const bench::BlocksBenchRow* gqa = nullptr;
  for (const auto& r : res.rows) {
    if (r.layer == "llama3-8b gqa" && !r.skipped) gqa = &r;
  }
  if (gqa != nullptr) {
    std::printf("\nrelative to llama3-8b gqa at %lld tokens:\n",
                static_cast<long long>(gqa->context));
    for (const auto& r : res.rows) {
      if (r.skipped || r.context != gqa->context) continue;
      std::printf("  %-16s %-8s cache/token x%.3f  decode time x%.2f\n", r.layer.c_str(),
                  r.path.c_str(),
                  static_cast<double>(r.cache_bytes_per_token) / gqa->cache_bytes_per_token,
                  r.decode_ms / gqa->decode_ms);
    }
  }
  return 0;
}

const BenchRegistrar kBlocks({"blocks", "attention layers (GQA/MHA/MLA) at 4k and 32k context",
                              RunBenchBlocks});

}  // namespace
}  // namespace attnkit::cli
