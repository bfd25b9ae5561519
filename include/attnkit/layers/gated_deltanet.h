// The Gated DeltaNet layer (Qwen3-Next's linear-attention layers) and Kimi Delta Attention (Kimi
// Linear's), on the recurrent engine, with their fixed-size state.
//
//   [q | k | v] = SiLU(causal depthwise conv_4(x W_qkv))        (conv state: last 3 inputs)
//   log α = −exp(A_log) · softplus(x W_a + dt_bias)               (scalar per head; KDA: per
//                                                                  key channel)
//   β = sigmoid(x W_b)
//   o = gated delta rule(L2norm(q) / sqrt(d_k), L2norm(k), v, α, β)   (state [hv, dk, dv])
//   y = (RMSNorm(o) ⊙ w_norm ⊙ SiLU(x W_g)) W_o
//
// DeltaNet is the same layer without the decay gate (α ≡ 1: config.decay_gate = false).
// q and k have num_heads_qk heads, v and the state num_heads_v (Qwen3-Next: 16 and 32 heads of
// 128). The layer's cache is its fixed state: batch · (num_heads_v · dk · dv + (kernel − 1) ·
// conv channels) floats, independent of how many tokens it has seen. Simplifications: KDA's
// low-rank gate projections are full-rank here, and both kinds use the SiLU output gate.
//
// Training (layer.h's contract; docs/training.md): TrainForward runs the same pieces from a zero
// state and zero convolution history, without touching the block's state; its tape keeps x, the
// projections (x W_qkv, the decay and write inputs, the output gate) and the recurrent output
// before the norm. The backward recomputes the convolution and the gates and runs the chunk-wise
// GatedDeltaBackward (no per-token state).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"

namespace attnkit {

struct GatedDeltaNetConfig {
  int64_t hidden = 0;
  int64_t num_heads_qk = 0;
  int64_t num_heads_v = 0;  // a multiple of num_heads_qk
  int64_t head_dim_qk = 128;
  int64_t head_dim_v = 128;
  int64_t conv_kernel = 4;
  bool per_channel_decay = false;  // false: Gated DeltaNet; true: Kimi Delta Attention
  // false: DeltaNet (Yang et al., 2024): α ≡ 1, no decay gate (w_a, a_log and dt_bias are empty);
  // kind "deltanet". Needs per_channel_decay = false.
  bool decay_gate = true;
  float norm_eps = 1e-6f;
  int64_t batch = 1;
  GatedDeltaOptions kernel;  // algorithm, chunk size, threads, backend of the recurrent engine

  int64_t conv_channels() const {
    return 2 * num_heads_qk * head_dim_qk + num_heads_v * head_dim_v;
  }
  int64_t decay_width() const { return per_channel_decay ? head_dim_qk : 1; }
  // "gated_deltanet", "kda" or "deltanet".
  const char* kind() const {
    return !decay_gate ? "deltanet" : per_channel_decay ? "kda" : "gated_deltanet";
  }
  void Validate() const;  // throws attnkit::Error naming the field
  std::string Describe() const;
};

// Parameters, owning; projections are [in, out] row-major (see ops.h).
struct GatedDeltaNetWeights {
  Matrix w_qkv;                // [hidden, conv_channels]
  Matrix w_a;                  // [hidden, num_heads_v · decay_width] (empty without the gate)
  Matrix w_b;                  // [hidden, num_heads_v]
  Matrix w_g;                  // [hidden, num_heads_v · head_dim_v]
  Matrix w_o;                  // [num_heads_v · head_dim_v, hidden]
  Matrix conv;                 // [conv_channels, conv_kernel]
  std::vector<float> a_log;    // [num_heads_v] (empty without the decay gate)
  std::vector<float> dt_bias;  // [num_heads_v · decay_width] (likewise)
  std::vector<float> norm;     // [head_dim_v]

  void Check(const GatedDeltaNetConfig& config) const;
  size_t bytes() const;
  static GatedDeltaNetWeights Random(const GatedDeltaNetConfig& config, uint64_t seed);
};

class GatedDeltaNetBlock final : public Layer {
 public:
  GatedDeltaNetBlock(GatedDeltaNetConfig config, GatedDeltaNetWeights weights);

  std::string Kind() const override { return config_.kind(); }
  std::string Describe() const override { return config_.Describe(); }
  int64_t hidden() const override { return config_.hidden; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override;
  int64_t tokens_seen() const override { return seen_; }
  void Reset() override;
  bool UndoForward() noexcept override;
  size_t CacheBytes() const override {
    return (state_.size() + conv_state_.size()) * sizeof(float);
  }
  size_t WeightBytes() const override { return weights_.bytes(); }

  // Training: any batch and any number of tokens (the block's state is not used).
  bool trainable() const override { return true; }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override;
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx) override;
  // Names are GatedDeltaNetWeights' fields.
  std::vector<Param> Params() override;

  const GatedDeltaNetConfig& config() const { return config_; }
  const GatedDeltaNetWeights& weights() const { return weights_; }

 private:
  void EnsureGrads();

  GatedDeltaNetConfig config_;
  GatedDeltaNetWeights weights_;
  int64_t seen_ = 0;
  std::vector<float> state_;       // [batch, num_heads_v, head_dim_qk, head_dim_v]
  std::vector<float> conv_state_;  // [batch, conv_kernel − 1, conv_channels]
  // Both states before the last call: put back if it fails, or by UndoForward() after it.
  std::vector<float> conv_saved_, state_saved_;
  int64_t undo_seen_ = -1;  // seen_ before the last call if it succeeded (−1: nothing to undo)
  std::vector<float> proj_, conv_, a_, la_, b_, beta_, o_, g_;  // scratch
  GatedDeltaNetWeights grads_;  // gradients (training), same shapes as the weights
  bool has_grads_ = false;
};

}  // namespace attnkit
