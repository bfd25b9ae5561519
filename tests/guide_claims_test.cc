// The guide says only what it measured: every section's findings are built here from injected
// measurements (src/guide/findings.h) — numbers that agree with each expectation, numbers that
// contradict it, and numbers drowned in noise — and the verdicts, the generated sentences and
// the rendered page are checked: every contradiction is flagged ("expected …; measured … here"),
// and noisy data draws no conclusion ("not resolved in this run").
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attnkit/guide/guide.h"
#include "guide/claims.h"
#include "guide/findings.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace attnkit::guide::detail {
namespace {

using Status = Finding::Status;
using attnkit::testing::TestSeed;

// How injected data looks: agreeing with every expectation, contradicting every one, or with
// a spread so wide that nothing can be decided.
enum class Kind { kAgree, kContradict, kNoisy };

struct Gen {
  Kind kind;
  std::mt19937_64 rng{TestSeed()};
  // Relative spread of each point: tight (±2 %) or noisy (×/÷ 4, with jittered medians).
  double factor() const { return kind == Kind::kNoisy ? 4.0 : 1.02; }
  // y = scale · x^slope at each x, each point's spread min–max = y ÷ f … y × f.
  Series Power(const std::string& name, const std::vector<double>& xs, double scale, double slope) {
    std::uniform_real_distribution<double> jitter(-0.3, 0.3);
    Series s = NamedSeries(name);
    for (double x : xs) {
      double y = scale * std::pow(x / xs.front(), slope);
      if (kind == Kind::kNoisy) y *= std::exp(jitter(rng));
      s.x.push_back(x);
      s.y.push_back(y);
      s.y_lo.push_back(y / factor());
      s.y_hi.push_back(y * factor());
    }
    s.fit_min_x = 0;
    return s;
  }
  // Picks the agreeing or contradicting value; noisy data sits halfway between them, so only
  // its spread can decide (and it is too wide to).
  double Pick(double agree, double contradict) const {
    if (kind == Kind::kNoisy) return 0.5 * (agree + contradict);
    return kind == Kind::kContradict ? contradict : agree;
  }
};

std::vector<double> Lengths(double from, double to) {
  std::vector<double> xs;
  for (double x = from; x <= to; x *= 2) xs.push_back(x);
  return xs;
}

std::vector<Finding> Flatten(const FindingsByFigure& by_figure) {
  std::vector<Finding> out;
  for (const auto& [id, list] : by_figure) out.insert(out.end(), list.begin(), list.end());
  return out;
}

// Every section's findings built from data of the given kind.
std::vector<Finding> AllFindings(Kind kind) {
  Gen g{kind};
  const auto pre = Lengths(1024, 16384), dec = Lengths(1024, 32768);
  std::vector<Finding> all;
  auto add = [&](const FindingsByFigure& f) {
    const auto list = Flatten(f);
    all.insert(all.end(), list.begin(), list.end());
  };

  HeadsMeasured heads;
  heads.prefill = {g.Power("MHA", pre, g.Pick(10, 30), g.Pick(2, 1)),
                   g.Power("GQA", pre, 10, g.Pick(2, 1)), g.Power("MQA", pre, 10, g.Pick(2, 1))};
  heads.memory = {g.Power("MHA", pre, 50, g.Pick(1, 2)), g.Power("GQA", pre, 20, g.Pick(1, 2)),
                  g.Power("MQA", pre, 15, g.Pick(1, 2))};
  heads.decode = {g.Power("MHA", dec, g.Pick(32, 1), g.Pick(1, 0)),
                  g.Power("GQA", dec, g.Pick(8, 8), g.Pick(1, 0)),
                  g.Power("MQA", dec, g.Pick(1, 32), g.Pick(1, 0))};
  add(HeadsFindings(heads));

  MlaMeasured mla;
  mla.naive = g.Power("naive path", dec, g.Pick(10, 1), g.Pick(1, 0.1));
  mla.absorbed = g.Power("absorbed path", dec, g.Pick(1, 10), g.Pick(0.1, 1));
  add(MlaFindings(mla));

  WindowMeasured win;
  win.window = 512;
  win.causal = g.Power("causal", pre, 10, g.Pick(2, 1));
  win.window_prefill = g.Power("window 512", pre, 5, g.Pick(1, 2));
  win.chunked = g.Power("chunked 512", pre, 5, g.Pick(1, 2));
  win.full_decode = g.Power("full", dec, 1, g.Pick(1, 0));
  win.ring_decode = g.Power("ring", dec, 1, g.Pick(0, 1));
  add(WindowFindings(win));

  SparseMeasured sparse;
  sparse.causal = g.Power("full causal", pre, 10, 2);
  for (const char* name : {"strided", "bigbird"}) {
    sparse.patterns.push_back(g.Power(name, pre, 5, g.Pick(1.5, 2)));
    Series pairs = NamedSeries(name, false);
    for (double x : pre) {
      pairs.x.push_back(x);
      pairs.y.push_back(std::pow(x, g.Pick(1.5, 1.0)));
    }
    sparse.pattern_pairs.push_back(pairs);
  }
  add(SparseFindings(sparse));

  DsaMeasured dsa;
  dsa.top_k = 256;
  dsa.dense = g.Power("full causal", pre, 10, 2);
  dsa.indexer = g.Power("indexer", pre, 5, g.Pick(2, 1));
  dsa.attention = g.Power("attention", pre, 5, g.Pick(1, 2));
  dsa.total = g.Power("DSA total", pre, 10, 1.5);
  dsa.mass_aligned = g.Power("aligned", Lengths(16, 512), g.Pick(0.5, 0.2), 0.1);
  dsa.mass_random = g.Power("random", Lengths(16, 512), g.Pick(0.2, 0.5), 0.1);
  dsa.mass_aligned.y_lo = dsa.mass_aligned.y_hi = {};  // exact, not timed …
  dsa.mass_random.y_lo = dsa.mass_random.y_hi = {};
  dsa.v32_dense = g.Power("dense absorbed MLA", dec, 10, 1);
  dsa.v32_total = g.Power("DSA total", dec, 20, 0.4);
  for (double x : dec) dsa.v32_work_ratio.push_back({x, x / 2048});
  if (kind == Kind::kNoisy) {  // … except in the noisy case, which gives them a wide spread
    for (Series* s : {&dsa.mass_aligned, &dsa.mass_random}) {
      for (double y : s->y) {
        s->y_lo.push_back(y / 4);
        s->y_hi.push_back(y * 4);
      }
    }
  }
  add(DsaFindings(dsa));

  GatedMeasured gated;
  gated.ungated = g.Power("without gate", dec, 1, 1);
  gated.gated = g.Power("with gate", dec, 1, 1);
  for (size_t i = 0; i < dec.size(); ++i) {  // agree: + a constant; contradict: × a growing factor
    const double u = gated.ungated.y[i];
    const double y = g.Pick(u + 1.0, u * (1.2 + 0.3 * static_cast<double>(i)));
    gated.gated.y[i] = y;
    gated.gated.y_lo[i] = y / g.factor();
    gated.gated.y_hi[i] = y * g.factor();
  }
  gated.crossover_context = 8192;
  add(GatedFindings(gated));

  LinearMeasured lin;
  lin.dense = g.Power("exact", pre, 1, g.Pick(2, 1));
  lin.linear = {g.Power("FAVOR+", pre, 5, g.Pick(1, 2)), g.Power("elu+1", pre, 5, g.Pick(1, 2))};
  lin.favor_orth = {g.Power("orthogonal", Lengths(16, 512), g.Pick(0.5, 1.5), g.Pick(-0.5, 0))};
  lin.favor_iid = {g.Power("iid", Lengths(16, 512), g.Pick(0.7, 0.5), g.Pick(-0.5, 0))};
  lin.temperatures = {1};
  add(LinearFindings(lin));

  DeltaMeasured delta;
  delta.dense = g.Power("exact", pre, 10, 2);
  delta.gdn = g.Power("GDN chunk-wise", pre, g.Pick(1, 20), g.Pick(1, 2));
  delta.kda = g.Power("KDA chunk-wise", pre, 1, g.Pick(1, 2));
  delta.recurrent = g.Power("GDN token by token", pre, 10, g.Pick(1, 2));
  delta.decode = g.Power("decode", Lengths(1024, 16384), 1, g.Pick(0, 1));
  add(DeltaFindings(delta));

  HybridMeasured hybrid;
  hybrid.decode = {g.Power("all attention", Lengths(1024, 4096), 1, g.Pick(0.5, 0.1)),
                   g.Power("hybrid", Lengths(1024, 4096), 1, g.Pick(0.1, 0.8))};
  add(HybridFindings(hybrid));

  ClaimsMeasured claims;
  ClaimsMeasured::Reach reach;
  reach.variant = "multi-head attention";
  reach.claimed = 1024;
  reach.limit = "time";
  if (kind == Kind::kAgree) reach.longest = 8192, reach.first_over = 9000;
  if (kind == Kind::kContradict) reach.longest = 512, reach.first_over = 768;
  if (kind == Kind::kNoisy) reach.longest = 960, reach.first_over = 1088;  // bisection unresolved
  reach.seconds_at_longest = 0.2;
  claims.reach = {reach};
  const double f = g.factor();
  const double share = g.Pick(0.5, 1.1);
  claims.savings = {{"bigbird", 5000, 0.1, {share, share / (f * f), share * f * f}}};
  const double err = g.Pick(0.05, 0.8);
  claims.performer = {{1024, 1.0, {err, err / f, err * f}, {0.99, 0.98, 1.0}}};
  if (kind == Kind::kNoisy) claims.performer[0].error = {0.1, 0.01, 1.0};
  add(ClaimsFindings(claims));
  return all;
}

// A finding that checks an expectation (not a plain measured statement or a crossover).
bool IsExpectation(const Finding& f) {
  return f.id.find("crossover") == std::string::npos && f.status != Status::kMeasured;
}

TEST(GuideClaims, AgreeingMeasurementsHold) {
  SCOPED_TRACE(TestSeed());
  int expectations = 0;
  for (const Finding& f : AllFindings(Kind::kAgree)) {
    if (!IsExpectation(f)) continue;
    ++expectations;
    EXPECT_EQ(f.status, Status::kHolds) << f.id << ": " << f.text;
    EXPECT_NE(f.text.find("holds"), std::string::npos) << f.text;
  }
  EXPECT_GE(expectations, 30);
}

TEST(GuideClaims, EveryContradictionIsFlaggedWithWhatWasMeasured) {
  SCOPED_TRACE(TestSeed());
  int expectations = 0;
  for (const Finding& f : AllFindings(Kind::kContradict)) {
    if (!IsExpectation(f)) continue;
    ++expectations;
    EXPECT_EQ(f.status, Status::kContradicted) << f.id << ": " << f.text;
    // "Claim: …" (the popular table) or "Expected …; measured … here".
    const bool claim = f.text.rfind("Claim: ", 0) == 0;
    if (!claim) {
      EXPECT_EQ(f.text.rfind("Expected ", 0), 0u) << f.text;
      EXPECT_NE(f.text.find("; measured "), std::string::npos) << f.text;
      EXPECT_NE(f.text.find(" here."), std::string::npos) << f.text;
    } else {
      EXPECT_NE(f.text.find("does not hold"), std::string::npos) << f.text;
    }
  }
  EXPECT_GE(expectations, 30);
}

TEST(GuideClaims, NoisyMeasurementsDrawNoConclusion) {
  SCOPED_TRACE(TestSeed());
  int checked = 0;
  for (const Finding& f : AllFindings(Kind::kNoisy)) {
    if (f.status == Status::kMeasured) {
      // Plain statements may report numbers, but never a resolved crossover.
      EXPECT_EQ(f.id.find("crossover"), std::string::npos) << f.id << ": " << f.text;
      continue;
    }
    ++checked;
    EXPECT_EQ(f.status, Status::kNotResolved) << f.id << ": " << f.text;
    EXPECT_NE(f.text.find("not resolved in this run"), std::string::npos) << f.text;
  }
  EXPECT_GE(checked, 30);
}

TEST(GuideClaims, ThePageMarksEveryVerdict) {
  Section sec;
  sec.name = "injected";
  sec.title = "Injected measurements";
  Figure fig;
  fig.kind = Figure::Kind::kDiagram;
  fig.id = "heads-prefill-time";
  fig.svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>";
  sec.figures.push_back(fig);
  const auto contradicted = AllFindings(Kind::kContradict);
  const auto noisy = AllFindings(Kind::kNoisy);
  FindingsByFigure by;
  by["heads-prefill-time"] = contradicted;
  by[""] = noisy;
  AttachFindings(sec, by);
  ASSERT_EQ(sec.figures[0].findings.size(), contradicted.size());
  ASSERT_EQ(sec.findings.size(), noisy.size());
  GuidePage page;
  page.sections.push_back(sec);
  size_t n_contradicted = 0, n_unresolved = 0;
  for (const auto& f : contradicted) n_contradicted += f.status == Status::kContradicted;
  for (const auto& f : noisy) n_unresolved += f.status == Status::kNotResolved;
  const auto data = nlohmann::json::parse(PageJson(page));
  size_t json_contradicted = 0, json_unresolved = 0;
  for (const auto& f : data["sections"][0]["figures"][0]["findings"])
    json_contradicted += f["status"] == "contradicted";
  for (const auto& f : data["sections"][0]["findings"])
    json_unresolved += f["status"] == "not resolved";
  EXPECT_EQ(json_contradicted, n_contradicted);
  EXPECT_EQ(json_unresolved, n_unresolved);
  if (!ChartLibraryEmbedded()) GTEST_SKIP() << "chart library not embedded: HTML not rendered";
  const std::string html = RenderHtml(page);
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t p = html.find(needle); p != std::string::npos; p = html.find(needle, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("class=\"finding contradicted\""), n_contradicted);
  EXPECT_EQ(count("class=\"finding not-resolved\""), n_unresolved);
}

TEST(GuideClaims, SlopesNeedThreePointsAndCarryTheirSpread) {
  Series two = NamedSeries("two points");
  two.x = {1024, 2048};
  two.y = {1, 4};
  Spread s;
  EXPECT_FALSE(SlopeOf(two, &s));
  EXPECT_EQ(SlopeFinding("t", "two points", two, 1.8, 2.2, "quadratic").status,
            Status::kNotResolved);
  Series three = two;
  three.x.push_back(4096);
  three.y.push_back(16);
  ASSERT_TRUE(SlopeOf(three, &s));
  EXPECT_NEAR(s.value, 2, 1e-9);
  EXPECT_NEAR(s.hi - s.lo, 0, 1e-9);  // exact power law, no spread: zero uncertainty
  // The same points with a ×/÷ 2 spread each: the slope is uncertain by about
  // 2 · sqrt(Σ w² (ln 2)²) = 2 · ln 2 / (ln 2 · sqrt 2) ≈ 1.41.
  three.y_lo = {0.5, 2, 8};
  three.y_hi = {2, 8, 32};
  ASSERT_TRUE(SlopeOf(three, &s));
  EXPECT_NEAR(s.hi - s.value, std::sqrt(2.0), 1e-9);
  EXPECT_EQ(Judge({1.0, 0.9, 1.1}, 1.8, 2.2), Status::kContradicted);
  EXPECT_EQ(Judge({2.0, 1.95, 2.05}, 1.8, 2.2), Status::kHolds);
  EXPECT_EQ(Judge({2.0, 1.0, 3.0}, 1.8, 2.2, 0.5), Status::kNotResolved);
}

TEST(GuideClaims, CrossoverIsStatedOnlyWhereTheSpreadsSeparate) {
  Series a = NamedSeries("DSA"), b = NamedSeries("dense");
  a.x = b.x = {256, 512, 1024, 2048};
  a.y = {2, 2, 2, 2};
  b.y = {1, 1.9, 4, 8};
  a.y_lo = {1.9, 1.9, 1.9, 1.9};
  a.y_hi = {2.1, 2.1, 2.1, 2.1};
  b.y_lo = {0.9, 1.8, 3.9, 7.9};
  b.y_hi = {1.1, 2.0, 4.1, 8.1};
  const Finding f = CrossoverFinding("x", a, b);
  EXPECT_EQ(f.status, Status::kMeasured);
  EXPECT_NE(f.text.find("slower at 256"), std::string::npos) << f.text;
  EXPECT_NE(f.text.find("not resolved at 512"), std::string::npos) << f.text;
  EXPECT_NE(f.text.find("faster at 1k–2k"), std::string::npos) << f.text;
}

}  // namespace
}  // namespace attnkit::guide::detail
