// Vega-Lite spec builders for the guide's charts (measured series → JSON), and the log-log fit.
#include "attnkit/guide/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "attnkit/core/error.h"
#include "nlohmann/json.hpp"

namespace attnkit::guide {
namespace {

using nlohmann::json;

constexpr const char* kSchema = "https://vega.github.io/schema/vega-lite/v6.json";

bool SpansDecades(const std::vector<double>& values) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (double v : values) {
    if (!(v > 0)) return false;  // log scales need positive data
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return !values.empty() && hi / lo >= 30.0;
}

// Splits `text` at spaces into lines of at most `max_chars` characters (a long word stays whole).
json WrapLines(const std::string& text, size_t max_chars) {
  std::vector<std::string> lines;
  std::string line, word;
  auto flush_word = [&] {
    if (word.empty()) return;
    if (!line.empty() && line.size() + 1 + word.size() > max_chars) {
      lines.push_back(line);
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    word.clear();
  };
  for (char ch : text) {
    if (ch == ' ') {
      flush_word();
    } else {
      word += ch;
    }
  }
  flush_word();
  if (!line.empty()) lines.push_back(line);
  if (lines.size() == 1) return lines[0];
  return lines;
}

// Every chart's frame. `width` is the whole chart's width, axes, legend and title included
// (autosize "fit-x"); the page redraws each chart at its card's width and re-wraps the title
// there, so these widths only shape the standalone figures/<id>.vl.json and .svg files. Titles
// and subtitles are wrapped (Vega draws a long title on one line, wider than the chart).
json Base(const std::string& title, const std::string& subtitle, int width = 560) {
  json spec = {{"$schema", kSchema},
               {"width", width},
               {"height", 270},
               {"autosize", {{"type", "fit-x"}, {"contains", "padding"}}},
               {"background", "#ffffff"},
               {"config",
                {{"font", "Helvetica, Arial, sans-serif"},
                 {"legend", {{"labelLimit", 250}, {"orient", "bottom"}, {"columns", 2}}},
                 {"axis",
                  {{"labelFontSize", 11},
                   {"titleFontSize", 12},
                   {"labelOverlap", "greedy"},
                   {"labelSeparation", 4}}},
                 // The first and last labels of a continuous x axis sit inside the plot's width
                 // and a label that would stick out beyond it is hidden.
                 {"axisX", {{"labelFlush", true}, {"labelBound", true}}}}}};
  // About 7.5 px per character of the 14 px bold title, 5.8 px per character of the subtitle.
  const auto chars = [&](double px) { return static_cast<size_t>((width - 10) / px); };
  spec["title"] = {{"text", WrapLines(title, chars(7.5))},
                   {"anchor", "start"},
                   {"fontSize", 14},
                   {"subtitleFontSize", 11}};
  if (!subtitle.empty()) spec["title"]["subtitle"] = WrapLines(subtitle, chars(5.8));
  return spec;
}

// Axis ticks of a token axis over [lo, hi]: powers of two on a log scale (every second or
// fourth one when there are many), multiples of a power of two on a linear one, so that every
// label reads as 512, 1k, 1.5k, 32k or 1M. Returns the domain the ticks span and the values.
struct TokenTicks {
  double domain_lo = 0, domain_hi = 0;
  std::vector<double> values;
};
TokenTicks TokenAxisTicks(double lo, double hi, bool log_scale) {
  TokenTicks t;
  if (log_scale && lo > 0 && hi >= 2 * lo) {
    t.domain_lo = std::exp2(std::floor(std::log2(lo)));
    t.domain_hi = std::exp2(std::ceil(std::log2(hi)));
    const int n = static_cast<int>(std::lround(std::log2(t.domain_hi / t.domain_lo))) + 1;
    const int every = n <= 9 ? 1 : n <= 17 ? 2 : 4;
    // Keep the largest power of two and step down from it.
    for (int i = n - 1; i >= 0; i -= every)
      t.values.insert(t.values.begin(), t.domain_lo * std::exp2(i));
    return t;
  }
  double step = 1;
  while (step * 6 < hi - lo) step *= 2;
  t.domain_lo = std::floor(lo / step) * step;
  t.domain_hi = std::max(t.domain_lo + step, std::ceil(hi / step) * step);
  for (double v = t.domain_lo; v <= t.domain_hi + 0.5 * step; v += step) t.values.push_back(v);
  return t;
}

std::string FormatSlope(const LogLogFit& f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f ± %.2f", f.slope, 2 * f.slope_se);
  return buf;
}

}  // namespace

LogLogFit FitLogLog(const std::vector<double>& x, const std::vector<double>& y, double min_x) {
  return FitLogLogSpread(x, y, {}, {}, min_x);
}

LogLogFit FitLogLogSpread(const std::vector<double>& x, const std::vector<double>& y,
                          const std::vector<double>& y_lo, const std::vector<double>& y_hi,
                          double min_x) {
  Require(x.size() == y.size(), "FitLogLog: x and y differ in length (", x.size(), " vs ", y.size(),
          ")");
  const bool spread = !y_lo.empty() || !y_hi.empty();
  Require(!spread || (y_lo.size() == y.size() && y_hi.size() == y.size()),
          "FitLogLogSpread: y_lo and y_hi must have one value per point");
  std::vector<double> lx, ly, half;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!(x[i] > 0 && y[i] > 0) || x[i] < min_x) continue;
    lx.push_back(std::log(x[i]));
    ly.push_back(std::log(y[i]));
    double h = 0;
    if (spread && y_lo[i] > 0 && y_hi[i] >= y_lo[i]) h = 0.5 * std::log(y_hi[i] / y_lo[i]);
    half.push_back(h);
  }
  LogLogFit fit;
  const int n = static_cast<int>(lx.size());
  fit.points = n;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (n > 0) {
    fit.min_x = std::exp(*std::min_element(lx.begin(), lx.end()));
    fit.max_x = std::exp(*std::max_element(lx.begin(), lx.end()));
  }
  double mx = 0, my = 0;
  for (int i = 0; i < n; ++i) mx += lx[i], my += ly[i];
  if (n > 0) mx /= n, my /= n;
  double sxx = 0, sxy = 0;
  for (int i = 0; i < n; ++i) {
    sxx += (lx[i] - mx) * (lx[i] - mx);
    sxy += (lx[i] - mx) * (ly[i] - my);
  }
  if (n < 2 || !(sxx > 0)) {
    fit.slope = fit.intercept = fit.slope_se = nan;
    return fit;
  }
  fit.slope = sxy / sxx;
  fit.intercept = my - fit.slope * mx;
  if (n < kMinFitPoints) {
    fit.slope_se = nan;
    return fit;
  }
  // Scatter about the line, and each point's own spread propagated through the slope's weights
  // w_i = (lx_i − mean) / Sxx.
  double rss = 0, spread_var = 0;
  for (int i = 0; i < n; ++i) {
    const double r = ly[i] - (fit.intercept + fit.slope * lx[i]);
    rss += r * r;
    const double w = (lx[i] - mx) / sxx;
    spread_var += w * w * half[i] * half[i];
  }
  fit.slope_se = std::sqrt(rss / (n - 2) / sxx + spread_var);
  return fit;
}

