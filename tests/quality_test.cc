// The quality grid (train/quality.h) at smoke size, the guide's Quality section rendered from it,
// and the section's findings from injected grids (agreeing, contradicting, noisy).
#include "attnkit/train/quality.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "attnkit/core/error.h"
#include "attnkit/guide/guide.h"
#include "guide/quality_findings.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace attnkit {
namespace {

namespace fs = std::filesystem;

// A small text file for the text task (so the test does not depend on the Brown corpus).
std::string WriteText(const fs::path& dir) {
  const fs::path path = dir / "text.txt";
  std::ofstream out(path);
  for (int i = 0; i < 40; ++i) out << "the quick brown fox jumps over the lazy dog " << i << "\n";
  return path.string();
}

TEST(QualityGrid, SmokeGridRunsEveryVariantAndMeasuresWhatItHolds) {
  const fs::path scratch = testing::TestScratchDir("quality-grid");
  train::QualityGrid g = train::SmokeGrid();
  g.variants = {"mha", "swa", "gated_deltanet", "gated_deltanet,mha"};
  g.lengths = {16, 24};
  g.steps = 2;
  g.text_steps = 2;
  g.text_path = WriteText(scratch);
  int64_t runs = 0;
  train::QualityCallbacks cb;
  cb.on_run = [&](int64_t done, int64_t total, const std::string&) {
    EXPECT_EQ(total, train::QualityRuns(g));
    runs = done;
  };
  const train::QualityResult r = train::RunQuality(g, cb);
  EXPECT_EQ(runs, train::QualityRuns(g));
  ASSERT_EQ(r.rows.size(), g.variants.size());
  const std::string table = r.Table();
  for (size_t i = 0; i < g.variants.size(); ++i) {
    const auto& row = r.rows[i];
    EXPECT_EQ(row.variant, g.variants[i]);
    EXPECT_TRUE(row.error.empty()) << row.error;
    EXPECT_NE(table.find("\n" + row.variant + " "), std::string::npos) << table;
    ASSERT_EQ(row.mqar_accuracy.size(), g.lengths.size());
    ASSERT_EQ(row.context_bytes.size(), g.lengths.size());
    for (size_t j = 0; j < g.lengths.size(); ++j) {
      EXPECT_GE(row.mqar_accuracy[j], 0.0);
      EXPECT_LE(row.mqar_accuracy[j], 1.0);
      EXPECT_EQ(row.mqar_answers[j], g.eval_sequences * g.mqar_pairs);
      EXPECT_GT(row.mqar_tokens_per_s[j], 0.0);
    }
    EXPECT_GT(row.bits_per_byte, 0.0);
    EXPECT_EQ(row.loss_by_position.size(), static_cast<size_t>(g.text_seqlen));
    EXPECT_GT(row.params, 0);
    EXPECT_GT(row.estimate_bytes, 0.0);
  }
  EXPECT_EQ(r.rows[3].layers, 2) << "a two-kind list rounds one block up to two";
  // Attention's KV cache grows with the length: K and V of every layer, f32.
  const int64_t kv_per_token = 2 * g.model.hidden * 4;
  EXPECT_EQ(r.rows[0].context_bytes[1] - r.rows[0].context_bytes[0],
            (g.lengths[1] - g.lengths[0]) * kv_per_token);
  // A window of 4 and a recurrent state hold the same bytes at every length.
  EXPECT_EQ(r.rows[1].context_bytes[0], r.rows[1].context_bytes[1]);
  EXPECT_EQ(r.rows[2].context_bytes[0], r.rows[2].context_bytes[1]);
  EXPECT_EQ(train::ContextBytes(
                [&] {
                  train::ModelConfig m = g.model;
                  m.variant = "mha";
                  m.vocab = 32;
                  return m;
                }(),
                16),
            r.rows[0].context_bytes[0]);
  const auto lines = r.JsonLines();
  ASSERT_EQ(lines.size(), g.variants.size() + 1);
  for (size_t i = 0; i < g.variants.size(); ++i) {
    const auto j = nlohmann::json::parse(lines[i]);
    EXPECT_EQ(j["variant"], g.variants[i]);
    EXPECT_EQ(j["mqar_accuracy"].size(), g.lengths.size());
  }
  EXPECT_EQ(nlohmann::json::parse(lines.back())["event"], "quality_done");
  fs::remove_all(scratch);
}

TEST(QualityGrid, RefusesBadInputBeforeAnyRun) {
  train::QualityGrid g = train::SmokeGrid();
  g.text = false;
  int64_t runs = 0;
  train::QualityCallbacks cb;
  cb.on_run = [&](int64_t, int64_t, const std::string&) { ++runs; };
  g.variants = {"mha", "no-such-kind"};
  try {
    train::RunQuality(g, cb);
    ADD_FAILURE() << "unknown variant accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-kind"), std::string::npos) << e.what();
  }
  g.variants = {"mha"};
  g.lengths = {8};  // 4 pairs need 15 tokens
  EXPECT_THROW(train::RunQuality(g, cb), Error);
  g.lengths = {};
  EXPECT_THROW(train::RunQuality(g, cb), Error);
  g.lengths = {16};
  g.text = true;
  g.text_path = (testing::TestScratchDir("quality-bad") / "missing.txt").string();
  EXPECT_THROW(train::RunQuality(g, cb), Error);
  EXPECT_EQ(runs, 0);
}

