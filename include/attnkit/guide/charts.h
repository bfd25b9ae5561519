// Chart specs for the visual guide: measured data → Vega-Lite JSON (rendered in the page by the
// inlined Vega / Vega-Lite / vega-embed). Axes carry units, log scales are chosen where the data
// span decades, every mark has a tooltip with the exact numbers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attnkit::guide {

// Least-squares fit of log(y) = slope · log(x) + intercept over the points with x >= min_x and
// positive x, y. points == number used; slope is NaN with fewer than two points.
// slope_se is the slope's standard error: the scatter of the points about the line (needs three
// points; NaN with fewer) combined with the spread of each point's repeats when given
// (FitLogLogSpread: y_lo, y_hi per point, each point's log half-range taken as its own error).
struct LogLogFit {
  double slope = 0;
  double intercept = 0;
  int points = 0;
  double slope_se = 0;
  double min_x = 0, max_x = 0;  // the x range fitted
};
LogLogFit FitLogLog(const std::vector<double>& x, const std::vector<double>& y, double min_x = 0);
LogLogFit FitLogLogSpread(const std::vector<double>& x, const std::vector<double>& y,
                          const std::vector<double>& y_lo, const std::vector<double>& y_hi,
                          double min_x = 0);
// Fewest points a slope is printed from (two points always fit a line exactly).
constexpr int kMinFitPoints = 3;

// The smallest x to fit from: `preferred_min_x` (small sizes are dominated by per-call overhead)
// unless that leaves fewer than min_points points, then the x of the min_points-th largest point.
double FitStart(const std::vector<double>& x, double preferred_min_x, int min_points = 3);

struct Series {
  std::string name;
  std::vector<double> x, y;
  bool show_fit = false;  // append "slope s ± 2 s.e." to the legend and draw the fit dashed
  double fit_min_x = 0;   // fit only points with x >= fit_min_x (small sizes are overhead-bound)
  // Optional spread of each point (e.g. fastest and slowest repeat), drawn as error bars and
  // used in the slope's uncertainty; empty or the same length as y.
  std::vector<double> y_lo, y_hi;
};
// The fit a chart draws for `s` (FitLogLogSpread from s.fit_min_x).
LogLogFit FitSeries(const Series& s);

struct LineChartSpec {
  std::string title;
  std::string subtitle;
  std::string x_title;            // with unit, e.g. "sequence length (tokens)"
  std::string y_title;            // with unit, e.g. "time (ms)"
  std::string x_format = ",d";    // d3-format of x in tooltips and axis
  bool token_axis = true;         // x is a token count: label powers of two as 1k, 32k, 1M
  std::string y_format = ".4~g";  // d3-format of y in tooltips
  int log_x = -1, log_y = -1;  // 1 log, 0 linear, -1 automatic (log when data span ≥ 1.5 decades)
  std::vector<Series> series;
};
// Returns the Vega-Lite spec; fits (when asked and from at least kMinFitPoints points) are
// written into the legend labels as "slope s ± 2 s.e."; spreads are drawn as error bars.
std::string LineChart(const LineChartSpec& spec);

struct Bar {
  std::string category;  // x axis group, e.g. model name
  std::string group;     // colour, e.g. "8k"
  double value = 0;
};
// Drawn as horizontal bars: categories down the left, one bar per group, values along the
// horizontal axis (x_title names the categories, y_title the values).
struct BarChartSpec {
  std::string title;
  std::string subtitle;
  std::string x_title;  // the categories' axis
  std::string y_title;  // the values' axis, with unit
  std::string y_format = ".4~g";
  std::string group_title;  // legend title
  int log_y = -1;           // log scale of the values: 1, 0, or -1 automatic
  std::vector<Bar> bars;
};
std::string GroupedBarChart(const BarChartSpec& spec);

// A grid of categorical cells (e.g. the retrieval probe: method × distance → retrieved or not).
struct Cell {
  std::string row;     // y category
  std::string column;  // x category
  std::string status;  // colour category
  std::string detail;  // tooltip text
};
struct HeatmapSpec {
  std::string title;
  std::string subtitle;
  std::string x_title;
  std::string y_title;
  std::string status_title;
  std::vector<std::string> statuses;  // legend order
  std::vector<std::string> colors;    // one per status
  std::vector<Cell> cells;            // rows and columns keep their first-seen order
};
std::string HeatmapChart(const HeatmapSpec& spec);

}  // namespace attnkit::guide
