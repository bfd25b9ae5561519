// Guide section "dsa": DeepSeek Sparse Attention — a lightning indexer scores every earlier key
// cheaply, the top-k keys per query are kept, and exact attention runs over them. The diagram is
// the selection the code makes for a sample input (SelectionMask of DsaSelect's indices); the
// measurements split the prefill time into indexer and attention and compare it with full causal
// attention, and show the error against exact attention as k grows.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attnkit/bench/sparse.h"
#include "attnkit/core/tensor.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/masks/sparse.h"
#include "guide/catalogue_util.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

const DenseShape kShape{8, 2, 128};
constexpr int64_t kIndexHeads = 4, kIndexDim = 64;

int64_t TopK(const SweepConfig& c) { return c.size == SweepSize::kSmoke ? 64 : 256; }

// Indexer inputs that rank keys by the attention logit: one index head whose query and key are
// the attention's own (head 0), weight 1. An untrained indexer is replaced by this "aligned" one
// so the error measures what top-k truncation costs, not what a random scorer misses.
struct Problem {
  Tensor<float> q, k, v, qi, w, ki;
  Problem(int64_t n, int64_t d, uint64_t seed, float sharpness, bool aligned)
      : q(1, 1, n, d), k(1, 1, n, d), v(1, 1, n, d), qi(1, 1, n, d), w(1, 1, n, 1), ki(1, 1, n, d) {
    FillUniform(q.data(), q.numel(), seed + 1);
    FillUniform(k.data(), k.numel(), seed + 2);
    FillUniform(v.data(), v.numel(), seed + 3);
    for (int64_t i = 0; i < q.numel(); ++i) q.data()[i] *= sharpness;
    if (aligned) {
      std::copy(q.data(), q.data() + q.numel(), qi.data());
      std::copy(k.data(), k.data() + k.numel(), ki.data());
    } else {
      FillUniform(qi.data(), qi.numel(), seed + 4);
      FillUniform(ki.data(), ki.numel(), seed + 5);
    }
    std::fill(w.data(), w.data() + w.numel(), 1.0f);
  }
};