LogLogFit FitSeries(const Series& s) {
  return FitLogLogSpread(s.x, s.y, s.y_lo, s.y_hi, s.fit_min_x);
}

double FitStart(const std::vector<double>& x, double preferred_min_x, int min_points) {
  std::vector<double> sorted = x;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const auto n = static_cast<int64_t>(
      std::count_if(sorted.begin(), sorted.end(), [&](double v) { return v >= preferred_min_x; }));
  if (n >= min_points || sorted.empty()) return preferred_min_x;
  return sorted[static_cast<size_t>(
      std::min<int64_t>(min_points, static_cast<int64_t>(sorted.size())) - 1)];
}

std::string LineChart(const LineChartSpec& s) {
  Require(!s.series.empty(), "LineChart: no series in '", s.title, "'");
  json values = json::array();
  json fits = json::array();
  json errors = json::array();
  std::vector<double> all_x, all_y;
  std::vector<std::string> names;
  for (const auto& series : s.series) {
    Require(series.x.size() == series.y.size(), "LineChart: series '", series.name,
            "' has x and y of different lengths");
    const bool has_spread = !series.y_lo.empty() || !series.y_hi.empty();
    Require(!has_spread ||
                (series.y_lo.size() == series.y.size() && series.y_hi.size() == series.y.size()),
            "LineChart: series '", series.name, "' has a spread of the wrong length");
    std::string label = series.name;
    if (series.show_fit) {
      const LogLogFit fit = FitSeries(series);
      if (fit.points >= kMinFitPoints && std::isfinite(fit.slope_se)) {
        label += " (slope " + FormatSlope(fit) + ")";
        double lo = std::numeric_limits<double>::infinity(), hi = 0;
        for (double v : series.x) {
          if (v >= series.fit_min_x && v > 0) {
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
        }
        for (double xv : {lo, hi}) {
          fits.push_back({{"series", label},
                          {"x", xv},
                          {"y", std::exp(fit.intercept + fit.slope * std::log(xv))},
                          {"slope", fit.slope},
                          {"slope_2se", 2 * fit.slope_se}});
        }
      }
    }
    names.push_back(label);
    for (size_t i = 0; i < series.x.size(); ++i) {
      if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) continue;
      json v = {{"series", label}, {"x", series.x[i]}, {"y", series.y[i]}};
      all_x.push_back(series.x[i]);
      all_y.push_back(series.y[i]);
      if (has_spread && std::isfinite(series.y_lo[i]) && std::isfinite(series.y_hi[i])) {
        v["lo"] = series.y_lo[i];
        v["hi"] = series.y_hi[i];
        errors.push_back(v);
        all_y.push_back(series.y_lo[i]);
        all_y.push_back(series.y_hi[i]);
      }
      values.push_back(v);
    }
  }
  const bool log_x = s.log_x == 1 || (s.log_x == -1 && SpansDecades(all_x));
  const bool log_y = s.log_y == 1 || (s.log_y == -1 && SpansDecades(all_y));
  json x_scale = log_x ? json{{"type", "log"}} : json{{"zero", false}};
  json y_scale = log_y ? json{{"type", "log"}} : json{{"zero", true}};
  if (log_x) x_scale["base"] = 2;
  const std::string x_title = s.x_title + (log_x ? ", log scale" : "");
  const std::string y_title = s.y_title + (log_y ? ", log scale" : "");
  json color = {{"field", "series"},
                {"type", "nominal"},
                {"title", nullptr},
                {"sort", names},
                {"scale", {{"scheme", "tableau10"}}}};
  json tooltip = json::array(
      {{{"field", "series"}, {"type", "nominal"}, {"title", "series"}},
       {{"field", "x"}, {"type", "quantitative"}, {"title", s.x_title}, {"format", s.x_format}},
       {{"field", "y"}, {"type", "quantitative"}, {"title", s.y_title}, {"format", s.y_format}}});
  if (!errors.empty()) {
    tooltip.push_back(
        {{"field", "lo"}, {"type", "quantitative"}, {"title", "lowest"}, {"format", s.y_format}});
    tooltip.push_back(
        {{"field", "hi"}, {"type", "quantitative"}, {"title", "highest"}, {"format", s.y_format}});
  }
  json x_axis = {{"format", s.x_format}, {"labelOverlap", "greedy"}};
  if (s.token_axis && !all_x.empty()) {
    const auto [lo_it, hi_it] = std::minmax_element(all_x.begin(), all_x.end());
    const TokenTicks ticks = TokenAxisTicks(*lo_it, *hi_it, log_x);
    x_scale["domain"] = {ticks.domain_lo, ticks.domain_hi};
    x_scale["nice"] = false;
    x_axis["values"] = ticks.values;
    x_axis["labelExpr"] =
        "datum.value >= 1048576 ? format(datum.value / 1048576, '~g') + 'M' : datum.value >= 1024 "
        "? format(datum.value / 1024, '~g') + 'k' : format(datum.value, ',d')";
  }
  json x_enc = {{"field", "x"},
                {"type", "quantitative"},
                {"title", x_title},
                {"scale", x_scale},
                {"axis", x_axis}};
  json y_enc = {{"field", "y"}, {"type", "quantitative"}, {"title", y_title}, {"scale", y_scale}};
  json spec = Base(s.title, s.subtitle);
  json points_layer = {
      {"data", {{"values", values}}},
      {"mark", {{"type", "line"}, {"point", {{"filled", true}, {"size", 45}}}, {"strokeWidth", 2}}},
      {"encoding", {{"x", x_enc}, {"y", y_enc}, {"color", color}, {"tooltip", tooltip}}}};
  spec["layer"] = json::array({points_layer});
  if (!errors.empty()) {  // error bars: the spread of each point's repeats
    json lo_enc = y_enc;
    lo_enc["field"] = "lo";
    spec["layer"].push_back({{"data", {{"values", errors}}},
                             {"mark", {{"type", "rule"}, {"strokeWidth", 1.5}, {"opacity", 0.8}}},
                             {"encoding",
                              {{"x", x_enc},
                               {"y", lo_enc},
                               {"y2", {{"field", "hi"}}},
                               {"color", color},
                               {"tooltip", tooltip}}}});
  }
  if (!fits.empty()) {
    json fit_tooltip = json::array({{{"field", "series"}, {"type", "nominal"}, {"title", "fit"}},
                                    {{"field", "slope"},
                                     {"type", "quantitative"},
                                     {"title", "fitted log-log slope"},
                                     {"format", ".3f"}},
                                    {{"field", "slope_2se"},
                                     {"type", "quantitative"},
                                     {"title", "± 2 standard errors"},
                                     {"format", ".3f"}}});
    spec["layer"].push_back(
        {{"data", {{"values", fits}}},
         {"mark",
          {{"type", "line"}, {"strokeDash", {4, 4}}, {"strokeWidth", 1.2}, {"opacity", 0.7}}},
         {"encoding",
          {{"x", x_enc},
           {"y", y_enc},
           {"color", color},
           {"detail", {{"field", "series"}}},
           {"tooltip", fit_tooltip}}}});
  }
  return spec.dump();
}

