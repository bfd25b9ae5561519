// Internal SIMD helpers of the linear and recurrent backward kernels (Highway, run-time
// dispatch): matrix transposes (the backward needs Sᵀ, dSᵀ, Uᵀ as row-major GEMM operands every
// chunk) and dot products (row reductions that plain loops compile to latency-bound scalar code).
#pragma once

#include <cstdint>

namespace attnkit::detail {

// xt (cols × rows, row-major, leading dimension rows) = xᵀ for x (rows × cols, leading dimension
// ldx), with 4 × 4 register transposes.
void TransposeMatrix(const float* x, int64_t rows, int64_t cols, int64_t ldx, float* xt);

// Σ_i a[i] · b[i] for i < n.
float DotProduct(const float* a, const float* b, int64_t n);

}  // namespace attnkit::detail
