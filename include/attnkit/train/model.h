// A small decoder-only language model for training attnkit's attention layers (docs/training.md):
//
//   h₀ = E[token]                                       token embedding E [vocab, hidden]
//   for each of L blocks:
//     h ← h + Attn_l(RMSNorm(h) ⊙ a_l)                   any trainable attnkit::Layer (factory
//     kind) h ← h + W_down (silu(x W_gate) ⊙ (x W_up)),  x = RMSNorm(h) ⊙ m_l      (SwiGLU MLP)
//   logits = (RMSNorm(h) ⊙ f) · Eᵀ  (tied)  or  · W_head [hidden, vocab]  (untied)
//   loss = mean over the target positions of −log softmax(logits)[target]
//
// Every piece has its backward here; the attention layer's comes from Layer::TrainBackward.
// Weights are deterministic in the seed; a step is deterministic for a given thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"

namespace attnkit::train {

struct ModelConfig {
  int64_t vocab = 256;
  int64_t hidden = 64;
  int64_t layers = 2;
  // Attention layer kinds by the factory's names (layers/factory.h): one kind ("mha") or a
  // repeating pattern ("3*gated_deltanet,gated"); the pattern's length must divide `layers`.
  std::string variant = "mha";
  int64_t heads = 4;
  int64_t kv_heads = 0;       // 0: = heads
  int64_t head_dim = 0;       // 0: hidden / heads
  int64_t window = 0;         // swa / sinks window, chunked chunk (0: factory default 128)
  int64_t q_lora_rank = 0;    // mla: 0 = direct query projection
  int64_t kv_lora_rank = 0;   // mla: 0 = 4·head_dim (DeepSeek-V2-Lite's ratio: 512 for 128)
  int64_t rope_head_dim = 0;  // mla: 0 = head_dim / 2 rounded down to even (>= 2)
  int64_t ffn = 0;            // SwiGLU inner size; 0: 8·hidden/3 rounded up to a multiple of 8
  bool tied = true;           // output head = embeddingᵀ
  int64_t max_seqlen = 256;   // longest training sequence (cache capacity of attention layers)
  float norm_eps = 1e-5f;

  // The fields with 0 resolved (kv_heads, head_dim, ffn, kv_lora_rank, rope_head_dim); throws
  // attnkit::Error naming a field that is out of range, or an unknown variant.
  ModelConfig Resolved() const;
  // The attention kind of each of the `layers` blocks.
  std::vector<std::string> LayerKindList() const;
  // As JSON text (config.json of a checkpoint) and back; FromJson refuses a malformed document,
  // missing or mistyped fields with attnkit::Error.
  std::string ToJson() const;
  static ModelConfig FromJson(const std::string& text);
};

// One batch of token sequences: inputs[b·seqlen + t] is the token at position t of sequence b,
// targets[...] the token to predict there, or -1 where no loss is taken.
struct Batch {
  int64_t batch = 0, seqlen = 0;
  std::vector<int32_t> inputs, targets;
};

// Sums over the target positions of one or more batches.
struct LossStats {
  double loss_sum = 0;  // Σ −ln p(target), nats
  int64_t count = 0;    // target positions
  int64_t correct = 0;  // positions where argmax logits == target
  // Per position in the sequence (loss against context position): sums and counts.
  std::vector<double> position_loss;
  std::vector<int64_t> position_count;
  double mean() const { return count > 0 ? loss_sum / static_cast<double>(count) : 0.0; }
  double accuracy() const {
    return count > 0 ? static_cast<double>(correct) / static_cast<double>(count) : 0.0;
  }
  void Add(const LossStats& other);
};

class Model {
 public:
  // Seeded random weights; attention layers from MakeLayer(kind, shape, seed-derived).
  // Throws attnkit::Error when the config is invalid or a kind cannot be trained.
  Model(const ModelConfig& config, uint64_t seed);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  // Every parameter: "embed", "blocks.{i}.attn_norm", "blocks.{i}.attn.<layer param>",
  // "blocks.{i}.mlp_norm", "blocks.{i}.mlp.w_gate|w_up|w_down", "final_norm", "head" (untied).
  std::vector<Param> Params();
  int64_t NumParams();
  void ZeroGrad();

  // Forward, loss and backward: ADDS ∂(mean loss of this batch)/∂w into every gradient (so
  // micro-batches add up; divide yourself). Returns the batch's loss statistics.
  LossStats ForwardBackward(const Batch& batch);
  // Forward and loss only (no gradients).
  LossStats Evaluate(const Batch& batch);
  // The logits [batch·seqlen, vocab] of a forward (tests, the quality grid).
  std::vector<float> Logits(const Batch& batch);

  // The attention layer of block i (for cache / state bytes, Describe(), attention maps of the
  // trained weights); i < config().layers.
  Layer& attention(size_t i);

  // Whether AdamW decays a parameter: the 2-D weight matrices (projections, MLP, untied head),
  // not the embedding (tied or not), norm gains or other vectors.
  static bool DecaysWeight(const Param& p);

 private:
  struct Activations;
  void Forward(const Batch& batch, Activations& act, bool keep_tapes);
  LossStats Loss(const Batch& batch, Activations& act, bool want_grad);
  void Backward(const Batch& batch, Activations& act);

  ModelConfig config_;
  Matrix embed_;  // [vocab, hidden]
  Matrix head_;   // [hidden, vocab] when untied
  std::vector<float> embed_grad_, head_grad_;
  struct Block;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<float> final_norm_, final_norm_grad_;
  std::unique_ptr<Activations> act_;  // reused from step to step
};

// Checks a batch against a model's vocabulary and sequence limit (attnkit::Error naming it).
void CheckBatch(const Batch& batch, const ModelConfig& config, const char* fn);

}  // namespace attnkit::train
