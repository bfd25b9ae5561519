// `attnkit bench backward`: forward + backward of every registered family against the sgemm
// rate measured in the same process, the PyTorch autograd peer, and the dense backward's peak
// memory at 16k / 32k / 64k tokens.
#include "bench_backward.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

#include "attnkit/bench/dense.h"
#include "attnkit/core/error.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "bench.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {

namespace {
std::map<std::string, BackwardFamily>& Families() {
  static std::map<std::string, BackwardFamily> families;  // function-local: safe init order
  return families;
}
}  // namespace

void RegisterBackwardFamily(BackwardFamily family) {
  std::string name = family.name;
  Families()[name] = std::move(family);
}

namespace {

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  if (!(in >> one)) return "unknown";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", one);
  return buf;
}

nlohmann::json CaseJson(const bench::BackwardCase& r, double sgemm, int threads) {
  nlohmann::json j = {{"family", r.family},
                      {"case", r.name},
                      {"description", r.description},
                      {"batch", r.batch},
                      {"seqlen", r.seqlen},
                      {"num_heads_q", r.num_heads_q},
                      {"num_heads_kv", r.num_heads_kv},
                      {"head_dim", r.head_dim},
                      {"threads", threads},
                      {"forward_ms", r.forward_ms},
                      {"backward_ms", r.backward_ms},
                      {"forward_flops", r.forward_flops},
                      {"backward_flops_counted", r.backward_flops},
                      {"flop_convention", "backward = 2.5 x forward (FlashAttention)"},
                      {"forward_gflops", r.forward_gflops},
                      {"backward_gflops", r.backward_gflops},
                      {"total_gflops", r.total_gflops},
                      {"sgemm_gflops", sgemm},
                      {"backward_ratio_sgemm", r.backward_gflops / sgemm},
                      {"total_ratio_sgemm", r.total_gflops / sgemm},
                      {"peer_note", r.peer_note}};
  if (r.predicted_backward_ms > 0) {
    j["predicted_backward_ms"] = r.predicted_backward_ms;
    j["predicted_from"] = r.predicted_from;
    j["backward_ratio_to_predicted"] = r.backward_ms / r.predicted_backward_ms;
  }
  if (r.peer_ran) {
    j["peer_forward_ms"] = r.peer_forward_ms;
    j["peer_backward_ms"] = r.peer_backward_ms;
    j["speedup_vs_peer"] =
        (r.peer_forward_ms + r.peer_backward_ms) / (r.forward_ms + r.backward_ms);
  }
  return j;
}

void PrintCase(const bench::BackwardCase& r, double sgemm) {
  std::printf(
      "%-7s %-22s %6lld h %2lld/%-2lld  fwd %8.1f ms %6.1f GF/s | bwd %8.1f ms %6.1f GF/s "
      "= %3.0f%% sgemm | f+b %6.1f GF/s = %3.0f%%",
      r.family.c_str(), r.name.c_str(), static_cast<long long>(r.seqlen),
      static_cast<long long>(r.num_heads_q), static_cast<long long>(r.num_heads_kv), r.forward_ms,
      r.forward_gflops, r.backward_ms, r.backward_gflops, 100 * r.backward_gflops / sgemm,
      r.total_gflops, 100 * r.total_gflops / sgemm);
  if (r.peer_ran) {
    std::printf(" | torch f+b %8.1f ms (%.1fx)", r.peer_forward_ms + r.peer_backward_ms,
                (r.peer_forward_ms + r.peer_backward_ms) / (r.forward_ms + r.backward_ms));
  }
  std::printf("\n");
  if (r.predicted_backward_ms > 0) {
    std::printf(
        "%-30s backward predicted from %s by its pairs: %.1f ms, measured/predicted = %.2f\n", "",
        r.predicted_from.c_str(), r.predicted_backward_ms, r.backward_ms / r.predicted_backward_ms);
  }
  if (!r.peer_note.empty()) std::printf("%-30s peer: %s\n", "", r.peer_note.c_str());
  std::fflush(stdout);
}

