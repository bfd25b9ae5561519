// The GQA-family attention block: MHA (num_heads_kv == num_heads_q), GQA, MQA (num_heads_kv == 1)
// with the options of current open models, and its KV cache.
//
//   q = x W_q, k = x W_k, v = x W_v                       (BLAS)
//   q, k ← RMSNorm per head (QK-norm: Qwen3, OLMo 2, Gemma 3; optional 1 + w form)
//   q, k ← RoPE at absolute positions (optionally partial, either layout)
//   o    = softmax(scale·q kᵀ [soft-capped] + causal/window/sparse mask [+ sink]) v   (dense)
//   o   ← o ⊙ sigmoid(x W_gate)                           (gated attention, Qwen3-Next)
//   y    = o W_o
//
// Llama 3: plain GQA + RoPE. Qwen3: + QK-norm. Gemma 3: + QK-norm, local layers window 1024.
// gpt-oss: + sinks, alternating window 128 / full. Qwen3-Next (full-attention layers):
// + zero-centred QK-norm, partial rotary 0.25, output gate.
//
// The cache is a KvCache: contiguous with capacity max_tokens for full layers, a ring buffer of
// window + max_step − 1 slots for windowed layers (memory bounded by the window).
//
// Training (layer.h, docs/training.md): TrainForward runs the same function over whole sequences
// from position 0 through DenseForward (causal or window mask, saving the LSE) without the cache,
// and keeps a GqaTape; TrainBackward runs the chain back (output projection, gate, DenseBackward,
// RoPE, QK-norm, projections) and adds into the block's gradient buffers. Math: docs/blocks.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/kv_cache.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"
#include "attnkit/masks/sparse.h"

namespace attnkit {

struct GqaConfig {
  int64_t hidden = 0;
  int64_t num_heads_q = 0;
  int64_t num_heads_kv = 0;
  int64_t head_dim = 0;    // head_dim_qk
  int64_t head_dim_v = 0;  // 0 → head_dim
  bool use_rope = true;
  RopeConfig rope;
  bool qk_norm = false;
  bool qk_norm_zero_centred = false;  // weight stored as w, applied as 1 + w
  float norm_eps = 1e-6f;
  bool output_gate = false;  // o ← o ⊙ sigmoid(x W_gate), per head and channel
  bool sinks = false;        // one learned logit per query head joins the softmax (gpt-oss)
  int64_t window = 0;        // causal sliding window of `window` keys; 0 = full causal
  float softcap = 0.0f;      // logit soft-capping (Gemma 2); 0 = off
  float scale = 0.0f;        // 0 → 1 / sqrt(head_dim)
  // A static sparse pattern (masks/sparse.h) by name: strided, fixed, bigbird, longformer,
  // chunked (Llama 4's chunked local attention), window; empty name = none (full causal). Built
  // once for positions [0, pattern.seqlen) (0 → max_tokens) with DefaultPatternSpec's defaults
  // for unset fields, and applied at absolute positions in prefill, decode (over the contiguous
  // cache) and training alike. Needs window = 0.
  PatternSpec pattern;
  // Cache sizing: a full layer holds up to max_tokens tokens (batch · num_heads_kv · max_tokens
  // · (head_dim + head_dim_v) floats); a windowed layer holds window + max_step − 1 slots.
  int64_t batch = 1;
  int64_t max_tokens = 4096;
  int64_t max_step = 1;  // tokens per call that the ring buffer serves directly (longer calls
                         // on a windowed layer gather the window into a scratch buffer)
  Backend backend = Backend::kAuto;  // the dense engine's backend (kReference for tests)

  int64_t dv() const { return head_dim_v > 0 ? head_dim_v : head_dim; }
  // The pattern with seqlen and every default filled in (pattern.name must be set).
  PatternSpec ResolvedPattern() const;
  // Throws attnkit::Error on an impossible configuration (naming the field).
  void Validate() const;
  std::string Describe() const;
};

// The block's parameters, owning. Shapes ([in, out] row-major, see ops.h):
struct GqaWeights {
  Matrix w_q;                 // [hidden, num_heads_q · head_dim]
  Matrix w_k;                 // [hidden, num_heads_kv · head_dim]
  Matrix w_v;                 // [hidden, num_heads_kv · head_dim_v]
  Matrix w_o;                 // [num_heads_q · head_dim_v, hidden]
  Matrix w_gate;              // [hidden, num_heads_q · head_dim_v] if output_gate, else empty
  std::vector<float> q_norm;  // [head_dim] if qk_norm, else empty
  std::vector<float> k_norm;  // [head_dim] if qk_norm, else empty
  std::vector<float> sinks;   // [num_heads_q] if sinks, else empty

