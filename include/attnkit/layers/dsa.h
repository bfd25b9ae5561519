// DeepSeek Sparse Attention as a layer (DeepSeek V3.2's attention, here on GQA projections): a
// lightning indexer picks top_k keys per query and exact attention runs over them only (the
// gather engine, kernels/gather.h).
//
//   q = x W_q, k = x W_k, v = x W_v, RoPE on q and k at absolute positions
//   q_I = x W_index_q (index_heads × index_dim), k_I = x W_index_k (index_dim), w = x W_index_w
//   I(t, s) = Σ_j w(t, j) ReLU(q_I(t, j) · k_I(s)),  S(t) = top_k of I(t, ·) over s <= t
//   o_t = softmax over s ∈ S(t) of (scale q_t · k_s) v_s,   y = o W_o
//
// The indexer runs in f32 here (IndexerOptions::reduced_precision = false) so that training and
// inference select the same keys. Simplifications against DeepSeek V3.2: GQA projections instead
// of MLA, no RoPE on the indexer's q/k, no weight scaling of w. The cache holds K, V and k_I for
// max_tokens tokens: batch · max_tokens · (num_heads_kv (d_k + d_v) + index_dim) floats.
//
// Training (layer.h's contract; docs/training.md, docs/sparse.md): TrainForward selects with the
// indexer and runs GatherForward with the LSE. TrainBackward gives the attention's gradients
// (GatherBackward, RoPE, projections) to x and W_q, W_k, W_v, W_o, and trains the indexer by its
// own loss, as DeepSeek V3.2 does: the KL divergence from the main attention's distribution over
// the selected keys (summed over heads; IndexerTarget, treated as a constant) to the indexer's
// softmax (IndexerKlBackward). The indexer's gradients go to W_index_q, W_index_k, W_index_w
// only: the main attention's gradient does not flow into the indexer (the top-k selection has
// none) and the indexer's loss does not flow into x (its input is detached). The last backward's
// indexer loss is last_indexer_loss().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/kernels/kv_cache.h"
#include "attnkit/layers/gqa.h"
#include "attnkit/layers/layer.h"

namespace attnkit {

struct DsaConfig {
  // Heads, head_dim, RoPE, scale, batch, max_tokens and backend as in GqaBlock; qk_norm,
  // output_gate, sinks, softcap, window and pattern must be off.
  GqaConfig attention;
  int64_t index_heads = 4;
  int64_t index_dim = 32;
  int64_t top_k = 64;  // keys per query (all visible keys when fewer)

  void Validate() const;  // throws attnkit::Error naming the field
  std::string Describe() const;
};

struct DsaWeights {
  GqaWeights attention;  // w_q, w_k, w_v, w_o
  Matrix w_index_q;      // [hidden, index_heads · index_dim]
  Matrix w_index_k;      // [hidden, index_dim]
  Matrix w_index_w;      // [hidden, index_heads]

  void Check(const DsaConfig& config) const;
  size_t bytes() const;
  static DsaWeights Random(const DsaConfig& config, uint64_t seed);
};

class DsaBlock final : public Layer {
 public:
  DsaBlock(DsaConfig config, DsaWeights weights);

  std::string Kind() const override { return "dsa"; }
  std::string Describe() const override { return config_.Describe(); }
  int64_t hidden() const override { return config_.attention.hidden; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override;
  int64_t tokens_seen() const override { return cache_.length(); }
  void Reset() override {
    cache_.Clear();
    undo_.length = -1;
  }
  // The KV cache's undo record; the indexer keys past the length are never read.
  bool UndoForward() noexcept override { return cache_.TakeBack(&undo_); }
  size_t CacheBytes() const override { return cache_.bytes() + index_keys_.size() * sizeof(float); }
  size_t WeightBytes() const override { return weights_.bytes(); }

  // Training: any batch and any number of tokens; the cache is untouched.
  bool trainable() const override { return true; }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override;
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx) override;
  // Names: w_q, w_k, w_v, w_o (trained by the output's gradient), w_index_q, w_index_k,
  // w_index_w (trained by the indexer's KL loss).
  std::vector<Param> Params() override;
  // L_I of the last TrainBackward (summed over batch and queries); 0 before any.
  double last_indexer_loss() const { return last_indexer_loss_; }

  const DsaConfig& config() const { return config_; }
  const DsaWeights& weights() const { return weights_; }

 private:
  void EnsureGrads();

  DsaConfig config_;
  DsaWeights weights_;
  KvCache<float> cache_;
  KvCache<float>::UndoRecord undo_;
  std::vector<float> index_keys_;  // [batch, max_tokens, index_dim]: k_I of the cached tokens
  std::vector<float> q_, k_, v_, o_, qi_, ki_, wi_;  // scratch
  std::vector<int32_t> sel_;                         // scratch: [batch, tokens, top_k]
  DsaWeights grads_;
  bool has_grads_ = false;
  double last_indexer_loss_ = 0;
};

}  // namespace attnkit
