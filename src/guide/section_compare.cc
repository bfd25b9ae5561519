// Guide section "compare": every variant measured in this run side by side (complexity slope,
// cache bytes per token, longest sequence handled, error against exact attention).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/guide/charts.h"
#include "attnkit/models/card.h"
#include "attnkit/models/cost.h"
#include "guide/catalogue_util.h"
#include "guide/claims.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

// Cache bars of real models at 8k / 32k / 128k, their per-token table and a few model cards, all
// computed from the catalogue's configs by the cost model (models/cost.h).
void AddCatalogueFigures(Section& sec) {
  const char* kModels[] = {"gpt2-xl",
                           "llama-2-70b",
                           "llama-3.1-8b",
                           "llama-3.1-70b",
                           "qwen3-32b",
                           "mistral-7b-v0.1",
                           "gemma-3-27b",
                           "gpt-oss-120b",
                           "deepseek-v3",
                           "deepseek-v3.2-exp",
                           "kimi-k2",
                           "qwen3-next-80b-a3b",
                           "kimi-linear-48b-a3b",
                           "minimax-text-01"};
  const int64_t kContexts[] = {8192, 32768, 131072};
  BarChartSpec bars;
  bars.title = "Cache memory per sequence of real models at 8k, 32k and 128k tokens";
  bars.subtitle =
      "KV cache (bf16) + DSA indexer keys + recurrent/conv state (f32), batch 1, all layers";
  bars.x_title = "model";
  bars.y_title = "cache per sequence (GB, 10^9 bytes)";
  bars.group_title = "context";
  bars.log_y = 1;
  Table t;
  t.id = "compare-models";
  t.title = "What each model keeps per token (all layers)";
  t.provenance = Provenance::kConfig;
  t.source = "models::Cost over the catalogue's configs (bf16 cache, f32 state)";
  t.header = {"model",
              "layers",
              "KV bytes / token",
              "indexer bytes / token",
              "fixed state bytes",
              "cache at 128k (GB)"};
  for (const char* name : kModels) {
    const models::ModelConfig* config = nullptr;
    for (const auto& c : CatalogueConfigs()) {
      if (c.name == name) config = &c;
    }
    if (!config) continue;
    models::CostReport at128k;
    for (int64_t ctxlen : kContexts) {
      models::CostQuery q;
      q.context = ctxlen;
      const models::CostReport r = models::Cost(*config, q);
      bars.bars.push_back(
          {config->name, FormatTokens(ctxlen), static_cast<double>(r.total_bytes) / 1e9});
      at128k = r;
    }
    t.rows.push_back({config->name, config->Summary(),
                      Fmt("%.0f", static_cast<double>(at128k.kv_bytes_per_token)),
                      Fmt("%.0f", static_cast<double>(at128k.indexer_bytes_per_token)),
                      Fmt("%.0f", static_cast<double>(at128k.state_bytes)),
                      Fmt("%.2f", static_cast<double>(at128k.total_bytes) / 1e9)});
  }
  if (!bars.bars.empty()) {
    Figure f;
    f.kind = Figure::Kind::kChart;
    f.id = "compare-model-cache";
    f.title = "Cache of real models at 8k / 32k / 128k context";
    f.caption =
        "Sliding windows cap a layer's cache, MLA compresses it to a latent, hybrid models "
        "replace most layers with a fixed-size state (computed from the configs, not timed).";
    double lo = 0, hi = 0;
    std::string lo_name, hi_name;
    for (const auto& b : bars.bars) {
      if (b.group != FormatTokens(131072) || !(b.value > 0)) continue;
      if (lo_name.empty() || b.value < lo) lo = b.value, lo_name = b.category;
      if (hi_name.empty() || b.value > hi) hi = b.value, hi_name = b.category;
    }
    if (lo > 0) {
      f.findings.push_back(Fact("compare.cache-spread", "At 128k the largest cache here (" +
                                                            hi_name + ", " + Fmt("%.3g", hi) +
                                                            " GB) is " + Fmt("%.0f", hi / lo) +
                                                            "× the smallest (" + lo_name + ", " +
                                                            Fmt("%.3g", lo) + " GB)"));
    }
    f.provenance = Provenance::kConfig;
    f.source = "models::Cost(LoadModel(name), {context, batch 1, bf16, f32 state}).total_bytes";
    f.vega_lite = GroupedBarChart(bars);
    sec.figures.push_back(f);
    sec.tables.push_back(t);
  }
  for (const char* name :
       {"llama-3.1-8b", "gemma-3-27b", "deepseek-v3.2-exp", "qwen3-next-80b-a3b"}) {
    for (const auto& c : CatalogueConfigs()) {
      if (c.name != name) continue;
      Figure card;
      card.kind = Figure::Kind::kDiagram;
      card.id = std::string("card-") + name;
      card.title = "Model card: " + c.name;
      card.caption = "Layer pattern, attention kinds, bytes per token and cache at 8k/32k/128k.";
      card.provenance = Provenance::kConfig;
      card.source = "models::ModelCardSvg(LoadModel(\"" + c.name + "\")) (" + c.source + ")";
      card.svg = models::ModelCardSvg(c);
      sec.figures.push_back(card);
    }
  }
}

