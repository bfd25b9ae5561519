// Tests of the visual guide's library parts: the log-log fit, the diagrams sampled from masks,
// the chart specs, and the guide's refusals of bad input (unknown section, unwritable directory,
// a sweep too large for memory) and its atomic page writing.
#include "attnkit/guide/guide.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <string>

#include "attnkit/core/error.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/measure.h"
#include "attnkit/guide/svg.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace attnkit::guide {
namespace {

namespace fs = std::filesystem;
using attnkit::testing::TestSeed;

int CountOccurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
    ++n;
  return n;
}

TEST(GuideFit, RecoversThePowerLawOfNoisyData) {
  std::mt19937_64 rng(TestSeed());
  SCOPED_TRACE(TestSeed());
  std::uniform_real_distribution<double> slope_dist(0.3, 2.7), noise(-0.02, 0.02);
  for (int trial = 0; trial < 20; ++trial) {
    const double slope = slope_dist(rng), scale = 1e-3 * (1 + trial);
    std::vector<double> x, y;
    for (double s = 64; s <= 65536; s *= 2) {
      x.push_back(s);
      y.push_back(scale * std::pow(s, slope) * std::exp(noise(rng)));
    }
    const LogLogFit fit = FitLogLog(x, y);
    EXPECT_EQ(fit.points, static_cast<int>(x.size()));
    EXPECT_NEAR(fit.slope, slope, 0.02);
    // Only points at or above min_x are used.
    y[0] *= 1000;
    EXPECT_NEAR(FitLogLog(x, y, 128).slope, slope, 0.02);
  }
}

TEST(GuideFit, TooFewPointsGiveNaNAndFitStartKeepsThreePoints) {
  EXPECT_TRUE(std::isnan(FitLogLog({256}, {1.0}).slope));
  EXPECT_TRUE(std::isnan(FitLogLog({256, 512}, {1.0, -1.0}).slope));  // non-positive y dropped
  EXPECT_THROW(FitLogLog({1, 2}, {1}), Error);
  EXPECT_EQ(FitStart({256, 512, 1024, 2048, 4096}, 1024), 1024);
  EXPECT_EQ(FitStart({256, 512, 1024, 2048}, 1024), 512);
  EXPECT_EQ(FitStart({256, 512}, 1024), 256);
}

// The cells a diagram paints with `fill`: its path of run-length rectangles in cell units
// ("M col row h run v1 h-run z" per run), decoded into a rows × cols grid. Fails the test on a
// run outside the grid or painted twice.
std::vector<uint8_t> PaintedCells(const std::string& svg, const std::string& fill, int64_t rows,
                                  int64_t cols) {
  std::vector<uint8_t> cells(static_cast<size_t>(rows * cols), 0);
  const std::string tag = "<path fill=\"" + fill + "\" d=\"";
  const size_t at = svg.find(tag);
  if (at == std::string::npos) return cells;
  EXPECT_EQ(svg.find(tag, at + 1), std::string::npos) << "one path per fill";
  const size_t start = at + tag.size();
  const std::string d = svg.substr(start, svg.find('"', start) - start);
  static const std::regex run(R"(M(\d+) (\d+)h(\d+)v1h-(\d+)z)");
  size_t covered = 0;
  for (std::sregex_iterator it(d.begin(), d.end(), run), end; it != end; ++it) {
    const int64_t c = std::stoll((*it)[1]), r = std::stoll((*it)[2]), n = std::stoll((*it)[3]);
    EXPECT_EQ(n, std::stoll((*it)[4]));
    covered += it->length();
    EXPECT_TRUE(r < rows && c + n <= cols && n >= 1) << it->str();
    for (int64_t j = c; j < std::min(cols, c + n) && r < rows; ++j) {
      uint8_t& cell = cells[static_cast<size_t>(r * cols + j)];
      EXPECT_EQ(cell, 0) << "cell (" << r << ", " << j << ") painted twice";
      cell = 1;
    }
  }
  EXPECT_EQ(covered, d.size()) << "the path holds only runs: " << d;
  return cells;
}

