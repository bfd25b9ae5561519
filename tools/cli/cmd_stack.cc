// `attnkit stack`: runs a stack of attention layers (residual stream + RMSNorm, no MLP) over a
// random prompt, then decodes token by token; reports prefill tokens/s, decode ms/token and
// cache bytes per layer. Hybrid stacks are lists such as "3*swa,gqa" or "3*gdn,gated".
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "attnkit/bench/blocks.h"
#include "attnkit/core/checked.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/factory.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

int RunStackCmd(const std::vector<std::string>& args) {
  std::string kinds_help = "comma list of layer kinds, N*kind repeats; kinds:";
  for (const auto& k : LayerKinds()) kinds_help += " " + k;
  ArgParser p("attnkit stack [options]",
              "Prefill a random prompt through a stack of attention layers, then decode token by "
              "token; report tokens/s and cache bytes. Weights are seeded random.");
  p.AddOption("layers", "3*swa,gqa", kinds_help);
  p.AddOption("hidden", "1024", "hidden size");
  p.AddOption("heads", "16", "query heads");
  p.AddOption("kv-heads", "4", "KV heads (gqa, swa, sinks, gated, qknorm)");
  p.AddOption("head-dim", "64", "head dim (mla: qk_nope = v head dim)");
  p.AddOption("window", "128", "sliding window of swa / sinks layers");
  p.AddOption("kv-lora", "256", "mla kv_lora_rank");
  p.AddOption("q-lora", "384", "mla q_lora_rank (0 = direct)");
  p.AddOption("rope-dim", "32", "mla qk_rope_head_dim");
  p.AddOption("prompt", "512", "prompt tokens");
  p.AddOption("decode", "32", "decoded tokens");
  p.AddOption("soak", "0",
              "instead of --decode: decode this many tokens (e.g. 1m) and report ms/token, "
              "resident memory and finiteness every --soak-every tokens");
  p.AddOption("soak-every", "0", "tokens per soak report (0 = soak / 20)");
  p.AddOption("threads", "0", "threads (0 = all)");
  p.AddOption("seed", "1", "seed of weights and inputs");
  p.AddFlag("json", "print one JSON object");
  if (!p.Parse(args)) return 0;
  LayerShape s;
  s.hidden = p.GetInt("hidden");
  s.num_heads = p.GetInt("heads");
  s.num_heads_kv = p.GetInt("kv-heads");
  s.head_dim = p.GetInt("head-dim");
  s.window = p.GetInt("window");
  s.kv_lora_rank = p.GetInt("kv-lora");
  s.q_lora_rank = p.GetInt("q-lora");
  s.rope_head_dim = p.GetInt("rope-dim");
  const int64_t prompt = p.GetInt("prompt"), soak = p.GetInt("soak");
  const int64_t decode = soak > 0 ? 0 : p.GetInt("decode");
  Require(prompt >= 1 && decode >= 0, "--prompt must be >= 1 and --decode >= 0");
  Require(soak >= 0, "--soak must be >= 0, got ", soak);
  Require(
      prompt <= (int64_t{1} << 40) && decode <= (int64_t{1} << 40) && soak <= (int64_t{1} << 40),
      "--prompt, --decode and --soak must be <= 1099511627776");
  const int64_t soak_every =
      p.GetInt("soak-every") > 0 ? p.GetInt("soak-every") : std::max<int64_t>(1, soak / 20);
  Require(p.GetInt("soak-every") >= 0, "--soak-every must be >= 0, got ", p.Get("soak-every"));
  s.max_tokens = prompt + decode + soak;
  const uint64_t seed = p.GetSeed();
  const int threads = p.GetThreads();
  if (threads > 0) SetNumThreads(threads);
  for (const char* flag : {"hidden", "heads", "kv-heads", "head-dim", "kv-lora", "rope-dim"}) {
    Require(p.GetInt(flag) >= 1, "--", flag, " must be >= 1, got ", p.Get(flag));
  }
  Require(s.q_lora_rank >= 0, "--q-lora must be >= 0, got ", s.q_lora_rank);
  Require(s.window >= 0, "--window must be >= 0, got ", s.window);
  std::vector<std::string> kinds;
  try {
    kinds = ParseLayerList(p.Get("layers"));
  } catch (const Error& e) {
    throw Error(std::string("--layers: ") + e.what());
  }
  // Refuse up front with an estimate (every layer: its projections, a cache of max_tokens at
  // full width, the activations of the prompt), as the guide does, instead of failing midway.
  {
    const double h = static_cast<double>(s.hidden), d = static_cast<double>(s.head_dim);
    const double heads = static_cast<double>(s.num_heads), kv = static_cast<double>(s.num_heads_kv);
    const double per_layer =
        4.0 * (2 * h * (heads + kv) * d + h * h + 2 * kv * d * static_cast<double>(s.max_tokens) +
               static_cast<double>(prompt) * (h + 2 * (heads + kv) * d));
    RequireFitsInMemory(per_layer * static_cast<double>(kinds.size()),
                        "stack of " + std::to_string(kinds.size()) + " layers");
  }
  Stack stack(s.hidden);
  for (size_t i = 0; i < kinds.size(); ++i) stack.Add(MakeLayer(kinds[i], s, seed + 17 * i));
  if (p.Flag("json")) SetProgressQuiet(true);
  Progress bar("stack", 0);
  const auto r = bench::RunStack(stack, prompt, decode, seed, [&bar](const std::string& line) {
    bar.SetNote(line);
    bar.Advance();
  });
  bar.Finish();
  if (soak > 0) {
    Progress sbar("stack --soak", soak);
    std::vector<bench::SoakPoint> pts;
    if (!p.Flag("json")) {
      std::printf(
          "%zu layers, %d threads: prompt %lld tokens, then %lld decoded tokens\n%-12s %-12s %-12s "
          "%-14s %s\n",
          stack.num_layers(), GetNumThreads(), static_cast<long long>(prompt),
          static_cast<long long>(soak), "tokens", "ms/token", "RSS MiB", "cache MiB", "finite");
    }
    pts = bench::SoakStack(stack, soak, soak_every, seed + 1, [&](const bench::SoakPoint& pt) {
      sbar.Set(pt.tokens);
      if (p.Flag("json")) {
        std::cout << nlohmann::json({{"tokens", pt.tokens},
                                     {"ms_median", pt.ms_median},
                                     {"rss_bytes", pt.rss_bytes},
                                     {"cache_bytes", pt.cache_bytes},
                                     {"all_finite", pt.all_finite}})
                         .dump()
                  << std::endl;
        return;
      }
      std::printf("%-12lld %-12.4f %-12.1f %-14.2f %s\n", static_cast<long long>(pt.tokens),
                  pt.ms_median, static_cast<double>(pt.rss_bytes) / 1048576.0,
                  static_cast<double>(pt.cache_bytes) / 1048576.0, pt.all_finite ? "yes" : "NO");
      std::fflush(stdout);
    });
    sbar.Finish();
    const bench::SoakPoint &a = pts.front(), &b = pts.back();
    if (!p.Flag("json")) {
      std::printf(
          "first -> last report: ms/token %.4f -> %.4f (x%.2f), RSS %.1f -> %.1f MiB "
          "(%+.1f MiB), outputs %s\n",
          a.ms_median, b.ms_median, b.ms_median / a.ms_median,
          static_cast<double>(a.rss_bytes) / 1048576.0,
          static_cast<double>(b.rss_bytes) / 1048576.0,
          static_cast<double>(b.rss_bytes - a.rss_bytes) / 1048576.0,
          b.all_finite ? "all finite" : "NOT all finite");
    }
    return b.all_finite ? 0 : 1;
  }
  nlohmann::json j = {{"layers", p.Get("layers")},
                      {"describe", stack.Describe()},
                      {"threads", GetNumThreads()},
                      {"prompt", prompt},
                      {"decode", decode},
                      {"prefill_seconds", r.prefill_seconds},
                      {"prefill_tokens_per_s", r.prefill_tokens_per_s},
                      {"decode_ms_median", r.decode_ms_median},
                      {"decode_tokens_per_s", r.decode_tokens_per_s},
                      {"cache_bytes", r.cache_bytes},
                      {"weight_bytes", r.weight_bytes}};
  nlohmann::json per_layer = nlohmann::json::array();
  for (size_t i = 0; i < stack.num_layers(); ++i) {
    per_layer.push_back(
        {{"layer", stack.layer(i).Describe()}, {"cache_bytes", stack.layer(i).CacheBytes()}});
  }
  j["per_layer"] = per_layer;
  if (p.Flag("json")) {
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf(
      "%zu layers, %d threads: prefill %lld tokens %.2f s (%.1f tokens/s); decode %lld "
      "tokens: %.2f ms/token median (%.1f tokens/s)\n",
      stack.num_layers(), GetNumThreads(), static_cast<long long>(prompt), r.prefill_seconds,
      r.prefill_tokens_per_s, static_cast<long long>(decode), r.decode_ms_median,
      r.decode_tokens_per_s);
  std::printf("cache %.2f MiB in all (weights %.1f MiB):\n", r.cache_bytes / 1048576.0,
              r.weight_bytes / 1048576.0);
  for (size_t i = 0; i < stack.num_layers(); ++i) {
    std::printf("  %2zu  %10.2f MiB  %s\n", i, stack.layer(i).CacheBytes() / 1048576.0,
                stack.layer(i).Describe().c_str());
  }
  return 0;
}

const CommandRegistrar kRegistrar({"stack",
                                   "run a (hybrid) stack of attention layers: prefill, "
                                   "decode, tokens/s, cache bytes",
                                   RunStackCmd});

}  // namespace
}  // namespace attnkit::cli