std::string GroupedBarChart(const BarChartSpec& s) {
  Require(!s.bars.empty(), "GroupedBarChart: no bars in '", s.title, "'");
  json values = json::array();
  std::vector<double> ys;
  std::vector<std::string> categories, groups;
  for (const auto& b : s.bars) {
    values.push_back({{"category", b.category}, {"group", b.group}, {"value", b.value}});
    ys.push_back(b.value);
    if (std::find(categories.begin(), categories.end(), b.category) == categories.end()) {
      categories.push_back(b.category);
    }
    if (std::find(groups.begin(), groups.end(), b.group) == groups.end()) groups.push_back(b.group);
  }
  const bool log_y = s.log_y == 1 || (s.log_y == -1 && SpansDecades(ys));
  // Horizontal bars: the category names read left of their bars at any width (rotated labels
  // under vertical bars ran off the chart's edge), and the chart grows downwards with the
  // number of bars instead of sideways.
  // Side by side within a category only where a category has several bars.
  bool offset = false;
  for (const auto& c : categories) {
    offset = offset || std::count_if(s.bars.begin(), s.bars.end(),
                                     [&](const Bar& b) { return b.category == c; }) > 1;
  }
  json spec = Base(s.title, s.subtitle);
  // Pixels per bar: a category with several bars is at least 40 px high, room for a name wrapped
  // onto three lines.
  // (A number, not Vega-Lite's {"step": …}: a step height drops the "fit-x" autosize with a
  // warning.)
  const int per_bar = offset ? std::max<int>(10, 40 / static_cast<int>(groups.size())) : 24;
  spec["height"] = per_bar * static_cast<int>(categories.size()) *
                   (offset ? static_cast<int>(groups.size()) : 1);
  spec["data"] = {{"values", values}};
  spec["mark"] = {{"type", "bar"}, {"tooltip", true}};
  json value_scale = log_y ? json{{"type", "log"}} : json{{"zero", true}};
  if (log_y) {  // bars start a decade or more below the shortest, which is then seen as a bar
    const double smallest = *std::min_element(ys.begin(), ys.end());
    if (smallest > 0)
      value_scale["domainMin"] = std::pow(10.0, std::floor(std::log10(smallest / 2)));
  }
  spec["encoding"] = {{"y",
                       {{"field", "category"},
                        {"type", "nominal"},
                        {"title", s.x_title},
                        {"sort", categories},
                        {"axis", {{"labelLimit", 200}, {"labelOverlap", false}}}}},
                      {"x",
                       {{"field", "value"},
                        {"type", "quantitative"},
                        {"title", s.y_title + (log_y ? ", log scale" : "")},
                        {"scale", value_scale},
                        // Bars side by side, not stacked: a stack starts at zero, which a log
                        // scale cannot draw (every bar came out zero long).
                        {"stack", nullptr}}},
                      {"color",
                       {{"field", "group"},
                        {"type", "nominal"},
                        {"title", s.group_title},
                        {"sort", groups},
                        {"scale", {{"scheme", "tableau10"}}}}},
                      {"tooltip", json::array({{{"field", "category"}, {"title", s.x_title}},
                                               {{"field", "group"}, {"title", s.group_title}},
                                               {{"field", "value"},
                                                {"type", "quantitative"},
                                                {"title", s.y_title},
                                                {"format", s.y_format}}})}};
  if (offset) spec["encoding"]["yOffset"] = {{"field", "group"}, {"sort", groups}};
  return spec.dump();
}

