// Guide section "linear": Performer (FAVOR+) and linear attention (elu+1, ReLU). Measures causal
// prefill time against sequence length beside exact causal attention (slope ≈ 1 against ≈ 2),
// the approximation error of FAVOR+ against exact softmax attention as the number of random
// features grows (orthogonal against i.i.d. features), and the fixed decode state.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/core/tensor.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/linear.h"
#include "guide/catalogue_util.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

const DenseShape kShape{8, 2, 128};  // as the dense GQA sweep, so the curves compare
constexpr int64_t kFeatures = 256;   // Performer m
constexpr int64_t kChunk = 64;

struct LinearVariant {
  const char* name;
  FeatureMap map;
};
const LinearVariant kVariants[] = {{"Performer FAVOR+ (m=256)", FeatureMap::kFavorPositive},
                                   {"linear attention elu+1", FeatureMap::kEluPlusOne},
                                   {"linear attention ReLU", FeatureMap::kRelu}};

int64_t LinearLast(const SweepConfig& c) { return c.prefill_last * 4; }

int64_t LinearBytes(int64_t seqlen) { return DensePrefillBytes(kShape, seqlen); }

// Input temperature ‖q‖·‖k‖/√d of q, k with i.i.d. entries of variance `var` in d dims
// (‖q‖² ≈ var · d): soft attention below ~1, peaked attention from a few up.
double Temperature(double var, int64_t d) { return var * std::sqrt(static_cast<double>(d)); }

// Relative error ‖o − o_exact‖ / ‖o_exact‖ of causal FAVOR+ against exact causal attention on
// q, k scaled to `temperature` (entries uniform, variance temperature / √d), for each m and
// feature kind, over `draws` inputs and feature draws: the median and the min–max over the
// draws. The exact output is computed once per draw.
struct FavorErrors {
  std::vector<Spread> orthogonal, iid;  // one per m
};
FavorErrors FavorError(const std::vector<int64_t>& ms, int64_t seqlen, double temperature,
                       int draws) {
  const int64_t d = 64;
  const double sigma = std::sqrt(temperature / std::sqrt(static_cast<double>(d)));
  std::vector<std::vector<double>> eo(ms.size()), ei(ms.size());
  for (int s = 0; s < draws; ++s) {
    Tensor<float> q(1, 2, seqlen, d), k(1, 2, seqlen, d), v(1, 2, seqlen, d), o(1, 2, seqlen, d),
        exact(1, 2, seqlen, d);
    // Uniform [-1, 1) has variance 1/3: rescale to variance sigma².
    FillUniform(q.data(), q.numel(), 100 + s);
    FillUniform(k.data(), k.numel(), 200 + s);
    FillUniform(v.data(), v.numel(), 300 + s);
    const float f = static_cast<float>(sigma * std::sqrt(3.0));
    for (int64_t i = 0; i < q.numel(); ++i) q.data()[i] *= f;
    for (int64_t i = 0; i < k.numel(); ++i) k.data()[i] *= f;
    const MaskPtr causal = CausalMask();
    DenseOptions dopt;
    dopt.mask = causal.get();
    DenseForward(q.view(), k.view(), v.view(), exact.view(), dopt);
    for (size_t i = 0; i < ms.size(); ++i) {
      for (RandomFeatureKind kind : {RandomFeatureKind::kOrthogonal, RandomFeatureKind::kIid}) {
        PerformerFeatures features(ms[i], d, kind, 1000 + static_cast<uint64_t>(s));
        LinearOptions lo;
        lo.feature_map = FeatureMap::kFavorPositive;
        lo.features = &features;
        LinearForward(q.view(), k.view(), v.view(), o.view(), lo);
        (kind == RandomFeatureKind::kOrthogonal ? eo : ei)[i].push_back(RelativeError(o, exact));
      }
    }
  }
  FavorErrors r;
  for (size_t i = 0; i < ms.size(); ++i) {
    r.orthogonal.push_back(SpreadOf(eo[i]));
    r.iid.push_back(SpreadOf(ei[i]));
  }
  return r;
}

