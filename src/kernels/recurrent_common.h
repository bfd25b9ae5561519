// Internal helpers shared by the recurrent engine's fast kernels and its reference twin.
#pragma once

#include <cstdint>

#include "attnkit/kernels/recurrent.h"
#include "kernels/nonfinite.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// The shared problem description (value heads share q/k heads: heads_q = q/k heads, heads = v
// heads, seqlen_q = seqlen_kv = seqlen; scale on q after normalisation) plus the decay's width.
struct DeltaGeometry : Problem {
  int64_t decay_dim = 0;  // 0: α ≡ 1, 1: scalar, dk: per channel
};

// Checks shapes, gate ranges and the state exactly as GatedDeltaForward documents.
DeltaGeometry CheckDeltaArgs(const char* fn, TensorView<const float> q, TensorView<const float> k,
                             TensorView<const float> v, TensorView<const float> log_alpha,
                             TensorView<const float> beta, TensorView<float> out,
                             TensorView<float> state, const GatedDeltaOptions& options);

inline constexpr float kL2NormEps = 1e-6f;  // x / sqrt(Σ x² + eps), as the models' l2norm

// The non-finite rule (kernels/nonfinite.h) around a recurrent kernel: `run(q, k, v)` runs it on
// finite inputs (the state as given). Value head h reads q/k head h / group; a non-finite key,
// value or incoming state poisons the head's rows from that token on and leaves its state NaN.
// (log_alpha and beta are refused by CheckDeltaArgs unless finite and in range.)
template <typename Run>
void DeltaNonFiniteRule(const DeltaGeometry& g, TensorView<const float> q,
                        TensorView<const float> k, TensorView<const float> v, TensorView<float> out,
                        TensorView<float> state, Run run) {
  const int64_t T = g.seqlen_q;
  const NonFiniteRows rows = ScanRows("GatedDeltaForward", q, k, v, /*kv_together=*/false);
  const std::vector<uint8_t>&bad_q = rows.q, &bad_k = rows.k, &bad_v = rows.v;
  bool any = rows.any;
  auto state_bad = [&](int64_t u) {
    if (state.empty()) return false;
    const int64_t b = u / g.heads, h = u % g.heads;
    for (int64_t c = 0; c < g.dk; ++c) {
      if (!RowFinite(state.row(b, h, c), g.dv)) return true;
    }
    return false;
  };
  const std::vector<uint8_t> came_bad = StateFlags(g.batch * g.heads, state_bad, &any);
  if (!any) {
    run(q, k, v);
    return;
  }
  RunOnZeroedCopies(rows, q, k, v, run);
  const SequenceRule r{g.batch, g.heads, g.heads, T, T, /*causal=*/true};
  auto at = [&](const std::vector<uint8_t>& f, int64_t heads, int64_t b, int64_t h, int64_t t) {
    return f[static_cast<size_t>((b * heads + h) * T + t)] != 0;
  };
  PoisonSequenceRows(
      r, out,
      [&](int64_t b, int64_t h, int64_t t) { return at(bad_q, g.heads_q, b, h / g.group, t); },
      [&](int64_t b, int64_t h, int64_t t) {
        return at(bad_k, g.heads_q, b, h / g.group, t) || at(bad_v, g.heads, b, h, t);
      },
      [&](int64_t u) { return came_bad[static_cast<size_t>(u)] != 0; },
      [&](int64_t u) {
        if (state.empty()) return;
        for (int64_t c = 0; c < g.dk; ++c) {
          float* row = state.row(u / g.heads, u % g.heads, c);
          std::fill(row, row + g.dv, kNaN);
        }
      });
}

}  // namespace attnkit::detail
