// Guide section "hybrid": hybrid stacks that run a recurrent (linear) layer in most positions and
// full attention in a few (Qwen3-Next, Kimi Linear, MiniMax, Nemotron-H). Everything here comes
// from the catalogue's configs through the cost model: the layer strips and the cache of each
// model against the context, split into the growing KV cache and the fixed recurrent state. The
// per-layer speeds are measured in the sections of the layer kinds (heads, mla, delta).
#include <algorithm>
#include <cstdio>
#include <iterator>

#include "attnkit/bench/blocks.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/layer.h"
#include "attnkit/models/cost.h"
#include "guide/catalogue_util.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

bool IsHybrid(const models::ModelConfig& c) {
  int64_t recurrent = 0, attention = 0;
  for (const auto& l : c.layers) {
    recurrent += models::IsRecurrent(l.kind);
    attention += models::HasKvCache(l.kind);
  }
  return recurrent > 0 && attention > 0;
}

std::vector<int64_t> StackPrompts(const SweepConfig& c) {
  switch (c.size) {
    case SweepSize::kSmoke:
      return {256, 512, 1024};
    case SweepSize::kQuick:  // three points for a slope; the cost is the 4k prefill
      return {256, 1024, 4096};
    case SweepSize::kFull:
      return {1024, 4096, 16384, 32768, 65536};
  }
  return {};
}

struct StackKind {
  const char* label;
  const char* layers;  // ParseLayerList syntax
};
const StackKind kStacks[] = {
    {"4 × GQA (all attention)", "4*gqa"},
    {"3 × Gated DeltaNet : 1 × gated attention (Qwen3-Next-like)", "3*gated_deltanet,gated"},
    {"3 × KDA : 1 × MLA (Kimi-Linear-like)", "3*kda,mla"},
};
constexpr int64_t kDecodeTokens = 8;

// Real stacks of layers (layers/factory.h) run by bench::RunStack: prefill of a prompt, then
// token-by-token decode, with the cache bytes the layers report.
void AddMeasuredStacks(Context& ctx, Section& sec) {
  const SweepConfig& c = ctx.config();
  const std::vector<int64_t> prompts = StackPrompts(c);
  LayerShape shape;
  shape.hidden = 1024;
  shape.num_heads = 8;
  shape.num_heads_kv = 2;
  shape.head_dim = 128;
  LineChartSpec dc;
  dc.title = "Measured stacks: decode time per token after a prompt";
  dc.subtitle = "4 layers, hidden 1024, 8 heads × 128 (2 KV / q-k heads), f32, " +
                std::to_string(c.threads) + " threads; " + std::to_string(kDecodeTokens) +
                " decode tokens, median";
  dc.x_title = "prompt (tokens)";
  dc.y_title = "decode time per token (ms)";
  dc.log_x = dc.log_y = 1;
  LineChartSpec mc = dc;
  mc.title = "Measured stacks: cache bytes after the prompt";
  mc.subtitle = "Layer::CacheBytes() summed over the stack (KV caches, latent cache, fixed states)";
  mc.y_title = "cache (MiB)";
  mc.y_format = ".5~g";
  HybridMeasured measured;
  measured.full = c.size == SweepSize::kFull;
  for (const auto& kind : kStacks) {
    Series ds = NamedSeries(kind.label), ms = NamedSeries(kind.label);
    ds.fit_min_x = ms.fit_min_x = 0;
    for (int64_t prompt : prompts) {
      // Full-attention caches allocate their capacity up front: size it to this run, so the
      // reported bytes are what the prompt needs.
      shape.max_tokens = prompt + kDecodeTokens + 16;
      Stack stack(shape.hidden);
      uint64_t seed = 1;
      for (const auto& k : ParseLayerList(kind.layers)) stack.Add(MakeLayer(k, shape, seed++));
      const bench::StackRunResult r = bench::RunStack(stack, prompt, kDecodeTokens, 7);
      ds.x.push_back(static_cast<double>(prompt));
      ds.y.push_back(r.decode_ms_median);
      ds.y_lo.push_back(r.decode_ms_q1);
      ds.y_hi.push_back(r.decode_ms_q3);
      ms.x.push_back(static_cast<double>(prompt));
      ms.y.push_back(r.cache_bytes / (1 << 20));
      ctx.Step(std::string("stack ") + kind.layers + " @" + FormatTokens(prompt));
    }
    dc.series.push_back(ds);
    mc.series.push_back(ms);
    measured.decode.push_back(ds);
  }
  for (auto* spec : {&dc, &mc}) {
    Figure f;
    f.kind = Figure::Kind::kChart;
    f.id = spec == &dc ? "hybrid-stack-decode" : "hybrid-stack-cache";
    f.title = spec->title;
    f.caption = spec == &dc
                    ? "Three of four layers in the hybrids decode at a cost independent of the "
                      "prompt, so their per-token time should grow more slowly than the "
                      "all-attention stack's. Medians of the decode steps, bars their quartiles; "
                      "--full runs prompts to 64k."
                    : "The all-attention stack's cache grows with every token in all four layers; "
                      "the hybrids' grows in one layer only (the MLA latent is smaller still) "
                      "above a fixed recurrent state. Bytes are what the layers allocate for "
                      "this prompt (Layer::CacheBytes).";
    f.provenance = Provenance::kMeasured;
    f.source = "bench::RunStack over Stack(MakeLayer(kind)) with seeded random weights, this run";
    f.vega_lite = LineChart(*spec);
    sec.figures.push_back(f);
  }
  AttachFindings(sec, HybridFindings(measured));
}