int RunBenchBackward(const std::vector<std::string>& args) {
  ArgParser p("attnkit bench backward [options]",
              "Times forward + backward of each engine family (head_dim 128) against OpenBLAS "
              "sgemm measured in this process, and PyTorch autograd of naive attention (matmul, "
              "mask, softmax, matmul) as the peer. FLOPs: the forward's 4·pairs·head_dim·heads; "
              "a backward is counted as 2.5x its forward (FlashAttention's convention). Then the "
              "dense backward's peak memory at 16k/32k/64k tokens.");
  p.AddOption("family", "", "only this family (default: all registered)");
  p.AddOption("threads", "0", "threads (0 = all cores)");
  p.AddOption("repeats", "3", "timed repeats per case (the median is reported)");
  p.AddFlag("no-peer", "skip the PyTorch peer");
  p.AddOption("python", "/usr/bin/python3", "interpreter with torch for the peer");
  p.AddFlag("no-peak-memory", "skip the peak-memory measurements");
  p.AddFlag("peak-memory", "only the peak-memory measurements");
  p.AddFlag("quick", "small shapes (a smoke run)");
  p.AddFlag("json", "one JSON object per case on stdout");
  p.AddFlag("quiet", "no progress on stderr");
  if (!p.Parse(args)) return 0;
  const bool json = p.Flag("json");
  if (p.Flag("quiet")) SetProgressQuiet(true);
  bench::BackwardBenchConfig cfg;
  cfg.threads = ResolveThreads(p.GetThreads());
  cfg.repeats = static_cast<int>(p.GetInt("repeats"));
  Require(cfg.repeats >= 1, "--repeats must be >= 1, got ", cfg.repeats);
  cfg.peer = !p.Flag("no-peer");
  cfg.python = p.Get("python");
  cfg.quick = p.Flag("quick");
  std::vector<const BackwardFamily*> run;
  for (const auto& [name, f] : Families()) {
    if (!p.Given("family") || p.Get("family") == name) run.push_back(&f);
  }
  Require(!run.empty(), "--family: no backward family named '", p.Get("family"), "'");
  const std::string load_before = LoadAverage();

  double sgemm = 0;
  if (!p.Flag("peak-memory")) {
    Progress bar("bench backward", static_cast<int64_t>(run.size()) + 1);
    bar.SetNote("sgemm ceiling");
    sgemm = bench::MeasureSgemmGflops(cfg.threads);
    bar.Advance();
    if (json) {
      std::cout << nlohmann::json{{"case", "ceilings"},    {"threads", cfg.threads},
                                  {"sgemm_gflops", sgemm}, {"simd_target", SimdTargetName()},
                                  {"cpu", CpuModelName()}, {"load_average_before", load_before}}
                       .dump()
                << std::endl;
    } else {
      std::printf("attnkit bench backward: %s, %d threads, SIMD %s, load average %s\n",
                  CpuModelName().c_str(), cfg.threads, SimdTargetName().c_str(),
                  load_before.c_str());
      std::printf(
          "ceiling: OpenBLAS sgemm %.1f GFLOP/s (this process). FLOPs: forward = "
          "4·pairs·head_dim·heads; backward counted as 2.5x forward (FlashAttention's "
          "convention); f+b = (fwd + bwd FLOPs) / (fwd + bwd time)\n",
          sgemm);
      std::fflush(stdout);
    }
    for (const BackwardFamily* f : run) {
      bar.SetNote(f->name);
      for (const auto& r : f->cases(cfg)) {
        if (json) {
          std::cout << CaseJson(r, sgemm, cfg.threads).dump() << std::endl;
        } else {
          PrintCase(r, sgemm);
        }
      }
      bar.Advance();
    }
    bar.Finish();
  }
  if (!p.Flag("no-peak-memory") && (!p.Given("family") || p.Get("family") == "dense")) {
    const std::vector<int64_t> lens = cfg.quick ? std::vector<int64_t>{2048, 4096, 8192}
                                                : std::vector<int64_t>{16384, 32768, 65536};
    if (!json) std::printf("peak memory of the dense causal backward (1 head, d 128, f32):\n");
    for (const int64_t n : lens) {
      const auto m = bench::MeasureDenseBackwardPeakMemory(n, cfg.threads);
      if (json) {
        std::cout << nlohmann::json{{"case", "backward_peak_memory"},
                                    {"seqlen", n},
                                    {"measured", m.measured},
                                    {"tensors_mib", m.tensor_bytes / 1048576.0},
                                    {"rss_before_mib", m.rss_before_bytes / 1048576.0},
                                    {"peak_mib", m.peak_bytes / 1048576.0},
                                    {"extra_mib", m.extra_bytes / 1048576.0},
                                    {"seconds", m.seconds}}
                         .dump()
                  << std::endl;
      } else {
        std::printf(
            "  %6lld tokens: tensors %7.1f MiB, RSS before %7.1f MiB, peak %7.1f MiB, the "
            "call adds %+.1f MiB (%.1f s)\n",
            static_cast<long long>(n), m.tensor_bytes / 1048576.0, m.rss_before_bytes / 1048576.0,
            m.peak_bytes / 1048576.0, m.extra_bytes / 1048576.0, m.seconds);
        std::fflush(stdout);
      }
    }
  }
  if (!json) std::printf("load average after: %s\n", LoadAverage().c_str());
  return 0;
}

const BenchRegistrar kBackward({"backward", "forward + backward vs sgemm and PyTorch autograd",
                                RunBenchBackward});

}  // namespace
}  // namespace attnkit::cli
