// Guide section "quality": what each variant gives up in quality, measured by training small
// models with it on the same data and budget (train::RunQuality, docs/quality.md): MQAR accuracy
// against sequence length and against the bytes the model holds for its context (Zoology's
// picture), validation bits per byte on text, and the text loss against context position.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "attnkit/core/runtime.h"
#include "attnkit/guide/charts.h"
#include "attnkit/train/quality.h"
#include "attnkit/train/trainer.h"
#include "guide/quality_findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

train::QualityGrid GridFor(const SweepConfig& c) {
  switch (c.size) {
    case SweepSize::kSmoke:
      return train::SmokeGrid();
    case SweepSize::kQuick:
      return train::GuideQuickGrid();
    case SweepSize::kFull:
      return train::DefaultGrid();
  }
  return train::GuideQuickGrid();
}

Figure Chart(const std::string& id, const std::string& title, const std::string& caption,
             const std::string& source, std::string spec) {
  Figure f;
  f.kind = Figure::Kind::kChart;
  f.id = id;
  f.title = title;
  f.caption = caption;
  f.provenance = Provenance::kMeasured;
  f.source = source;
  f.vega_lite = std::move(spec);
  return f;
}

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  const train::QualityGrid grid = GridFor(c);
  Section sec;
  sec.name = "quality";
  sec.nav_title = "Quality (trained)";
  sec.comparison = true;
  sec.title = "Quality: what each variant gives up, measured by training small models";
  sec.intro_html =
      "<p>Every variant above saves compute or memory; this section measures what it costs in "
      "quality. Small decoder-only models, identical except for their attention layers, are "
      "trained on this machine in this run with attnkit's own kernels and backward passes, on "
      "the same data and budget: <b>multi-query associative recall</b> (MQAR, the synthetic "
      "task of Zoology: key&ndash;value pairs, then queries of earlier keys; accuracy on held-out "
      "sequences) at several sequence lengths, and <b>byte-level language modelling</b> of "
      "English text (validation bits per byte). The models are tiny and the budget is seconds "
      "per run (stated below), so the numbers show the direction of each trade-off, not what a "
      "large model would reach. <code>attnkit quality</code> runs the same grid from the "
      "command line (<code>--full</code> for a bigger one).</p>";
  sec.formula_html =
      "MQAR: k<sub>1</sub> v<sub>1</sub> &hellip; k<sub>P</sub> v<sub>P</sub> &hellip; "
      "k<sub>i</sub> &rarr; predict v<sub>i</sub>; &nbsp; bits per byte = mean(&minus;ln "
      "p(next byte)) / ln 2";
  sec.models_source = "";

  // One thread: these models are tiny, and a second thread on a shared machine can cost more in
  // synchronisation than it gives (docs/quality.md).
  const int saved_threads = GetNumThreads();
  SetNumThreads(1);
  train::QualityCallbacks cb;
  int64_t reported = 0;
  cb.on_run = [&](int64_t done, int64_t, const std::string& what) {
    for (; reported < done; ++reported) ctx.Step("quality: " + what);
  };
  train::QualityResult r;
  try {
    r = train::RunQuality(grid, cb);
  } catch (...) {
    SetNumThreads(saved_threads);
    throw;
  }
  SetNumThreads(saved_threads);
  const int64_t planned = train::QualityRuns(grid);
  for (; reported < planned; ++reported) ctx.Step("quality: text skipped");

  const std::string source = "train::RunQuality, grid \"" + grid.name + "\" (" + grid.Budget() +
                             "), " + std::to_string(r.threads) + " threads, this run";
  QualityMeasured m;
  m.lengths = grid.lengths;
  m.window = grid.model.window;
  for (const auto& row : r.rows) {
    m.rows.push_back({row.variant, row.mqar_accuracy, row.mqar_answers, row.context_bytes,
                      row.bits_per_byte, row.loss_by_position});
  }

  // MQAR accuracy against length, and against the bytes held for the context.
  LineChartSpec by_len;
  by_len.title = "MQAR accuracy against sequence length";
  by_len.subtitle = std::to_string(grid.mqar_pairs) + " key-value pairs, chance " +
                    Fmt("%.1f", 100.0 / static_cast<double>(grid.mqar_vocab / 2)) + " %";
  by_len.x_title = "sequence length (tokens)";
  by_len.y_title = "accuracy (%)";
  by_len.log_x = 1;
  by_len.log_y = 0;
  LineChartSpec by_bytes = by_len;
  by_bytes.title = "MQAR accuracy against the bytes the model holds for its context";
  by_bytes.subtitle = "one point per length; a fixed state stays put";
  by_bytes.x_title = "cache or state bytes (whole model)";
  by_bytes.token_axis = false;
  BarChartSpec bpb;
  bpb.title = "Validation bits per byte";
  // The corpus's short name (the full path is in the figure's source line): long subtitles are
  // cut off on a phone-width page.
  bpb.subtitle = grid.text_path.empty() ? "Brown corpus, validation documents"
                                        : std::filesystem::path(grid.text_path).filename().string();
  bpb.x_title = "variant";
  bpb.y_title = "bits per byte (lower is better)";
  bpb.group_title = "task";
  bpb.y_format = ".3f";
  bpb.log_y = 0;
  LineChartSpec pos;
  pos.title = "Text loss against position in the context window";
  pos.subtitle = "validation bytes; position 1 sees one byte of context";
  pos.x_title = "position in the window (bytes)";
  pos.y_title = "loss (nats per byte)";
  pos.log_x = 0;
  pos.log_y = 0;
  for (const auto& row : r.rows) {
    Series a = NamedSeries(row.variant, false), b = a, p = a;
    for (size_t i = 0; i < row.mqar_accuracy.size(); ++i) {
      const Spread s = AccuracySpread(row.mqar_accuracy[i], row.mqar_answers[i]);
      a.x.push_back(static_cast<double>(grid.lengths[i]));
      a.y.push_back(100 * s.value);
      a.y_lo.push_back(100 * s.lo);
      a.y_hi.push_back(100 * s.hi);
      b.x.push_back(static_cast<double>(row.context_bytes[i]));
      b.y.push_back(100 * s.value);
      b.y_lo.push_back(100 * s.lo);
      b.y_hi.push_back(100 * s.hi);
    }
    if (!a.x.empty()) {
      by_len.series.push_back(a);
      by_bytes.series.push_back(b);
    }
    if (row.bits_per_byte >= 0) {
      bpb.bars.push_back({row.variant, "text", row.bits_per_byte});
      for (size_t i = 0; i < row.loss_by_position.size(); ++i) {
        p.x.push_back(static_cast<double>(i + 1));
        p.y.push_back(row.loss_by_position[i]);
      }
      pos.series.push_back(p);
    }
  }
  if (!by_len.series.empty()) {
    sec.figures.push_back(Chart(
        "quality-mqar-length", "Recall against sequence length",
        "Exact attention should recall at every length it holds; a sliding window (window " +
            std::to_string(grid.model.window) +
            ") only while keys stay within it; fixed-state models as far as their state allows. "
            "Error bars: ± two binomial standard errors over the held-out answers.",
        source, LineChart(by_len)));
    sec.figures.push_back(
        Chart("quality-mqar-state", "Recall against cache or state size (Zoology's picture)",
              "The x axis is what the whole model keeps for the context at that length "
              "(Layer::CacheBytes after a prefill): attention's KV cache grows with the length, a "
              "recurrent state does not. Up and to the left is better.",
              source, LineChart(by_bytes)));
  }
  if (!bpb.bars.empty()) {
    sec.figures.push_back(Chart("quality-bpb", "Bits per byte on held-out text",
                                "The same model and budget with each variant; one run each.",
                                source + "; " + r.text_source, GroupedBarChart(bpb)));
    sec.figures.push_back(
        Chart("quality-position", "Where in the window the loss falls",
              "A byte far into the window has more context to use; a local window or a fixed state "
              "can use less of it than exact attention.",
              source + "; " + r.text_source, LineChart(pos)));
  } else {
    sec.notes.push_back("Text task: " + r.text_source + ".");
  }

  Table t;
  t.id = "quality-grid";
  t.title = "Quality beside cost, one run on this machine";
  t.provenance = Provenance::kMeasured;
  t.source = source;
  t.header = {"variant", "layers", "parameters"};
  for (int64_t l : grid.lengths) t.header.push_back("MQAR @" + std::to_string(l));
  t.header.insert(t.header.end(),
                  {"bits / byte", "train tokens/s @" + std::to_string(grid.lengths.back()),
                   "peak memory (MiB, VmHWM)",
                   "context bytes / token @" + std::to_string(grid.lengths.back())});
  for (const auto& row : r.rows) {
    std::vector<std::string> cells = {row.variant, std::to_string(row.layers),
                                      std::to_string(row.params)};
    const bool full = row.mqar_accuracy.size() == grid.lengths.size();
    for (size_t i = 0; i < grid.lengths.size(); ++i) {
      cells.push_back(i < row.mqar_accuracy.size() ? Fmt("%.1f %%", 100 * row.mqar_accuracy[i])
                                                   : "—");
    }
    cells.push_back(row.bits_per_byte >= 0 ? Fmt("%.3f", row.bits_per_byte) : "—");
    cells.push_back(full ? Fmt("%.0f", row.mqar_tokens_per_s.back()) : "—");
    cells.push_back(
        row.peak_bytes >= 0 ? Fmt("%.1f", static_cast<double>(row.peak_bytes) / (1 << 20)) : "—");
    cells.push_back(full ? Fmt("%.0f", static_cast<double>(row.context_bytes.back()) /
                                           static_cast<double>(grid.lengths.back()))
                         : "—");
    if (!row.error.empty()) cells[0] += " (failed: " + row.error + ")";
    t.rows.push_back(std::move(cells));

    VariantSummary v;
    v.variant = row.variant + " (trained)";
    v.section = "quality";
    if (full) {
      v.quality =
          "MQAR " + Fmt("%.0f %%", 100 * row.mqar_accuracy.back()) + " @" +
          std::to_string(grid.lengths.back()) +
          (row.bits_per_byte >= 0 ? ", " + Fmt("%.3f", row.bits_per_byte) + " bits/byte" : "");
    }
    ctx.variants().push_back(v);
  }
  sec.tables.push_back(t);
  AttachFindings(sec, QualityFindings(m));
  return sec;
}

}  // namespace

SectionSpec QualitySection() {
  SectionSpec s;
  s.name = "quality";
  s.title = "Quality (trained)";
  s.steps = [](const SweepConfig& c) { return train::QualityRuns(GridFor(c)); };
  s.peak_bytes = [](const SweepConfig& c) {
    const train::QualityGrid g = GridFor(c);
    train::ModelConfig m = g.model;
    m.vocab = 256;
    m.variant = "mha";
    m.layers = 4;  // a hybrid list may round the layers up
    const int64_t len = std::max(g.text_seqlen, g.lengths.back());
    m.max_seqlen = len;
    return static_cast<int64_t>(
        train::EstimateTrainBytes(m.Resolved(), std::max(g.batch, g.text_batch), len));
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
