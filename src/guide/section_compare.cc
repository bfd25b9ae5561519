// Guide section "compare": every variant measured in this run side by side (complexity slope,
// cache bytes per token, longest sequence handled, error against exact attention).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/guide/charts.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

Section Build(Context& ctx) {
  Section sec;
  sec.name = "compare";
  sec.comparison = true;
  sec.title = "Comparison: every variant measured in this run";
  sec.intro_html =
      "<p>One row per variant measured above. The slope is the fitted exponent of prefill time "
      "against sequence length on log-log axes (2 = quadratic, 1 = linear); the cache column is "
      "what one layer keeps per token; the error column compares the fast kernel with exact "
      "attention computed by the double-precision reference on the same input (for exact "
      "variants it is rounding only).</p>";
  Table t;
  t.id = "compare-variants";
  t.title = "Variants measured in this run";
  t.provenance = Provenance::kMeasured;
  t.source =
      "collected from the sections above (their sweeps, KvCache objects and reference "
      "comparisons), this run";
  t.header = {
      "variant",    "time slope (log-log)", "fitted over",        "cache bytes / token / layer",
      "cache note", "longest seqlen run",   "rel. error vs exact"};
  BarChartSpec bars;
  bars.title = "Measured prefill complexity: fitted log-log slope of time against sequence length";
  bars.subtitle = "2 = quadratic (exact attention), 1 = linear in sequence length";
  bars.x_title = "variant";
  bars.y_title = "slope (dimensionless)";
  bars.group_title = "section";
  bars.y_format = ".3f";
  bars.log_y = 0;
  for (const auto& v : ctx.variants()) {
    t.rows.push_back({v.variant, v.time_slope >= 0 ? Fmt("%.2f", v.time_slope) : "—",
                      v.slope_range.empty() ? "—" : v.slope_range,
                      v.bytes_per_token >= 0 ? Fmt("%.0f", v.bytes_per_token) : "—", v.bytes_note,
                      v.longest_seqlen > 0 ? FormatTokens(v.longest_seqlen) : "—",
                      v.error_vs_exact >= 0 ? Fmt("%.2e", v.error_vs_exact) : "—"});
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
