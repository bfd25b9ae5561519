// Guide section "gated": gated attention (Qwen3-Next's full-attention layers): the attention
// output is multiplied, per head and channel, by a sigmoid gate computed from the layer input,
// before the output projection. Draws the head sharing of the catalogue's gated layers and
// measures what the gate costs on a real GqaBlock (prefill and decode, with and without it).
#include <algorithm>
#include <cmath>

#include "attnkit/core/tensor.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/layers/gqa.h"
#include "guide/catalogue_util.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

// Qwen3-Next's full-attention layer shape, scaled down (hidden 2048; 16 q heads over 2 KV heads).
GqaConfig GatedConfig(bool gate, int64_t max_tokens) {
  GqaConfig c;
  c.hidden = 2048;
  c.num_heads_q = 16;
  c.num_heads_kv = 2;
  c.head_dim = 128;
  c.qk_norm = true;
  c.qk_norm_zero_centred = true;
  c.rope.fraction = 0.25f;
  c.output_gate = gate;
  c.max_tokens = max_tokens;
  return c;
}

// The measured layer in words (its Describe() string is for logs, not for a chart subtitle).
std::string InWords(const GqaConfig& g) {
  std::string w = "hidden " + std::to_string(g.hidden) + ", " + std::to_string(g.num_heads_q) +
                  " query heads over " + std::to_string(g.num_heads_kv) + " KV heads of " +
                  std::to_string(g.head_dim) + " dims";
  if (g.use_rope) {
    w += g.rope.fraction == 1.0f
             ? ", RoPE"
             : ", RoPE on " + Fmt("%.0f", 100.0 * g.rope.fraction) + "% of each head";
  }
  if (g.qk_norm) w += ", QK-norm";
  if (g.output_gate) w += ", sigmoid output gate";
  if (g.window > 0) w += ", window " + std::to_string(g.window);
  return w;
}