Section Build(Context& ctx) {
  Section sec;
  sec.name = "hybrid";
  sec.title = "Hybrid stacks: mostly recurrent layers, a few attention layers";
  sec.intro_html =
      "<p>A recurrent layer (Gated DeltaNet, KDA, Mamba-2, lightning attention) keeps a fixed-size "
      "state, so decode cost and memory do not grow with the context; but it cannot look up an "
      "arbitrary earlier token exactly. Hybrid models therefore keep a few full-attention layers "
      "(Qwen3-Next: one in four, gated; Kimi Linear: one MLA layer in four). Their cache is the "
      "sum of a fixed state and a KV cache that grows only in the attention layers.</p><p>The "
      "first two charts run real 4-layer stacks of attnkit's layers on this machine; the model "
      "figures after them come from the models' configs through attnkit's cost model.</p>";
  sec.formula_html =
      "cache(L) = &Sigma;<sub>attention layers</sub> bytes per token &middot; min(L, window) + "
      "&Sigma;<sub>recurrent layers</sub> (heads &middot; d<sub>k</sub> &middot; d<sub>v</sub> + "
      "conv state)";
  sec.models = ModelsWhere(
      [](const models::ModelConfig& c) { return IsHybrid(c) ? c.Summary() : std::string(); });
  sec.models_source = CatalogueSourceLine();

  AddMeasuredStacks(ctx, sec);
  for (const char* name : {"qwen3-next-80b-a3b", "kimi-linear-48b-a3b", "nemotron-h-56b"}) {
    Figure strip;
    if (ModelStripFigure(name, std::string("hybrid-strip-") + name, &strip))
      sec.figures.push_back(strip);
  }

  LineChartSpec cc;
  cc.title = "Cache per sequence against context: hybrid models";
  cc.subtitle = "KV cache (bf16) + recurrent and convolution state (f32), batch 1, all layers";
  cc.x_title = "context (tokens)";
  cc.y_title = "cache per sequence (GB, 10^9 bytes)";
  cc.log_x = cc.log_y = 1;
  cc.y_format = ".4~g";
  Table t;
  t.id = "hybrid-models";
  t.title = "Hybrid models: what grows and what stays fixed";
  t.provenance = Provenance::kConfig;
  t.source = "models::Cost over the catalogue's configs";
  t.header = {"model",
              "layers",
              "KV bytes / token",
              "fixed state (MB)",
              "cache at 1M tokens (GB)",
              "share of the cache that is state, at 32k"};
  std::vector<const models::ModelConfig*> picked;
  for (const auto& c : CatalogueConfigs()) {
    if (IsHybrid(c)) picked.push_back(&c);
  }
  for (const char* ref : {"llama-3.1-70b"}) {  // a full-attention model of similar size, for scale
    for (const auto& c : CatalogueConfigs()) {
      if (c.name == ref) picked.push_back(&c);
    }
  }
  for (const auto* c : picked) {
    Series s =
        NamedSeries(c->name + (IsHybrid(*c) ? "" : " (all full attention, for scale)"), false);
    models::CostReport at32k, at1m;
    for (int64_t ctxlen = 1024; ctxlen <= (int64_t{1} << 20); ctxlen *= 4) {
      models::CostQuery q;
      q.context = ctxlen;
      const models::CostReport r = models::Cost(*c, q);
      s.x.push_back(static_cast<double>(ctxlen));
      s.y.push_back(static_cast<double>(r.total_bytes) / 1e9);
      at1m = r;
    }
    {
      models::CostQuery q;
      q.context = 32768;
      at32k = models::Cost(*c, q);
    }
    cc.series.push_back(s);
    t.rows.push_back(
        {c->name, c->Summary(), Fmt("%.0f", static_cast<double>(at1m.kv_bytes_per_token)),
         Fmt("%.1f", static_cast<double>(at1m.state_bytes) / 1e6),
         Fmt("%.2f", static_cast<double>(at1m.total_bytes) / 1e9),
         Fmt("%.0f%%", 100.0 * static_cast<double>(at32k.state_bytes) /
                           std::max<double>(1, static_cast<double>(at32k.total_bytes)))});
  }
  if (!cc.series.empty()) {
    Figure f;
    f.kind = Figure::Kind::kChart;
    f.id = "hybrid-cache";
    f.title = cc.title;
    f.caption =
        "Computed from the configs (not timed): a hybrid model's memory is its fixed state plus "
        "the KV cache of its few attention layers; the table gives the state's share at 32k.";
    f.provenance = Provenance::kConfig;
    f.source = "models::Cost(LoadModel(name), {context, batch 1, bf16, f32 state}).total_bytes";
    f.vega_lite = LineChart(cc);
    sec.figures.push_back(f);
    sec.tables.push_back(t);
  }
  return sec;
}

}  // namespace

SectionSpec HybridSection() {
  SectionSpec s;
  s.name = "hybrid";
  s.title = "Hybrid stacks";
  s.steps = [](const SweepConfig& c) {
    return static_cast<int64_t>(std::size(kStacks) * StackPrompts(c).size());
  };
  s.peak_bytes = [](const SweepConfig& c) {
    // 4 full-attention layers of 2 KV heads × 128 (f32) at the longest prompt, plus weights and
    // prefill activations.
    return StackPrompts(c).back() * 4 * 2 * 2 * 128 * 4 + (int64_t{512} << 20);
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
