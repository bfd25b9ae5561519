// Internal helpers shared by the dense engine's fast kernel, reference twin and decode path.
#pragma once

#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>

#include "attnkit/kernels/dense.h"

namespace attnkit::detail {

// Resolved per-call geometry and score options.
struct DenseGeometry {
  int64_t batch, heads_q, heads_kv, group, seqlen_q, seqlen_kv, dk, dv;
  float scale;
  int64_t q_start, k_start;  // absolute positions of row 0
};

template <typename KV>
DenseGeometry ResolveDense(TensorView<const float> q, TensorView<const KV> k,
                           TensorView<const KV> v, const DenseOptions& o) {
  DenseGeometry g;
  g.batch = q.batch();
  g.heads_q = q.heads();
  g.heads_kv = k.heads();
  g.group = g.heads_q / g.heads_kv;
  g.seqlen_q = q.tokens();
  g.seqlen_kv = k.tokens();
  g.dk = q.dim();
  g.dv = v.dim();
  g.scale = o.scale != 0.0f ? o.scale : 1.0f / std::sqrt(static_cast<float>(g.dk));
  g.k_start = o.k_start;
  g.q_start = o.q_start != kAutoPosition ? o.q_start : o.k_start + g.seqlen_kv - g.seqlen_q;
  return g;
}

// Applies soft-capping and ALiBi to an already scaled logit.
inline float ScoreMod(float s, float softcap, float alibi_slope, int64_t q_pos, int64_t k_pos) {
  if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
  if (alibi_slope != 0.0f) {
    s -= alibi_slope * static_cast<float>(q_pos > k_pos ? q_pos - k_pos : k_pos - q_pos);
  }
  return s;
}

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Keeps the first exception thrown inside an OpenMP region (user masks run there and may
// allocate) so it can be rethrown after the region: nothing may propagate out of one.
class RegionExceptions {
 public:
  template <class Fn>
  void Run(Fn&& fn) noexcept {
    try {
      fn();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!first_) first_ = std::current_exception();
    }
  }
  void Rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr first_;
};

// Everything one fast-kernel call needs, already checked (see CheckDenseArgs).
template <typename KV>
struct DenseJob {
  TensorView<const float> q;  // [batch, num_heads_q,  seqlen_q,  head_dim_qk]
  TensorView<const KV> k;     // [batch, num_heads_kv, seqlen_kv, head_dim_qk]
  TensorView<const KV> v;     // [batch, num_heads_kv, seqlen_kv, head_dim_v]
  TensorView<float> out;      // [batch, num_heads_q,  seqlen_q,  head_dim_v]
  TensorView<float> lse;      // [batch, num_heads_q,  seqlen_q,  1] or empty
  const DenseOptions* options;
  DenseGeometry g;
  int threads;
};

// The SIMD kernel without argument checks (the caller has run CheckDenseArgs). Never throws
// from inside its OpenMP region; safe to call from inside another parallel region.
void DenseFastUnchecked(const DenseJob<float>& job);
void DenseFastUnchecked(const DenseJob<bf16>& job);

// The byte budget of the buffer of packed K/V tiles shared by a call's threads (see
// kernels/dense.cc): whole heads in rounds, or one head in segments of key blocks. Tests shrink
// it to reach several rounds and segments at small sizes.
double GetDensePackBudget();
// 0 restores the default (32 MiB).
void SetDensePackBudgetForTesting(double bytes);

// The fast kernel's tile sizes (the stats report the ones used: MHA doubles block_q).
inline constexpr int64_t kDenseBlockQ = 64;
inline constexpr int64_t kDenseBlockKv = 64;

}  // namespace attnkit::detail
