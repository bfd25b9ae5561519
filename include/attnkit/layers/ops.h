// Building blocks shared by the attention layers: owning weight matrices, projections through
// BLAS, RMSNorm (plain and zero-centred), rotary position embedding (RoPE), sigmoid gating.
//
// Conventions: a projection y = x W keeps W as [in, out] row-major, so x [rows, in] times
// W [in, out] is one cblas_sgemm with no transposes. (PyTorch's nn.Linear stores Wᵀ.)
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/tensor.h"

namespace attnkit {

// An owning row-major [rows, cols] f32 matrix (a weight). Empty (0 × 0) means "absent".
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;  // [rows, cols]

  Matrix() = default;
  // Throws attnkit::Error for a negative size, a product that overflows or a failed allocation.
  Matrix(int64_t r, int64_t c)
      : rows(r),
        cols(c),
        data(CheckedVector(CheckedMul(r, c, "Matrix", "rows*cols"), 0.0f, "Matrix",
                           "a weight matrix")) {}
  bool empty() const { return rows == 0 && cols == 0; }
  float* row(int64_t r) { return data.data() + r * cols; }
  const float* row(int64_t r) const { return data.data() + r * cols; }
  size_t bytes() const { return data.size() * sizeof(float); }
};

// Throws attnkit::Error "<owner>: weight <name> is [r, c], expected [er, ec]" on a mismatch.
void CheckMatrix(const char* owner, const char* name, const Matrix& m, int64_t rows, int64_t cols);
// Same for a vector weight of length n (e.g. an RMSNorm weight); n == 0 means must be empty.
void CheckVector(const char* owner, const char* name, const std::vector<float>& v, int64_t n);

// Fills with uniform values in [-scale, scale] from a fast seeded generator (deterministic for a
// given seed). Used by the random initialisers of the weight structs.
void FillUniform(float* data, size_t n, float scale, uint64_t seed);
// 1 / sqrt(fan_in): keeps activations O(1) through a random projection.
inline float InitScale(int64_t fan_in) { return 1.0f / std::sqrt(static_cast<float>(fan_in)); }
// A [rows, cols] projection ~ U(±InitScale(rows)), deterministic in seed.
Matrix RandomMatrix(int64_t rows, int64_t cols, uint64_t seed);
// A norm gain of n values ~ 1 + U(±0.2) (or U(±0.2) when zero_centred: applied as 1 + w).
std::vector<float> RandomNormWeight(int64_t n, uint64_t seed, bool zero_centred = false);

// y [rows, w.cols] = x [rows, w.rows] · w (row-major; ldx/ldy are row strides in elements,
// 0 → dense). Uses OpenBLAS sgemm; call only outside OpenMP parallel regions.
void Linear(const float* x, int64_t rows, const Matrix& w, float* y, int64_t ldx = 0,
            int64_t ldy = 0);

// Backward of Linear: dx [rows, w.rows] = dy [rows, w.cols] · wᵀ (added to dx when accumulate_dx,
// else overwritten; skipped when dx is null) and dw += xᵀ · dy (dw [w.rows, w.cols] row-major,
// skipped when null). Row strides as in Linear (0 → dense). OpenBLAS; not inside OpenMP.
void LinearBackward(const float* x, int64_t rows, const Matrix& w, const float* dy, float* dx,
                    float* dw, bool accumulate_dx = false, int64_t ldx = 0, int64_t ldy = 0);

// In place over `rows` vectors of `dim` values, consecutive vectors `stride` apart:
// x ← x / sqrt(mean(x²) + eps) ⊙ g, with g = weight, or g = 1 + weight when zero_centred
// (Gemma, Qwen3-Next store w and apply 1 + w). weight [dim]; empty weight → g = 1.
void RmsNorm(float* x, int64_t rows, int64_t dim, int64_t stride, const std::vector<float>& weight,
             float eps, bool zero_centred = false);

// Backward of RmsNorm: x holds the INPUT of the forward (rows of dim, `stride` apart), dy the
// gradient of its output (same layout). Writes dx (same layout; may alias dy) and, unless
// dweight is null, ADDS the weight's gradient into dweight [dim] (for 1 + w as for w).
void RmsNormBackward(const float* x, int64_t rows, int64_t dim, int64_t stride,
                     const std::vector<float>& weight, float eps, bool zero_centred,
                     const float* dy, float* dx, float* dweight);

// x ← x ⊙ sigmoid(g) elementwise over n values.
void SigmoidGate(float* x, const float* g, int64_t n);
// Backward of SigmoidGate given the UNGATED x, g and dy: dx = dy ⊙ σ(g) (may alias dy),
// dg = dy ⊙ x ⊙ σ(g)(1 − σ(g)) (overwritten).
void SigmoidGateBackward(const float* x, const float* g, const float* dy, float* dx, float* dg,
                         int64_t n);

// Rotary position embedding.
//  kHalf ("rotate half", Llama / GPT-NeoX / Qwen): dims i and i + rotary_dim/2 form a pair.
//  kInterleaved (GPT-J, original RoFormer): dims 2i and 2i + 1 form a pair.
// Pair i at position p rotates by angle p · theta^(−2i / rotary_dim), i < rotary_dim / 2.
// Only the first rotary_dim = fraction · head_dim dims rotate (partial rotary); the rest stay.
enum class RopeLayout { kHalf, kInterleaved };

struct RopeConfig {
  float theta = 10000.0f;
  RopeLayout layout = RopeLayout::kHalf;
  float fraction = 1.0f;  // partial rotary: in (0, 1]; rotary_dim = fraction·head_dim rounded
                          // down to even (>= 2)
};

const char* RopeLayoutName(RopeLayout layout);
RopeLayout ParseRopeLayout(const std::string& name);  // "half" | "interleaved"

// Checks theta > 0 and fraction in (0, 1]; returns rotary_dim for head_dim (even, >= 2).
int64_t RotaryDim(const RopeConfig& rope, int64_t head_dim);

// Rotates every row of x [batch, heads, tokens, head_dim] in place; token t of the view sits at
// absolute position start_position + t. Angles are computed in double.
void ApplyRope(TensorView<float> x, int64_t start_position, const RopeConfig& rope);
// Backward of ApplyRope (a rotation, so its transpose rotates back): dx ← Rᵀ dx in place.
void ApplyRopeBackward(TensorView<float> dx, int64_t start_position, const RopeConfig& rope);

namespace ref {
// The plain twin: per element, double arithmetic, pairs found by the layout's formula.
void ApplyRope(TensorView<float> x, int64_t start_position, const RopeConfig& rope);
}  // namespace ref

}  // namespace attnkit
