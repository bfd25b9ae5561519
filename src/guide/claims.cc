// Findings generated from the guide's measurements: verdicts of expectations against measured
// intervals, slopes with their uncertainty, orderings and crossovers.
#include "guide/claims.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "attnkit/core/error.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Sentence(const std::string& s) {
  if (s.empty()) return s;
  return s.back() == '.' ? s : s + ".";
}

std::string Because(const std::string& why) {
  if (why.empty()) return "";
  std::string s = Sentence(why);
  if (s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return " " + s;
}

std::string RangeText(double lo, double hi, const char* format) {
  return Fmt(format, lo) + "–" + Fmt(format, hi);
}

// The sentence for an expectation and its verdict.
std::string VerdictText(Finding::Status st, const std::string& expectation,
                        const std::string& measured, const std::string& why) {
  switch (st) {
    case Finding::Status::kHolds:
      return "Expected " + expectation + "; measured " + measured + ": holds.";
    case Finding::Status::kContradicted:
      return "Expected " + expectation + "; measured " + measured + " here." + Because(why);
    case Finding::Status::kNotResolved:
    case Finding::Status::kMeasured:
      break;
  }
  return "Expected " + expectation + "; measured " + measured +
         ": not resolved in this run (the spread of the repeats covers both outcomes)." +
         Because(why);
}

}  // namespace

bool Spread::finite() const {
  return std::isfinite(value) && std::isfinite(lo) && std::isfinite(hi) && lo <= hi;
}

Spread Exact(double v) { return {v, v, v}; }

Spread SpreadOf(std::vector<double> v) {
  Require(!v.empty(), "SpreadOf: no values");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return {median, v.front(), v.back()};
}

Spread At(const Series& s, size_t i) {
  Spread r{s.y.at(i), s.y.at(i), s.y.at(i)};
  if (s.y_lo.size() == s.y.size() && s.y_hi.size() == s.y.size()) {
    r.lo = std::min(s.y_lo[i], r.value);
    r.hi = std::max(s.y_hi[i], r.value);
  }
  return r;
}

bool FindAt(const Series& s, double x, Spread* out) {
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (s.x[i] == x) {
      *out = At(s, i);
      return true;
    }
  }
  return false;
}

Spread Ratio(const Spread& a, const Spread& b) {
  if (!(b.lo > 0) || !(b.value > 0)) return {kNaN, kNaN, kNaN};
  return {a.value / b.value, a.lo / b.hi, a.hi / b.lo};
}

Series NamedSeries(const std::string& name, bool show_fit) {
  Series s;
  s.name = name;
  s.show_fit = show_fit;
  return s;
}

void AddPoint(Series& s, double x, const Timing& t, double scale) {
  s.x.push_back(x);
  s.y.push_back(t.median * scale);
  s.y_lo.push_back(t.min * scale);
  s.y_hi.push_back(t.max * scale);
}

Series TimedSeries(const std::string& name, const std::vector<SweepPoint>& points,
                   double fit_from) {
  Series s = NamedSeries(name);
  for (const auto& p : points) {
    s.x.push_back(static_cast<double>(p.seqlen));
    s.y.push_back(p.seconds * 1e3);
    const bool spread = p.reps > 0 && p.seconds_min > 0;
    s.y_lo.push_back((spread ? p.seconds_min : p.seconds) * 1e3);
    s.y_hi.push_back((spread ? p.seconds_max : p.seconds) * 1e3);
  }
  s.fit_min_x = FitStart(s.x, fit_from);
  return s;
}

Finding::Status Judge(const Spread& m, double lo, double hi, double max_width) {
  if (!m.finite()) return Finding::Status::kNotResolved;
  if (m.hi < lo || m.lo > hi) return Finding::Status::kContradicted;
  if (m.lo >= lo && m.hi <= hi) return Finding::Status::kHolds;
  if (m.value >= lo && m.value <= hi && m.hi - m.lo <= max_width) return Finding::Status::kHolds;
  return Finding::Status::kNotResolved;
}

bool SlopeOf(const Series& s, Spread* slope, LogLogFit* fit_out) {
  const LogLogFit fit = FitSeries(s);
  if (fit_out) *fit_out = fit;
  if (fit.points < kMinFitPoints || !std::isfinite(fit.slope) || !std::isfinite(fit.slope_se))
    return false;
  *slope = {fit.slope, fit.slope - 2 * fit.slope_se, fit.slope + 2 * fit.slope_se};
  return true;
}

std::string SlopeText(const Series& s) {
  Spread sl;
  LogLogFit fit;
  if (!SlopeOf(s, &sl, &fit)) {
    return "no slope (" + std::to_string(fit.points) + " point" + (fit.points == 1 ? "" : "s") +
           " in the fitted range; a slope needs " + std::to_string(kMinFitPoints) + ")";
  }
  return "slope " + Fmt("%.2f", sl.value) + " ± " + Fmt("%.2f", sl.hi - sl.value) + " over " +
         FormatTokens(std::llround(fit.min_x)) + "–" + FormatTokens(std::llround(fit.max_x));
}

