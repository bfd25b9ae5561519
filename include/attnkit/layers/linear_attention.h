// Kernelised linear attention as a layer (Performer FAVOR+, elu+1, ReLU) on the linear engine
// (kernels/linear.h), with its fixed-size decode state.
//
//   q = x W_q, k = x W_k, v = x W_v           (heads of head_dim; no RoPE, as in the papers)
//   o = causal linear attention(φ(q), φ(k), v)   (φ: the feature map; query heads share kv heads
//                                                  as in GQA when num_heads_kv < num_heads)
//   y = o W_o
//
// The cache is the engine's LinearState: batch · num_heads_kv · (m · head_dim_v + m + 1) floats
// (m features per row), independent of how many tokens the layer has seen. Performer's random
// projection is fixed per block (not a parameter); RedrawFeatures draws a new one, as the paper
// does periodically in training.
//
// Training (layer.h's contract; docs/training.md): TrainForward runs the chunk-wise causal form
// from an empty state without touching the block's state; its tape keeps x, q, k, v and the
// attention output, and the backward is the engine's LinearBackward (kernels/linear_backward.h)
// between the projections' backwards. A tape written before RedrawFeatures is refused.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"

namespace attnkit {

struct LinearAttentionConfig {
  int64_t hidden = 0;
  int64_t num_heads = 0;
  int64_t num_heads_kv = 0;  // a divisor of num_heads (0 → num_heads)
  int64_t head_dim = 0;
  int64_t head_dim_v = 0;  // 0 → head_dim
  FeatureMap feature_map = FeatureMap::kFavorPositive;
  // FAVOR+ only: m random features (0 → round(head_dim · ln head_dim), at least head_dim: the
  // paper's Θ(d log d)), their kind and the seed of the first draw.
  int64_t num_features = 0;
  RandomFeatureKind feature_kind = RandomFeatureKind::kOrthogonal;
  uint64_t feature_seed = 0;
  int64_t chunk_size = 64;  // the causal form's chunk (tokens)
  int num_threads = 0;
  Backend backend = Backend::kAuto;  // the linear engine's backend (kReference for tests)
  int64_t batch = 1;                 // of the decode state (training takes any batch)

  int64_t kv_heads() const { return num_heads_kv > 0 ? num_heads_kv : num_heads; }
  int64_t dv() const { return head_dim_v > 0 ? head_dim_v : head_dim; }
  int64_t features() const;  // m for this configuration
  void Validate() const;     // throws attnkit::Error naming the field
  std::string Describe() const;
};

// The kind name of a feature map: "performer", "linear_elu", "linear_relu".
const char* LinearAttentionKind(FeatureMap map);

// Parameters, owning; projections are [in, out] row-major (see ops.h).
struct LinearAttentionWeights {
  Matrix w_q;  // [hidden, num_heads · head_dim]
  Matrix w_k;  // [hidden, num_heads_kv · head_dim]
  Matrix w_v;  // [hidden, num_heads_kv · head_dim_v]
  Matrix w_o;  // [num_heads · head_dim_v, hidden]

  void Check(const LinearAttentionConfig& config) const;
  size_t bytes() const;
  static LinearAttentionWeights Random(const LinearAttentionConfig& config, uint64_t seed);
};

class LinearAttentionBlock final : public Layer {
 public:
  LinearAttentionBlock(LinearAttentionConfig config, LinearAttentionWeights weights);

  std::string Kind() const override { return LinearAttentionKind(config_.feature_map); }
  std::string Describe() const override { return config_.Describe(); }
  int64_t hidden() const override { return config_.hidden; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override;
  int64_t tokens_seen() const override { return seen_; }
  void Reset() override;
  bool UndoForward() noexcept override;
  size_t CacheBytes() const override { return state_.bytes(); }
  size_t WeightBytes() const override { return weights_.bytes(); }

  // Training: any batch and any number of tokens (the block's state is not used).
  bool trainable() const override { return true; }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override;
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx) override;
  // Names are LinearAttentionWeights' fields; the Performer features are not parameters.
  std::vector<Param> Params() override;

  // FAVOR+: draws a new random projection from `seed` and Reset()s the decode state (a state
  // absorbed under the old features means nothing under the new ones). Tapes written before
  // are refused by TrainBackward. Other feature maps: attnkit::Error.
  void RedrawFeatures(uint64_t seed);
  const PerformerFeatures& features() const { return features_; }

  const LinearAttentionConfig& config() const { return config_; }
  const LinearAttentionWeights& weights() const { return weights_; }
  const LinearState& state() const { return state_; }

 private:
  LinearOptions Options() const;
  void EnsureGrads();

  LinearAttentionConfig config_;
  LinearAttentionWeights weights_;
  PerformerFeatures features_;  // FAVOR+ only
  uint64_t draw_ = 0;           // counts RedrawFeatures calls (tapes remember it)
  int64_t seen_ = 0;
  LinearState state_;
  LinearState saved_;       // state_ before the last call (for UndoForward)
  int64_t undo_seen_ = -1;  // seen_ before the last call if it succeeded (−1: nothing to undo)
  std::vector<float> q_, k_, v_, o_;  // scratch, [batch · tokens, heads · dim]
  LinearAttentionWeights grads_;      // gradients (training), same shapes
  bool has_grads_ = false;
};

}  // namespace attnkit
