// Guide section "delta": the gated delta rule family — Gated DeltaNet (scalar decay) and Kimi
// Delta Attention (per-channel decay). Draws the matrix state the kernel carries, measures the
// chunk-wise prefill against the token-by-token recurrence and exact attention, and shows decode
// cost flat in the context.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/core/tensor.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/kernels/recurrent.h"
#include "guide/catalogue_util.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

// Scaled-down Qwen3-Next linear layer: value heads share q/k heads in pairs.
constexpr int64_t kHeadsQk = 4, kHeadsV = 8, kDim = 128;

struct DeltaInputs {
  Tensor<float> q, k, v, log_alpha, beta, out;
  DeltaInputs(int64_t n, int64_t heads_qk, int64_t heads_v, int64_t d, bool per_channel,
              uint64_t seed)
      : q(1, heads_qk, n, d),
        k(1, heads_qk, n, d),
        v(1, heads_v, n, d),
        log_alpha(1, heads_v, n, per_channel ? d : 1),
        beta(1, heads_v, n, 1),
        out(1, heads_v, n, d) {
    FillUniform(q.data(), q.numel(), seed + 1);
    FillUniform(k.data(), k.numel(), seed + 2);
    FillUniform(v.data(), v.numel(), seed + 3);
    FillUniform(log_alpha.data(), log_alpha.numel(), seed + 4);
    FillUniform(beta.data(), beta.numel(), seed + 5);
    // Decays in (e^-0.1, 1], write strengths in [0.25, 0.75]: typical trained-gate ranges.
    for (int64_t i = 0; i < log_alpha.numel(); ++i)
      log_alpha.data()[i] = -0.05f * (1 + log_alpha.data()[i]);
    for (int64_t i = 0; i < beta.numel(); ++i) beta.data()[i] = 0.5f + 0.25f * beta.data()[i];
  }
};

int64_t DeltaLast(const SweepConfig& c) { return c.prefill_last * 4; }
// Longest decode context (each point runs a prefill of that length first).
int64_t DecodeLast(const SweepConfig& c) {
  return std::min<int64_t>(c.decode_last, c.size == SweepSize::kFull ? 131072 : 16384);
}
int64_t DeltaBytes(int64_t n) {
  return n * kDim * (2 * kHeadsQk + 3 * kHeadsV) * 4 + n * kHeadsV * kDim * 4;
}

