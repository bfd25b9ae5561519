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

json Base(const std::string& title, const std::string& subtitle) {
  json spec = {{"$schema", kSchema},
               {"width", 440},
               {"height", 270},
               {"background", "#ffffff"},
               {"config",
                {{"font", "Helvetica, Arial, sans-serif"},
                 {"legend", {{"labelLimit", 320}, {"orient", "bottom"}, {"columns", 2}}},
                 {"axis", {{"labelFontSize", 11}, {"titleFontSize", 12}}}}}};
  spec["title"] = {{"text", title}, {"anchor", "start"}, {"fontSize", 14}};
  if (!subtitle.empty()) spec["title"]["subtitle"] = subtitle;
  return spec;
}

std::string FormatSlope(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", s);
  return buf;
}

}  // namespace

LogLogFit FitLogLog(const std::vector<double>& x, const std::vector<double>& y, double min_x) {
  Require(x.size() == y.size(), "FitLogLog: x and y differ in length (", x.size(), " vs ", y.size(),
          ")");
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int n = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!(x[i] > 0 && y[i] > 0) || x[i] < min_x) continue;
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx;
    sy += ly;
    sxx += lx * lx;
    sxy += lx * ly;
    ++n;
  }
  LogLogFit fit;
  fit.points = n;
  const double den = n * sxx - sx * sx;
  if (n < 2 || den <= 0) {
    fit.slope = fit.intercept = std::numeric_limits<double>::quiet_NaN();
    return fit;
  }
  fit.slope = (n * sxy - sx * sy) / den;
  fit.intercept = (sy - fit.slope * sx) / n;
  return fit;
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
  std::vector<double> all_x, all_y;
  std::vector<std::string> names;
  for (const auto& series : s.series) {
    Require(series.x.size() == series.y.size(), "LineChart: series '", series.name,
            "' has x and y of different lengths");
    std::string label = series.name;
    if (series.show_fit) {
      const LogLogFit fit = FitLogLog(series.x, series.y, series.fit_min_x);
      if (fit.points >= 2) {
        label += " (slope " + FormatSlope(fit.slope) + ")";
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
                          {"slope", fit.slope}});
        }
      }
    }
    names.push_back(label);
    for (size_t i = 0; i < series.x.size(); ++i) {
      if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) continue;
      values.push_back({{"series", label}, {"x", series.x[i]}, {"y", series.y[i]}});
      all_x.push_back(series.x[i]);
      all_y.push_back(series.y[i]);
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
  json x_axis = {{"format", s.x_format}};
  if (s.token_axis) {
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
  if (!fits.empty()) {
    json fit_tooltip = json::array({{{"field", "series"}, {"type", "nominal"}, {"title", "fit"}},
                                    {{"field", "slope"},
                                     {"type", "quantitative"},
                                     {"title", "fitted log-log slope"},
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
  json spec = Base(s.title, s.subtitle);
  spec["width"] = std::max<int>(440, static_cast<int>(categories.size() * groups.size() * 9));
  spec["data"] = {{"values", values}};
  spec["mark"] = {{"type", "bar"}, {"tooltip", true}};
  json y_scale = log_y ? json{{"type", "log"}} : json{{"zero", true}};
  spec["encoding"] = {{"x",
                       {{"field", "category"},
                        {"type", "nominal"},
                        {"title", s.x_title},
                        {"sort", categories},
                        {"axis", {{"labelAngle", -40}, {"labelLimit", 160}}}}},
                      {"xOffset", {{"field", "group"}, {"sort", groups}}},
                      {"y",
                       {{"field", "value"},
                        {"type", "quantitative"},
                        {"title", s.y_title + (log_y ? ", log scale" : "")},
                        {"scale", y_scale}}},
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
  json spec = Base(s.title, s.subtitle);
  spec["width"] = std::max<int>(300, static_cast<int>(columns.size()) * 26);
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
