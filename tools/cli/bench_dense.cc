// `attnkit bench dense`: the dense engine against sgemm, read bandwidth and a naive BLAS baseline.
//
// Without shape flags it runs the target cases (causal 4096 with 8/8 and 32/8 heads,
// window 1024 at 16384 against the causal-predicted time, decode 32/8 over 32768 cached tokens,
// bf16 K/V, and peak memory at seqlen 16k/32k/64k); with any shape flag it runs that one case.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>

#include "attnkit/bench/dense.h"
#include "attnkit/core/error.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "bench.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

struct Ceil {
  double sgemm_gflops, read_gbps;
  int threads;
};

nlohmann::json CaseJson(const std::string& name, const bench::DenseBenchResult& r, const Ceil& c) {
  const auto& k = r.config;
  nlohmann::json j = {{"case", name},
                      {"mask", k.mask},
                      {"mask_description", r.mask_description},
                      {"decode", k.decode},
                      {"kv_dtype", k.bf16_kv ? "bf16" : "f32"},
                      {"batch", k.batch},
                      {"seqlen_q", k.seqlen_q},
                      {"seqlen_kv", k.seqlen_kv},
                      {"num_heads_q", k.num_heads_q},
                      {"num_heads_kv", k.num_heads_kv},
                      {"head_dim", k.head_dim},
                      {"threads", c.threads},
                      {"repeats", k.repeats},
                      {"density", r.density},
                      {"median_ms", r.median_ms},
                      {"min_ms", r.min_ms},
                      {"sgemm_gflops", c.sgemm_gflops},
                      {"read_gbps", c.read_gbps},
                      {"simd_target", r.simd_target}};
  if (k.decode) {
    j["gbps"] = r.gbps;
    j["kv_bytes"] = r.kv_bytes;
    j["ratio_read_bw"] = r.gbps / c.read_gbps;
    j["baseline_gbps"] = r.baseline_ran ? nlohmann::json(r.baseline_gbps) : nlohmann::json();
  } else {
    j["gflops"] = r.gflops;
    j["flops"] = r.flops;
    j["ratio_sgemm"] = r.gflops / c.sgemm_gflops;
    j["tiles_total"] = r.stats.tiles_total;
    j["tiles_skipped"] = r.stats.tiles_skipped;
    j["tiles_full"] = r.stats.tiles_full;
    j["tiles_partial"] = r.stats.tiles_partial;
  }
  j["baseline_ms"] = r.baseline_ran ? nlohmann::json(r.baseline_ms) : nlohmann::json();
  j["baseline_gflops"] = r.baseline_ran ? nlohmann::json(r.baseline_gflops) : nlohmann::json();
  j["speedup_vs_baseline"] =
      r.baseline_ran ? nlohmann::json(r.baseline_ms / r.median_ms) : nlohmann::json();
  return j;
}

void PrintText(const std::string& name, const bench::DenseBenchResult& r, const Ceil& c) {
  const auto& k = r.config;
  std::printf("%-22s %-8s %6lld/%-6lld h %2lld/%-2lld d %3lld %-4s %9.2f ms", name.c_str(),
              k.mask.c_str(), static_cast<long long>(k.seqlen_q),
              static_cast<long long>(k.seqlen_kv), static_cast<long long>(k.num_heads_q),
              static_cast<long long>(k.num_heads_kv), static_cast<long long>(k.head_dim),
              k.bf16_kv ? "bf16" : "f32", r.median_ms);
  if (k.decode) {
    std::printf("  %7.1f GB/s = %4.0f%% of read bw", r.gbps, 100 * r.gbps / c.read_gbps);
    if (r.baseline_ran) {
      std::printf("  (baseline %6.1f GB/s, %.2fx)", r.baseline_gbps, r.baseline_ms / r.median_ms);
    }
  } else {
    std::printf("  %7.1f GFLOP/s = %4.0f%% of sgemm", r.gflops, 100 * r.gflops / c.sgemm_gflops);
    if (r.baseline_ran) {
      std::printf("  (baseline %6.1f GFLOP/s, %.2fx)", r.baseline_gflops,
                  r.baseline_ms / r.median_ms);
    }
  }
  std::printf("\n");
  std::fflush(stdout);
}

