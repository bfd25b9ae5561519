// Internal helpers shared by the backward kernels (dense and gathered) and their references.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "attnkit/core/error.h"
#include "attnkit/core/tensor.h"

namespace attnkit::detail {

// The byte range [first, last) a view's elements occupy.
template <typename T>
std::pair<const char*, const char*> ViewExtent(const TensorView<T>& v) {
  const auto* base = reinterpret_cast<const char*>(v.data);
  int64_t last = 0;
  for (int i = 0; i < 4; ++i) last += (v.shape[i] - 1) * v.stride[i];
  return {base, base + (last + 1) * static_cast<int64_t>(sizeof(T))};
}

// True when two views' byte ranges intersect (conservative for interleaved strided views).
template <typename A, typename B>
bool ViewsOverlap(const TensorView<A>& a, const TensorView<B>& b) {
  if (a.empty() || b.empty()) return false;
  const auto [a0, a1] = ViewExtent(a);
  const auto [b0, b1] = ViewExtent(b);
  return a0 < b1 && b0 < a1;
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

// The dense backward's pass A runs over segments of this many 64-key blocks (default 64, i.e.
// 4096 keys); tests shrink it to reach several segments at small sizes. 0 restores the default.
void SetDenseBackwardSegmentForTesting(int64_t key_blocks);

}  // namespace attnkit::detail
