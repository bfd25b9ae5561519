// Internal helpers shared by the dense engine's fast kernel, reference twin and decode path.
#pragma once

#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>

#include "attnkit/kernels/dense.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// The dense engine's geometry is the shared problem description.
using DenseGeometry = Problem;

// Checks shapes and options exactly as DenseForward documents (the shared problem checker, then
// the score modifiers: softcap, alibi_slopes, sinks) and returns the resolved geometry. Used by
// the fast kernel, the reference, decode and the gather engine.
template <typename KV>
DenseGeometry CheckDenseArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                             TensorView<const KV> v, TensorView<float> out,
                             const DenseOptions& options, TensorView<float> lse);

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// DenseForward / ref::DenseForward without the non-finite rule's scan (kernels/nonfinite.h), for
// callers that know every input row is finite (DenseDecode over a cache that holds none).
template <typename KV>
void DenseForwardFinite(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                        TensorView<float> out, const DenseOptions& o, TensorView<float> lse);
template <typename KV>
void RefDenseForwardFinite(TensorView<const float> q, TensorView<const KV> k,
                           TensorView<const KV> v, TensorView<float> out, const DenseOptions& o,
                           TensorView<float> lse);

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

// Everything one fast-kernel call needs, already checked (by CheckDenseArgs).
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
