// Guide section "window": sliding-window and chunked-local attention, and local:global layer
// schedules. Diagrams are sampled from CausalWindowMask / ChunkedLocalMask; the measurements
// show the kernel really skips the masked tiles (time against the unmasked-pair fraction) and
// that a ring-buffer cache stays bounded by the window.
#include <algorithm>
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

const DenseShape kShape{8, 2, 128};    // prefill shape (GQA, as most windowed models)
const DenseShape kDecode{32, 8, 128};  // decode shape

int64_t WindowFor(const SweepConfig& c) { return c.size == SweepSize::kSmoke ? 128 : 512; }

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  const int64_t w = WindowFor(c);
  Section sec;
  sec.name = "window";
  sec.title = "Sliding window, chunked local attention and local:global layer schedules";
  sec.intro_html =
      "<p>A sliding window lets each query see only the W most recent keys, itself included. "
      "Compute per token is then bounded by W instead of growing with the sequence, and the KV "
      "cache can be a ring buffer of W slots. Chunked local attention cuts the sequence into "
      "chunks and attends causally inside each chunk only. Both lose direct access to distant "
      "tokens, so models interleave local layers with a few full-attention (global) layers: a "
      "local:global schedule.</p><p>In attnkit a window is a mask object; the kernel asks it to "
      "classify each 64 × 64 tile and skips the empty ones, so the saved compute is real.</p>";
  sec.formula_html =
      "sliding window: allowed(q, k) &hArr; q &minus; W &lt; k &le; q &nbsp;&nbsp; cost "
      "&asymp; N &middot; W &nbsp;&nbsp; cache = W slots<br>chunked local: allowed(q, k) &hArr; "
      "&lfloor;q / C&rfloor; = &lfloor;k / C&rfloor; and k &le; q";

  sec.models = ModelsWhere([](const models::ModelConfig& c) -> std::string {
    return c.Count(models::LayerKind::kSliding) + c.Count(models::LayerKind::kChunked) > 0
               ? c.Summary()
               : "";
  });
  sec.models_source = CatalogueSourceLine();

  const MaskPtr small_window = CausalWindowMask(8);
  const MaskPtr small_chunk = ChunkedLocalMask(8);
  MaskDiagramOptions mo;
  Figure f1;
  f1.id = "window-mask";
  f1.title = "Sliding window of 8 keys";
  f1.caption = "Each query row sees a band of 8 keys ending at itself.";
  f1.source = "CausalWindowMask(8) sampled with Mask::FillTile, 32 × 32 tokens";
  mo.title = "CausalWindowMask(8), 32 tokens";
  f1.svg = MaskDiagram(*small_window, 32, 32, mo);
  sec.figures.push_back(f1);
  Figure f2;
  f2.id = "window-chunked-mask";
  f2.title = "Chunked local attention, chunks of 8";
  f2.caption =
      "Causal inside each chunk, nothing across chunks: the first token of a chunk sees only "
      "itself.";
  f2.source = "ChunkedLocalMask(8) sampled with Mask::FillTile, 32 × 32 tokens";
  mo.title = "ChunkedLocalMask(8), 32 tokens";
  mo.fill = "#4a9a5b";
  f2.svg = MaskDiagram(*small_chunk, 32, 32, mo);
  sec.figures.push_back(f2);

  const MaskPtr window = CausalWindowMask(w);
  const MaskPtr chunked = ChunkedLocalMask(w);
  const MaskPtr causal = CausalMask();
  Figure f3;
  f3.id = "window-tiles";
  f3.title = "Tiles the kernel computes for a " + std::to_string(w) + "-token window";
  f3.caption = "Only a diagonal band of tiles is computed; everything else is skipped.";
  f3.source = "CausalWindowMask(" + std::to_string(w) +
              ").Classify over 64 × 64-token tiles of a "
              "4096-token prefill";
  TileCounts counts;
  f3.svg =
      TileMapDiagram(*window, 4096, 64,
                     "CausalWindowMask(" + std::to_string(w) + "), 4096 tokens: tiles", &counts);
  sec.figures.push_back(f3);

  // Local:global schedule diagram: 5 windowed layers per full layer, 12 layers.
  Figure f4;
  f4.id = "window-schedule";
  f4.title = "A local:global layer schedule (5 : 1)";
  f4.caption =
      "Five windowed layers for every full-attention layer; the cache chart below uses "
      "this schedule.";
  f4.source = "the per-layer window list {W, W, W, W, W, 0} × 2 that the cache chart below builds";
  std::vector<LayerCell> strip;
  for (int i = 0; i < 12; ++i) {
    strip.push_back(i % 6 == 5 ? LayerCell{"full attention", "#c0504d"}
                               : LayerCell{"sliding window " + std::to_string(w), "#3b6fb6"});
  }
  f4.svg = LayerStripDiagram(strip, "Layer schedule, 12 layers, 5 local : 1 global");
  sec.figures.push_back(f4);

  // Real schedules, drawn from the catalogue's configs.
  for (const char* name : {"gemma-3-27b", "gpt-oss-120b", "llama-4-scout"}) {
    Figure strip;
    if (ModelStripFigure(name, std::string("window-strip-") + name, &strip)) {
      sec.figures.push_back(strip);
    }
  }

  // Measured prefill: causal vs window vs chunked.
  const auto causal_pts = SharedCausalSweep(ctx);
  const std::string wl = "window " + std::to_string(w);
  const std::string cl = "chunked " + std::to_string(w);
  const auto window_pts = DensePrefillSweep(ctx, "dense-" + wl, wl, kShape, window);
  const auto chunk_pts = DensePrefillSweep(ctx, "dense-" + cl, cl, kShape, chunked);
  LineChartSpec tc =
      SeqlenTimeChart("Prefill time: full causal against a " + std::to_string(w) + "-token window",
                      "batch 1, 8 query heads over 2 KV heads, head_dim 128, f32, " +
                          std::to_string(c.threads) + " threads; dashed: log-log fit");
  Table skip;
  skip.id = "window-skipping";
  skip.title = "Is the skipping real? Window time against the causal time scaled by density";
  skip.provenance = Provenance::kMeasured;
  skip.source = "DenseForward with DenseStats counters; density from MaskDensity; this run";
  skip.header = {"seqlen",    "window density", "tiles skipped",
                 "causal ms", "window ms",      "predicted ms (causal × density ratio)",
                 "efficiency"};
  double best_eff_seqlen = 0, eff_at_longest = -1;
  auto add = [&](const std::string& name, const std::vector<SweepPoint>& pts) {
    Series s = TimedSeries(name, pts);
    tc.series.push_back(s);
    return s;
  };
  WindowMeasured measured;
  measured.window = w;
  const Series cs = add("causal", causal_pts);
  const Series ws = add(wl, window_pts);
  const Series chs = add(cl, chunk_pts);
  measured.causal = cs;
  measured.window_prefill = ws;
  measured.chunked = chs;
  for (const auto& wp : window_pts) {
    for (const auto& cp : causal_pts) {
      if (cp.seqlen != wp.seqlen) continue;
      const double dw = MaskDensity(window.get(), wp.seqlen, wp.seqlen);
      const double dc = MaskDensity(causal.get(), wp.seqlen, wp.seqlen);
      const double predicted = cp.seconds * dw / dc;
      const double eff = predicted / wp.seconds;
      skip.rows.push_back({FormatTokens(wp.seqlen), Fmt("%.3f", dw), Fmt("%.1f%%", 100 * wp.value),
                           Fmt("%.3f", cp.seconds * 1e3), Fmt("%.3f", wp.seconds * 1e3),
                           Fmt("%.3f", predicted * 1e3), Fmt("%.2f", eff)});
      best_eff_seqlen = static_cast<double>(wp.seqlen);
      eff_at_longest = eff;
    }
  }
  Figure f5;
  f5.kind = Figure::Kind::kChart;
  f5.id = "window-prefill-time";
  f5.title = tc.title;
  f5.caption =
      "A window keeps about N · W pairs where causal attention keeps N² / 2, so the windowed "
      "and chunked kernels should grow linearly once the sequence is several windows long.";
  f5.provenance = Provenance::kMeasured;
  f5.source = "DenseForward with CausalMask / CausalWindowMask / ChunkedLocalMask, this run";
  f5.vega_lite = LineChart(tc);
  sec.figures.push_back(f5);
  sec.tables.push_back(skip);
  if (eff_at_longest > 0) {
    sec.findings.push_back(
        Fact("window.efficiency", "At " + FormatTokens(static_cast<int64_t>(best_eff_seqlen)) +
                                      " tokens the windowed prefill ran at " +
                                      Fmt("%.2f", eff_at_longest) +
                                      " of the speed the causal run predicts for its pair count "
                                      "(1.00 = the skipped tiles cost nothing; medians)"));
  }

  // Measured cache: contiguous vs ring buffer, and a 5:1 local:global stack of 12 layers.
  LineChartSpec cache;
  cache.title = "KV cache memory against context: full, ring buffer, 5:1 stack";
  cache.subtitle =
      "per sequence, 8 KV heads × head_dim 128, f32; bytes reported by the KvCache objects";
  cache.x_title = "context (tokens)";
  cache.log_x = cache.log_y = 1;  // scaling plot: log-log
  cache.y_title = "KV cache (MiB)";
  cache.y_format = ".5~g";
  Series full = NamedSeries("full attention, 1 layer", false);
  Series ring =
      NamedSeries("sliding window " + std::to_string(w) + ", 1 layer (ring buffer)", false);
  Series stack = NamedSeries("12-layer 5:1 local:global stack", false);
  Series stack_full = NamedSeries("12 full-attention layers", false);
  for (int64_t ctxlen = 1024; ctxlen <= std::max<int64_t>(c.decode_last, 4096); ctxlen *= 2) {
    // Contiguous caches allocate their capacity; the ring buffer only its window.
    KvCache<float> f(1, kDecode.num_heads_kv, kDecode.head_dim, kDecode.head_dim, ctxlen);
    KvCache<float> r(1, kDecode.num_heads_kv, kDecode.head_dim, kDecode.head_dim, ctxlen, w, 1);
    const double fm = static_cast<double>(f.bytes()) / (1 << 20);
    const double rm = static_cast<double>(r.bytes()) / (1 << 20);
    full.x.push_back(static_cast<double>(ctxlen));
    full.y.push_back(fm);
    ring.x.push_back(static_cast<double>(ctxlen));
    ring.y.push_back(rm);
    stack.x.push_back(static_cast<double>(ctxlen));
    stack.y.push_back(10 * rm + 2 * fm);
    stack_full.x.push_back(static_cast<double>(ctxlen));
    stack_full.y.push_back(12 * fm);
  }
  cache.series = {stack_full, stack, full, ring};
  Figure f6;
  f6.kind = Figure::Kind::kChart;
  f6.id = "window-cache";
  f6.title = cache.title;
  f6.caption =
      "Bytes the cache objects allocate (exact, not timed): a windowed layer's ring buffer "
      "holds at most W tokens.";
  if (!stack.y.empty()) {
    f6.findings.push_back(Fact("window.stack-share",
                               "At " + FormatTokens(static_cast<int64_t>(stack.x.back())) +
                                   " tokens the 5:1 stack holds " +
                                   Fmt("%.1f", 100 * stack.y.back() / stack_full.y.back()) +
                                   " % of the all-global stack's cache; the ring buffer holds " +
                                   Fmt("%.3g", ring.y.back()) + " MiB at every context from " +
                                   FormatTokens(static_cast<int64_t>(ring.x.front()))));
  }
  f6.provenance = Provenance::kMeasured;
  f6.source =
      "KvCache<float>(…, capacity = context) and KvCache<float>(…, window) objects built "
      "at each context; stack = 10 ring buffers + 2 full caches";
  f6.vega_lite = LineChart(cache);
  sec.figures.push_back(f6);

  // Decode: flat in context for a ring buffer.
  const std::string dl = "window " + std::to_string(w) + " (ring buffer)";
  const auto ring_dec =
      DenseDecodeSweep(ctx, "dense-decode-ring-" + std::to_string(w), dl, kDecode, w);
  const auto full_dec =
      DenseDecodeSweep(ctx, "dense-decode-GQA 32q/8kv", "GQA 32q/8kv", kDecode, 0);
  LineChartSpec dc;
  dc.title = "Decode time per token: full cache against a ring buffer";
  dc.subtitle = "1 new token, 32 query heads over 8 KV heads, head_dim 128, f32";
  dc.x_title = "cached context (tokens)";
  dc.log_x = dc.log_y = 1;  // scaling plot: log-log
  dc.y_title = "time per token (ms)";
  measured.full_decode = TimedSeries("full (GQA 32q/8kv)", full_dec);
  measured.ring_decode = TimedSeries(dl, ring_dec);
  dc.series = {measured.full_decode, measured.ring_decode};
  Figure f7;
  f7.kind = Figure::Kind::kChart;
  f7.id = "window-decode-time";
  f7.title = dc.title;
  f7.caption =
      "With a window, decode reads at most W cached tokens whatever the context; the full "
      "cache is read whole at every step.";
  f7.provenance = Provenance::kMeasured;
  f7.source =
      "DenseDecode over KvCache<float> (contiguous, and ring buffer of the window), this run";
  f7.vega_lite = LineChart(dc);
  sec.figures.push_back(f7);

  for (const auto& [name, series, pts, mask] :
       {std::tuple{wl, ws, window_pts, window}, std::tuple{cl, chs, chunk_pts, chunked}}) {
    VariantSummary row = SummaryFromSeries(name + " (GQA 8q/2kv)", sec.name, series);
    KvCache<bf16> r(1, kShape.num_heads_kv, kShape.head_dim, kShape.head_dim, 0, w, 1);
    row.bytes_per_token = static_cast<double>(r.bytes()) / static_cast<double>(r.slots());
    row.bytes_note = "bf16, per layer, at most " + std::to_string(w) + " tokens held (ring buffer)";
    row.error_vs_exact = DenseErrorVsReference(kShape, 200, mask);
    ctx.variants().push_back(row);
    sec.variants.push_back(row);
  }
  AttachFindings(sec, WindowFindings(measured));
  return sec;
}

}  // namespace

SectionSpec WindowSection() {
  SectionSpec s;
  s.name = "window";
  s.title = "Sliding window / chunked local / local:global";
  s.steps = [](const SweepConfig& c) { return 3 * PrefillSteps(c) + 2 * DecodeSteps(c); };
  s.peak_bytes = [](const SweepConfig& c) {
    return std::max(DensePrefillBytes(kShape, c.prefill_last),
                    DenseDecodeBytes(kDecode, c.decode_last));
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