  // Throws attnkit::Error naming the first weight whose shape does not match `config`.
  void Check(const GqaConfig& config) const;
  size_t bytes() const;
  // Seeded random weights of the right shapes (projections ~ U(±1/sqrt(fan_in)); norm weights
  // near 1, or near 0 in the zero-centred form; sinks ~ U(−1, 1)).
  static GqaWeights Random(const GqaConfig& config, uint64_t seed);
};

// What GqaBlock::TrainForward keeps for its backward, all row-major over rows = batch·tokens
// ([batch, tokens, heads, dim] memory): per token hidden + (qk_norm ? 2 : 1)·(hq + hkv)·head_dim
// + (hkv + hq·(gate ? 2 : 1))·head_dim_v + hq floats (GqaTrainBytesPerToken). Never
// tokens × tokens.
class GqaTape final : public TrainTape {
 public:
  std::vector<float> x;             // [rows, hidden] the input
  std::vector<float> q_pre, k_pre;  // [rows, hq·dk], [rows, hkv·dk] before QK-norm (if qk_norm)
  std::vector<float> q, k, v;       // attention's inputs: q, k after norm and RoPE
  std::vector<float> o;             // [rows, hq·dv] attention output, before the gate
  std::vector<float> g;             // [rows, hq·dv] gate pre-activation x W_gate (if output_gate)
  std::vector<float> lse;           // [batch, hq, tokens] attention's log-sum-exp
};

class GqaBlock final : public Layer {
 public:
  GqaBlock(GqaConfig config, GqaWeights weights);

  std::string Kind() const override { return "gqa"; }
  std::string Describe() const override { return config_.Describe(); }
  int64_t hidden() const override { return config_.hidden; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override;
  int64_t tokens_seen() const override { return cache_.length(); }
  void Reset() override {
    cache_.Clear();
    undo_.length = -1;
  }
  bool UndoForward() noexcept override;
  size_t CacheBytes() const override { return cache_.bytes(); }
  size_t WeightBytes() const override { return weights_.bytes(); }

  // Benchmarks: fills the cache with `tokens` random keys/values (as if that many tokens had
  // been processed) so decode can be timed at a long context without a long prefill.
  void FillCacheRandom(int64_t tokens, uint64_t seed);

  const GqaConfig& config() const { return config_; }
  const GqaWeights& weights() const { return weights_; }
  const KvCache<float>& cache() const { return cache_; }

  // Training (layer.h). Any batch size (the cache's `batch` does not apply); tokens_seen() and
  // the cache are untouched. Gradients live in a GqaWeights-shaped buffer (grads()), allocated
  // zeroed by the first Params() or TrainBackward.
  bool trainable() const override { return true; }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override;
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx) override;
  std::vector<Param> Params() override;
  const GqaWeights& grads() const { return grads_; }

 private:
  void EnsureGrads();
  DenseOptions AttentionOptions() const;  // scale, softcap, sinks, backend (no mask)
  DenseOptions TrainOptions() const;      // + the causal / window mask from position 0

  GqaConfig config_;
  GqaWeights weights_;
  GqaWeights grads_;  // empty until EnsureGrads()
  bool grads_ready_ = false;
  KvCache<float> cache_;
  MaskPtr window_mask_;
  MaskPtr pattern_mask_;                  // config.pattern's mask, or null
  MaskPtr train_mask_;                    // pattern_mask_, window_mask_, or causal for a full layer
  std::vector<float> q_, k_, v_, o_, g_;  // scratch, [batch·tokens, heads·dim]
  KvCache<float>::UndoRecord undo_;  // the cache before the last call's append (length −1: none)
};

// KV-cache bytes per token of one GQA layer with f32 storage: num_heads_kv · (head_dim +
// head_dim_v) · 4 (a windowed layer caps the tokens at window + max_step − 1).
int64_t GqaCacheBytesPerToken(const GqaConfig& config);
// Bytes per token of a GqaTape (what TrainForward keeps for the backward), f32.
int64_t GqaTrainBytesPerToken(const GqaConfig& config);

}  // namespace attnkit
