// Internal helpers shared by the backward kernels (dense and gathered) and their references.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "attnkit/core/error.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense_backward.h"
#include "attnkit/kernels/gather_backward.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// Overlap of two views' memory (the shared problem checker's definition).
template <typename A, typename B>
bool ViewsOverlap(const TensorView<A>& a, const TensorView<B>& b) {
  return Overlaps(a, b);
}

// A mutable view of a const one, for checks written against TensorView<float> that only read.
template <typename T>
TensorView<T> ConstCastView(TensorView<const T> v) {
  return TensorView<T>{const_cast<T*>(v.data), v.shape, v.stride};
}

// Checks dq, dk, dv: valid views with the shapes of q, k and v, overlapping neither each other
// nor q, k, v (the callers check their other inputs).
template <typename KV>
void CheckGradViews(const char* fn, TensorView<float> dq, TensorView<float> dk,
                    TensorView<float> dv, TensorView<const float> q, TensorView<const KV> k,
                    TensorView<const KV> v) {
  const TensorView<float> g[3] = {dq, dk, dv};
  const std::array<int64_t, 4> want[3] = {q.shape, k.shape, v.shape};
  const char* names[3] = {"dq", "dk", "dv"};
  const char* of[3] = {"q", "k", "v"};
  for (int a = 0; a < 3; ++a) {
    CheckView(g[a], fn, names[a]);
    Require(g[a].shape == want[a], fn, ": ", names[a], " must have ", of[a], "'s shape ",
            TensorView<const float>{nullptr, want[a], {}}.ShapeString(), ", got ",
            g[a].ShapeString());
  }
  for (int a = 0; a < 3; ++a) {
    for (int b = a + 1; b < 3; ++b) {
      Require(!ViewsOverlap(g[a], g[b]), fn, ": ", names[a], " overlaps ", names[b]);
    }
    Require(!ViewsOverlap(g[a], q) && !ViewsOverlap(g[a], k) && !ViewsOverlap(g[a], v), fn, ": ",
            names[a], " overlaps an input");
  }
}

// The backward's argument checks (shapes, layouts, overlaps, lse values, options), shared by the
// fast kernels and the references; throw attnkit::Error naming the first bad argument. The dense
// and gather ones return the forward's resolved geometry.
template <typename KV>
Problem CheckDenseBackwardArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                               TensorView<const KV> v, TensorView<const float> out,
                               TensorView<const float> lse, TensorView<const float> dout,
                               const DenseGrads& grads, const DenseOptions& options);
template <typename KV>
Problem CheckGatherBackwardArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                                TensorView<const KV> v, TensorView<const int32_t> indices,
                                TensorView<const float> out, TensorView<const float> lse,
                                TensorView<const float> dout, const GatherGrads& grads,
                                const GatherOptions& options);
template <typename KV>
void CheckIndexerTargetArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                            TensorView<const int32_t> indices, TensorView<const float> lse,
                            TensorView<float> target, const GatherOptions& options);
void CheckIndexerKlArgs(const char* fn, TensorView<const float> q_index,
                        TensorView<const float> weights, TensorView<const float> k_index,
                        TensorView<const int32_t> indices, TensorView<const float> target,
                        const IndexerGrads& grads, const IndexerOptions& options);

// The dense backward's pass A runs over segments of this many 64-key blocks (default 64, i.e.
// 4096 keys); tests shrink it to reach several segments at small sizes. 0 restores the default.
void SetDenseBackwardSegmentForTesting(int64_t key_blocks);

}  // namespace attnkit::detail
