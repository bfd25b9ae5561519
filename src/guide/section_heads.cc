// Guide section "heads": MHA, MQA and GQA — how many key/value heads the query heads share.
// Measures causal prefill (time, peak memory) and decode against context for the three sharing
// ratios on the dense engine, and reads KV bytes per token off real KvCache objects.
#include <cmath>
#include <cstdio>

#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/kernels/kv_cache.h"
#include "guide/catalogue_util.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

struct Variant {
  const char* name;
  DenseShape prefill;  // prefill shape (8 query heads)
  DenseShape decode;   // decode shape (32 query heads, as in Llama-3-8B-sized layers)
};

const Variant kVariants[] = {
    {"MHA", {8, 8, 128}, {32, 32, 128}},
    {"GQA", {8, 2, 128}, {32, 8, 128}},
    {"MQA", {8, 1, 128}, {32, 1, 128}},
};

std::string Label(const char* name, const DenseShape& s) {
  return std::string(name) + " " + std::to_string(s.num_heads_q) + "q/" +
         std::to_string(s.num_heads_kv) + "kv";
}

template <typename T>
double CacheBytesPerToken(const DenseShape& s) {
  const int64_t slots = 256;
  KvCache<T> cache(1, s.num_heads_kv, s.head_dim, s.head_dim, slots);
  return static_cast<double>(cache.bytes()) / static_cast<double>(cache.slots());
}

