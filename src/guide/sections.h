// The guide's section registry and the context section builders run in (private to src/guide).
//
// Each section is one file src/guide/section_<name>.cc defining a SectionSpec; sections.cc lists
// them in page order (an explicit list, because a static library drops unreferenced objects).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "attnkit/guide/charts.h"
#include "attnkit/guide/guide.h"
#include "attnkit/guide/measure.h"
#include "attnkit/guide/page.h"

namespace attnkit::guide::detail {

// Sweep sizes derived from --smoke / --quick / --full and --max-seqlen.
struct SweepConfig {
  SweepSize size = SweepSize::kQuick;
  int64_t prefill_first = 256;      // shortest prefill sequence
  int64_t prefill_last = 16384;     // longest prefill sequence a sweep may try
  int64_t decode_first = 1024;      // shortest cached context for decode
  int64_t decode_last = 32768;      // longest cached context for decode
  double point_budget_seconds = 4;  // a sweep stops before a point predicted to take longer
  int threads = 1;
};
SweepConfig MakeSweepConfig(SweepSize size, int64_t max_seqlen, int threads);

class Context {
 public:
  Context(SweepConfig config, ProgressFn progress, int64_t total_steps)
      : config_(config), progress_(std::move(progress)), total_(total_steps) {}
  const SweepConfig& config() const { return config_; }
  // One planned measurement step is done (measured or skipped); `what` describes it.
  void Step(const std::string& what);
  int64_t done() const { return done_; }

  // Results shared between sections (e.g. the dense causal sweep), keyed by a description.
  std::map<std::string, std::vector<SweepPoint>>& memo() { return memo_; }
  // Rows for the comparison table, gathered from every section run so far.
  std::vector<VariantSummary>& variants() { return variants_; }

 private:
  SweepConfig config_;
  ProgressFn progress_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  std::map<std::string, std::vector<SweepPoint>> memo_;
  std::vector<VariantSummary> variants_;
};

struct SectionSpec {
  std::string name;
  std::string title;
  std::function<int64_t(const SweepConfig&)> steps;       // planned progress steps
  std::function<int64_t(const SweepConfig&)> peak_bytes;  // largest measurement's memory
  std::function<Section(Context&)> build;
};

// printf-style formatting of one number, e.g. Fmt("%.2f", 1.5).
std::string Fmt(const char* format, double value);

// A measured sweep as a chart series of milliseconds against tokens with each point's spread,
// fitted on log-log axes from 1024 tokens (or from the last three points when fewer reach that
// far).
Series TimeSeries(const std::string& name, const std::vector<SweepPoint>& points);

// A log-log chart of prefill time (ms) against sequence length (tokens).
LineChartSpec SeqlenTimeChart(const std::string& title, const std::string& subtitle);

// A comparison-table row with the slope, its range and the longest length of `series`.
VariantSummary SummaryFromSeries(const std::string& variant, const std::string& section,
                                 const Series& series);

// All sections of this build, in page order.
const std::vector<SectionSpec>& Sections();

// Section specs, one per file.
SectionSpec HeadsSection();
SectionSpec WindowSection();
SectionSpec MlaSection();
SectionSpec SparseSection();
SectionSpec DsaSection();
SectionSpec GatedSection();
SectionSpec LinearSection();
SectionSpec DeltaSection();
SectionSpec HybridSection();
SectionSpec QualitySection();
SectionSpec CompareSection();
SectionSpec ClaimsSection();

}  // namespace attnkit::guide::detail