TEST(QualitySection, RendersAtSmokeSize) {
  if (!guide::ChartLibraryEmbedded()) GTEST_SKIP() << "chart library not embedded in this build";
  const fs::path scratch = testing::TestScratchDir("quality-guide");
  guide::GuideOptions o;
  o.out_dir = (scratch / "page").string();
  o.size = guide::SweepSize::kSmoke;
  o.only = {"quality", "compare"};
  const guide::GuideResult r = guide::WriteGuide(o);
  ASSERT_EQ(r.page.sections.size(), 2u);
  const guide::Section& s = r.page.sections[0];
  EXPECT_EQ(s.name, "quality");
  ASSERT_EQ(s.tables.size(), 1u);
  EXPECT_EQ(s.tables[0].rows.size(), train::SmokeGrid().variants.size());
  bool length_chart = false;
  for (const auto& f : s.figures) {
    length_chart |= f.id == "quality-mqar-length";
    EXPECT_FALSE(f.vega_lite.empty()) << f.id;
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "figures" / (f.id + ".vl.json"))) << f.id;
  }
  EXPECT_TRUE(length_chart);
  // The comparison table carries the trained quality of each variant.
  int quality_rows = 0;
  for (const auto& t : r.page.sections[1].tables) {
    if (t.id != "compare-variants") continue;
    EXPECT_EQ(t.header.back(), "trained quality");
    for (const auto& v : t.rows) quality_rows += v.back() != "—";
  }
  EXPECT_EQ(quality_rows, static_cast<int>(train::SmokeGrid().variants.size()));
  fs::remove_all(scratch);
}

using guide::Finding;
using Status = Finding::Status;

// A grid with mha and swa (window 4) at lengths 16 and 32; `mha` and `swa` are the accuracies at
// 32, `answers` the answers behind each.
guide::detail::QualityMeasured Injected(double mha, double swa, int64_t answers) {
  guide::detail::QualityMeasured m;
  m.lengths = {16, 32};
  m.window = 4;
  const std::vector<int64_t> n = {answers, answers};
  m.rows.push_back({"mha", {1.0, mha}, n, {1024, 2048}, 2.5, std::vector<double>(16, 0)});
  m.rows.push_back({"swa", {0.5, swa}, n, {128, 128}, 2.7, std::vector<double>(16, 0)});
  // Loss falls along the window for mha (more context), with a little scatter.
  for (size_t i = 0; i < 16; ++i) {
    m.rows[0].loss_by_position[i] = 3.0 - 0.1 * static_cast<double>(i) + 0.01 * (i % 2);
    m.rows[1].loss_by_position[i] = 3.0;
  }
  return m;
}

Status StatusOf(const guide::detail::FindingsByFigure& f, const std::string& id) {
  for (const auto& [fig, list] : f) {
    for (const auto& x : list) {
      if (x.id == id) return x.status;
    }
  }
  ADD_FAILURE() << "no finding " << id;
  return Status::kMeasured;
}

TEST(QualityFindings, AgreeingContradictingAndNoisyGrids) {
  using guide::detail::QualityFindings;
  const auto agree = QualityFindings(Injected(1.0, 0.1, 1024));
  EXPECT_EQ(StatusOf(agree, "quality.mqar-solved.mha"), Status::kHolds);
  EXPECT_EQ(StatusOf(agree, "quality.window-fails"), Status::kHolds);
  EXPECT_EQ(StatusOf(agree, "quality.position.mha"), Status::kHolds);
  EXPECT_EQ(StatusOf(agree, "quality.state.swa"), Status::kMeasured);
  EXPECT_EQ(StatusOf(agree, "quality.bpb-order"), Status::kMeasured);

  const auto contradict = QualityFindings(Injected(0.3, 0.9, 1024));
  EXPECT_EQ(StatusOf(contradict, "quality.mqar-solved.mha"), Status::kContradicted);
  EXPECT_EQ(StatusOf(contradict, "quality.window-fails"), Status::kContradicted);
  for (const auto& [fig, list] : contradict) {
    for (const auto& x : list) {
      if (x.status == Status::kContradicted) {
        EXPECT_NE(x.text.find("measured"), std::string::npos) << x.text;
      }
    }
  }
  // Eight answers: every interval is wide, so nothing is concluded.
  const auto noisy = QualityFindings(Injected(0.875, 0.75, 8));
  EXPECT_EQ(StatusOf(noisy, "quality.mqar-solved.mha"), Status::kNotResolved);
  EXPECT_EQ(StatusOf(noisy, "quality.window-fails"), Status::kNotResolved);
  // No window finding where the longest length does not reach far beyond the window.
  auto near = Injected(1.0, 0.1, 1024);
  near.window = 16;
  for (const auto& [fig, list] : QualityFindings(near)) {
    for (const auto& x : list) EXPECT_NE(x.id, "quality.window-fails");
  }
}

}  // namespace
}  // namespace attnkit