int RunBenchDense(const std::vector<std::string>& args) {
  ArgParser p("attnkit bench dense [options]",
              "Times the dense attention kernel against OpenBLAS sgemm, the memory read bandwidth "
              "and a naive BLAS baseline (sgemm Q·Kᵀ, softmax, sgemm P·V per head), in one "
              "process. Without shape flags: the issue's target cases. FLOPs = 4·seqlen_q·"
              "seqlen_kv·head_dim·num_heads_q × the unmasked fraction.");
  p.AddOption("seqlen", "4096", "query (and key) tokens; with --decode: cached tokens");
  p.AddOption("seqlen-kv", "", "key tokens if different from --seqlen (prefill)");
  p.AddOption("heads", "8", "query heads");
  p.AddOption("kv-heads", "", "key/value heads (default: = --heads)");
  p.AddOption("head-dim", "128", "head dimension (qk and v)");
  p.AddOption("batch", "1", "batch size");
  p.AddOption("mask", "causal", "none | causal | window:W | chunk:C");
  p.AddFlag("decode", "one new query token over a KV cache of --seqlen tokens (reports GB/s)");
  p.AddOption("new-tokens", "1", "query tokens per decode step (with --decode)");
  p.AddFlag("bf16", "store K/V in bf16");
  p.AddFlag("no-baseline", "skip the naive BLAS baseline");
  p.AddFlag("peak-memory", "measure peak RSS of causal prefill at --seqlen (default 16k,32k,64k)");
  p.AddOption("threads", "0", "threads (0 = all cores)");
  p.AddOption("repeats", "5", "timed repeats per case (the median is reported)");
  p.AddFlag("json", "one JSON object per case on stdout");
  p.AddFlag("quiet", "no progress on stderr");
  if (!p.Parse(args)) return 0;
  const bool json = p.Flag("json");
  if (p.Flag("quiet")) SetProgressQuiet(true);
  const int threads = ResolveThreads(p.GetThreads());
  const int64_t repeats64 = p.GetInt("repeats");
  Require(repeats64 >= 1 && repeats64 <= 1000000, "--repeats must be in [1, 1000000], got ",
          repeats64);
  const int repeats = static_cast<int>(repeats64);
  // Every size flag is checked here, naming the flag, before anything is measured.
  for (const char* flag :
       {"seqlen", "seqlen-kv", "heads", "kv-heads", "head-dim", "batch", "new-tokens"}) {
    if (p.Get(flag).empty()) continue;
    const int64_t v = p.GetInt(flag);
    Require(v >= 1, "--", flag, " must be >= 1, got ", p.Get(flag));
  }
  try {
    (void)bench::ParseMaskSpec(p.Get("mask"));
  } catch (const Error& e) {
    throw Error(std::string("--mask: ") + e.what());
  }

  auto emit = [&](const nlohmann::json& j) {
    if (json) std::cout << j.dump() << std::endl;
  };

  const bool custom = p.Given("seqlen") || p.Given("seqlen-kv") || p.Given("heads") ||
                      p.Given("kv-heads") || p.Given("head-dim") || p.Given("mask") ||
                      p.Given("decode") || p.Given("bf16") || p.Given("batch");

  // Peak memory only.
  if (p.Flag("peak-memory")) {
    std::vector<int64_t> lens = {16384, 32768, 65536};
    if (p.Given("seqlen")) lens = {p.GetInt("seqlen")};
    const int64_t heads = p.Given("heads") ? p.GetInt("heads") : 1;
    for (const int64_t n : lens) {
      bench::DenseBenchConfig c;
      c.seqlen_q = c.seqlen_kv = n;
      c.num_heads_q = c.num_heads_kv = heads;
      c.head_dim = p.GetInt("head-dim");
      c.baseline = false;
      try {
        bench::CheckDenseBenchConfig(c);
      } catch (const Error& e) {
        throw Error(std::string("--seqlen ") + std::to_string(n) + ": " + e.what());
      }
    }
    Progress bar("bench dense peak-memory", static_cast<int64_t>(lens.size()));
    for (int64_t n : lens) {
      bar.SetNote("seqlen " + std::to_string(n));
      const auto m = bench::MeasurePeakMemory(n, heads, p.GetInt("head-dim"), threads);
      bar.Advance();
      emit({{"case", "peak_memory"},
            {"mask", "causal"},
            {"seqlen_q", n},
            {"seqlen_kv", n},
            {"num_heads_q", heads},
            {"num_heads_kv", heads},
            {"head_dim", m.head_dim},
            {"threads", threads},
            {"measured", m.measured},
            {"tensors_mib", m.input_output_bytes / 1048576.0},
            {"peak_mib", m.peak_bytes / 1048576.0},
            {"rss_before_mib", m.rss_before_bytes / 1048576.0},
            {"extra_mib", m.extra_bytes / 1048576.0},
            {"seconds", m.seconds}});
      if (!json) {
        std::printf(
            "peak memory  causal %6lld tokens h %lld d %lld: tensors %8.1f MiB, peak RSS "
            "%8.1f MiB (before %.1f), beyond the tensors %+.1f MiB  (%.1f s)\n",
            static_cast<long long>(n), static_cast<long long>(heads),
            static_cast<long long>(m.head_dim), m.input_output_bytes / 1048576.0,
            m.peak_bytes / 1048576.0, m.rss_before_bytes / 1048576.0, m.extra_bytes / 1048576.0,
            m.seconds);
        std::fflush(stdout);
      }
    }
    return 0;
  }

  std::vector<std::pair<std::string, bench::DenseBenchConfig>> cases;
  auto base = [&] {
    bench::DenseBenchConfig c;
    c.threads = threads;
    c.repeats = repeats;
    c.baseline = !p.Flag("no-baseline");
    return c;
  };
  if (custom) {
    bench::DenseBenchConfig c = base();
    c.seqlen_kv = p.GetInt("seqlen");
    c.decode = p.Flag("decode");
    c.seqlen_q = c.decode ? p.GetInt("new-tokens") : c.seqlen_kv;
    if (!c.decode && p.Given("seqlen-kv")) c.seqlen_kv = p.GetInt("seqlen-kv");
    c.num_heads_q = p.GetInt("heads");
    c.num_heads_kv = p.Given("kv-heads") ? p.GetInt("kv-heads") : c.num_heads_q;
    c.head_dim = p.GetInt("head-dim");
    c.batch = p.GetInt("batch");
    c.mask = p.Get("mask");
    c.bf16_kv = p.Flag("bf16");
    if (c.decode && !p.Given("repeats")) c.repeats = 20;
    cases.push_back({c.decode ? "decode" : "prefill", c});
  } else {
    auto c = base();
    cases.push_back({"causal_4096_mha", c});
    c.num_heads_q = 32;
    cases.push_back({"causal_4096_gqa", c});
    c = base();
    c.mask = "window:1024";
    c.seqlen_q = c.seqlen_kv = 16384;
    c.baseline = false;  // the baseline's S would be 1 GiB per head
    cases.push_back({"window1024_16384", c});
    c = base();
    c.bf16_kv = true;
    cases.push_back({"causal_4096_bf16", c});
    c = base();
    c.decode = true;
    c.seqlen_q = 1;
    c.seqlen_kv = 32768;
    c.num_heads_q = 32;
    c.num_heads_kv = 8;
    c.repeats = std::max(repeats, 20);
    cases.push_back({"decode_32768_gqa", c});
    c.bf16_kv = true;
    c.baseline = false;
    cases.push_back({"decode_32768_gqa_bf16", c});
  }

  for (const auto& [name, cfg] : cases) {
    try {
      bench::CheckDenseBenchConfig(cfg);
    } catch (const Error& e) {
      throw Error(custom
                      ? std::string("the case of --seqlen/--heads/--head-dim/--batch: ") + e.what()
                      : name + ": " + e.what());
    }
  }
  Progress bar("bench dense", static_cast<int64_t>(cases.size()) + 2);
  bar.SetNote("sgemm ceiling");
  Ceil ceil{0, 0, threads};
  ceil.sgemm_gflops = bench::MeasureSgemmGflops(threads);
  bar.Advance();
  bar.SetNote("read bandwidth");
  ceil.read_gbps = bench::MeasureReadGbps(threads);
  bar.Advance();
  emit({{"case", "ceilings"},
        {"threads", threads},
        {"sgemm_gflops", ceil.sgemm_gflops},
        {"read_gbps", ceil.read_gbps},
        {"simd_target", SimdTargetName()},
        {"cpu", CpuModelName()}});
  if (!json) {
    std::printf("attnkit bench dense: %s, %d threads, SIMD %s\n", CpuModelName().c_str(), threads,
                SimdTargetName().c_str());
    std::printf("ceilings: OpenBLAS sgemm %.1f GFLOP/s, memory read %.1f GB/s\n", ceil.sgemm_gflops,
                ceil.read_gbps);
    std::fflush(stdout);
  }
  std::optional<bench::DenseBenchResult> causal_mha;
  for (const auto& [name, cfg] : cases) {
    bar.SetNote(name);
    const auto r = bench::BenchDense(cfg);
    bar.Advance();
    nlohmann::json j = CaseJson(name, r, ceil);
    if (name == "causal_4096_mha") causal_mha = r;
    if (name == "window1024_16384" && causal_mha) {
      // Predicted from the causal run: same per-pair cost, the window's unmasked pairs.
      const double pairs_w = r.density * static_cast<double>(cfg.seqlen_q) * cfg.seqlen_kv;
      const double pairs_c = causal_mha->density *
                             static_cast<double>(causal_mha->config.seqlen_q) *
                             causal_mha->config.seqlen_kv;
      const double predicted_ms = causal_mha->median_ms * pairs_w / pairs_c;
      j["predicted_ms_from_causal"] = predicted_ms;
      j["ratio_to_predicted"] = r.median_ms / predicted_ms;
      if (!json) PrintText(name, r, ceil);
      if (!json) {
        std::printf(
            "%-22s predicted from causal_4096_mha: %.2f ms, measured/predicted = %.2f "
            "(skipped %lld of %lld tiles)\n",
            "", predicted_ms, r.median_ms / predicted_ms,
            static_cast<long long>(r.stats.tiles_skipped),
            static_cast<long long>(r.stats.tiles_total));
      }
    } else if (!json) {
      PrintText(name, r, ceil);
    }
    emit(j);
  }
  bar.Finish();
  if (!custom) {
    if (!json) std::printf("peak memory (causal prefill, 1 head, d 128; linear in seqlen):\n");
    std::vector<std::string> sub = {"--peak-memory", "--threads", std::to_string(threads)};
    if (json) sub.push_back("--json");
    return RunBenchDense(sub);
  }
  return 0;
}

const BenchRegistrar kDense({"dense", "exact attention (flash-style) vs sgemm and BLAS baseline",
                             RunBenchDense});

}  // namespace
}  // namespace attnkit::cli
