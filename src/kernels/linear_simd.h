// Internal SIMD building blocks of the linear and recurrent engines (Highway, run-time dispatch).
//
// A small single-threaded GEMM for the chunk-sized products (64 × 128 × 256 and the like) that
// runs inside per-(batch, head) OpenMP work (BLAS must not be called there), the FAVOR+ feature
// exponentials, decayed dot products for Kimi Delta Attention, and the fused token-by-token
// delta-rule step that the decode path uses. Every function dispatches once per call to the best
// SIMD target of the running CPU.
#pragma once

#include <cstdint>

namespace attnkit::detail {

// C = alpha · A · B (+ C if accumulate). A is addressed as a[i * a_rs + p * a_cs] (so Aᵀ is
// free: swap the strides); B and C are row-major with leading dimensions ldb, ldc.
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;
  int64_t a_rs = 0, a_cs = 1;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};
void SmallGemm(const GemmArgs& args);

// FAVOR+ feature rows, in place. Row t of p (rows × m, leading dimension ld) holds w_l · x_t on
// entry; half_sq_norm[t] = ‖x_t‖² / 2. On exit p[t, l] = exp(a_tl − r_t − log_scale) with
// a_tl = p[t, l] − half_sq_norm[t] and r_t = max_l a_tl, which is written to row_max[t].
void FavorExpRows(float* p, int64_t rows, int64_t m, int64_t ld, const float* half_sq_norm,
                  float log_scale, float* row_max);

// out row t = x row t · f_t · scale for t < rows, with f_t = 1 / sqrt(‖x_t‖² + eps) if l2 else 1
// (rows of dim floats; row strides x_rs and out_rs). The q / k normalisation of the delta rule.
void ScaleRows(const float* x, int64_t x_rs, int64_t rows, int64_t dim, bool l2, float eps,
               float scale, float* out, int64_t out_rs);

// t (n × n, row-major) = (I + diag(beta) A)⁻¹ for a strictly lower triangular A (n × n,
// row-major; its diagonal and upper part are ignored), by forward substitution row by row:
// t_i = e_i − β_i Σ_{l<i} a_il t_l. t is unit lower triangular; its upper part is set to 0.
void UnitLowerInverse(const float* a, const float* beta, int64_t n, float* t);

// x[i] = exp(x[i]) for i < n (Highway's Exp: 1 ULP; arguments below −104 give 0).
void ExpInPlace(float* x, int64_t n);

// out[i] = x[i] > 0 ? x[i] + 1 : exp(x[i]) for i < n (the elu + 1 feature map).
void EluPlusOne(const float* x, int64_t n, float* out);

// out[j] = Σ_c x[c] · y[j * ldy + c] · exp(gx[c] − gy[j * ldy + c]) for j < count (dim = c range).
// The caller guarantees gx[c] ≤ gy[j, c] (a later position's cumulative log decay), so every
// exponential is ≤ 1.
void DecayedDots(const float* x, const float* gx, const float* y, const float* gy, int64_t ldy,
                 int64_t count, int64_t dim, float* out);

// One head of the gated delta rule, token by token (the decode path; also the "recurrent"
// algorithm for prefill). State s is row-major [dk × dv]. Per token t:
//   ka = k_t ⊙ α_t;  u = delta ? β_t (v_t − sᵀ ka) : v_t;  s ← diag(α_t) s + k_t uᵀ;  o_t = sᵀ q_t
// q and k rows must already be normalised and scaled. alpha[t * alpha_stride + c] (alpha_dim
// values per token, 1 = scalar decay); alpha == nullptr means α ≡ 1.
struct DeltaStepArgs {
  int64_t tokens = 0, dk = 0, dv = 0;
  const float* q = nullptr;  // [tokens, dk] with row stride q_rs
  const float* k = nullptr;  // [tokens, dk] with row stride k_rs
  const float* v = nullptr;  // [tokens, dv] with row stride v_rs
  int64_t q_rs = 0, k_rs = 0, v_rs = 0;
  const float* alpha = nullptr;  // decays (not logs)
  int64_t alpha_stride = 0, alpha_dim = 1;
  const float* beta = nullptr;  // [tokens] with stride beta_stride
  int64_t beta_stride = 0;
  bool delta = true;
  float* s = nullptr;    // [dk, dv]
  float* out = nullptr;  // [tokens, dv] with row stride out_rs
  int64_t out_rs = 0;
  float* scratch = nullptr;  // >= dk + 2 * dv floats
};
void DeltaRecurrentSteps(const DeltaStepArgs& args);

}  // namespace attnkit::detail
