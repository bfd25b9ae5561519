// Guide section "sparse": static sparse patterns (Sparse Transformer strided and fixed,
// Longformer, BigBird) as mask objects of the dense engine. Diagrams are sampled from the very
// pattern objects the kernel runs (attnkit::MakePattern); the measurements show the kernel's
// time following each pattern's density.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/bench/sparse.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/masks/draw.h"
#include "attnkit/masks/sparse.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

const DenseShape kShape{8, 2, 128};
const char* kPatterns[] = {"strided", "fixed", "longformer", "bigbird"};

std::string Describe(const PatternSpec& s) {
  const PatternSpec d = DefaultPatternSpec(s);
  if (d.name == "strided")
    return "stride " + std::to_string(*d.stride) + ", block " + std::to_string(*d.block);
  if (d.name == "fixed")
    return "block " + std::to_string(*d.block) + ", summary " + std::to_string(*d.summary);
  if (d.name == "longformer") {
    return "window " + std::to_string(*d.window) + ", dilation " + std::to_string(*d.dilation) +
           " × " + std::to_string(*d.dilated_window) + ", global token 0";
  }
  if (d.name == "bigbird") {
    return "block " + std::to_string(*d.block) + ", window ±" + std::to_string(*d.window_blocks) +
           ", " + std::to_string(*d.global_blocks) + " global, " +
           std::to_string(*d.random_blocks) + " random blocks (seed " + std::to_string(d.seed) +
           ")";
  }
  return d.name;
}

int64_t ProbeSeqlen(const SweepConfig& c) { return c.size == SweepSize::kSmoke ? 1024 : 4096; }

