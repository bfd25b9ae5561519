// Internal helpers shared by the linear engine's fast kernel and its reference twin: argument
// checks and the resolved geometry.
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/kernels/linear.h"
#include "kernels/nonfinite.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// The shared problem description plus the feature count.
struct LinearGeometry : Problem {
  int64_t m = 0;         // features per row of φ
  float x_scale = 1.0f;  // FAVOR+: head_dim_qk^(-1/4) on q and k; 1 for elu+1 / ReLU
};

// Checks shapes, options and the state exactly as LinearForward documents; throws Error.
LinearGeometry CheckLinearArgs(const char* fn, TensorView<const float> q, TensorView<const float> k,
                               TensorView<const float> v, TensorView<float> out,
                               const LinearOptions& options, const LinearState* state);

// The non-finite rule (kernels/nonfinite.h) around a linear-attention kernel: `run(q, k, v)`
// runs it on finite inputs (the state as given). A state that absorbed a non-finite key or value
// is left NaN, so every later row of its unit is NaN until LinearState::Reset().
template <typename Run>
void LinearNonFiniteRule(const LinearGeometry& g, TensorView<const float> q,
                         TensorView<const float> k, TensorView<const float> v,
                         TensorView<float> out, bool causal, LinearState* state, Run run) {
  const NonFiniteRows rows = ScanRows("LinearForward", q, k, v, /*kv_together=*/true);
  const std::vector<uint8_t>&bad_q = rows.q, &bad_kv = rows.k;
  bool any = rows.any;
  const int64_t sn = g.m * g.dv;
  auto state_bad = [&](int64_t u) {
    return state != nullptr && !(SpanFinite(state->s.data() + u * sn, sn) &&
                                 SpanFinite(state->z.data() + u * g.m, g.m));
  };
  const std::vector<uint8_t> came_bad = StateFlags(g.batch * g.heads_kv, state_bad, &any);
  if (!any) {
    run(q, k, v);
    return;
  }
  RunOnZeroedCopies(rows, q, k, v, run);
  const SequenceRule r{g.batch, g.heads_kv, g.heads_q, g.seqlen_q, g.seqlen_kv, causal};
  PoisonSequenceRows(
      r, out,
      [&](int64_t b, int64_t h, int64_t t) {
        return bad_q[static_cast<size_t>((b * g.heads_q + h) * g.seqlen_q + t)] != 0;
      },
      [&](int64_t b, int64_t s, int64_t t) {
        return bad_kv[static_cast<size_t>((b * g.heads_kv + s) * g.seqlen_kv + t)] != 0;
      },
      [&](int64_t u) { return came_bad[static_cast<size_t>(u)] != 0; },
      [&](int64_t u) {
        if (state == nullptr) return;
        std::fill(state->s.begin() + u * sn, state->s.begin() + (u + 1) * sn, kNaN);
        std::fill(state->z.begin() + u * g.m, state->z.begin() + (u + 1) * g.m, kNaN);
      });
}

}  // namespace attnkit::detail