// The cells a mask diagram paints with the allowed fill are exactly the pairs Mask::Allowed
// admits over the same (bottom-right aligned) rectangle, and those its background mask adds are
// painted with the background fill; checked cell by cell.
TEST(GuideDiagrams, MaskDiagramDrawsExactlyTheAllowedPairs) {
  std::mt19937_64 rng(TestSeed());
  SCOPED_TRACE(TestSeed());
  std::uniform_int_distribution<int64_t> len(1, 70), win(1, 20);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t sq = len(rng), skv = sq + len(rng) - 1;
    const MaskPtr masks[] = {CausalMask(), CausalWindowMask(win(rng)), ChunkedLocalMask(win(rng))};
    const MaskPtr behind = CausalMask();
    for (const auto& mask : masks) {
      MaskDiagramOptions o;
      o.title = mask->Describe();
      o.fill = "#123456";
      o.background = behind.get();
      o.background_fill = "#abcdef";
      const std::string svg = MaskDiagram(*mask, sq, skv, o);
      const auto painted = PaintedCells(svg, "#123456", sq, skv);
      const auto extra = PaintedCells(svg, "#abcdef", sq, skv);
      int64_t wrong = 0;
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t j = 0; j < skv; ++j) {
          const bool a = mask->Allowed(i + skv - sq, j);
          const bool b = !a && behind->Allowed(i + skv - sq, j);
          const auto at = static_cast<size_t>(i * skv + j);
          wrong += (painted[at] != 0) != a || (extra[at] != 0) != b;
        }
      }
      EXPECT_EQ(wrong, 0) << mask->Describe() << " over " << sq << " x " << skv;
      EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
    }
  }
  MaskDiagramOptions o;
  EXPECT_THROW(MaskDiagram(*CausalMask(), 0, 4, o), Error);
  EXPECT_THROW(MaskDiagram(*CausalMask(), 4, 257, o), Error);
}

TEST(GuideDiagrams, TileMapCountsMatchClassify) {
  std::mt19937_64 rng(TestSeed());
  SCOPED_TRACE(TestSeed());
  std::uniform_int_distribution<int64_t> w(1, 300), n(1, 2000);
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t seqlen = n(rng), block = 32;
    const MaskPtr mask = CausalWindowMask(w(rng));
    TileCounts c;
    const std::string svg = TileMapDiagram(*mask, seqlen, block, "t", &c);
    const int64_t tiles = (seqlen + block - 1) / block;
    EXPECT_EQ(c.full + c.partial + c.empty, tiles * tiles);
    // The picture paints the tiles it counts (full dark blue, partial light blue).
    const auto full = PaintedCells(svg, "#3b6fb6", tiles, tiles);
    const auto partial = PaintedCells(svg, "#9cc0ea", tiles, tiles);
    EXPECT_EQ(std::count(full.begin(), full.end(), 1), c.full);
    EXPECT_EQ(std::count(partial.begin(), partial.end(), 1), c.partial);
    int64_t empty = 0;
    for (int64_t qb = 0; qb < tiles; ++qb) {
      for (int64_t kb = 0; kb < tiles; ++kb) {
        bool any = false;
        for (int64_t q = qb * block; q < std::min(seqlen, (qb + 1) * block) && !any; ++q) {
          for (int64_t k = kb * block; k < std::min(seqlen, (kb + 1) * block) && !any; ++k) {
            any = mask->Allowed(q, k);
          }
        }
        empty += !any;
      }
    }
    EXPECT_EQ(c.empty, empty);
  }
  EXPECT_THROW(TileMapDiagram(*CausalMask(), 100000, 64, "too many tiles"), Error);
}

TEST(GuideDiagrams, HeadSharingDrawsOneLinePerQueryHeadAndRejectsBadGroups) {
  const std::string svg = HeadSharingDiagram({{"GQA", 8, 2}, {"MQA", 6, 1}}, "t");
  EXPECT_EQ(CountOccurrences(svg, "<line"), 8 + 6);
  EXPECT_EQ(CountOccurrences(svg, "reads KV head"), 8 + 6);
  EXPECT_THROW(HeadSharingDiagram({{"bad", 8, 3}}, "t"), Error);
  EXPECT_THROW(HeadSharingDiagram({}, "t"), Error);
}