Section Build(Context& ctx) {
  Section sec;
  sec.name = "compare";
  sec.comparison = true;
  sec.title = "Comparison: every variant measured in this run, and real models' caches";
  sec.intro_html =
      "<p>One row per variant measured above. The slope is the fitted exponent of prefill time "
      "against sequence length on log-log axes (2 = quadratic, 1 = linear), ± two standard "
      "errors, printed only from three points or more; the cache column is "
      "what one layer keeps per token; the error column (relative error ‖o − o<sub>exact</sub>‖ / "
      "‖o<sub>exact</sub>‖) compares the fast kernel with exact "
      "attention computed by the double-precision reference on the same input (for exact "
      "variants it is rounding only); the trained-quality column holds the Quality section's "
      "MQAR accuracy at its longest length and bits per byte, for the variants it trained.</p>";
  Table t;
  t.id = "compare-variants";
  t.title = "Variants measured in this run";
  t.provenance = Provenance::kMeasured;
  t.source =
      "collected from the sections above (their sweeps, KvCache objects and reference "
      "comparisons), this run";
  t.header = {"variant",
              "time slope (log-log, ± 2 s.e.)",
              "fitted over",
              "cache bytes / token / layer",
              "cache note",
              "longest seqlen run",
              "rel. error vs exact",
              "trained quality"};
  BarChartSpec bars;
  bars.title = "Measured prefill complexity: fitted log-log slope of time against sequence length";
  bars.subtitle = "2 = quadratic (exact attention), 1 = linear in sequence length";
  bars.x_title = "variant";
  bars.y_title = "slope (dimensionless)";
  bars.group_title = "section";
  bars.y_format = ".3f";
  bars.log_y = 0;
  for (const auto& v : ctx.variants()) {
    const std::string slope =
        v.time_slope >= 0 ? Fmt("%.2f", v.time_slope) +
                                (v.time_slope_2se >= 0 ? " ± " + Fmt("%.2f", v.time_slope_2se) : "")
                          : "—";
    t.rows.push_back({v.variant, slope, v.slope_range.empty() ? "—" : v.slope_range,
                      v.bytes_per_token >= 0 ? Fmt("%.0f", v.bytes_per_token) : "—", v.bytes_note,
                      v.longest_seqlen > 0 ? FormatTokens(v.longest_seqlen) : "—",
                      !v.error_note.empty()   ? v.error_note
                      : v.error_vs_exact >= 0 ? Fmt("%.2e", v.error_vs_exact)
                                              : "—",
                      v.quality.empty() ? "—" : v.quality});
    if (v.time_slope >= 0) bars.bars.push_back({v.variant, v.section, v.time_slope});
  }
  if (!t.rows.empty()) sec.tables.push_back(t);
  if (!bars.bars.empty()) {
    Figure f;
    f.kind = Figure::Kind::kChart;
    f.id = "compare-slopes";
    f.title = "Measured complexity of each variant";
    f.caption = "The exponent each variant's prefill time showed in this run's sweep.";
    f.provenance = Provenance::kMeasured;
    f.source = "log-log least-squares fits of the sweeps above, this run";
    f.vega_lite = GroupedBarChart(bars);
    sec.figures.push_back(f);
  }
  if (t.rows.empty()) {
    sec.notes.push_back("No variant was measured in this run (see --only).");
  }
  AddCatalogueFigures(sec);
  return sec;
}

}  // namespace

SectionSpec CompareSection() {
  SectionSpec s;
  s.name = "compare";
  s.title = "Comparison";
  s.steps = [](const SweepConfig&) { return int64_t{0}; };
  s.peak_bytes = [](const SweepConfig&) { return int64_t{0}; };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
