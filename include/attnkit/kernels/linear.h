// The linear engine: kernelised attention with a feature map φ and running sums.
//
//   bidirectional  O_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ (Σ_j φ(k_j))
//   causal         the same sums over j ≤ i only
//
// Feature maps: Performer FAVOR+ positive random features (Choromanski et al., 2020), which make
// E[φ(q)·φ(k)] = exp(q·k / sqrt(head_dim_qk)) — an unbiased estimate of softmax attention — and
// the plain linear-attention maps elu(x) + 1 and ReLU(x). The causal form is computed chunk-wise
// (a masked quadratic product inside a chunk, a running num_features × head_dim_v state and
// normaliser across chunks); decode continues from a LinearState. Math: docs/linear.md.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/core/backend.h"
#include "attnkit/core/tensor.h"

namespace attnkit {

enum class FeatureMap {
  kFavorPositive,  // Performer FAVOR+: exp(W x − ‖x‖²/2) / sqrt(m), x = input / d^(1/4)
  kEluPlusOne,     // elu(x) + 1 (Katharopoulos et al., 2020); num_features = head_dim_qk
  kRelu,           // max(x, 0); num_features = head_dim_qk
};

enum class RandomFeatureKind {
  kOrthogonal,  // blocks of head_dim_qk orthogonal directions, rows rescaled to chi(d) norms
  kIid,         // i.i.d. N(0, 1) entries
};

// The random projection W (num_features × head_dim_qk) of FAVOR+, reproducible from its seed.
class PerformerFeatures {
 public:
  PerformerFeatures() = default;
  // Throws attnkit::Error when num_features <= 0 or head_dim_qk <= 0.
  PerformerFeatures(int64_t num_features, int64_t head_dim_qk, RandomFeatureKind kind,
                    uint64_t seed);
  // Draws a fresh W with a new seed (Performer redraws features periodically in training).
  void Redraw(uint64_t seed);

  int64_t num_features() const { return m_; }
  int64_t head_dim_qk() const { return d_; }
  RandomFeatureKind kind() const { return kind_; }
  uint64_t seed() const { return seed_; }
  const float* w() const { return w_.data(); }     // [num_features, head_dim_qk] row-major
  const float* w_t() const { return wt_.data(); }  // [head_dim_qk, num_features] (Wᵀ)

 private:
  int64_t m_ = 0, d_ = 0;
  RandomFeatureKind kind_ = RandomFeatureKind::kOrthogonal;
  uint64_t seed_ = 0;
  std::vector<float> w_, wt_;
};

struct LinearOptions {
  FeatureMap feature_map = FeatureMap::kFavorPositive;
  const PerformerFeatures* features = nullptr;  // required for kFavorPositive
  bool causal = true;
  int64_t chunk_size = 64;  // tokens per chunk of the causal form (>= 1)
  int num_threads = 0;      // 0 → GetNumThreads()
  Backend backend = Backend::kAuto;
};

// The decode state of the causal form, per (batch, kv head): s = Σ_j φ̃(k_j) v_jᵀ and
// z = Σ_j φ̃(k_j), where φ̃(k_j) = φ(k_j) · exp(r_j − max_shift) carries each key's stabiliser r_j
// relative to the largest one seen so far (max_shift; −inf while empty).
struct LinearState {
  LinearState() = default;
  LinearState(int64_t batch, int64_t num_heads_kv, int64_t num_features, int64_t head_dim_v);
  void Reset();
  size_t bytes() const { return (s.size() + z.size() + max_shift.size()) * sizeof(float); }

  int64_t batch = 0, num_heads_kv = 0, num_features = 0, head_dim_v = 0;
  int64_t tokens = 0;            // keys absorbed so far
  std::vector<float> s;          // [batch, num_heads_kv, num_features, head_dim_v]
  std::vector<float> z;          // [batch, num_heads_kv, num_features]
  std::vector<float> max_shift;  // [batch, num_heads_kv]
};

// Number of features φ produces for these options and head_dim_qk.
int64_t LinearNumFeatures(const LinearOptions& options, int64_t head_dim_qk);

// q   [batch, num_heads_q,  seqlen_q,  head_dim_qk]
// k   [batch, num_heads_kv, seqlen_kv, head_dim_qk]   (num_heads_q % num_heads_kv == 0)
// v   [batch, num_heads_kv, seqlen_kv, head_dim_v]
// out [batch, num_heads_q,  seqlen_q,  head_dim_v]
// Bidirectional: any seqlen_q; every query sees every key. Causal: seqlen_q == seqlen_kv and
// query i sees keys 0..i plus everything already in `state`. state (optional, causal only) is
// read as the prefix and updated with the new keys, so prefill then decode == one pass.
// A row whose normaliser is zero (possible with ReLU) gets out = 0.
void LinearForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<float> out, const LinearOptions& options = {},
                   LinearState* state = nullptr);

// φ applied to rows of x [batch, heads, tokens, head_dim_qk] → out [.., .., .., num_features],
// exactly as the kernels use it (FAVOR+ rows are stabilised by their own max; the stabiliser of
// row t is written to row_shift [batch, heads, tokens, 1] if given, so that the unstabilised
// feature is out · exp(row_shift)). For inspection and tests.
void LinearFeatureMap(TensorView<const float> x, TensorView<float> out,
                      const LinearOptions& options, TensorView<float> row_shift = {});

// 2 · multiply-adds of the fast kernel (feature maps, chunk products, state updates).
double LinearFlops(int64_t batch, int64_t num_heads_q, int64_t num_heads_kv, int64_t seqlen,
                   int64_t head_dim_qk, int64_t head_dim_v, const LinearOptions& options);

namespace ref {
// The plain twin: double accumulation, the token-by-token recurrence for the causal form.
void LinearForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<float> out, const LinearOptions& options = {},
                   LinearState* state = nullptr);
}  // namespace ref

}  // namespace attnkit