// The gate's cost against the cache reads needs long contexts: --full goes to 64k.
int64_t DecodeLast(const SweepConfig& c) {
  return std::min<int64_t>(c.decode_last, c.size == SweepSize::kFull ? 65536 : 16384);
}
int64_t PrefillTokens(const SweepConfig& c) { return c.size == SweepSize::kSmoke ? 256 : 1024; }

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  Section sec;
  sec.name = "gated";
  sec.title = "Gated attention: a sigmoid gate on each head's output";
  sec.intro_html =
      "<p>Gated attention (Qwen3-Next's full-attention layers) multiplies the attention output by "
      "a gate sigmoid(x W<sub>gate</sub>), per query head and channel, before the output "
      "projection. The gate lets a head switch itself off for a token, which removes the "
      "'attention sink' a softmax otherwise needs for heads that have nothing to attend to, and "
      "adds a non-linearity between the value and output projections. It costs one more "
      "projection per token and nothing in the cache.</p>";
  sec.formula_html =
      "o<sub>t,h</sub> = softmax(q<sub>t,h</sub>K<sub>g(h)</sub><sup>T</sup>/&radic;d) "
      "V<sub>g(h)</sub> &#8857; &sigma;(x<sub>t</sub> W<sub>gate,h</sub>), &nbsp; y<sub>t</sub> = "
      "[o<sub>t,1</sub>; &hellip;; o<sub>t,H</sub>] W<sub>o</sub>";
  sec.models = ModelsWhere([](const models::ModelConfig& cfg) -> std::string {
    for (const auto& l : cfg.layers) {
      if (l.output_gate) {
        return "gated " + std::string(models::LayerKindName(l.kind)) + " layers, " +
               std::to_string(l.num_heads_q) + "q/" + std::to_string(l.num_heads_kv) + "kv";
      }
    }
    return "";
  });
  sec.models_source = CatalogueSourceLine();

  // Diagram: head sharing of the first gated layer in the catalogue (Qwen3-Next when present),
  // and of the layer measured below.
  std::vector<HeadPanel> panels;
  std::string from = "the measured layer's GqaConfig";
  for (const auto& cfg : CatalogueConfigs()) {
    for (const auto& l : cfg.layers) {
      if (l.output_gate && panels.empty() && l.num_heads_kv > 0 &&
          l.num_heads_q % l.num_heads_kv == 0) {
        panels.push_back({cfg.name, l.num_heads_q, l.num_heads_kv});
        from = "models::LoadModel(\"" + cfg.name + "\") gated layer + the measured GqaConfig";
      }
    }
  }
  const GqaConfig measured_layer = GatedConfig(true, 16);
  panels.push_back({"measured layer", measured_layer.num_heads_q, measured_layer.num_heads_kv});
  Figure dia;
  dia.id = "gated-heads";
  dia.title = "Head sharing of gated attention layers";
  dia.caption =
      "Each query head gets its own gate channel group: the gate acts after the heads "
      "have read their shared KV head, so grouping and cache are those of GQA.";
  dia.provenance = panels.size() > 1 ? Provenance::kConfig : Provenance::kDrawn;
  dia.source = "HeadSharingDiagram over " + from;
  dia.svg = HeadSharingDiagram(panels, "Gated attention layers: query heads per KV head");
  sec.figures.push_back(dia);

  // Measured: decode time against context, with and without the gate; prefill throughput.
  LineChartSpec dc;
  dc.title = "Decode time per token of a gated layer, with and without the gate";
  dc.subtitle = InWords(GatedConfig(true, 16)) + "; f32, " + std::to_string(c.threads) + " threads";
  dc.x_title = "cached context (tokens)";
  dc.y_title = "time per token (ms)";
  dc.log_x = dc.log_y = 1;
  Table t;
  t.id = "gated-cost";
  t.title = "What the gate costs";
  t.provenance = Provenance::kMeasured;
  t.source = "GqaBlock with output_gate on and off (same weights otherwise), this run";
  t.header = {"layer", "weights", "cache bytes / token", "prefill tokens / s",
              "decode ms at longest context"};
  const int64_t last = DecodeLast(c);
  const int64_t prefill = PrefillTokens(c);
  GatedMeasured measured;
  measured.full = c.size == SweepSize::kFull;
  {
    const GqaConfig g = GatedConfig(true, 16);
    const int64_t gate_bytes = g.hidden * g.num_heads_q * g.head_dim * 4;
    const int64_t cache_per_token = 2 * g.num_heads_kv * g.head_dim * 4;
    measured.crossover_context = gate_bytes / cache_per_token;
  }
  for (bool gate : {false, true}) {
    const GqaConfig cfg = GatedConfig(gate, std::max(last, prefill) + 64);
    GqaBlock block(cfg, GqaWeights::Random(cfg, 5));
    Tensor<float> xp(1, 1, prefill, cfg.hidden), yp(1, 1, prefill, cfg.hidden);
    FillUniform(xp.data(), xp.numel(), 6);
    const double t_prefill = MedianSeconds(
        [&] {
          block.Reset();
          block.Prefill(xp.view(), yp.view());
        },
        1, 5, 0.3);
    ctx.Step(std::string(gate ? "gated" : "ungated") + " prefill");
    Tensor<float> x(1, 1, 1, cfg.hidden), y(1, 1, 1, cfg.hidden);
    FillUniform(x.data(), x.numel(), 7);
    Series s = NamedSeries(gate ? "with output gate" : "without gate", true);
    double last_ms = 0;
    for (int64_t n = c.decode_first; n <= last; n *= 2) {
      block.Reset();
      block.FillCacheRandom(n, 8);
      const Timing tm =
          TimeRepeats([&] { block.Decode(x.view(), block.tokens_seen(), y.view()); }, 3, 9, 0.1);
      AddPoint(s, static_cast<double>(n), tm);
      last_ms = tm.median * 1e3;
      ctx.Step(std::string(gate ? "gated" : "ungated") + " decode @" + FormatTokens(n));
    }
    dc.series.push_back(s);
    (gate ? measured.gated : measured.ungated) = s;
    t.rows.push_back({gate ? "with output gate" : "without gate",
                      FormatBytes(static_cast<double>(block.WeightBytes())),
                      Fmt("%.0f", static_cast<double>(2 * cfg.num_heads_kv * cfg.head_dim * 4)),
                      Fmt("%.0f", static_cast<double>(prefill) / t_prefill), Fmt("%.3f", last_ms)});
  }
  Figure df;
  df.kind = Figure::Kind::kChart;
  df.id = "gated-decode-time";
  df.title = dc.title;
  df.caption =
      "The gate adds a hidden × (heads · head_dim) projection per token, a cost independent of "
      "the context, while the cache reads grow with it. Medians of repeated steps, bars the "
      "fastest and slowest; " +
      std::string(c.size == SweepSize::kFull ? "this --full run reaches 64k."
                                             : "--quick stops at 16k; --full reaches 64k.");
  df.provenance = Provenance::kMeasured;
  df.source = "GqaBlock::Decode after FillCacheRandom(context), median of repeated steps, this run";
  df.vega_lite = LineChart(dc);
  sec.figures.push_back(df);
  sec.tables.push_back(t);
  AttachFindings(sec, GatedFindings(measured));
  return sec;
}

}  // namespace

SectionSpec GatedSection() {
  SectionSpec s;
  s.name = "gated";
  s.title = "Gated attention";
  s.steps = [](const SweepConfig& c) {
    return 2 * (1 + SweepPlannedPoints(c.decode_first, DecodeLast(c)));
  };
  s.peak_bytes = [](const SweepConfig& c) {
    const GqaConfig cfg = GatedConfig(true, DecodeLast(c) + 64);
    return (DecodeLast(c) + 64) * 2 * cfg.num_heads_kv * cfg.head_dim * 4 + (int64_t{256} << 20);
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