// Heatmaps of the state S (head 0, first 16 × 16 entries) after t tokens, read from the kernel's
// state output.
std::string StateDiagram(bool per_channel) {
  const int64_t d = 16, show = 16;
  const int64_t steps[] = {1, 4, 16, 64};
  const double cell = 6, gap = 18, left = 10, top = 40;
  SvgDoc doc(left + 4 * (show * cell + gap) + 10, top + show * cell + 54, "State S after t tokens");
  doc.Text(left, 16,
           std::string(per_channel ? "KDA" : "Gated DeltaNet") +
               ": the state S (d_k × d_v) after t tokens, head 0",
           13, "start", "#222", "bold");
  DeltaInputs in(64, 1, 1, d, per_channel, 42);
  for (int i = 0; i < 4; ++i) {
    const int64_t t = steps[i];
    Tensor<float> state(1, 1, d, d);
    auto view = [&](Tensor<float>& x) {
      auto v = x.view();
      v.shape[2] = t;
      return v;
    };
    GatedDeltaOptions o;
    GatedDeltaForward(view(in.q), view(in.k), view(in.v), view(in.log_alpha), view(in.beta),
                      view(in.out), state.view(), o);
    double max_abs = 1e-12;
    for (int64_t j = 0; j < state.numel(); ++j)
      max_abs = std::max(max_abs, static_cast<double>(std::abs(state.data()[j])));
    const double x0 = left + static_cast<double>(i) * (show * cell + gap);
    // Shades in kLevels steps of |S| / max |S| per sign (blue ≥ 0, red < 0), drawn as one path
    // per shade (a rect with its own tooltip per cell made each diagram 100 KB).
    constexpr int kLevels = 12;
    std::vector<std::string> fills;
    for (int sign = 0; sign < 2; ++sign) {
      for (int level = 1; level <= kLevels; ++level) {
        const int shade = static_cast<int>(255 - 200.0 * level / kLevels);
        char fill[16];
        std::snprintf(fill, sizeof fill, sign == 0 ? "#%02x%02xff" : "#ff%02x%02x", shade, shade);
        fills.push_back(fill);
      }
    }
    std::vector<uint8_t> labels(static_cast<size_t>(show * show), 0);  // 0: |S| ≈ 0, white
    for (int64_t r = 0; r < show; ++r) {
      for (int64_t c = 0; c < show; ++c) {
        const double s = state.data()[r * d + c] / max_abs;  // in [-1, 1]
        const int level = static_cast<int>(std::lround(std::abs(s) * kLevels));
        if (level > 0) {
          labels[static_cast<size_t>(r * show + c)] =
              static_cast<uint8_t>((s >= 0 ? 0 : kLevels) + level);
        }
      }
    }
    doc.Raw(CellGridSvg(labels, show, show, x0, top, cell, fills));
    doc.Rect(x0, top, show * cell, show * cell, "none", "#888", 1,
             "S after " + std::to_string(t) + " tokens: max |S| " + Fmt("%.3g", max_abs));
    doc.Text(x0 + show * cell / 2, top + show * cell + 16, "t = " + std::to_string(t), 11,
             "middle");
    doc.Text(x0 + show * cell / 2, top + show * cell + 30, "max |S| " + Fmt("%.3g", max_abs), 10,
             "middle", "#555");
  }
  doc.Text(left, top + show * cell + 48,
           "blue > 0, red < 0, shade ∝ |S| / max |S|; rows: key dims, columns: value dims", 10,
           "start", "#555");
  return doc.Finish();
}

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  Section sec;
  sec.name = "delta";
  sec.title = "Gated DeltaNet and Kimi Delta Attention: a matrix state updated by the delta rule";
  sec.intro_html =
      "<p>The delta rule keeps, per head, a d<sub>k</sub> &times; d<sub>v</sub> matrix S that "
      "acts as an associative memory: each token first decays it (Gated DeltaNet by a scalar "
      "&alpha;<sub>t</sub>, Kimi Delta Attention by one decay per key channel), then corrects "
      "what S currently returns for k<sub>t</sub> towards v<sub>t</sub>, with strength "
      "&beta;<sub>t</sub>. Reading is o<sub>t</sub> = S<sup>T</sup>q<sub>t</sub>. Decode costs the "
      "same at every position and the state never grows.</p><p>For prefill attnkit uses the "
      "chunk-wise form (the WY / UT representation turns a chunk's updates into triangular solves "
      "and matrix products); the token-by-token recurrence is its reference and the decode "
      "path.</p>";
  sec.formula_html =
      "S<sub>t</sub> = (I &minus; &beta;<sub>t</sub> k<sub>t</sub>k<sub>t</sub><sup>T</sup>) "
      "diag(&alpha;<sub>t</sub>) S<sub>t&minus;1</sub> + &beta;<sub>t</sub> k<sub>t</sub> "
      "v<sub>t</sub><sup>T</sup>, &nbsp; o<sub>t</sub> = S<sub>t</sub><sup>T</sup> q<sub>t</sub>"
      "<br>Gated DeltaNet: &alpha;<sub>t</sub> scalar; KDA: &alpha;<sub>t</sub> &isin; "
      "(0,1]<sup>d<sub>k</sub></sup>; &alpha;<sub>t</sub> = exp(&minus;e<sup>A</sup> "
      "softplus(a<sub>t</sub> + b)), &beta;<sub>t</sub> = sigmoid(b<sub>t</sub>)";
  sec.models = ModelsWhere([](const models::ModelConfig& cfg) -> std::string {
    return cfg.Count(models::LayerKind::kGatedDeltaNet) + cfg.Count(models::LayerKind::kKda) > 0
               ? cfg.Summary()
               : "";
  });
  sec.models_source = CatalogueSourceLine();

  for (bool per_channel : {false, true}) {
    Figure f;
    f.id = per_channel ? "delta-state-kda" : "delta-state-gdn";
    f.title = per_channel ? "The state of Kimi Delta Attention" : "The state of Gated DeltaNet";
    f.caption =
        "The memory the layer carries instead of a KV cache: the same fixed-size matrix "
        "after 1 or 64 tokens, filled by the delta-rule writes.";
    f.source = std::string("GatedDeltaForward on a seeded random input (d_k = d_v = 16, ") +
               (per_channel ? "per-channel" : "scalar") +
               " decay), its state output after t tokens";
    f.svg = StateDiagram(per_channel);
    sec.figures.push_back(f);
  }

  // Measured prefill: chunked GDN / KDA, token-by-token GDN, exact attention.
  LineChartSpec tc = SeqlenTimeChart(
      "Prefill time: chunk-wise delta rule against the recurrence and exact attention",
      "batch 1, 4 q/k heads, 8 value heads, head_dim 128, f32, " + std::to_string(c.threads) +
          " threads; exact: 8 q heads over 2 KV heads");
  const auto dense = SharedCausalSweep(ctx);
  Series ds = TimedSeries("exact causal (dense kernel)", dense);
  tc.series.push_back(ds);
  DeltaMeasured measured;
  measured.dense = ds;
  struct Variant {
    const char* name;
    bool per_channel;
    DeltaAlgorithm algorithm;
    int64_t last_div;  // the token-by-token form is slow: shorter sweep
  };
  const Variant variants[] = {
      {"Gated DeltaNet, chunk-wise", false, DeltaAlgorithm::kChunked, 1},
      {"KDA, chunk-wise", true, DeltaAlgorithm::kChunked, 1},
      {"Gated DeltaNet, token by token", false, DeltaAlgorithm::kRecurrent, 4}};
  std::vector<std::vector<SweepPoint>> results;
  for (const auto& var : variants) {
    SweepOptions so;
    so.first = c.prefill_first;
    so.last = std::max(c.prefill_first, DeltaLast(c) / var.last_div);
    so.point_budget_seconds = c.point_budget_seconds;
    so.min_slope = 0.8;
    so.max_slope = 2;
    auto measure = [&](int64_t n) {
      SweepPoint p;
      p.seqlen = n;
      DeltaInputs in(n, kHeadsQk, kHeadsV, kDim, var.per_channel, 9);
      GatedDeltaOptions o;
      o.algorithm = var.algorithm;
      o.num_threads = c.threads;
      SetTiming(p, TimeRepeats(
                       [&] {
                         GatedDeltaForward(in.q.view(), in.k.view(), in.v.view(),
                                           in.log_alpha.view(), in.beta.view(), in.out.view(), {},
                                           o);
                       },
                       3, 5, 0.2, false));
      return p;
    };
    results.push_back(SeqlenSweep(
        so, measure,
        [&](const SweepPoint& p) {
          ctx.Step(std::string(var.name) + " " + FormatTokens(p.seqlen));
        },
        [&](int64_t n) {
          ctx.Step(std::string(var.name) + " " + FormatTokens(n) + " skipped (time budget)");
        }));
    Series s = TimedSeries(var.name, results.back());
    tc.series.push_back(s);
    (var.algorithm == DeltaAlgorithm::kRecurrent ? measured.recurrent
     : var.per_channel                           ? measured.kda
                                                 : measured.gdn) = s;
    if (var.algorithm == DeltaAlgorithm::kChunked) {
      VariantSummary row = SummaryFromSeries(var.name, sec.name, s);
      row.bytes_note = "no per-token cache: fixed state of " +
                       FormatBytes(static_cast<double>(kHeadsV * kDim * kDim * 4)) + " per layer";
      ctx.variants().push_back(row);
      sec.variants.push_back(row);
    }
  }
  Figure tf;
  tf.kind = Figure::Kind::kChart;
  tf.id = "delta-prefill-time";
  tf.title = tc.title;
  tf.caption =
      "Both forms do a fixed amount of work per token; the chunk-wise form turns the per-token "
      "rank-1 updates into matrix products. Medians, bars the fastest and slowest repeat.";
  tf.provenance = Provenance::kMeasured;
  tf.source = "GatedDeltaForward (kChunked, chunk 64 / kRecurrent) and DenseForward, this run";
  tf.vega_lite = LineChart(tc);
  sec.figures.push_back(tf);
  Table sp;
  sp.id = "delta-speedup";
  sp.title = "Chunk-wise against token-by-token Gated DeltaNet";
  sp.provenance = Provenance::kMeasured;
  sp.source = "the sweeps above, same inputs";
  sp.header = {"seqlen", "chunk-wise ms (median)", "token-by-token ms (median)",
               "speed-up (range over repeats)"};
  for (const auto& a : results[0]) {
    for (const auto& b : results[2]) {
      if (a.seqlen == b.seqlen) {
        sp.rows.push_back({FormatTokens(a.seqlen), Fmt("%.3f", a.seconds * 1e3),
                           Fmt("%.3f", b.seconds * 1e3),
                           Fmt("%.1f×", b.seconds / a.seconds) + " (" +
                               Fmt("%.1f", b.seconds_min / std::max(1e-12, a.seconds_max)) + "–" +
                               Fmt("%.1f", b.seconds_max / std::max(1e-12, a.seconds_min)) + ")"});
      }
    }
  }
  sec.tables.push_back(sp);

  // Decode: one token after a prefill of `context` tokens, time flat in the context.
  LineChartSpec dc;
  dc.title = "Decode time per token against context: flat";
  dc.subtitle =
      "Gated DeltaNet, 1 new token after a chunk-wise prefill of the context; state carried";
  dc.x_title = "context (tokens)";
  dc.y_title = "time per token (ms)";
  dc.log_x = dc.log_y = 1;
  Series dec = NamedSeries("Gated DeltaNet decode", true);
  for (int64_t n = c.decode_first; n <= DecodeLast(c); n *= 4) {
    DeltaInputs prefix(n, kHeadsQk, kHeadsV, kDim, false, 21);
    Tensor<float> state(1, kHeadsV, kDim, kDim);
    GatedDeltaOptions o;
    o.num_threads = c.threads;
    GatedDeltaForward(prefix.q.view(), prefix.k.view(), prefix.v.view(), prefix.log_alpha.view(),
                      prefix.beta.view(), prefix.out.view(), state.view(), o);
    DeltaInputs step(1, kHeadsQk, kHeadsV, kDim, false, 22);
    Tensor<float> s2(1, kHeadsV, kDim, kDim);
    const Timing tm = TimeRepeats(
        [&] {
          std::copy(state.data(), state.data() + state.numel(), s2.data());
          GatedDeltaForward(step.q.view(), step.k.view(), step.v.view(), step.log_alpha.view(),
                            step.beta.view(), step.out.view(), s2.view(), o);
        },
        5, 50, 0.1);
    AddPoint(dec, static_cast<double>(n), tm);
    ctx.Step("Gated DeltaNet decode @" + FormatTokens(n));
  }
  dc.series = {dec};
  measured.decode = dec;
  Figure df;
  df.kind = Figure::Kind::kChart;
  df.id = "delta-decode-time";
  df.title = dc.title;
  df.caption =
      "The state has the same size after 1k or 32k tokens, so each decode step should cost the "
      "same, unlike a KV cache whose reads grow with the context.";
  df.provenance = Provenance::kMeasured;
  df.source =
      "GatedDeltaForward with seqlen 1 and the state left by a prefill of the context (the "
      "timed step includes copying the state back), this run";
  df.vega_lite = LineChart(dc);
  sec.figures.push_back(df);
  AttachFindings(sec, DeltaFindings(measured));
  return sec;
}

}  // namespace

SectionSpec DeltaSection() {
  SectionSpec s;
  s.name = "delta";
  s.title = "Gated DeltaNet / KDA";
  s.steps = [](const SweepConfig& c) {
    int64_t decode = 0;
    for (int64_t n = c.decode_first; n <= DecodeLast(c); n *= 4) ++decode;
    return PrefillSteps(c) + 2 * SweepPlannedPoints(c.prefill_first, DeltaLast(c)) +
           SweepPlannedPoints(c.prefill_first, std::max(c.prefill_first, DeltaLast(c) / 4)) +
           decode;
  };
  s.peak_bytes = [](const SweepConfig& c) {
    return std::max(DeltaBytes(DeltaLast(c)), DeltaBytes(DecodeLast(c)));
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
