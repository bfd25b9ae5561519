// Static sparse attention as a layer: a GQA-style block whose causal attention obeys a sparse
// pattern (masks/sparse.h) — Sparse Transformer strided and fixed, BigBird, Longformer, and
// chunked local attention (Llama 4) — on the dense engine, which skips the pattern's empty tiles.
//
//   q = x W_q, k = x W_k, v = x W_v, RoPE on q and k at their absolute positions
//   o = softmax(q kᵀ / sqrt(d) over the keys the pattern allows) v   (query heads share kv heads)
//   y = o W_o
//
// The pattern is a fixed function of absolute (query, key) positions, built once from a
// PatternSpec whose defaults scale with max_tokens (DefaultPatternSpec), so training, prefill and
// decode see the same mask. The cache is a contiguous KvCache of max_tokens (decode attends over
// it under the pattern); patterns built for a sequence length (BigBird, Longformer) cover
// positions [0, max_tokens).
//
// Training (layer.h's contract; docs/training.md): TrainForward runs DenseForward under the
// pattern from position 0 with the LSE; the backward is DenseBackward (same tile skipping, never
// tokens × tokens), RoPE's backward and the projections'. Options beyond the projections and RoPE
// (QK-norm, output gate, sinks, soft-cap, window) are GqaBlock's and are refused here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/kernels/kv_cache.h"
#include "attnkit/layers/gqa.h"
#include "attnkit/layers/layer.h"
#include "attnkit/masks/sparse.h"

namespace attnkit {

struct SparseAttentionConfig {
  // Heads, head_dim, RoPE, scale, batch, max_tokens and backend as in GqaBlock; qk_norm,
  // output_gate, sinks, softcap and window must be off.
  GqaConfig attention;
  // The pattern by name (strided, fixed, bigbird, longformer, chunked; window and causal work
  // too); seqlen 0 → attention.max_tokens. Unset fields take DefaultPatternSpec's defaults.
  PatternSpec pattern;

  PatternSpec Resolved() const;  // the pattern with seqlen and every default filled in
  void Validate() const;         // throws attnkit::Error naming the field
  std::string Describe() const;
};

class SparseAttentionBlock final : public Layer {
 public:
  // weights: GqaWeights of config.attention (w_q, w_k, w_v, w_o).
  SparseAttentionBlock(SparseAttentionConfig config, GqaWeights weights);

  std::string Kind() const override { return config_.pattern.name; }
  std::string Describe() const override { return config_.Describe(); }
  int64_t hidden() const override { return config_.attention.hidden; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override;
  int64_t tokens_seen() const override { return cache_.length(); }
  void Reset() override {
    cache_.Clear();
    undo_.length = -1;
  }
  bool UndoForward() noexcept override;
  size_t CacheBytes() const override { return cache_.bytes(); }
  size_t WeightBytes() const override { return weights_.bytes(); }

  // Training: any batch, up to max_tokens tokens (the pattern's extent); the cache is untouched.
  bool trainable() const override { return true; }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override;
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx) override;
  // Names: w_q, w_k, w_v, w_o (GqaWeights' fields).
  std::vector<Param> Params() override;

  const SparseAttentionConfig& config() const { return config_; }
  const GqaWeights& weights() const { return weights_; }
  const Mask& mask() const { return *mask_; }

 private:
  DenseOptions Options() const;  // scale, the pattern, backend
  void EnsureGrads();

  SparseAttentionConfig config_;
  GqaWeights weights_;
  MaskPtr mask_;
  KvCache<float> cache_;
  KvCache<float>::UndoRecord undo_;   // the cache before the last call's append (length −1: none)
  std::vector<float> q_, k_, v_, o_;  // scratch, [batch · tokens, heads · dim]
  GqaWeights grads_;                  // gradients (training), same shapes
  bool has_grads_ = false;
};

}  // namespace attnkit