Section Build(Context& ctx) {
  Section sec;
  sec.name = "heads";
  sec.title = "MHA, GQA and MQA: how many key/value heads the query heads share";
  sec.intro_html =
      "<p>Multi-head attention (MHA) gives each of the H<sub>q</sub> query heads its own key and "
      "value head. Grouped-query attention (GQA) lets each group of G = "
      "H<sub>q</sub>/H<sub>kv</sub> "
      "query heads read one shared key/value head; multi-query attention (MQA) is the extreme of a "
      "single KV head. Every query head still attends over every key, so prefill compute is the "
      "same for all three; what shrinks by G is the KV cache and the bytes decode has to read per "
      "generated token.</p><p>attnkit runs all three through one dense kernel that loads each "
      "K/V row once for the whole group of query heads sharing it.</p>";
  sec.formula_html =
      "o<sub>h</sub> = softmax(q<sub>h</sub> K<sub>g(h)</sub><sup>T</sup> / &radic;d) "
      "V<sub>g(h)</sub>, &nbsp; g(h) = &lfloor;h / G&rfloor;, &nbsp; G = H<sub>q</sub> / "
      "H<sub>kv</sub><br>KV cache per token and layer = 2 &middot; H<sub>kv</sub> &middot; d "
      "&middot; bytes per element";

  // Real models, grouped by how their attention layers share KV heads (from their configs).
  std::vector<std::string> by_kind[3];
  for (const auto& c : CatalogueConfigs()) {
    const models::LayerSpec* l = FirstLayer(c, models::LayerKind::kFull);
    if (!l) l = FirstLayer(c, models::LayerKind::kSliding);
    if (!l || l->num_heads_kv <= 0) continue;
    const int kind = l->num_heads_kv == l->num_heads_q ? 0 : l->num_heads_kv == 1 ? 2 : 1;
    const char* names[] = {"MHA", "GQA", "MQA"};
    by_kind[kind].push_back(c.name + " (" + names[kind] + " " + std::to_string(l->num_heads_q) +
                            "q/" + std::to_string(l->num_heads_kv) + "kv)");
  }
  for (size_t i = 0; i < 40; ++i) {  // interleave so every kind shows up early in the list
    for (auto& list : by_kind) {
      if (i < list.size()) sec.models.push_back(list[i]);
    }
  }
  sec.models_source = CatalogueSourceLine();

  // Diagram: head sharing of the very shapes measured below.
  Figure sharing;
  sharing.kind = Figure::Kind::kDiagram;
  sharing.id = "heads-sharing";
  sharing.title = "Which query heads read which KV head";
  sharing.caption =
      "Each line is a query head reading a KV head; colours are KV heads. The panels "
      "are the prefill shapes measured below.";
  sharing.provenance = Provenance::kDrawn;
  sharing.source =
      "HeadSharingDiagram over the (num_heads_q, num_heads_kv) pairs passed to DenseForward";
  std::vector<HeadPanel> panels;
  for (const auto& v : kVariants)
    panels.push_back({v.name, v.prefill.num_heads_q, v.prefill.num_heads_kv});
  sharing.svg = HeadSharingDiagram(panels, "Head sharing: MHA, GQA, MQA");
  sec.figures.push_back(sharing);

  // Diagram: the causal mask the prefill runs with, and the tiles the kernel skips.
  const MaskPtr causal = CausalMask();
  Figure mask_fig;
  mask_fig.kind = Figure::Kind::kDiagram;
  mask_fig.id = "heads-causal-mask";
  mask_fig.title = "The causal mask, token by token";
  mask_fig.caption = "Query q sees keys k ≤ q: the lower triangle.";
  mask_fig.source = "CausalMask() sampled with Mask::FillTile, 32 × 32 tokens";
  MaskDiagramOptions mo;
  mo.title = "CausalMask(), 32 tokens";
  mask_fig.svg = MaskDiagram(*causal, 32, 32, mo);
  sec.figures.push_back(mask_fig);

  Figure tiles;
  tiles.kind = Figure::Kind::kDiagram;
  tiles.id = "heads-causal-tiles";
  tiles.title = "What the kernel computes for causal prefill";
  tiles.caption =
      "Tiles above the diagonal are skipped without being touched; only the diagonal "
      "tiles check the mask per element.";
  tiles.source =
      "CausalMask().Classify over 64 × 64-token tiles of a 2048-token prefill (the "
      "kernel's block size is 64)";
  tiles.svg = TileMapDiagram(*causal, 2048, 64, "Causal prefill, 2048 tokens: tiles");
  sec.figures.push_back(tiles);

  // Measured prefill: time and memory against seqlen.
  LineChartSpec time_chart =
      SeqlenTimeChart("Causal prefill time against sequence length",
                      "batch 1, 8 query heads, head_dim 128, f32, " +
                          std::to_string(ctx.config().threads) + " threads; dashed: log-log fit");
  LineChartSpec mem_chart = time_chart;
  mem_chart.title = "Peak memory of causal prefill against sequence length";
  mem_chart.subtitle =
      "resident-memory high-water mark of allocating Q, K, V, O and running the "
      "kernel; no seqlen × seqlen buffer exists";
  mem_chart.y_title = "peak memory (MiB)";
  mem_chart.y_format = ".5~g";
  HeadsMeasured measured;
  for (const auto& v : kVariants) {
    const std::string label = Label(v.name, v.prefill);
    const auto pts = DensePrefillSweep(ctx, "dense-causal-" + label, label, v.prefill, causal);
    Series ts = TimedSeries(label, pts);
    Series ms = NamedSeries(label);
    for (const auto& p : pts) {
      if (p.peak_bytes > 0) {
        ms.x.push_back(static_cast<double>(p.seqlen));
        ms.y.push_back(static_cast<double>(p.peak_bytes) / (1024.0 * 1024.0));
      }
    }
    ms.fit_min_x = FitStart(ms.x, 1024);
    time_chart.series.push_back(ts);
    measured.prefill.push_back(ts);
    if (!ms.x.empty()) {
      mem_chart.series.push_back(ms);
      measured.memory.push_back(ms);
    }

    VariantSummary row = SummaryFromSeries(label, sec.name, ts);
    row.bytes_per_token = CacheBytesPerToken<bf16>(v.prefill);
    row.bytes_note = "bf16 KvCache, per layer";
    row.error_vs_exact = DenseErrorVsReference(v.prefill, 200, causal);
    ctx.variants().push_back(row);
    sec.variants.push_back(row);
  }
  Figure tf;
  tf.kind = Figure::Kind::kChart;
  tf.id = "heads-prefill-time";
  tf.title = time_chart.title;
  tf.caption =
      "Every query still meets every earlier key, so the FLOPs are those of MHA for all three "
      "sharing ratios and grow with the square of the length. Points are medians, bars the "
      "fastest and slowest repeat.";
  tf.provenance = Provenance::kMeasured;
  tf.source = "DenseForward with CausalMask(), median wall time per point, this run";
  tf.vega_lite = LineChart(time_chart);
  sec.figures.push_back(tf);
  if (!mem_chart.series.empty()) {
    Figure mf;
    mf.kind = Figure::Kind::kChart;
    mf.id = "heads-prefill-memory";
    mf.title = mem_chart.title;
    mf.caption =
        "The online softmax never materialises the seqlen × seqlen score matrix, so only Q, K, V "
        "and O should grow with the length.";
    mf.provenance = Provenance::kMeasured;
    mf.source = "Linux VmHWM (reset through /proc/self/clear_refs) around each prefill, this run";
    mf.vega_lite = LineChart(mem_chart);
    sec.figures.push_back(mf);
  }

  // Measured decode: time per generated token against cached context.
  LineChartSpec dec;
  dec.title = "Decode: time per generated token against cached context";
  dec.subtitle = "1 new token, 32 query heads, head_dim 128, f32 KV cache, " +
                 std::to_string(ctx.config().threads) + " threads";
  dec.x_title = "cached context (tokens)";
  dec.log_x = dec.log_y = 1;  // scaling plot: log-log
  dec.y_title = "time per token (ms)";
  Table cache_table;
  cache_table.id = "heads-cache";
  cache_table.title = "KV cache per token and layer, and decode read rate";
  cache_table.provenance = Provenance::kMeasured;
  cache_table.source =
      "bytes: KvCache<T>::bytes() / slots() of real cache objects; rate: K and V "
      "bytes read once per decode step / measured time, this run";
  cache_table.header = {"variant (decode shape)",  "f32 bytes / token",
                        "bf16 bytes / token",      "longest context",
                        "decode ms / token there", "K+V read rate (GB/s)"};
  for (const auto& v : kVariants) {
    const std::string label = Label(v.name, v.decode);
    const auto pts = DenseDecodeSweep(ctx, "dense-decode-" + label, label, v.decode, 0);
    Series s = TimedSeries(label, pts);
    dec.series.push_back(s);
    measured.decode.push_back(s);
    const double f32_bpt = CacheBytesPerToken<float>(v.decode);
    std::vector<std::string> row = {
        label, Fmt("%.0f", f32_bpt), Fmt("%.0f", CacheBytesPerToken<bf16>(v.decode)), "—", "—",
        "—"};
    if (!pts.empty()) {
      const auto& last = pts.back();
      row[3] = FormatTokens(last.seqlen);
      row[4] = Fmt("%.3f", last.seconds * 1e3);
      row[5] = Fmt("%.1f", f32_bpt * static_cast<double>(last.seqlen + 1) / last.seconds / 1e9);
    }
    cache_table.rows.push_back(row);
  }
  Figure df;
  df.kind = Figure::Kind::kChart;
  df.id = "heads-decode-time";
  df.title = dec.title;
  df.caption =
      "Decode reads the whole cache once per token: fewer KV heads mean fewer bytes to read, not "
      "fewer FLOPs.";
  df.provenance = Provenance::kMeasured;
  df.source = "DenseDecode over a KvCache<float>, median of repeated single-token steps, this run";
  df.vega_lite = LineChart(dec);
  sec.figures.push_back(df);
  sec.tables.push_back(cache_table);
  AttachFindings(sec, HeadsFindings(measured));
  return sec;
}

}  // namespace

SectionSpec HeadsSection() {
  SectionSpec s;
  s.name = "heads";
  s.title = "MHA / GQA / MQA (head sharing)";
  s.steps = [](const SweepConfig& c) { return 3 * PrefillSteps(c) + 3 * DecodeSteps(c); };
  s.peak_bytes = [](const SweepConfig& c) {
    int64_t peak = 0;
    for (const auto& v : kVariants) {
      peak = std::max(peak, DensePrefillBytes(v.prefill, c.prefill_last));
      peak = std::max(peak, DenseDecodeBytes(v.decode, c.decode_last));
    }
    return peak;
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