std::string HeatmapChart(const HeatmapSpec& s) {
  Require(!s.cells.empty(), "HeatmapChart: no cells in '", s.title, "'");
  Require(s.statuses.size() == s.colors.size(), "HeatmapChart: ", s.statuses.size(),
          " statuses but ", s.colors.size(), " colours");
  json values = json::array();
  std::vector<std::string> rows, columns;
  for (const auto& c : s.cells) {
    values.push_back(
        {{"row", c.row}, {"column", c.column}, {"status", c.status}, {"detail", c.detail}});
    if (std::find(rows.begin(), rows.end(), c.row) == rows.end()) rows.push_back(c.row);
    if (std::find(columns.begin(), columns.end(), c.column) == columns.end())
      columns.push_back(c.column);
  }
  json spec =
      Base(s.title, s.subtitle, std::max<int>(460, static_cast<int>(columns.size()) * 26 + 160));
  spec["height"] = std::max<int>(120, static_cast<int>(rows.size()) * 24);
  spec["data"] = {{"values", values}};
  spec["mark"] = {{"type", "rect"}, {"stroke", "#ffffff"}, {"strokeWidth", 1}};
  spec["encoding"] = {
      {"x",
       {{"field", "column"},
        {"type", "ordinal"},
        {"title", s.x_title},
        {"sort", columns},
        {"axis", {{"labelAngle", 0}}}}},
      {"y", {{"field", "row"}, {"type", "nominal"}, {"title", s.y_title}, {"sort", rows}}},
      {"color",
       {{"field", "status"},
        {"type", "nominal"},
        {"title", s.status_title},
        {"scale", {{"domain", s.statuses}, {"range", s.colors}}}}},
      {"tooltip", json::array({{{"field", "row"}, {"title", s.y_title}},
                               {{"field", "column"}, {"title", s.x_title}},
                               {{"field", "status"}, {"title", s.status_title}},
                               {{"field", "detail"}, {"title", "measured"}}})}};
  return spec.dump();
}

}  // namespace attnkit::guide
