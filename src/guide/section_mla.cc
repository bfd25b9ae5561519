// Guide section "mla": multi-head latent attention (DeepSeek V2/V3, Kimi K2). Draws the latent
// sharing (naive path: per-head K/V up-projected from the latent; absorbed path: every query head
// reads the latent directly), and measures decode time per token on both paths of a real
// MlaBlock against the context, with the cache bytes the block reports.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/core/tensor.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/layers/mla.h"
#include "guide/catalogue_util.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

// A DeepSeek-V3-shaped layer scaled down 4–8× so a decode sweep fits in seconds.
MlaConfig GuideMlaConfig(int64_t max_tokens) {
  MlaConfig c;
  c.hidden = 2048;
  c.num_heads = 16;
  c.q_lora_rank = 512;
  c.kv_lora_rank = 256;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.rope.layout = RopeLayout::kInterleaved;
  c.max_tokens = max_tokens;
  return c;
}

// The measured layer in words (its Describe() string is for logs, not for a chart subtitle).
std::string InWords(const MlaConfig& m) {
  return "hidden " + std::to_string(m.hidden) + ", " + std::to_string(m.num_heads) +
         " heads; cached per token: a latent of " + std::to_string(m.kv_lora_rank) + " + " +
         std::to_string(m.qk_rope_head_dim) + " RoPE key dims; heads of " +
         std::to_string(m.qk_nope_head_dim) + " + " + std::to_string(m.qk_rope_head_dim) +
         " (q·k) and " + std::to_string(m.v_head_dim) + " (v) dims" +
         (m.q_lora_rank > 0 ? ", query rank " + std::to_string(m.q_lora_rank) : "");
}

int64_t DecodeLast(const SweepConfig& c) {
  return std::min<int64_t>(c.decode_last, c.size == SweepSize::kFull ? 65536 : 16384);
}

