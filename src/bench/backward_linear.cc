// Backward-pass measurements of the linear and recurrent engines (bench/backward_linear.h).
#include "attnkit/bench/backward_linear.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "attnkit/bench/dense.h"
#include "attnkit/core/error.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/kernels/linear_backward.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/kernels/recurrent_backward.h"

namespace attnkit::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MedianSeconds(const std::function<void()>& fn, int repeats) {
  std::vector<double> t;
  fn();  // warm-up: scratch pools, page faults
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void Fill(Tensor<float>& t, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = u(rng);
}

void Finish(BackwardLinearCase& c) {
  c.backward_gflops = 2.5 * c.forward_flops / c.backward_seconds * 1e-9;
  c.total_gflops = 3.5 * c.forward_flops / (c.forward_seconds + c.backward_seconds) * 1e-9;
  c.backward_own_gflops = c.backward_own_flops / c.backward_seconds * 1e-9;
}

BackwardLinearCase GatedDeltaNetCase(const BackwardLinearConfig& cfg) {
  const int64_t h = cfg.heads, t = cfg.seqlen, d = cfg.head_dim;
  std::mt19937_64 rng(7);
  Tensor<float> q(1, h, t, d), k(1, h, t, d), v(1, h, t, d), la(1, h, t, 1), beta(1, h, t, 1);
  Tensor<float> out(1, h, t, d), dout(1, h, t, d), dq(1, h, t, d), dk(1, h, t, d), dv(1, h, t, d);
  Tensor<float> dla(1, h, t, 1), dbeta(1, h, t, 1);
  Fill(q, rng, -1, 1);
  Fill(k, rng, -1, 1);
  Fill(v, rng, -1, 1);
  Fill(la, rng, -0.1f, -0.001f);
  Fill(beta, rng, 0.1f, 0.9f);
  Fill(dout, rng, -1, 1);
  GatedDeltaOptions o;
  o.algorithm = DeltaAlgorithm::kChunked;
  o.num_threads = cfg.threads;
  GatedDeltaGrads g;
  g.dq = dq.view(), g.dk = dk.view(), g.dv = dv.view(), g.dlog_alpha = dla.view();
  g.dbeta = dbeta.view();
  BackwardLinearCase c;
  c.name = "gdn_chunked_backward";
  c.seqlen = t, c.heads = h, c.head_dim = d;
  c.forward_seconds = MedianSeconds(
      [&] {
        GatedDeltaForward(q.view(), k.view(), v.view(), la.view(), beta.view(), out.view(), {}, o);
      },
      cfg.repeats);
  c.backward_seconds = MedianSeconds(
      [&] {
        GatedDeltaBackward(q.view(), k.view(), v.view(), la.view(), beta.view(), {}, dout.view(),
                           {}, g, o);
      },
      cfg.repeats);
  c.forward_flops = GatedDeltaFlops(1, h, t, d, d, false, o);
  c.backward_own_flops = GatedDeltaBackwardFlops(1, h, t, d, d, o);
  Finish(c);
  return c;
}

BackwardLinearCase PerformerCase(const BackwardLinearConfig& cfg) {
  const int64_t h = cfg.heads, t = cfg.seqlen, d = cfg.head_dim;
  std::mt19937_64 rng(8);
  Tensor<float> q(1, h, t, d), k(1, h, t, d), v(1, h, t, d), out(1, h, t, d), dout(1, h, t, d);
  Tensor<float> dq(1, h, t, d), dk(1, h, t, d), dv(1, h, t, d);
  Fill(q, rng, -0.5f, 0.5f);
  Fill(k, rng, -0.5f, 0.5f);
  Fill(v, rng, -1, 1);
  Fill(dout, rng, -1, 1);
  const PerformerFeatures features(cfg.num_features, d, RandomFeatureKind::kOrthogonal, 11);
  LinearOptions o;
  o.feature_map = FeatureMap::kFavorPositive;
  o.features = &features;
  o.causal = true;
  o.num_threads = cfg.threads;
  BackwardLinearCase c;
  c.name = "performer_causal_backward";
  c.seqlen = t, c.heads = h, c.head_dim = d;
  c.forward_seconds = MedianSeconds(
      [&] { LinearForward(q.view(), k.view(), v.view(), out.view(), o); }, cfg.repeats);
  c.backward_seconds = MedianSeconds(
      [&] {
        LinearBackward(q.view(), k.view(), v.view(), dout.view(), dq.view(), dk.view(), dv.view(),
                       o);
      },
      cfg.repeats);
  c.forward_flops = LinearFlops(1, h, h, t, d, d, o);
  c.backward_own_flops = LinearBackwardFlops(1, h, h, t, d, d, o);
  Finish(c);
  return c;
}

}  // namespace

BackwardLinearResult RunBackwardLinearBench(const BackwardLinearConfig& cfg) {
  Require(cfg.seqlen >= 1 && cfg.heads >= 1 && cfg.head_dim >= 1 && cfg.num_features >= 1 &&
              cfg.threads >= 1 && cfg.repeats >= 1,
          "RunBackwardLinearBench: seqlen, heads, head_dim, num_features, threads and repeats "
          "must be >= 1");
  auto progress = [&](const std::string& s) {
    if (cfg.on_progress) cfg.on_progress(s);
  };
  BackwardLinearResult r;
  SettleAfterBlas();
  r.sgemm_gflops = MeasureSgemmGflops(cfg.threads, cfg.sgemm_size, 4);
  progress("chunked Gated DeltaNet");
  r.cases.push_back(GatedDeltaNetCase(cfg));
  progress("causal Performer");
  r.cases.push_back(PerformerCase(cfg));
  return r;
}

}  // namespace attnkit::bench