TEST(GuideDiagrams, TextIsEscaped) {
  EXPECT_EQ(XmlEscape("a<b & \"c\">'"), "a&lt;b &amp; &quot;c&quot;&gt;&#39;");
  SvgDoc doc(10, 10, "<x>");
  doc.Text(0, 0, "</svg><script>");
  const std::string s = doc.Finish();
  EXPECT_EQ(s.find("<script>"), std::string::npos);
}

TEST(GuideCharts, LineChartPicksLogScalesAndWritesTheSlopeIntoTheLegend) {
  LineChartSpec spec;
  spec.title = "t";
  spec.x_title = "sequence length (tokens)";
  spec.y_title = "time (ms)";
  Series s;
  s.name = "quadratic";
  s.show_fit = true;
  for (double x = 256; x <= 16384; x *= 2) {
    s.x.push_back(x);
    s.y.push_back(1e-6 * x * x);
  }
  spec.series = {s};
  const auto j = nlohmann::json::parse(LineChart(spec));
  const auto& enc = j["layer"][0]["encoding"];
  EXPECT_EQ(enc["x"]["scale"]["type"], "log");
  EXPECT_EQ(enc["y"]["scale"]["type"], "log");
  EXPECT_EQ(j["layer"][0]["data"]["values"].size(), s.x.size());
  EXPECT_EQ(j["layer"][0]["data"]["values"][0]["series"], "quadratic (slope 2.00 ± 0.00)");
  EXPECT_EQ(j["layer"].size(), 2u);  // the dashed fit
  // Each point's spread is drawn as an error bar and widens the slope's uncertainty.
  for (double y : s.y) {
    s.y_lo.push_back(y / 1.1);
    s.y_hi.push_back(y * 1.1);
  }
  spec.series = {s};
  const auto e = nlohmann::json::parse(LineChart(spec));
  ASSERT_EQ(e["layer"].size(), 3u);
  EXPECT_EQ(e["layer"][1]["mark"]["type"], "rule");
  EXPECT_EQ(e["layer"][1]["data"]["values"].size(), s.x.size());
  EXPECT_NEAR(e["layer"][1]["data"]["values"][0]["hi"].get<double>(), s.y[0] * 1.1, 1e-12);
  const std::string label = e["layer"][0]["data"]["values"][0]["series"];
  EXPECT_EQ(label.rfind("quadratic (slope 2.00 ± 0.0", 0), 0u) << label;
  EXPECT_NE(label, "quadratic (slope 2.00 ± 0.00)") << "the spread must widen the uncertainty";
  // Two points fit a line exactly: no slope is printed from them.
  Series two;
  two.name = "two";
  two.show_fit = true;
  two.x = {1024, 4096};
  two.y = {1, 16};
  spec.series = {two};
  const auto t = nlohmann::json::parse(LineChart(spec));
  EXPECT_EQ(t["layer"][0]["data"]["values"][0]["series"], "two");
  EXPECT_EQ(t["layer"].size(), 1u);
  // A narrow range stays linear.
  Series flat;
  flat.name = "flat";
  flat.x = {1, 2, 3};
  flat.y = {5, 5.5, 6};
  spec.series = {flat};
  const auto k = nlohmann::json::parse(LineChart(spec));
  EXPECT_FALSE(k["layer"][0]["encoding"]["x"]["scale"].contains("type"));
  EXPECT_EQ(k["layer"].size(), 1u);
  spec.series = {};
  EXPECT_THROW(LineChart(spec), Error);
}

