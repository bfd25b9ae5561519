// `attnkit bench sparse`: static sparse patterns and DSA against dense causal attention.
//
// Default run, both cores:
//  1. DSA in DeepSeek V3.2's shape against dense absorbed MLA: decode of one token at 8k, 32k and
//     128k contexts (128 heads over the 512 + 64 latent, indexer 64 × 128, top-k 2048), and
//     prefill at 4k, 8k and 16k with the query and indexer heads divided by 16 (stated).
//  2. The static patterns window, strided, bigbird, fixed, longformer (seqlen-scaled defaults,
//     see `attnkit mask <pattern> --seqlen N`) against dense causal at 16384 and 65536, 1 head
//     of head_dim 128, with DSA at one head (1 index head of dim 32) as a labelled ablation.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "attnkit/bench/sparse.h"
#include "attnkit/core/error.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/gather.h"
#include "bench.h"
#include "command.h"
#include "list_args.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

// The column header of a DSA-vs-dense table, and one row as text or as a JSON object with the
// case name and `extra` fields (e.g. the prefill's head counts).
void PrintDsaHeader() {
  std::printf("%-9s %-29s %-11s %-11s %-29s %-8s %s\n", "context", "dense absorbed ms",
              "indexer ms", "attend ms", "DSA ms", "speed-up", "work ratio");
}