Finding SlopeFinding(const std::string& id, const std::string& what, const Series& s, double lo,
                     double hi, const std::string& expectation, const std::string& why) {
  Finding f;
  f.id = id;
  Spread sl;
  if (!SlopeOf(s, &sl)) {
    f.status = Finding::Status::kNotResolved;
    f.text = "Expected " + expectation + " for " + what + "; " + SlopeText(s) +
             ": not resolved in this run.";
    return f;
  }
  // A slope known to ± 0.3 or better decides a range like 0.8–1.2 when its value lies inside.
  f.status = Judge(sl, lo, hi, 0.6);
  f.text = VerdictText(f.status, expectation + " for " + what, SlopeText(s),
                       f.status == Finding::Status::kHolds ? "" : why);
  return f;
}

Finding RangeFinding(const std::string& id, const std::string& expectation,
                     const std::string& measured, const Spread& value, double lo, double hi,
                     const char* unit_format, const std::string& why, double max_width) {
  Finding f;
  f.id = id;
  f.status = Judge(value, lo, hi, max_width);
  const std::string m = measured + " " + FormatSpread(unit_format, value);
  f.text = VerdictText(f.status, expectation + " (" + RangeText(lo, hi, unit_format) + ")", m,
                       f.status == Finding::Status::kHolds ? "" : why);
  return f;
}

Finding LessFinding(const std::string& id, const std::string& expectation,
                    const std::string& a_name, const Spread& a, const std::string& b_name,
                    const Spread& b, const char* unit_format, const std::string& why) {
  Finding f;
  f.id = id;
  if (!a.finite() || !b.finite()) {
    f.status = Finding::Status::kNotResolved;
  } else if (a.hi < b.lo) {
    f.status = Finding::Status::kHolds;
  } else if (a.lo > b.hi) {
    f.status = Finding::Status::kContradicted;
  } else {
    f.status = Finding::Status::kNotResolved;
  }
  const std::string m =
      a_name + " " + FormatSpread(unit_format, a) + " against " + b_name + " " +
      FormatSpread(unit_format, b) +
      (b.value > 0 && a.value > 0 ? " (" + Fmt("%.2f", a.value / b.value) + "×)" : "");
  f.text = VerdictText(f.status, expectation, m, f.status == Finding::Status::kHolds ? "" : why);
  return f;
}

Finding CrossoverFinding(const std::string& id, const Series& a, const Series& b) {
  // Runs of consecutive common lengths with the same outcome.
  struct Run {
    std::string word;
    double from, to;
  };
  std::vector<Run> runs;
  int resolved = 0;
  double last_ratio = kNaN, last_x = 0;
  for (size_t i = 0; i < a.x.size(); ++i) {
    Spread sb;
    if (!FindAt(b, a.x[i], &sb)) continue;
    const Spread sa = At(a, i);
    std::string word = "not resolved";
    if (sa.hi < sb.lo) {
      word = "faster";
      ++resolved;
    } else if (sa.lo > sb.hi) {
      word = "slower";
      ++resolved;
    }
    if (!runs.empty() && runs.back().word == word) {
      runs.back().to = a.x[i];
    } else {
      runs.push_back({word, a.x[i], a.x[i]});
    }
    last_ratio = sb.value > 0 ? sa.value / sb.value : kNaN;
    last_x = a.x[i];
  }
  Finding f;
  f.id = id;
  if (runs.empty()) {
    f.status = Finding::Status::kNotResolved;
    f.text = a.name + " against " + b.name + ": no common length was measured in this run.";
    return f;
  }
  std::string text = a.name + " against " + b.name + ": ";
  for (size_t r = 0; r < runs.size(); ++r) {
    text += (r ? ", " : "") + runs[r].word + " at " +
            FormatTokens(static_cast<int64_t>(runs[r].from)) +
            (runs[r].to > runs[r].from ? "–" + FormatTokens(static_cast<int64_t>(runs[r].to)) : "");
  }
  if (std::isfinite(last_ratio)) {
    text += " (time ratio " + Fmt("%.2f", last_ratio) + "× at " +
            FormatTokens(static_cast<int64_t>(last_x)) + ")";
  }
  text += resolved == 0 ? ": not resolved in this run at any length." : ".";
  f.status = resolved == 0 ? Finding::Status::kNotResolved : Finding::Status::kMeasured;
  f.text = text;
  return f;
}

Finding Fact(const std::string& id, const std::string& text) {
  Finding f;
  f.id = id;
  f.status = Finding::Status::kMeasured;
  f.text = Sentence(text);
  return f;
}

std::string FormatSpread(const char* format, const Spread& s) {
  if (!s.finite()) return "(not measured)";
  if (s.hi - s.lo <= 1e-12 * std::max(1.0, std::abs(s.value))) return Fmt(format, s.value);
  return Fmt(format, s.value) + " (" + Fmt(format, s.lo) + "–" + Fmt(format, s.hi) + ")";
}

}  // namespace attnkit::guide::detail