// Token axes read 1k, 1.5k, 32k: the tick values are powers of two (log scale) or multiples of
// one (linear), inside a domain that covers the data; never 1.17188k.
TEST(GuideCharts, TokenAxesTickAtPowersOfTwo) {
  std::mt19937_64 rng(TestSeed());
  SCOPED_TRACE(TestSeed());
  std::uniform_int_distribution<int64_t> lo_dist(16, 5000), span(2, 4000);
  for (int trial = 0; trial < 40; ++trial) {
    const double lo = static_cast<double>(lo_dist(rng)), hi = lo * static_cast<double>(span(rng));
    LineChartSpec spec;
    spec.title = "t";
    Series s;
    s.name = "s";
    s.x = {lo, std::sqrt(lo * hi), hi};
    s.y = {1, 2, 3};
    spec.series = {s};
    const auto j = nlohmann::json::parse(LineChart(spec));
    const auto& x = j["layer"][0]["encoding"]["x"];
    const bool log = x["scale"].value("type", "") == "log";
    const auto domain = x["scale"]["domain"].get<std::vector<double>>();
    const auto values = x["axis"]["values"].get<std::vector<double>>();
    ASSERT_EQ(domain.size(), 2u);
    EXPECT_LE(domain[0], lo);
    EXPECT_GE(domain[1], hi);
    EXPECT_GE(values.size(), 2u) << lo << ".." << hi;
    EXPECT_LE(values.size(), 10u) << lo << ".." << hi;
    for (double v : values) {
      EXPECT_TRUE(v >= domain[0] && v <= domain[1]) << v;
      if (log) {
        EXPECT_EQ(std::exp2(std::round(std::log2(v))), v) << "not a power of two: " << v;
      } else {
        // Linear: equal steps of a power of two.
        const double step = values[1] - values[0];
        EXPECT_EQ(std::exp2(std::round(std::log2(step))), step);
        EXPECT_EQ(std::fmod(v, step), 0.0) << v;
      }
    }
  }
}

// A bar chart on a log scale draws its bars: they sit side by side (a stack would start at zero,
// which a log scale cannot place), and long titles are wrapped into lines.
TEST(GuideCharts, LogBarsAreNotStackedAndTitlesWrap) {
  BarChartSpec b;
  b.title = "A title long enough that it cannot sit on one line of a chart card at desktop width";
  b.subtitle = std::string(300, 'x') + " and a few more words to wrap onto lines of their own";
  b.x_title = "model";
  b.y_title = "bytes";
  b.group_title = "context";
  b.log_y = 1;
  b.bars = {{"a", "8k", 1e6}, {"a", "32k", 4e6}, {"b", "8k", 2e9}, {"b", "32k", 8e9}};
  const auto j = nlohmann::json::parse(GroupedBarChart(b));
  EXPECT_TRUE(j["encoding"]["x"].contains("stack"));
  EXPECT_TRUE(j["encoding"]["x"]["stack"].is_null());
  EXPECT_EQ(j["encoding"]["x"]["scale"]["type"], "log");
  EXPECT_EQ(j["encoding"]["y"]["field"], "category");
  ASSERT_TRUE(j["title"]["text"].is_array());
  for (const auto& line : j["title"]["text"]) EXPECT_LE(line.get<std::string>().size(), 80u);
  ASSERT_TRUE(j["title"]["subtitle"].is_array());
  EXPECT_EQ(j["title"]["subtitle"][0], std::string(300, 'x'));  // a word is never split
  EXPECT_EQ(j["autosize"]["type"], "fit-x");
}

TEST(GuidePlan, RefusesBadInputBeforeMeasuring) {
  if (!ChartLibraryEmbedded()) GTEST_SKIP() << "chart library not embedded in this build";
  const fs::path scratch = attnkit::testing::TestScratchDir("guide-plan");
  const fs::path dir = scratch / "page";
  GuideOptions o;
  o.out_dir = dir.string();
  o.size = SweepSize::kSmoke;
  o.only = {"heads", "no-such-section"};
  try {
    PlanGuide(o);
    ADD_FAILURE() << "unknown section accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown section 'no-such-section'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("heads"), std::string::npos) << "lists the available ones";
  }
  o.only = {"heads"};
  o.max_seqlen = int64_t{1} << 40;  // far beyond any machine's memory
  try {
    PlanGuide(o);
    ADD_FAILURE() << "a sweep too large for memory was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs about"), std::string::npos) << e.what();
  }
  o.max_seqlen = 0;
  o.out_dir = "/proc/attnkit-guide-test";
  EXPECT_THROW(PlanGuide(o), Error);
  o.out_dir = dir.string();
  const GuidePlan plan = PlanGuide(o);
  EXPECT_EQ(plan.sections, std::vector<std::string>{"heads"});
  EXPECT_GT(plan.steps, 0);
  EXPECT_GT(plan.peak_bytes, 0);
  fs::remove_all(scratch);
}

