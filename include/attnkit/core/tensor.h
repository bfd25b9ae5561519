// Non-owning strided 4-D tensor views, and a small owning buffer for tests and tools.
//
// The canonical layout is [batch, heads, tokens, dim] ("bhsd"). Any strides are allowed, so a
// [batch, tokens, heads, dim] buffer ("bshd", as most inference engines keep it) is viewed
// without a copy through MakeBshd(). Strides are in elements, not bytes. The innermost (dim)
// stride must be 1: every kernel reads rows of head_dim contiguous values.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "attnkit/core/error.h"

namespace attnkit {

// 16-bit brain float (storage type; all arithmetic is done in f32).
struct bf16 {
  uint16_t bits = 0;
};

inline float ToFloat(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float ToFloat(float x) { return x; }

// Round-to-nearest-even conversion; NaN stays NaN.
inline bf16 ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  bf16 out;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    out.bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    return out;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  out.bits = static_cast<uint16_t>(u >> 16);
  return out;
}

template <typename T>
struct TensorView {
  using Element = T;
  T* data = nullptr;
  std::array<int64_t, 4> shape{0, 0, 0, 0};   // batch, heads, tokens, dim
  std::array<int64_t, 4> stride{0, 0, 0, 0};  // in elements

  int64_t batch() const { return shape[0]; }
  int64_t heads() const { return shape[1]; }
  int64_t tokens() const { return shape[2]; }
  int64_t dim() const { return shape[3]; }
  int64_t numel() const { return shape[0] * shape[1] * shape[2] * shape[3]; }
  bool empty() const { return data == nullptr; }

  T* row(int64_t b, int64_t h, int64_t t) const {
    return data + b * stride[0] + h * stride[1] + t * stride[2];
  }
  T& at(int64_t b, int64_t h, int64_t t, int64_t d) const { return row(b, h, t)[d]; }

  // Implicit conversion to a view of const elements.
  operator TensorView<const T>() const {  // NOLINT(google-explicit-constructor)
    return TensorView<const T>{data, shape, stride};
  }

  std::string ShapeString() const {
    return "[" + std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + ", " +
           std::to_string(shape[2]) + ", " + std::to_string(shape[3]) + "]";
  }
};

// A contiguous [batch, heads, tokens, dim] view.
template <typename T>
TensorView<T> MakeBhsd(T* data, int64_t batch, int64_t heads, int64_t tokens, int64_t dim) {
  return TensorView<T>{
      data, {batch, heads, tokens, dim}, {heads * tokens * dim, tokens * dim, dim, 1}};
}

// A [batch, tokens, heads, dim] buffer viewed as [batch, heads, tokens, dim] without a copy.
template <typename T>
TensorView<T> MakeBshd(T* data, int64_t batch, int64_t tokens, int64_t heads, int64_t dim) {
  return TensorView<T>{
      data, {batch, heads, tokens, dim}, {tokens * heads * dim, dim, heads * dim, 1}};
}

// Checks a view's basic validity; `name` is the argument name used in the error message.
template <typename T>
void CheckView(const TensorView<T>& v, const char* fn, const char* name) {
  Require(v.data != nullptr, fn, ": ", name, " is null");
  for (int i = 0; i < 4; ++i) {
    Require(v.shape[i] > 0, fn, ": ", name, " has a non-positive size in its shape ",
            v.ShapeString());
  }
  Require(v.stride[3] == 1, fn, ": ", name, " must have unit stride in its last (dim) axis, got ",
          v.stride[3]);
  for (int i = 0; i < 3; ++i) {
    Require(v.stride[i] >= 0, fn, ": ", name, " has a negative stride");
  }
}

// Largest single allocation Tensor<T> accepts (1 TB): beyond it a size is a mistake, not a plan.
inline constexpr double kMaxTensorBytes = 1e12;

// Owning, 64-byte aligned, zero-initialised buffer of T with a [b, h, t, d] contiguous shape.
template <typename T>
class Tensor {
 public:
  Tensor() = default;
  Tensor(int64_t batch, int64_t heads, int64_t tokens, int64_t dim)
      : shape_{batch, heads, tokens, dim} {
    Require(batch > 0 && heads > 0 && tokens > 0 && dim > 0,
            "Tensor: every size must be positive, got [", batch, ", ", heads, ", ", tokens, ", ",
            dim, "]");
    // Checked in floating point first, so that the integer product below cannot overflow.
    const double want = static_cast<double>(batch) * static_cast<double>(heads) *
                        static_cast<double>(tokens) * static_cast<double>(dim) * sizeof(T);
    Require(want <= kMaxTensorBytes, "Tensor: [", batch, ", ", heads, ", ", tokens, ", ", dim,
            "] needs ", want / 1e9, " GB, more than the ", kMaxTensorBytes / 1e9,
            " GB a single tensor may take");
    const int64_t n = batch * heads * tokens * dim;
    const size_t bytes = ((static_cast<size_t>(n) * sizeof(T) + 63) / 64) * 64;
    data_.reset(static_cast<T*>(::operator new[](bytes, std::align_val_t(64))));
    std::memset(static_cast<void*>(data_.get()), 0, bytes);
  }
  TensorView<T> view() { return MakeBhsd(data_.get(), shape_[0], shape_[1], shape_[2], shape_[3]); }
  TensorView<const T> view() const {
    return MakeBhsd<const T>(data_.get(), shape_[0], shape_[1], shape_[2], shape_[3]);
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  int64_t numel() const { return shape_[0] * shape_[1] * shape_[2] * shape_[3]; }
  const std::array<int64_t, 4>& shape() const { return shape_; }

 private:
  struct Deleter {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::array<int64_t, 4> shape_{0, 0, 0, 0};
  std::unique_ptr<T[], Deleter> data_;
};

}  // namespace attnkit
