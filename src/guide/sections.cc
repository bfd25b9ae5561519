// The guide's section list (page order), sweep sizes, and the progress context.
#include "guide/sections.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "guide/claims.h"

namespace attnkit::guide::detail {

SweepConfig MakeSweepConfig(SweepSize size, int64_t max_seqlen, int threads) {
  SweepConfig c;
  c.size = size;
  c.threads = threads;
  switch (size) {
    case SweepSize::kSmoke:
      c.prefill_first = 128, c.prefill_last = 1024, c.decode_first = 256, c.decode_last = 4096;
      c.point_budget_seconds = 0.5;
      break;
    case SweepSize::kQuick:
      c.prefill_first = 256, c.prefill_last = 16384, c.decode_first = 1024, c.decode_last = 32768;
      // Every point runs at least three times (its spread is drawn), so a point predicted to
      // take over 0.7 s is skipped.
      c.point_budget_seconds = 0.7;
      break;
    case SweepSize::kFull:
      c.prefill_first = 256, c.prefill_last = 65536, c.decode_first = 1024, c.decode_last = 131072;
      c.point_budget_seconds = 40;
      break;
  }
  if (max_seqlen > 0) {
    c.prefill_last = max_seqlen;
    c.decode_last = max_seqlen;
    c.prefill_first = std::min(c.prefill_first, max_seqlen);
    c.decode_first = std::min(c.decode_first, max_seqlen);
  }
  return c;
}

std::string Fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

Series TimeSeries(const std::string& name, const std::vector<SweepPoint>& points) {
  return TimedSeries(name, points, 1024);
}

LineChartSpec SeqlenTimeChart(const std::string& title, const std::string& subtitle) {
  LineChartSpec spec;
  spec.title = title;
  spec.subtitle = subtitle;
  spec.x_title = "sequence length (tokens)";
  spec.y_title = "time (ms)";
  spec.log_x = spec.log_y = 1;
  return spec;
}

VariantSummary SummaryFromSeries(const std::string& variant, const std::string& section,
                                 const Series& series) {
  VariantSummary row;
  row.variant = variant;
  row.section = section;
  const LogLogFit fit = FitSeries(series);
  if (fit.points >= kMinFitPoints && std::isfinite(fit.slope_se)) {
    row.time_slope = fit.slope;
    row.time_slope_2se = 2 * fit.slope_se;
  }
  if (!series.x.empty()) {
    row.longest_seqlen = static_cast<int64_t>(*std::max_element(series.x.begin(), series.x.end()));
    const double from = series.fit_min_x > 0 ? series.fit_min_x : series.x.front();
    row.slope_range =
        FormatTokens(static_cast<int64_t>(from)) + "–" + FormatTokens(row.longest_seqlen);
  }
  return row;
}

void Context::Step(const std::string& what) {
  ++done_;
  if (progress_) progress_(std::min(done_, total_), total_, what);
}

const std::vector<SectionSpec>& Sections() {
  static const std::vector<SectionSpec> sections = {
      HeadsSection(),  MlaSection(),     WindowSection(),  SparseSection(),
      DsaSection(),    GatedSection(),   LinearSection(),  DeltaSection(),
      HybridSection(), QualitySection(), CompareSection(), ClaimsSection()};
  return sections;
}

}  // namespace attnkit::guide::detail