// The retrieval probe (bench/sparse.h): a key planted at distance D from the last query; can each
// method still find it?
void AddRetrievalProbe(Context& ctx, Section& sec) {
  bench::ProbeConfig pc;
  pc.seqlen = ProbeSeqlen(ctx.config());
  const bench::ProbeResult r = bench::RetrievalProbe(pc);
  ctx.Step("retrieval probe");
  HeatmapSpec h;
  h.title = "Retrieval probe: can the last query still find a key planted D tokens back?";
  h.subtitle = std::to_string(pc.seqlen) + " tokens, head_dim " + std::to_string(pc.head_dim) +
               "; window " + std::to_string(pc.window) + ", DSA top-" + std::to_string(pc.top_k) +
               "; retrieved = output cosine with the planted value > 0.9";
  h.x_title = "distance D (tokens)";
  h.y_title = "method";
  h.status_title = "result";
  h.statuses = {"retrieved", "visible, not retrieved", "not visible"};
  h.colors = {"#4a9a5b", "#e0b040", "#d9d9d9"};
  int64_t window_miss = 0;
  for (const auto& row : r.rows) {
    Cell c;
    c.row = row.method;
    c.column = FormatTokens(row.distance);
    c.status = row.retrieved ? "retrieved" : row.visible ? "visible, not retrieved" : "not visible";
    c.detail = "cosine " + Fmt("%.3f", row.cosine) +
               (row.indexer_rank >= 0 ? ", indexer rank " + std::to_string(row.indexer_rank) : "") +
               " — " + row.description;
    if (row.method == "window" && !row.retrieved) ++window_miss;
    h.cells.push_back(c);
  }
  Figure f;
  f.kind = Figure::Kind::kChart;
  f.id = "sparse-retrieval-probe";
  f.title = "What each pattern can still see";
  f.caption =
      "Green: the output recovered the planted value; yellow: the key was visible but not "
      "recovered; grey: the method never looks at that pair. A window can only see within "
      "its window, a static pattern only where its fixed pairs reach, DSA wherever its "
      "indexer ranks the planted key in its top-k. Hover a cell for the cosine.";
  f.provenance = Provenance::kMeasured;
  f.source =
      "bench::RetrievalProbe (seeded, exact): DenseForward with each mask, DsaSelect + "
      "GatherForward for DSA; this run";
  f.vega_lite = HeatmapChart(h);
  f.findings.push_back(Fact("sparse.probe-window", "The sliding window missed the planted key at " +
                                                       std::to_string(window_miss) + " of the " +
                                                       std::to_string(r.config.distances.size()) +
                                                       " distances tried (its window is " +
                                                       std::to_string(pc.window) + " tokens)"));
  sec.figures.push_back(f);
}

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  Section sec;
  sec.name = "sparse";
  sec.title = "Static sparse patterns: strided, fixed, Longformer, BigBird";
  sec.intro_html =
      "<p>Static sparse attention keeps a fixed subset of the causal pairs, chosen so that any "
      "token can still reach any earlier one in a few hops: the Sparse Transformer's strided "
      "pattern (a local band plus every s-th token) and fixed pattern (the own block plus "
      "summary positions of earlier blocks), Longformer's window plus dilated taps plus global "
      "tokens, and BigBird's window, global and random blocks. They were the first answer to the "
      "quadratic cost; today's models mostly use sliding windows and learned selection "
      "instead.</p><p>In attnkit each pattern is a mask object: the dense kernel skips the tiles "
      "it leaves empty, so time follows the density.</p>";
  sec.formula_html =
      "strided: k &le; q and (q &minus; k &lt; s or (q &minus; k) mod s = 0) &nbsp;&nbsp; fixed: "
      "k &le; q and (&lfloor;k/l&rfloor; = &lfloor;q/l&rfloor; or k mod l &ge; l &minus; c)"
      "<br>cost &asymp; density &times; N<sup>2</sup>/2 &nbsp; (density &asymp; 1/&radic;N for "
      "strided and fixed with s, l &asymp; &radic;N)";

  const int64_t n_small = 64;
  for (const char* name : kPatterns) {
    PatternSpec spec;
    spec.name = name;
    spec.seqlen = n_small;
    const MaskPtr mask = MakePattern(spec);
    const MaskPtr causal = CausalMask();
    MaskDiagramOptions mo;
    mo.title = std::string(name) + " (" + Describe(spec) + "), 64 tokens";
    mo.background = causal.get();
    mo.background_fill = "#f6e3cf";
    mo.legend = "kept pairs";
    mo.background_legend = "causal pairs left out";
    if (std::string(name) == "longformer") mo.highlight_keys = {0};
    Figure f;
    f.id = std::string("sparse-") + name;
    f.title = std::string("The ") + name + " pattern";
    f.caption = "Blue: pairs the pattern keeps; light orange: causal pairs it drops.";
    f.source =
        "MakePattern({\"" + std::string(name) + "\", seqlen 64}) sampled with Mask::FillTile";
    f.svg = MaskDiagram(*mask, n_small, n_small, mo);
    sec.figures.push_back(f);
  }
  {  // The same BigBird pattern at the scale the kernel runs it, from masks/draw.h.
    PatternSpec spec;
    spec.name = "bigbird";
    spec.seqlen = 4096;
    const MaskPtr mask = MakePattern(spec);
    Figure f;
    f.id = "sparse-bigbird-4k";
    MaskGrid grid = SampleMask(mask.get(), 4096, 4096, 64);
    grid.description = "bigbird (" + Describe(spec) + "), 4096 tokens";
    f.title = "BigBird at 4096 tokens";
    f.caption = "At kernel scale the pattern is whole blocks (" + Describe(spec) +
                "): the diagonal band, the global first blocks and the seeded random blocks; "
                "each cell of the picture is " +
                std::to_string(grid.cell_q) + " × " + std::to_string(grid.cell_kv) + " pairs.";
    f.source = "MaskSvg(SampleMask(MakePattern({\"bigbird\", 4096}), 4096, 4096)) (masks/draw.h)";
    f.svg = MaskSvg(grid, 360);
    sec.figures.push_back(f);
  }

  // Measured: time against seqlen for each pattern, beside dense causal.
  const MaskPtr causal = CausalMask();
  const auto dense = SharedCausalSweep(ctx);
  LineChartSpec tc = SeqlenTimeChart(
      "Prefill time of the sparse patterns against full causal attention",
      "patterns with their default parameters at each length (block forms of 64 tokens "
      "above 512); batch 1, 8 q heads over 2 KV heads, head_dim 128, " +
          std::to_string(c.threads) + " threads");
  Series ds = TimedSeries("full causal", dense);
  tc.series.push_back(ds);
  SparseMeasured measured;
  measured.causal = ds;
  Table eff;
  eff.id = "sparse-efficiency";
  eff.title = "Does the time follow the density? (longest length both the pattern and causal ran)";
  eff.provenance = Provenance::kMeasured;
  eff.source =
      "DenseForward with each pattern mask and with CausalMask; density from MaskDensity; "
      "efficiency = causal time × (density / causal density) / pattern time";
  eff.header = {"pattern",       "parameters", "seqlen",       "density",
                "tiles skipped", "time ms",    "predicted ms", "efficiency"};
  for (const char* name : kPatterns) {
    // Each length gets its own pattern object (the defaults scale with the length).
    std::vector<SweepPoint> pts;
    SweepOptions so;
    so.first = std::max<int64_t>(c.prefill_first, 1024);
    so.last = std::max(so.first, c.prefill_last);
    so.point_budget_seconds = c.point_budget_seconds;
    auto measure = [&](int64_t n) {
      PatternSpec spec;
      spec.name = name;
      spec.seqlen = n;
      const MaskPtr mask = MakePattern(spec);
      const std::string key = std::string("dense-") + name + "-" + std::to_string(n);
      DenseShape sh = kShape;
      // One point through the shared sweep helper: first = last = n.
      SweepConfig single = ctx.config();
      single.prefill_first = single.prefill_last = n;
      Context inner(single, nullptr, 0);
      auto r = DensePrefillSweep(inner, key, name, sh, mask);
      SweepPoint p = r.empty() ? SweepPoint{} : r.front();
      p.seqlen = n;
      return p;
    };
    pts = SeqlenSweep(
        so, measure,
        [&](const SweepPoint& p) { ctx.Step(std::string(name) + " " + FormatTokens(p.seqlen)); },
        [&](int64_t n) {
          ctx.Step(std::string(name) + " " + FormatTokens(n) + " skipped (time budget)");
        });
    Series s = TimedSeries(name, pts);
    tc.series.push_back(s);
    measured.patterns.push_back(s);
    Series pairs = NamedSeries(name, false);
    for (const auto& p : pts) {
      PatternSpec spec;
      spec.name = name;
      spec.seqlen = p.seqlen;
      const MaskPtr mask = MakePattern(spec);
      const double n = static_cast<double>(p.seqlen);
      pairs.x.push_back(n);
      pairs.y.push_back(MaskDensity(mask.get(), p.seqlen, p.seqlen) * n * n);
    }
    measured.pattern_pairs.push_back(pairs);
    VariantSummary row = SummaryFromSeries(std::string(name) + " (GQA 8q/2kv)", sec.name, s);
    row.bytes_note = "as full attention: the KV cache keeps every token";
    row.bytes_per_token = 2.0 * kShape.num_heads_kv * kShape.head_dim * 2;  // bf16, per layer
    if (!pts.empty()) {
      // The longest length measured for both this pattern and full causal attention (the
      // prediction needs both), else the pattern's longest.
      SweepPoint last = pts.back();
      for (auto it = pts.rbegin(); it != pts.rend(); ++it) {
        const bool in_dense = std::any_of(dense.begin(), dense.end(), [&](const SweepPoint& d) {
          return d.seqlen == it->seqlen;
        });
        if (in_dense) {
          last = *it;
          break;
        }
      }
      PatternSpec spec;
      spec.name = name;
      spec.seqlen = last.seqlen;
      const MaskPtr mask = MakePattern(spec);
      const double density = MaskDensity(mask.get(), last.seqlen, last.seqlen);
      const double cd = MaskDensity(causal.get(), last.seqlen, last.seqlen);
      std::vector<std::string> r = {name,
                                    Describe(spec),
                                    FormatTokens(last.seqlen),
                                    Fmt("%.3f", density),
                                    Fmt("%.1f%%", 100 * last.value),
                                    Fmt("%.2f", last.seconds * 1e3),
                                    "—",
                                    "—"};
      for (const auto& dp : dense) {
        if (dp.seqlen == last.seqlen) {
          const double predicted = dp.seconds * density / cd;
          r[6] = Fmt("%.2f", predicted * 1e3);
          r[7] = Fmt("%.2f", predicted / last.seconds);
        }
      }
      eff.rows.push_back(r);
      PatternSpec small;
      small.name = name;
      small.seqlen = 200;
      row.error_vs_exact = DenseErrorVsReference(kShape, 200, MakePattern(small));
    }
    ctx.variants().push_back(row);
    sec.variants.push_back(row);
  }
  Figure tf;
  tf.kind = Figure::Kind::kChart;
  tf.id = "sparse-prefill-time";
  tf.title = tc.title;
  tf.caption =
      "Each pattern uses its default parameters at each length: strided and fixed grow their "
      "stride and block like √N (about N^1.5 pairs), Longformer's default window is N/32 (so its "
      "pairs stay a fixed fraction of N²), BigBird's blocks are fixed (pairs linear in N). The "
      "findings compare each time slope with the slope of the pair count of the same mask "
      "objects.";
  tf.provenance = Provenance::kMeasured;
  tf.source = "DenseForward with MakePattern masks and with CausalMask, this run";
  tf.vega_lite = LineChart(tc);
  sec.figures.push_back(tf);
  sec.tables.push_back(eff);
  AttachFindings(sec, SparseFindings(measured));
  AddRetrievalProbe(ctx, sec);
  sec.notes.push_back(
      "The error column of the comparison compares attnkit's kernel with its own "
      "double-precision reference under the same pattern (rounding only): a sparse "
      "pattern computes a different function than full attention, whose distance "
      "from full attention depends on the data.");
  return sec;
}

}  // namespace

SectionSpec SparseSection() {
  SectionSpec s;
  s.name = "sparse";
  s.title = "Static sparse patterns";
  s.steps = [](const SweepConfig& c) {
    return 1 + PrefillSteps(c) +
           4 * SweepPlannedPoints(
                   std::max<int64_t>(c.prefill_first, 1024),
                   std::max<int64_t>(std::max<int64_t>(c.prefill_first, 1024), c.prefill_last));
  };
  s.peak_bytes = [](const SweepConfig& c) { return DensePrefillBytes(kShape, c.prefill_last); };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