void PrintDsaRow(const bench::DsaVsDenseRow& r, bool as_json, const char* case_name,
                 nlohmann::json extra = nlohmann::json::object()) {
  if (as_json) {
    nlohmann::json j = {{"case", case_name},
                        {"context", r.context},
                        {"dense_ms", r.dense_ms},
                        {"dense_min_ms", r.dense_min_ms},
                        {"dense_max_ms", r.dense_max_ms},
                        {"indexer_ms", r.indexer_ms},
                        {"attention_ms", r.attention_ms},
                        {"dsa_ms", r.dsa_ms},
                        {"dsa_min_ms", r.dsa_min_ms},
                        {"dsa_max_ms", r.dsa_max_ms},
                        {"speedup", r.speedup},
                        {"dense_flops", r.dense_flops},
                        {"dsa_flops", r.dsa_flops}};
    j.update(extra);
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  char dense[64], dsa[64];
  std::snprintf(dense, sizeof dense, "%.2f (%.2f-%.2f)", r.dense_ms, r.dense_min_ms,
                r.dense_max_ms);
  std::snprintf(dsa, sizeof dsa, "%.2f (%.2f-%.2f)", r.dsa_ms, r.dsa_min_ms, r.dsa_max_ms);
  std::printf("%-9lld %-29s %-11.2f %-11.2f %-29s %-8.2f %.1f\n", static_cast<long long>(r.context),
              dense, r.indexer_ms, r.attention_ms, dsa, r.speedup, r.dense_flops / r.dsa_flops);
}

int RunBenchSparse(const std::vector<std::string>& args) {
  ArgParser p("attnkit bench sparse [options]",
              "Times each static sparse pattern (through the dense kernel, which skips empty "
              "tiles) and DSA (indexer + top-k, then gathered attention) against dense causal "
              "attention at the same seqlen, in one process. efficiency = (causal time × density "
              "/ causal density) / pattern time: 1 means the skipped pairs cost nothing.");
  p.AddOption("seqlen", "16384,65536", "comma-separated sequence lengths");
  p.AddOption("heads", "1", "query heads = kv heads (MHA)");
  p.AddOption("head-dim", "128", "head dimension");
  p.AddOption("patterns", "window,strided,bigbird,fixed,longformer",
              "comma-separated static patterns (attnkit mask --help)");
  p.AddFlag("no-dsa", "skip DSA");
  p.AddOption("top-k", "2048", "DSA: keys per query");
  p.AddOption("index-heads", "1", "DSA: indexer heads");
  p.AddOption("index-dim", "32", "DSA: indexer head dimension");
  p.AddOption("threads", "0", "threads (0 = all cores)");
  p.AddOption("repeats", "3", "timed runs for seqlen <= 16384 (median; after a warm-up)");
  p.AddOption("long-repeats", "3", "timed runs for longer sequences (median; no warm-up)");
  p.AddOption("seed", "1", "data seed");
  p.AddOption("mla-decode", "8192,32768,131072",
              "contexts for decode of one token in DeepSeek V3.2's shape (DSA over the absorbed "
              "MLA latent 512+64, 128 heads, indexer 64 x 128, top-k 2048) against dense "
              "absorbed MLA; 'none' skips");
  p.AddOption("mla-heads", "128", "--mla-decode: query heads sharing the latent");
  p.AddOption("mla-prefill", "4096,8192,16384",
              "contexts for prefill in the same shape with the query and indexer heads divided "
              "by --mla-head-divisor; 'none' skips");
  p.AddOption("mla-head-divisor", "16",
              "--mla-prefill: divides the 128 query and 64 indexer heads (keeps the work ratio)");
  p.AddFlag("no-patterns", "skip the static patterns and the one-head DSA ablation");
  p.AddFlag("json", "one JSON object per case on stdout");
  p.AddFlag("quiet", "no progress on stderr");
  if (!p.Parse(args)) return 0;
  if (p.Flag("quiet")) SetProgressQuiet(true);
  const bool as_json = p.Flag("json");
  // Every option is read and checked before anything runs (a bad one is refused at once).
  bench::SparseBenchConfig c;
  c.seqlens = ParseSizeList(p.Get("seqlen"), "--seqlen");
  Require(!c.seqlens.empty(), "--seqlen: no sequence length given");
  for (const int64_t n : c.seqlens) Require(n >= 1, "--seqlen must be >= 1, got ", n);
  c.num_heads = p.GetInt("heads");
  Require(c.num_heads >= 1, "--heads must be >= 1, got ", c.num_heads);
  c.head_dim = p.GetInt("head-dim");
  Require(c.head_dim >= 1, "--head-dim must be >= 1, got ", c.head_dim);
  c.patterns = SplitList(p.Get("patterns"), "--patterns");
  c.dsa = !p.Flag("no-dsa");
  c.top_k = p.GetInt("top-k");
  Require(c.top_k >= 1, "--top-k must be >= 1, got ", c.top_k);
  c.index_heads = p.GetInt("index-heads");
  Require(c.index_heads >= 1, "--index-heads must be >= 1, got ", c.index_heads);
  c.index_dim = p.GetInt("index-dim");
  Require(c.index_dim >= 1, "--index-dim must be >= 1, got ", c.index_dim);
  c.threads = ResolveThreads(p.GetThreads());
  c.repeats = static_cast<int>(p.GetInt("repeats"));
  c.long_repeats = static_cast<int>(p.GetInt("long-repeats"));
  Require(c.repeats >= 1, "--repeats must be >= 1, got ", c.repeats);
  Require(c.long_repeats >= 1, "--long-repeats must be >= 1, got ", c.long_repeats);
  c.seed = p.GetSeed();
  const bool run_decode = p.Get("mla-decode") != "none";
  bench::MlaDsaDecodeConfig dec;
  if (run_decode) {
    dec.contexts = ParseSizeList(p.Get("mla-decode"), "--mla-decode");
    Require(!dec.contexts.empty(), "--mla-decode: no context given");
    for (const int64_t n : dec.contexts) Require(n >= 1, "--mla-decode must be >= 1, got ", n);
  }
  dec.num_heads = p.GetInt("mla-heads");
  Require(dec.num_heads >= 1, "--mla-heads must be >= 1, got ", dec.num_heads);
  dec.threads = c.threads;
  dec.repeats = c.repeats;
  dec.seed = c.seed;
  const bool run_prefill = p.Get("mla-prefill") != "none";
  bench::MlaDsaPrefillConfig pre;
  if (run_prefill) {
    pre.contexts = ParseSizeList(p.Get("mla-prefill"), "--mla-prefill");
    Require(!pre.contexts.empty(), "--mla-prefill: no context given");
    for (const int64_t n : pre.contexts) Require(n >= 1, "--mla-prefill must be >= 1, got ", n);
  }
  pre.head_divisor = p.GetInt("mla-head-divisor");
  Require(pre.head_divisor >= 1 && pre.head_divisor <= 64,
          "--mla-head-divisor must be in [1, 64], got ", pre.head_divisor);
  pre.threads = c.threads;
  pre.repeats = c.repeats;
  pre.seed = c.seed;
  if (run_decode) {
    bench::MlaDsaDecodeConfig& m = dec;
    Progress bar("bench sparse --mla-decode", static_cast<int64_t>(m.contexts.size()));
    m.on_case = [&](const std::string& what) { bar.SetNote(what); };
    const auto rows = bench::BenchMlaDsaDecode(m);
    bar.Finish();
    if (!as_json) {
      std::printf(
          "DSA decode in DeepSeek V3.2's shape (one layer): %d threads, indexer %s; %lld heads "
          "over latent "
          "%lld+%lld (bf16), indexer %lld x %lld, top-k %lld; one token, median of %d steps "
          "(min-max)\n",
          m.threads, IndexerUsesAvx512Bf16() ? "avx512bf16" : "f32simd",
          static_cast<long long>(m.num_heads), static_cast<long long>(m.kv_lora_rank),
          static_cast<long long>(m.rope_dim), static_cast<long long>(m.index_heads),
          static_cast<long long>(m.index_dim), static_cast<long long>(m.top_k), m.repeats);
      PrintDsaHeader();
    }
    for (const auto& r : rows) PrintDsaRow(r, as_json, "mla_decode");
    if (!as_json) std::printf("\n");
    std::fflush(stdout);
  }
  if (run_prefill) {
    bench::MlaDsaPrefillConfig& m = pre;
    Progress bar("bench sparse --mla-prefill", static_cast<int64_t>(m.contexts.size()));
    m.on_case = [&](const std::string& what) { bar.SetNote(what); };
    const auto rows = bench::BenchMlaDsaPrefill(m);
    bar.Finish();
    if (!as_json && !rows.empty()) {
      std::printf(
          "DSA prefill in DeepSeek V3.2's shape with the heads divided by %lld (one layer): %d "
          "threads; %lld heads over latent %lld+%lld (bf16), indexer %lld x %lld, top-k %lld, "
          "causal; median of %d runs (min-max)\n",
          static_cast<long long>(m.head_divisor), m.threads,
          static_cast<long long>(rows[0].num_heads), static_cast<long long>(m.kv_lora_rank),
          static_cast<long long>(m.rope_dim), static_cast<long long>(rows[0].index_heads),
          static_cast<long long>(m.index_dim), static_cast<long long>(m.top_k), m.repeats);
      PrintDsaHeader();
    }
    for (const auto& r : rows) {
      PrintDsaRow(r, as_json, "mla_prefill",
                  {{"num_heads", r.num_heads},
                   {"index_heads", r.index_heads},
                   {"head_divisor", m.head_divisor}});
    }
    if (!as_json) std::printf("\n");
    std::fflush(stdout);
  }
  if (p.Flag("no-patterns")) return 0;
  const bool json = as_json;
  const int64_t cases_per_len = 1 + (c.dsa ? 1 : 0);  // static patterns together, then DSA
  Progress bar("bench sparse", cases_per_len * static_cast<int64_t>(c.seqlens.size()));
  bool first = true;
  c.on_case = [&](const std::string& what) {
    if (!first) bar.Advance();
    first = false;
    bar.SetNote(what);
  };
  if (!json) {
    std::printf(
        "Static patterns vs dense causal, and DSA at one head (dsa-1head: an ablation, not "
        "DeepSeek's shape, see above): %s, %d threads, SIMD %s, indexer %s; heads %lld, head_dim "
        "%lld (measured on this machine, in one process)\n",
        CpuModelName().c_str(), c.threads, SimdTargetName().c_str(),
        IndexerUsesAvx512Bf16() ? "AVX-512 BF16" : "f32 SIMD", static_cast<long long>(c.num_heads),
        static_cast<long long>(c.head_dim));
    std::fflush(stdout);
  }
  const auto rows = bench::BenchSparse(c);
  bar.Advance();
  bar.Finish();
  if (!json) {
    std::printf("%-7s %-11s %8s %9s %10s %10s %6s  %s\n", "seqlen", "pattern", "density",
                "vs causal", "ms", "predicted", "eff", "tiles skipped/full/partial | DSA shares");
  }
  for (const auto& r : rows) {
    const double predicted = r.causal_ms * r.density / r.causal_density;
    if (json) {
      nlohmann::json j = {{"case", "sparse"},
                          {"seqlen", r.seqlen},
                          {"pattern", r.pattern},
                          {"description", r.description},
                          {"num_heads", c.num_heads},
                          {"head_dim", c.head_dim},
                          {"threads", c.threads},
                          {"density", r.density},
                          {"causal_density", r.causal_density},
                          {"median_ms", r.median_ms},
                          {"causal_ms", r.causal_ms},
                          {"predicted_ms", predicted},
                          {"efficiency", r.efficiency},
                          {"tiles_total", r.tiles.tiles_total},
                          {"tiles_skipped", r.tiles.tiles_skipped},
                          {"tiles_full", r.tiles.tiles_full},
                          {"tiles_partial", r.tiles.tiles_partial}};
      if (r.pattern == "dsa") {
        j["top_k"] = r.top_k;
        j["indexer_ms"] = r.indexer_ms;
        j["attention_ms"] = r.attention_ms;
        j["indexer_share"] = r.indexer_share;
        j["attention_share"] = r.attention_share;
      }
      std::cout << j.dump() << std::endl;
      continue;
    }
    std::printf("%-7lld %-11s %8.4f %9.3f %10.1f %10.1f %6.2f  ", static_cast<long long>(r.seqlen),
                r.pattern == "dsa" ? "dsa-1head" : r.pattern.c_str(), r.density,
                r.density / r.causal_density, r.median_ms, predicted, r.efficiency);
    if (r.pattern == "dsa") {
      std::printf("indexer+top-k %.1f ms = %.3f of causal, attention %.1f ms = %.3f of causal\n",
                  r.indexer_ms, r.indexer_share, r.attention_ms, r.attention_share);
    } else {
      std::printf("%lld/%lld/%lld  %s\n", static_cast<long long>(r.tiles.tiles_skipped),
                  static_cast<long long>(r.tiles.tiles_full),
                  static_cast<long long>(r.tiles.tiles_partial), r.description.c_str());
    }
  }
  return 0;
}

const BenchRegistrar kSparse({"sparse", "static sparse patterns and DSA vs dense causal",
                              RunBenchSparse});

}  // namespace
}  // namespace attnkit::cli
