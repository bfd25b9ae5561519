// Findings of the visual guide: sentences generated from this run's numbers, and expectations
// checked against them (private to src/guide).
//
// Every measured relation on the page (a slope, an ordering, a ratio, a crossover) goes through
// these helpers, so the text cannot say more than the numbers: each takes measured values with
// their spread (median and fastest/slowest repeat, or a slope ± two standard errors) and returns
// a guide::Finding whose status says whether the expectation holds, is contradicted beyond the
// spread ("expected …; measured … here"), or is not resolved in this run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/guide/charts.h"
#include "attnkit/guide/measure.h"
#include "attnkit/guide/page.h"

namespace attnkit::guide::detail {

// A measured value and the interval it is known to within: median and min–max of the repeats,
// a ratio with the interval of the two intervals, or a slope ± two standard errors.
struct Spread {
  double value = 0, lo = 0, hi = 0;
  bool finite() const;
};
Spread Exact(double v);  // a value with no spread (counted, not timed)
// The median and min–max of repeated values (e.g. over feature draws); values non-empty.
Spread SpreadOf(std::vector<double> values);
// Point i of a series (lo = hi = y when the series has no spread).
Spread At(const Series& s, size_t i);
// The point of `s` at x; false when s has none.
bool FindAt(const Series& s, double x, Spread* out);
// a / b, lo = a.lo / b.hi, hi = a.hi / b.lo.
Spread Ratio(const Spread& a, const Spread& b);

// An empty series (no spread yet), and a timed point appended with its spread (times × scale).
Series NamedSeries(const std::string& name, bool show_fit = true);
void AddPoint(Series& s, double x, const Timing& t, double scale = 1e3);

// A series of milliseconds against tokens from a sweep, with each point's spread.
Series TimedSeries(const std::string& name, const std::vector<SweepPoint>& points,
                   double fit_from = 1024);

// Verdict of an expectation "the value lies in [expect_lo, expect_hi]": contradicted when the
// whole interval lies outside; holds when the whole interval lies inside, or the value does and
// the interval is at most max_width wide; otherwise not resolved.
Finding::Status Judge(const Spread& measured, double expect_lo, double expect_hi,
                      double max_width = 0);

// The slope of `s` (log-log, from s.fit_min_x) as a Spread of ± 2 standard errors; false with
// fewer than kMinFitPoints points.
bool SlopeOf(const Series& s, Spread* slope, LogLogFit* fit = nullptr);
std::string SlopeText(const Series& s);  // "slope 1.96 ± 0.04 over 1k–16k" or "… too few points"

// "Expected <expectation>" for the fitted slope of `s` in [lo, hi].
// what: "causal prefill time of GQA 8q/2kv"; expectation: "quadratic growth (slope 1.8–2.2)".
Finding SlopeFinding(const std::string& id, const std::string& what, const Series& s, double lo,
                     double hi, const std::string& expectation, const std::string& why = "");

// Expects value in [lo, hi] (e.g. a ratio); `measured` describes the value in words
// ("MHA/MQA time at 16k"), `unit_format` formats value, lo and hi (e.g. "%.2f×").
Finding RangeFinding(const std::string& id, const std::string& expectation,
                     const std::string& measured, const Spread& value, double lo, double hi,
                     const char* unit_format, const std::string& why = "", double max_width = 0);

// Expects a < b (both e.g. times in ms at one length): holds when a's slowest repeat beats b's
// fastest, contradicted when the reverse holds, else not resolved.
Finding LessFinding(const std::string& id, const std::string& expectation,
                    const std::string& a_name, const Spread& a, const std::string& b_name,
                    const Spread& b, const char* unit_format, const std::string& why = "");

// Where `a` is faster / slower than `b` (time series, common x only), resolved by the spreads:
// "DSA total against full causal: slower at 256–2k, not resolved at 4k, faster at 8k–16k".
// Status kMeasured, or kNotResolved when no length is resolved.
Finding CrossoverFinding(const std::string& id, const Series& a, const Series& b);

// A plain measured statement.
Finding Fact(const std::string& id, const std::string& text);

// Formats a Spread with a printf format for one number: "10.5 (10.1–11.0)".
std::string FormatSpread(const char* format, const Spread& s);

}  // namespace attnkit::guide::detail