TEST(GuideWrite, WritesAFinishedPageAndNoPartialFiles) {
  if (!ChartLibraryEmbedded()) GTEST_SKIP() << "chart library not embedded in this build";
  const fs::path scratch = attnkit::testing::TestScratchDir("guide-write");
  const fs::path dir = scratch / "page";
  GuideOptions o;
  o.out_dir = dir.string();
  o.only = {"compare"};  // no measurements: fast, and still a complete page
  int64_t calls = 0;
  o.progress = [&](int64_t, int64_t, const std::string&) { ++calls; };
  const GuideResult r = WriteGuide(o);
  ASSERT_TRUE(fs::exists(r.index_path));
  EXPECT_EQ(r.files.back(), r.index_path) << "index.html is written last";
  std::ifstream in(r.index_path);
  const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(html.find("vegaEmbed"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos) << "no external scripts";
  EXPECT_NE(html.find("</html>"), std::string::npos);
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    EXPECT_EQ(entry.path().string().find(".partial"), std::string::npos) << entry.path();
  }
  const auto data = nlohmann::json::parse(std::ifstream(dir / "guide.json"));
  EXPECT_EQ(data["sections"].size(), 1u);
  EXPECT_FALSE(data["machine"]["cpu"].get<std::string>().empty());
  fs::remove_all(scratch);
}

// The chart exporter is found at run time ($ATTNKIT_GUIDE_WEB_DIR first), not from a path
// compiled into the binary.
TEST(GuideWrite, ChartExportScriptIsFoundAtRunTime) {
  const fs::path scratch = attnkit::testing::TestScratchDir("guide-web");
  fs::create_directories(scratch / "node_modules" / "vega");
  std::ofstream(scratch / "export-svg.mjs") << "// stand-in\n";
  ASSERT_EQ(setenv("ATTNKIT_GUIDE_WEB_DIR", scratch.c_str(), 1), 0);
  EXPECT_EQ(ChartExportScript(), (scratch / "export-svg.mjs").string());
  fs::remove_all(scratch / "node_modules");  // without node_modules it is not used
  EXPECT_NE(ChartExportScript(), (scratch / "export-svg.mjs").string());
  unsetenv("ATTNKIT_GUIDE_WEB_DIR");
  fs::remove_all(scratch);
}

TEST(GuideMeasure, SweepStopsBeforeAPointOverItsBudget) {
  SweepOptions o;
  o.first = 100;
  o.last = 100 * 64;
  o.point_budget_seconds = 1.0;
  o.min_slope = 1;
  int skipped = 0;
  // Synthetic quadratic cost: 0.01 s at 100, so 400 → 0.16 s, 800 → 0.64 s, 1600 → 2.56 s.
  const auto pts = SeqlenSweep(
      o,
      [](int64_t n) {
        SweepPoint p;
        p.seqlen = n;
        p.seconds = 0.01 * (n / 100.0) * (n / 100.0);
        return p;
      },
      nullptr, [&](int64_t) { ++skipped; });
  ASSERT_EQ(pts.size(), 4u);
  EXPECT_EQ(pts.back().seqlen, 800);
  EXPECT_EQ(skipped, 3);
  EXPECT_EQ(SweepPlannedPoints(o.first, o.last), 7);
  EXPECT_EQ(FormatTokens(32768), "32k");
  EXPECT_EQ(FormatTokens(1 << 20), "1M");
  EXPECT_EQ(FormatBytes(1536.0 * 1024 * 1024), "1.5 GiB");
}

}  // namespace
}  // namespace attnkit::guide