// Two panels: the naive path (latent → per-head K and V) and the absorbed path (every query head
// reads the shared latent), with the dims of `config`.
std::string LatentDiagram(const MlaConfig& c, const std::string& model) {
  const int64_t shown = std::min<int64_t>(c.num_heads, 12);
  const double box = 16, gap = 5, panel = shown * (box + gap) + 60;
  SvgDoc doc(2 * panel + 30, 250, "MLA latent sharing");
  doc.Text(10, 16, "MLA (" + model + " dims): what the cache holds and who reads it", 13, "start",
           "#222", "bold");
  const std::string latent =
      "c_kv " + std::to_string(c.kv_lora_rank) + " + k_rope " + std::to_string(c.qk_rope_head_dim);
  for (int p = 0; p < 2; ++p) {
    const double x0 = 10 + p * (panel + 10);
    const bool naive = p == 0;
    doc.Text(x0 + panel / 2, 38, naive ? "naive path" : "absorbed path", 12.5, "middle", "#222",
             "bold");
    const double qy = 52, ky = 118, ly = 196;
    const double lw = panel - 40, lx = x0 + 20;
    for (int64_t h = 0; h < shown; ++h) {
      const double qx = x0 + 30 + h * (box + gap);
      if (naive) {
        doc.Line(qx + box / 2, qy + box, qx + box / 2, ky, "#3b6fb6", 1.2);
        doc.Line(qx + box / 2, ky + box, lx + lw * (h + 0.5) / shown, ly, "#e08a2c", 1, "3 2");
        doc.Rect(qx, ky, box, box, "#e08a2c", "#e08a2c", 1,
                 "head " + std::to_string(h) +
                     ": k_nope = W_uk,h c_kv, v = W_uv,h c_kv, rebuilt every step");
      } else {
        doc.Line(qx + box / 2, qy + box, lx + lw * (h + 0.5) / shown, ly, "#3b6fb6", 1.2);
      }
      doc.Rect(qx, qy, box, box, "#ffffff", "#3b6fb6", 1.5, "query head " + std::to_string(h));
    }
    doc.Rect(lx, ly, lw, 20, "#4a9a5b", "", 0, "cached per token: " + latent);
    doc.Text(lx + lw / 2, ly + 14, latent + " (cached)", 11, "middle", "#fff", "bold");
    doc.Text(x0 + panel / 2, 242,
             naive ? "per-head K, V rebuilt from the latent each step"
                   : "MQA over the latent (W_uk, W_uv folded into q, o)",
             10.5, "middle", "#444");
    if (naive) doc.Text(x0 + 4, ky + 12, "K,V", 10, "start", "#b06010");
  }
  doc.Text(10, 64, "q", 10, "start", "#777");
  return doc.Finish();
}

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  Section sec;
  sec.name = "mla";
  sec.title = "Multi-head latent attention (MLA): cache a latent, not keys and values";
  sec.intro_html =
      "<p>MLA (DeepSeek V2/V3, Kimi K2) compresses what each token leaves in the cache to one "
      "latent vector c<sub>kv</sub> (rank 512 in DeepSeek V3) plus a small shared rotary key "
      "(64): 576 values per token and layer instead of 2 &middot; 128 heads &middot; 128. Every "
      "head's keys and values are linear up-projections of that latent. The naive way to run it "
      "rebuilds per-head K and V for every cached token at every step; the absorbed way folds the "
      "up-projections into the query and the output, so decode becomes multi-query attention "
      "directly over the latent — the same numbers, far fewer bytes to touch.</p>";
  sec.formula_html =
      "c<sup>kv</sup><sub>t</sub> = RMSNorm(W<sub>dkv</sub> h<sub>t</sub>), &nbsp; "
      "k<sub>t,h</sub> = [W<sub>uk,h</sub> c<sup>kv</sup><sub>t</sub> ; RoPE(W<sub>kr</sub> "
      "h<sub>t</sub>)], &nbsp; v<sub>t,h</sub> = W<sub>uv,h</sub> c<sup>kv</sup><sub>t</sub><br>"
      "absorbed: q<sub>h</sub><sup>T</sup>k<sub>t,h</sub> = (W<sub>uk,h</sub><sup>T</sup> "
      "q<sub>h</sub><sup>nope</sup>)<sup>T</sup> c<sup>kv</sup><sub>t</sub> + "
      "q<sub>h</sub><sup>rope T</sup> k<sup>rope</sup><sub>t</sub> &nbsp; cache per token = "
      "kv_lora_rank + qk_rope_head_dim";
  sec.models = ModelsWhere([](const models::ModelConfig& cfg) -> std::string {
    const models::LayerSpec* l = FirstLayer(cfg, models::LayerKind::kMla);
    if (!l) l = FirstLayer(cfg, models::LayerKind::kDsa);
    if (!l) return "";
    return "latent " + std::to_string(l->kv_lora_rank) + " + rope " +
           std::to_string(l->qk_rope_head_dim) + ", " + std::to_string(l->num_heads_q) + " heads";
  });
  sec.models_source = CatalogueSourceLine();

  // Diagram with the dims of DeepSeek V3 from the catalogue when present, else the measured layer.
  MlaConfig drawn = GuideMlaConfig(16);
  std::string drawn_name = "the measured layer";
  std::string drawn_source = "MlaConfig of the layer measured below";
  for (const auto& cfg : CatalogueConfigs()) {
    const models::LayerSpec* l = FirstLayer(cfg, models::LayerKind::kMla);
    if (cfg.name == "deepseek-v3" && l) {
      drawn.num_heads = l->num_heads_q;
      drawn.kv_lora_rank = l->kv_lora_rank;
      drawn.qk_rope_head_dim = l->qk_rope_head_dim;
      drawn_name = cfg.name;
      drawn_source = "models::LoadModel(\"deepseek-v3\") layer dims (" + cfg.source + ")";
    }
  }
  Figure dia;
  dia.id = "mla-latent";
  dia.title = "Who reads the latent cache";
  dia.caption =
      "Only the green latent is cached. The naive path rebuilds orange per-head keys and "
      "values from it at every step; the absorbed path lets all query heads read it "
      "directly (12 heads drawn of " +
      std::to_string(drawn.num_heads) + ").";
  dia.provenance = drawn_name == "deepseek-v3" ? Provenance::kConfig : Provenance::kDrawn;
  dia.source = drawn_source;
  dia.svg = LatentDiagram(drawn, drawn_name);
  sec.figures.push_back(dia);

  // Measured: decode time per token on both paths against the context.
  const int64_t last = DecodeLast(c);
  const int64_t capacity = last + 64;
  const MlaConfig cfg = GuideMlaConfig(capacity);
  MlaBlock block(cfg, MlaWeights::Random(cfg, 3));
  Tensor<float> x(1, 1, 1, cfg.hidden), out(1, 1, 1, cfg.hidden);
  FillUniform(x.data(), x.numel(), 4);
  LineChartSpec dc;
  dc.title = "MLA decode time per token: naive against absorbed path";
  dc.subtitle =
      InWords(cfg) + "; f32, " + std::to_string(c.threads) + " threads (weights included)";
  dc.x_title = "cached context (tokens)";
  dc.y_title = "time per token (ms)";
  dc.log_x = dc.log_y = 1;
  Table t;
  t.id = "mla-cache";
  t.title = "Cache per token and layer, and decode at the longest context";
  t.provenance = Provenance::kMeasured;
  t.source = "MlaBlock::CacheBytes() / tokens and decode timing of a real block, this run";
  t.header = {"path",    "cache bytes / token (f32)", "per-head K+V it replaces (f32)",
              "context", "decode ms / token",         "naive scratch per step"};
  const double latent_bpt = static_cast<double>(MlaCacheBytesPerToken(cfg));
  const double mha_bpt =
      static_cast<double>(cfg.num_heads * (cfg.qk_head_dim() + cfg.v_head_dim) * 4);
  MlaMeasured measured;
  for (MlaPath path : {MlaPath::kNaive, MlaPath::kAbsorbed}) {
    block.set_path(path);
    Series s = NamedSeries(std::string(MlaPathName(path)) + " path");
    double last_ms = 0;
    int64_t last_ctx = 0;
    for (int64_t n = c.decode_first; n <= last; n *= 2) {
      block.Reset();
      block.FillCacheRandom(n, 11);
      if (path == MlaPath::kNaive) block.ReserveScratch(n + 16);
      const Timing t = TimeRepeats([&] { block.Decode(x.view(), block.tokens_seen(), out.view()); },
                                   5, 15, 0.1, true);
      AddPoint(s, static_cast<double>(n), t);
      last_ms = t.median * 1e3;
      last_ctx = n;
      ctx.Step(std::string("MLA ") + MlaPathName(path) + " decode @" + FormatTokens(n));
    }
    block.ReleaseScratch();
    dc.series.push_back(s);
    (path == MlaPath::kNaive ? measured.naive : measured.absorbed) = s;
    t.rows.push_back(
        {MlaPathName(path), Fmt("%.0f", latent_bpt), Fmt("%.0f", mha_bpt), FormatTokens(last_ctx),
         Fmt("%.3f", last_ms),
         path == MlaPath::kNaive ? FormatBytes(MlaBlock::NaiveScratchBytes(cfg, last_ctx)) : "—"});
  }
  Figure df;
  df.kind = Figure::Kind::kChart;
  df.id = "mla-decode-time";
  df.title = dc.title;
  df.caption =
      "Both paths give the same outputs (tested); the naive one re-expands the latent for "
      "every cached token at every step, the absorbed one reads the latent once per step. "
      "Points are medians of repeated steps, bars the fastest and slowest.";
  df.provenance = Provenance::kMeasured;
  df.source = "MlaBlock::Decode after FillCacheRandom(context), median of repeated steps, this run";
  df.vega_lite = LineChart(dc);
  sec.figures.push_back(df);
  sec.tables.push_back(t);
  AttachFindings(sec, MlaFindings(measured));

  VariantSummary row;
  row.variant = "MLA absorbed (" + std::to_string(cfg.num_heads) + " heads, latent " +
                std::to_string(cfg.kv_lora_rank) + "+" + std::to_string(cfg.qk_rope_head_dim) + ")";
  row.section = sec.name;
  row.bytes_per_token = latent_bpt / 2;  // bf16, as the other rows
  row.bytes_note = "bf16 latent per layer (vs " + Fmt("%.0f", mha_bpt / 2) + " for per-head K+V)";
  row.longest_seqlen = last;
  ctx.variants().push_back(row);
  sec.variants.push_back(row);
  return sec;
}

}  // namespace

SectionSpec MlaSection() {
  SectionSpec s;
  s.name = "mla";
  s.title = "Multi-head latent attention";
  s.steps = [](const SweepConfig& c) {
    return 2 * SweepPlannedPoints(c.decode_first, DecodeLast(c));
  };
  s.peak_bytes = [](const SweepConfig& c) {
    const MlaConfig cfg = GuideMlaConfig(DecodeLast(c) + 64);
    return static_cast<int64_t>(MlaBlock::NaiveScratchBytes(cfg, DecodeLast(c) + 64)) +
           MlaCacheBytesPerToken(cfg) * (DecodeLast(c) + 64) + (int64_t{64} << 20);
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