std::vector<double> ErrorTemperatures(const SweepConfig& c) {
  if (c.size == SweepSize::kFull) return {0.5, 1, 2, 4, 8};
  return {0.5, 2, 8};
}
int64_t ErrorMaxFeatures(const SweepConfig& c) { return c.size == SweepSize::kSmoke ? 64 : 512; }

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  Section sec;
  sec.name = "linear";
  sec.title = "Performer and linear attention: a feature map instead of the softmax";
  sec.intro_html =
      "<p>Linear attention replaces exp(q&middot;k) by a product of feature maps "
      "&phi;(q)&middot;&phi;(k), so the sum over keys can be kept as a running state: cost grows "
      "linearly with the sequence and decode needs a fixed-size state instead of a KV cache. "
      "Performer's FAVOR+ uses positive random features whose expectation is exactly the softmax "
      "kernel, so it approximates softmax attention, with an error that falls as the number of "
      "features m grows; elu+1 and ReLU maps are cheaper but compute a different function.</p>"
      "<p>attnkit computes the causal form chunk by chunk: a masked quadratic product inside "
      "each chunk and a running m &times; d<sub>v</sub> state across chunks.</p>";
  sec.formula_html =
      "o<sub>t</sub> = &phi;(q<sub>t</sub>)<sup>T</sup> S<sub>t</sub> / &phi;(q<sub>t</sub>)<sup>T"
      "</sup>z<sub>t</sub>, &nbsp; S<sub>t</sub> = &Sigma;<sub>s&le;t</sub> &phi;(k<sub>s</sub>) "
      "v<sub>s</sub><sup>T</sup>, &nbsp; z<sub>t</sub> = &Sigma;<sub>s&le;t</sub> "
      "&phi;(k<sub>s</sub>)<br>FAVOR+: &phi;(x) = exp(W x &minus; &Vert;x&Vert;<sup>2</sup>/2) / "
      "&radic;m, &nbsp; E[&phi;(q)&middot;&phi;(k)] = exp(q&middot;k), &nbsp; x = input / "
      "d<sup>1/4</sup>";
  sec.models = ModelsWhere([](const models::ModelConfig& cfg) -> std::string {
    const int64_t n = cfg.Count(models::LayerKind::kLightning);
    return n > 0 ? std::to_string(n) + " lightning (decayed linear attention) layers" : "";
  });
  sec.models_source = CatalogueSourceLine() +
                      "; no catalogue model uses Performer's random features, which are shown "
                      "here as the classic unbiased approximation of softmax attention";

  // Diagram: which pairs the chunked causal form computes directly and which through the state.
  const MaskPtr in_chunk = ChunkedLocalMask(8);
  const MaskPtr causal = CausalMask();
  MaskDiagramOptions mo;
  mo.title = "Chunked causal linear attention, chunks of 8, 32 tokens";
  mo.background = causal.get();
  mo.legend = "inside the chunk: masked product";
  mo.background_legend = "earlier chunks: via the state S";
  Figure dia;
  dia.id = "linear-chunks";
  dia.title = "How the causal form is computed";
  dia.caption =
      "Blue pairs are computed as a small masked quadratic product inside each chunk; "
      "orange pairs never meet: their keys reach the query only through the running "
      "state S and normaliser z, which is why the cost is linear.";
  dia.source =
      "ChunkedLocalMask(8) (the intra-chunk part) over CausalMask() (everything a query "
      "may see), sampled with Mask::FillTile; the kernel's default chunk is 64";
  dia.svg = MaskDiagram(*in_chunk, 32, 32, mo);
  sec.figures.push_back(dia);

  // Measured prefill time against seqlen, beside exact causal attention.
  LineChartSpec tc =
      SeqlenTimeChart("Causal prefill time: linear attention against exact attention",
                      "batch 1, 8 query heads over 2 KV heads, head_dim 128, f32, " +
                          std::to_string(c.threads) + " threads; dashed: log-log fit");
  const auto dense = SharedCausalSweep(ctx);
  Series ds = TimedSeries("exact causal (dense kernel)", dense);
  tc.series.push_back(ds);
  LinearMeasured measured;
  measured.dense = ds;
  PerformerFeatures features(kFeatures, kShape.head_dim, RandomFeatureKind::kOrthogonal, 7);
  for (const auto& lv : kVariants) {
    SweepOptions so;
    so.first = c.prefill_first;
    so.last = LinearLast(c);
    so.point_budget_seconds = c.point_budget_seconds;
    so.min_slope = 0.8;
    so.max_slope = 2;
    auto measure = [&](int64_t n) {
      SweepPoint p;
      p.seqlen = n;
      PeakMemory peak;
      peak.Start();
      Tensor<float> q(1, kShape.num_heads_q, n, kShape.head_dim),
          k(1, kShape.num_heads_kv, n, kShape.head_dim),
          v(1, kShape.num_heads_kv, n, kShape.head_dim),
          o(1, kShape.num_heads_q, n, kShape.head_dim);
      FillUniform(q.data(), q.numel(), 1);
      FillUniform(k.data(), k.numel(), 2);
      FillUniform(v.data(), v.numel(), 3);
      LinearOptions lo;
      lo.feature_map = lv.map;
      lo.features = lv.map == FeatureMap::kFavorPositive ? &features : nullptr;
      lo.chunk_size = kChunk;
      lo.num_threads = c.threads;
      SetTiming(p, TimeRepeats([&] { LinearForward(q.view(), k.view(), v.view(), o.view(), lo); },
                               3, 5, 0.2, false));
      p.peak_bytes = peak.PeakBytes();
      return p;
    };
    const auto pts = SeqlenSweep(
        so, measure,
        [&](const SweepPoint& p) { ctx.Step(std::string(lv.name) + " " + FormatTokens(p.seqlen)); },
        [&](int64_t n) {
          ctx.Step(std::string(lv.name) + " " + FormatTokens(n) + " skipped (time budget)");
        });
    Series s = TimedSeries(lv.name, pts);
    tc.series.push_back(s);
    measured.linear.push_back(s);

    VariantSummary row = SummaryFromSeries(lv.name, sec.name, s);
    LinearOptions lo;
    lo.feature_map = lv.map;
    const int64_t m =
        lv.map == FeatureMap::kFavorPositive ? kFeatures : LinearNumFeatures(lo, kShape.head_dim);
    LinearState state(1, kShape.num_heads_kv, m, kShape.head_dim);
    row.bytes_note = "no per-token cache: fixed state of " +
                     FormatBytes(static_cast<double>(state.bytes())) + " per layer (LinearState)";
    if (lv.map == FeatureMap::kFavorPositive)
      row.error_vs_exact = FavorError({kFeatures}, 256, 1.0, 2).orthogonal[0].value;
    if (lv.map == FeatureMap::kFavorPositive)
      row.error_note = Fmt("%.3f", row.error_vs_exact) +
                       " (m = 256, temperature 1; see the "
                       "temperature chart)";
    ctx.variants().push_back(row);
    sec.variants.push_back(row);
  }
  Figure tf;
  tf.kind = Figure::Kind::kChart;
  tf.id = "linear-prefill-time";
  tf.title = tc.title;
  tf.caption =
      "The running state makes the cost per token independent of the position, so linear "
      "attention can run past the lengths where the quadratic kernel stops within the time "
      "budget. Medians, bars the fastest and slowest repeat.";
  tf.provenance = Provenance::kMeasured;
  tf.source = "LinearForward (causal, chunk 64) and DenseForward (CausalMask), this run";
  tf.vega_lite = LineChart(tc);
  sec.figures.push_back(tf);

  // Measured error of FAVOR+ against exact attention as m grows, at several input temperatures.
  const double guide_t = Temperature(1.0 / 3.0, kShape.head_dim);  // uniform [-1, 1) entries
  const double bench_t = Temperature(0.3 * 0.3, 64);               // bench linear: std 0.3, d 64
  measured.guide_temperature = guide_t;
  measured.bench_temperature = bench_t;
  LineChartSpec ec;
  ec.title = "FAVOR+ error against m, from soft to peaked attention";
  ec.subtitle =
      "causal, 256 tokens, 2 heads, head_dim 64; q, k scaled to temperature ‖q‖·‖k‖/√d; "
      "orthogonal features; median of 3 feature draws, bars min–max";
  ec.x_title = "random features m";
  ec.y_title = "relative error ‖o − o_exact‖ / ‖o_exact‖";
  ec.log_x = ec.log_y = 1;
  ec.token_axis = false;
  ec.y_format = ".3e";
  Table et;
  et.id = "linear-error";
  et.title = "FAVOR+ error by number of features and input temperature";
  et.provenance = Provenance::kMeasured;
  et.source =
      "LinearForward(FeatureMap::kFavorPositive) against DenseForward(CausalMask), median of 3 "
      "feature draws, this run";
  et.header = {"temperature", "m", "orthogonal features", "i.i.d. features", "orthogonal / i.i.d."};
  const int64_t m_last = ErrorMaxFeatures(c);
  for (double temp : ErrorTemperatures(c)) {
    Series orth = NamedSeries("temperature " + Fmt("%.2g", temp) + ", orthogonal");
    Series iid = NamedSeries("temperature " + Fmt("%.2g", temp) + ", i.i.d.");
    orth.fit_min_x = iid.fit_min_x = 0;
    std::vector<int64_t> ms;
    for (int64_t m = 16; m <= m_last; m *= 2) ms.push_back(m);
    const FavorErrors errors = FavorError(ms, 256, temp, 3);
    for (size_t i = 0; i < ms.size(); ++i) {
      const Spread eo = errors.orthogonal[i], ei = errors.iid[i];
      ctx.Step("FAVOR+ error, temperature " + Fmt("%.2g", temp) + ", m = " + std::to_string(ms[i]));
      for (auto [series, e] : {std::pair{&orth, eo}, std::pair{&iid, ei}}) {
        series->x.push_back(static_cast<double>(ms[i]));
        series->y.push_back(e.value);
        series->y_lo.push_back(e.lo);
        series->y_hi.push_back(e.hi);
      }
      et.rows.push_back({Fmt("%.2g", temp), std::to_string(ms[i]), FormatSpread("%.3g", eo),
                         FormatSpread("%.3g", ei), Fmt("%.2f", eo.value / ei.value)});
    }
    ec.series.push_back(orth);
    measured.favor_orth.push_back(orth);
    measured.favor_iid.push_back(iid);
    measured.temperatures.push_back(temp);
  }
  Figure ef;
  ef.kind = Figure::Kind::kChart;
  ef.id = "linear-favor-error";
  ef.title = ec.title;
  ef.caption =
      "FAVOR+ estimates exp(q·k) with positive features exp(w·x − ‖x‖²/2): unbiased, with a "
      "relative variance of (exp(‖q + k‖²) − 1) / m (Performer, Lemma 2; q, k scaled by "
      "d^−1/4), so the error should fall as 1/√m once m outgrows exp(‖q + k‖²): soon for soft "
      "attention, far beyond the measured m for peaked attention. The guide's timing inputs sit "
      "at temperature " +
      Fmt("%.2g", guide_t) + "; `attnkit bench linear` draws its inputs at " +
      Fmt("%.2g", bench_t) +
      " (soft), the error chart of earlier guide versions at 7.7 (peaked). The findings below "
      "say which regime this run shows.";
  ef.provenance = Provenance::kMeasured;
  ef.source = et.source;
  ef.vega_lite = LineChart(ec);
  sec.figures.push_back(ef);
  sec.tables.push_back(et);
  AttachFindings(sec, LinearFindings(measured));
  return sec;
}

}  // namespace

SectionSpec LinearSection() {
  SectionSpec s;
  s.name = "linear";
  s.title = "Performer / linear attention";
  s.steps = [](const SweepConfig& c) {
    return PrefillSteps(c) + 3 * SweepPlannedPoints(c.prefill_first, LinearLast(c)) +
           static_cast<int64_t>(ErrorTemperatures(c).size()) *
               SweepPlannedPoints(16, ErrorMaxFeatures(c));
  };
  s.peak_bytes = [](const SweepConfig& c) { return LinearBytes(LinearLast(c)); };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
