// `attnkit kv`: KV-cache bytes, recurrent state bytes and attention FLOPs of one model at a
// context.
#include <cstdio>
#include <iostream>

#include "attnkit/core/error.h"
#include "attnkit/models/catalogue.h"
#include "attnkit/models/cost.h"
#include "attnkit/models/kinds.h"
#include "command.h"
#include "model_args.h"

namespace attnkit::cli {
namespace {

using namespace attnkit::models;

// Consecutive layers with the same figures, printed as one row.
struct Run {
  size_t first = 0, last = 0;
};

bool SameRow(const LayerSpec& a, const LayerCost& ca, const LayerSpec& b, const LayerCost& cb) {
  return a == b && ca.kv_bytes_per_token == cb.kv_bytes_per_token && ca.shared == cb.shared;
}

std::string Shape(const LayerSpec& l) {
  const auto describe = KindInfo(l.kind).describe;
  return describe != nullptr ? describe(l) : std::string();
}

int RunKv(const std::vector<std::string>& args) {
  ArgParser p(
      "attnkit kv (--config FILE | --model NAME) [--context 128k] [--batch 1] "
      "[--dtype bf16] [--state-dtype f32] [--allow-unknown] [--json]",
      "KV-cache bytes (per token and at the context), DSA indexer bytes, fixed recurrent "
      "state and attention FLOPs of a model, per layer kind.");
  p.AddOption("config", "", "path to a Hugging Face config.json");
  p.AddOption("model", "", "a catalogue name (see `attnkit list`)");
  p.AddOption("context", "32k", "tokens in the cache: 4096, 32k, 128k, 1m (k = 1024)");
  AddCostOptions(p);
  AddReadOptions(p);
  p.AddFlag("json", "print one JSON object (with layers[])");
  if (!p.Parse(args)) return 0;
  Require(p.Given("config") != p.Given("model"),
          "give exactly one of --config FILE or --model NAME");
  ReadOptions read;
  read.allow_unknown = p.Flag("allow-unknown");
  const ModelConfig m =
      p.Given("config") ? ReadHfConfig(p.Get("config"), read) : LoadModel(p.Get("model"));
  CostQuery q = ReadCostOptions(p);
  q.context = p.GetInt("context");
  Require(q.context >= 1, "--context must be >= 1, got ", q.context);
  const CostReport r = Cost(m, q);
  if (p.Flag("json")) {
    std::cout << CostReportToJson(m, r) << "\n";
    return 0;
  }
  std::cout << "model:    " << m.name << " (" << m.model_type << ", " << m.layers.size()
            << " layers: " << m.Summary() << ")\n";
  std::cout << "source:   " << m.source << "\n";
  if (m.IsEstimate()) std::cout << EstimateNote(m) << "\n";
  const std::string est = EstimateMark(m);
  std::cout << "query:    context " << GroupDigits(q.context) << " (" << HumanTokens(q.context)
            << "), batch " << q.batch << ", cache " << DtypeName(q.cache_dtype) << ", state "
            << DtypeName(q.state_dtype) << "\n\n";
  auto line = [&est](const char* label, int64_t v, const std::string& note = "") {
    std::printf("  %-34s %20s  %s\n", label, (est + GroupDigits(v)).c_str(), note.c_str());
  };
  line("KV bytes per token", r.kv_bytes_per_token, "(all layers, context below every window)");
  if (r.indexer_bytes_per_token > 0) {
    line("indexer bytes per token", r.indexer_bytes_per_token, "(DSA keys, apart from KV)");
  }
  line("KV cache at context x batch", r.kv_bytes_total,
       HumanBytes(static_cast<double>(r.kv_bytes_total)));
  if (r.indexer_bytes_total > 0) {
    line("indexer cache at context x batch", r.indexer_bytes_total,
         HumanBytes(static_cast<double>(r.indexer_bytes_total)));
  }
  if (r.state_bytes > 0) {
    line("state bytes per sequence", r.state_bytes,
         HumanBytes(static_cast<double>(r.state_bytes)) + " (conv " +
             HumanBytes(static_cast<double>(r.conv_state_bytes)) + ")");
  }
  line("total at context x batch", r.total_bytes, HumanBytes(static_cast<double>(r.total_bytes)));
  auto flops = [&est](double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.4g", v);
    return est + buf;
  };
  std::printf("  %-34s %20s  %s\n", "attention FLOPs, decode", flops(r.decode_flops).c_str(),
              "(one new token, per sequence)");
  std::printf("  %-34s %20s  %s\n\n", "attention FLOPs, prefill", flops(r.prefill_flops).c_str(),
              "(causal prefill of the context)");
  std::printf("  %-9s %-15s %-9s %-44s %12s %14s\n", "layers", "kind", "window", "shape", "B/token",
              "B at context");
  for (size_t i = 0; i < m.layers.size();) {
    size_t j = i;
    while (j + 1 < m.layers.size() &&
           SameRow(m.layers[i], r.layers[i], m.layers[j + 1], r.layers[j + 1]))
      ++j;
    // Only merge runs of identical neighbours; interleaved patterns print one row per layer.
    const auto& c = r.layers[i];
    const std::string range =
        i == j ? std::to_string(i) : std::to_string(i) + "-" + std::to_string(j);
    std::string per_layer =
        c.shared ? "shared" : est + GroupDigits(c.kv_bytes_per_token + c.indexer_bytes_per_token);
    std::string at_ctx = IsRecurrent(c.kind)
                             ? est + GroupDigits(c.state_bytes + c.conv_state_bytes) + " st"
                             : est + GroupDigits(c.kv_bytes + c.indexer_bytes);
    std::printf("  %-9s %-15s %-9s %-44s %12s %14s\n", range.c_str(),
                std::string(LayerKindName(c.kind)).c_str(),
                c.window > 0 ? GroupDigits(c.window).c_str() : "-", Shape(m.layers[i]).c_str(),
                per_layer.c_str(), at_ctx.c_str());
    i = j + 1;
  }
  for (const auto& a : m.assumptions) std::cout << "  assumption: " << a << "\n";
  for (const auto& w : m.warnings) std::cout << "  warning: " << w << "\n";
  return 0;
}

const CommandRegistrar kRegistrar({"kv", "KV-cache, state bytes and attention FLOPs of a model",
                                   RunKv});

}  // namespace
}  // namespace attnkit::cli
