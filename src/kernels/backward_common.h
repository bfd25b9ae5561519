// Internal helpers shared by the backward kernels (dense and gathered) and their references.
#pragma once

#include <cstdint>
#include <utility>

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

// The dense backward's pass A runs over segments of this many 64-key blocks (default 64, i.e.
// 4096 keys); tests shrink it to reach several segments at small sizes. 0 restores the default.
void SetDenseBackwardSegmentForTesting(int64_t key_blocks);

}  // namespace attnkit::detail