// What top-k truncation keeps of exact causal attention on one input: the share of each query's
// exact softmax probability that falls on its selected keys (mean over queries), and the cosine
// between the DSA output and the exact one (mean over queries).
struct DsaQuality {
  double mass = 0, cosine = 0;
};
DsaQuality DsaError(int64_t n, int64_t top_k, bool aligned) {
  const int64_t d = 64;
  Problem p(n, d, 77, 3.0f, aligned);
  Tensor<int32_t> idx(1, 1, n, top_k);
  DsaSelect(p.qi.view(), p.w.view(), p.ki.view(), top_k, idx.view());
  Tensor<float> o(1, 1, n, d), exact(1, 1, n, d);
  GatherForward(p.q.view(), p.k.view(), p.v.view(), idx.view(), o.view());
  const MaskPtr causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  DenseForward(p.q.view(), p.k.view(), p.v.view(), exact.view(), opt);
  DsaQuality r;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> logits(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    const float* qt = p.q.data() + t * d;
    double mx = -1e300;
    for (int64_t s = 0; s <= t; ++s) {
      const float* ks = p.k.data() + s * d;
      double dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(qt[j]) * ks[j];
      logits[static_cast<size_t>(s)] = dot * scale;
      mx = std::max(mx, dot * scale);
    }
    double total = 0, kept = 0;
    for (int64_t s = 0; s <= t; ++s) total += std::exp(logits[static_cast<size_t>(s)] - mx);
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t s = idx.data()[t * top_k + j];
      if (s >= 0 && s <= t) kept += std::exp(logits[static_cast<size_t>(s)] - mx);
    }
    r.mass += kept / total;
  }
  r.mass /= static_cast<double>(n);
  r.cosine = MeanRowCosine(o, exact);
  return r;
}

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  const int64_t top_k = TopK(c);
  Section sec;
  sec.name = "dsa";
  sec.title = "DeepSeek Sparse Attention: a lightning indexer picks the top-k keys";
  sec.intro_html =
      "<p>DSA (DeepSeek V3.2, GLM-5) keeps full attention's quality at a fraction of its cost by "
      "learning which keys matter: a small lightning indexer scores every earlier key with a few "
      "cheap heads in reduced precision, each query keeps its top-k keys (2048 in V3.2), and "
      "exact attention runs over those only. The indexer is still quadratic, but with far fewer "
      "and smaller heads; the attention becomes k per query instead of the whole prefix.</p>"
      "<p>In attnkit the indexer and the top-k are fused (no N &times; N buffer), the indexer "
      "runs bf16 dot products where the CPU has them, and the gather kernel computes exact "
      "attention over each query's own key list.</p>";
  sec.formula_html =
      "I(t, s) = &Sigma;<sub>j</sub> w(t, j) &middot; ReLU(q<sup>I</sup><sub>t,j</sub> &middot; "
      "k<sup>I</sup><sub>s</sub>), &nbsp; s &le; t<br>S<sub>t</sub> = top-k<sub>s</sub> I(t, s), "
      "&nbsp; o<sub>t</sub> = softmax(q<sub>t</sub> K<sub>S<sub>t</sub></sub><sup>T</sup> / "
      "&radic;d) V<sub>S<sub>t</sub></sub>";
  sec.models = ModelsWhere([](const models::ModelConfig& cfg) -> std::string {
    const models::LayerSpec* l = FirstLayer(cfg, models::LayerKind::kDsa);
    if (!l) return "";
    return std::to_string(cfg.Count(models::LayerKind::kDsa)) + " dsa layers, " +
           std::to_string(l->index_num_heads) + " index heads × " +
           std::to_string(l->index_head_dim) + ", top-" + std::to_string(l->index_topk);
  });
  sec.models_source = CatalogueSourceLine();

  {  // Diagram: the selection DsaSelect makes for a sample input.
    const int64_t n = 48, k_show = 8;
    Problem p(n, 32, 5, 3.0f, true);
    Tensor<int32_t> idx(1, 1, n, k_show);
    DsaSelect(p.qi.view(), p.w.view(), p.ki.view(), k_show, idx.view());
    const MaskPtr sel = SelectionMask(idx.view(), 0);
    const MaskPtr causal = CausalMask();
    MaskDiagramOptions mo;
    mo.title = "DSA top-8 selection, 48 tokens (sample input)";
    mo.background = causal.get();
    mo.background_fill = "#f6e3cf";
    mo.fill = "#8064a2";
    mo.legend = "selected by the indexer";
    mo.background_legend = "visible but not selected";
    Figure f;
    f.id = "dsa-selection";
    f.title = "Which keys each query attends to";
    f.caption =
        "The first 8 queries see every earlier key; after that each row keeps the 8 keys "
        "its indexer scored highest — a different set per query, unlike a fixed pattern.";
    f.source =
        "DsaSelect(top_k 8) on a seeded random input (indexer aligned with the attention's "
        "q, k), drawn through SelectionMask(indices) with Mask::FillTile";
    f.svg = MaskDiagram(*sel, n, n, mo);
    sec.figures.push_back(f);
  }

  // Measured: indexer + attention time against seqlen, against full causal attention.
  const auto dense = SharedCausalSweep(ctx);
  SweepOptions so;
  so.first = c.prefill_first;
  so.last = c.prefill_last;
  so.point_budget_seconds = c.point_budget_seconds;
  std::vector<Timing> index_t, gather_t;
  auto measure = [&](int64_t n) {
    SweepPoint p;
    p.seqlen = n;
    Tensor<float> q(1, kShape.num_heads_q, n, kShape.head_dim),
        k(1, kShape.num_heads_kv, n, kShape.head_dim),
        v(1, kShape.num_heads_kv, n, kShape.head_dim), o(1, kShape.num_heads_q, n, kShape.head_dim);
    Tensor<float> qi(1, kIndexHeads, n, kIndexDim), w(1, 1, n, kIndexHeads), ki(1, 1, n, kIndexDim);
    FillUniform(q.data(), q.numel(), 1);
    FillUniform(k.data(), k.numel(), 2);
    FillUniform(v.data(), v.numel(), 3);
    FillUniform(qi.data(), qi.numel(), 4);
    FillUniform(w.data(), w.numel(), 5);
    FillUniform(ki.data(), ki.numel(), 6);
    Tensor<int32_t> idx(1, 1, n, top_k);
    IndexerOptions io;
    io.num_threads = c.threads;
    GatherOptions go;
    go.num_threads = c.threads;
    // Indexer and attention alternate within each repeat, so load that comes and goes hits
    // both; the total's spread is that of the per-repeat sums.
    std::vector<double> a, b, sum;
    for (int rep = 0; rep < 3; ++rep) {
      a.push_back(
          TimeRepeats([&] { DsaSelect(qi.view(), w.view(), ki.view(), top_k, idx.view(), io); }, 1,
                      1, 0, false)
              .median);
      b.push_back(
          TimeRepeats(
              [&] { GatherForward(q.view(), k.view(), v.view(), idx.view(), o.view(), go); }, 1, 1,
              0, false)
              .median);
      sum.push_back(a.back() + b.back());
    }
    auto stats = [](const std::vector<double>& v) {
      const Spread s = SpreadOf(v);
      return Timing{s.value, s.lo, s.hi, static_cast<int>(v.size())};
    };
    index_t.push_back(stats(a));
    gather_t.push_back(stats(b));
    SetTiming(p, stats(sum));
    return p;
  };
  const auto pts = SeqlenSweep(
      so, measure, [&](const SweepPoint& p) { ctx.Step("DSA " + FormatTokens(p.seqlen)); },
      [&](int64_t n) { ctx.Step("DSA " + FormatTokens(n) + " skipped (time budget)"); });
  LineChartSpec tc = SeqlenTimeChart(
      "DSA prefill time: indexer + top-" + std::to_string(top_k) + " attention against full causal",
      "batch 1, 8 q heads over 2 KV heads, head_dim 128; indexer " + std::to_string(kIndexHeads) +
          " heads × " + std::to_string(kIndexDim) +
          (IndexerUsesAvx512Bf16() ? ", AVX-512 BF16" : ", f32 SIMD") + "; " +
          std::to_string(c.threads) + " threads");
  Series ds = TimedSeries("full causal", dense);
  Series total = TimedSeries("DSA total", pts);
  Series ind = NamedSeries("DSA indexer + top-k"), att = NamedSeries("DSA attention over top-k");
  for (size_t i = 0; i < pts.size(); ++i) {
    const double x = static_cast<double>(pts[i].seqlen);
    AddPoint(ind, x, index_t[i]);
    AddPoint(att, x, gather_t[i]);
  }
  for (Series* s : {&ds, &total, &ind, &att}) s->fit_min_x = FitStart(s->x, 2048);
  tc.series = {ds, total, ind, att};
  Figure tf;
  tf.kind = Figure::Kind::kChart;
  tf.id = "dsa-prefill-time";
  tf.title = "DSA prefill time, split into indexer and attention";
  tf.caption =
      "The indexer scores every earlier key (quadratic, but with few small heads); the attention "
      "reads k keys per query once the sequence is longer than k. Medians of three repeats, bars "
      "the fastest and slowest.";
  tf.provenance = Provenance::kMeasured;
  tf.source = "DsaSelect and GatherForward timed separately; DenseForward(CausalMask); this run";
  tf.vega_lite = LineChart(tc);
  sec.figures.push_back(tf);

  // Measured: one decode step in the shape DeepSeek V3.2 runs DSA (over the absorbed MLA latent),
  // against dense absorbed MLA over the same cache.
  bench::MlaDsaDecodeConfig dc;
  dc.contexts = c.size == SweepSize::kSmoke   ? std::vector<int64_t>{1024, 4096}
                : c.size == SweepSize::kQuick ? std::vector<int64_t>{2048, 8192, 32768}
                                              : std::vector<int64_t>{8192, 32768, 131072};
  dc.threads = c.threads;
  dc.repeats = c.size == SweepSize::kSmoke ? 1 : 5;
  dc.on_case = [&](const std::string& what) { ctx.Step("DSA V3.2 decode, " + what); };
  const auto drows = bench::BenchMlaDsaDecode(dc);
  Series dd = NamedSeries("dense absorbed MLA", false), dt = NamedSeries("DSA total", false),
         di = NamedSeries("DSA indexer + top-k", false),
         da = NamedSeries("DSA attention over top-k", false);
  for (const auto& r : drows) {
    const double x = static_cast<double>(r.context);
    AddPoint(dd, x, Timing{r.dense_ms, r.dense_min_ms, r.dense_max_ms, dc.repeats}, 1.0);
    AddPoint(dt, x, Timing{r.dsa_ms, r.dsa_min_ms, r.dsa_max_ms, dc.repeats}, 1.0);
    AddPoint(di, x, Timing{r.indexer_ms, r.indexer_ms, r.indexer_ms, dc.repeats}, 1.0);
    AddPoint(da, x, Timing{r.attention_ms, r.attention_ms, r.attention_ms, dc.repeats}, 1.0);
  }
  LineChartSpec dcs;
  dcs.title = "DSA decode in DeepSeek V3.2's shape against dense absorbed MLA";
  dcs.subtitle =
      "one token of one layer: 128 heads over the 512 + 64 latent (bf16 cache), "
      "indexer 64 heads × 128, top-k 2048; " +
      std::to_string(dc.threads) + " threads; medians of " + std::to_string(dc.repeats) +
      " steps, bars the fastest and slowest";
  dcs.x_title = "context (cached tokens)";
  dcs.y_title = "ms per token";
  dcs.series = {dd, dt, di, da};
  Figure vf;
  vf.kind = Figure::Kind::kChart;
  vf.id = "dsa-v32-decode";
  vf.title = "DSA decode in the shape DeepSeek runs it";
  vf.caption =
      "One latent row serves all 128 query heads, so dense decode reads the whole cache once "
      "and does 128 heads of work per row; DSA reads the indexer keys of the whole context and "
      "2048 latent rows. `attnkit bench sparse` measures the same at 8k, 32k and 128k; the quick "
      "guide stops at 32k, --full reaches 128k.";
  vf.provenance = Provenance::kMeasured;
  vf.source = "bench::BenchMlaDsaDecode (DenseForward vs DsaSelect + GatherForward); this run";
  vf.vega_lite = LineChart(dcs);
  sec.figures.push_back(vf);

  // Measured: error against exact causal attention as k grows.
  LineChartSpec ec;
  ec.title = "What the top-k keeps of exact causal attention as k grows";
  ec.subtitle =
      "1024 tokens, 1 head, head_dim 64, q scaled ×3; aligned indexer = the attention's "
      "own q·k, random = an untrained indexer (exact, not timed)";
  ec.x_title = "top-k (keys per query)";
  ec.y_title = "share kept (1 = exact attention)";
  ec.log_x = 1;
  ec.log_y = 0;
  ec.token_axis = false;
  ec.y_format = ".4f";
  Series aligned = NamedSeries("aligned indexer: attention mass kept", false),
         random = NamedSeries("random indexer: attention mass kept", false),
         aligned_cos = NamedSeries("aligned indexer: output cosine", false),
         random_cos = NamedSeries("random indexer: output cosine", false);
  const int64_t n_err = c.size == SweepSize::kSmoke ? 256 : 1024;
  DsaQuality at_top_k;
  for (int64_t kk = 16; kk <= n_err / 2; kk *= 2) {
    const DsaQuality qa = DsaError(n_err, kk, true), qr = DsaError(n_err, kk, false);
    if (kk <= top_k) at_top_k = qa;
    for (auto [series, value] :
         {std::pair{&aligned, qa.mass}, std::pair{&random, qr.mass},
          std::pair{&aligned_cos, qa.cosine}, std::pair{&random_cos, qr.cosine}}) {
      series->x.push_back(static_cast<double>(kk));
      series->y.push_back(value);
    }
    ctx.Step("DSA error, k = " + std::to_string(kk));
  }
  ec.series = {aligned, random, aligned_cos, random_cos};
  DsaMeasured measured;
  measured.top_k = top_k;
  measured.dense = ds;
  measured.total = total;
  measured.indexer = ind;
  measured.attention = att;
  measured.mass_aligned = aligned;
  measured.mass_random = random;
  measured.v32_dense = dd;
  measured.v32_total = dt;
  for (const auto& r : drows) {
    measured.v32_work_ratio.push_back(
        {static_cast<double>(r.context), r.dense_flops / r.dsa_flops});
  }
  Figure ef;
  ef.kind = Figure::Kind::kChart;
  ef.id = "dsa-error";
  ef.title = ec.title;
  ef.caption =
      "The attention mass kept is the share of each query's exact softmax probability that "
      "falls on the keys its indexer selected (exact, not timed). DSA trains its indexer to "
      "match the attention's distribution; a random indexer shows what an untrained one keeps.";
  ef.provenance = Provenance::kMeasured;
  ef.source = "GatherForward over DsaSelect's keys against DenseForward(CausalMask), same input";
  ef.vega_lite = LineChart(ec);
  sec.figures.push_back(ef);
  AttachFindings(sec, DsaFindings(measured));

  VariantSummary row =
      SummaryFromSeries("DSA top-" + std::to_string(top_k) + " (GQA 8q/2kv)", sec.name, total);
  row.bytes_per_token = 2.0 * kShape.num_heads_kv * kShape.head_dim * 2 + kIndexDim * 2;
  row.bytes_note = "bf16 KV + bf16 indexer key per token, per layer";
  row.error_note = "keeps " + Fmt("%.1f", 100 * at_top_k.mass) +
                   " % of the attention mass, cosine " + Fmt("%.4f", at_top_k.cosine) +
                   " (aligned indexer, " + std::to_string(n_err) + " tokens)";
  ctx.variants().push_back(row);
  sec.variants.push_back(row);
  return sec;
}

}  // namespace

SectionSpec DsaSection() {
  SectionSpec s;
  s.name = "dsa";
  s.title = "DeepSeek Sparse Attention";
  s.steps = [](const SweepConfig& c) {
    const int64_t n_err = c.size == SweepSize::kSmoke ? 256 : 1024;
    return 2 * PrefillSteps(c) + SweepPlannedPoints(16, n_err / 2);
  };
  s.peak_bytes = [](const SweepConfig& c) {
    return DensePrefillBytes(kShape, c.prefill_last) + c.prefill_last * TopK(c) * 4;
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail
