// Multi-head latent attention (MLA: DeepSeek V2 / V3, Kimi K2) and its latent cache.
//
// Query path:  c_q = RMSNorm(h W_dq)  (rank q_lora_rank; when q_lora_rank == 0, as in
//              DeepSeek-V2-Lite, c_q = h directly), [q_nope | q_rope]_head = c_q W_uq,
//              q_rope ← RoPE(q_rope).
// Key/value:   c_kv = RMSNorm(h W_dkv) (rank kv_lora_rank), k_rope = RoPE(h W_kr) shared by
//              all heads; per head k_nope = c_kv W_uk,h, v = c_kv W_uv,h.
// Score:       (q_nope · k_nope + q_rope · k_rope) · scale, scale = 1/sqrt(nope + rope).
// Cache:       only c_kv and k_rope per token: kv_lora_rank + qk_rope_head_dim floats.
//
// Two paths, same numbers (docs/blocks.md derives them):
//  kNaive     up-projects the cached latent to per-head K [.., nope + rope] and V [.., v] for
//             every step, then runs the dense engine with num_heads_kv == num_heads.
//  kAbsorbed  folds W_uk into the query (q_abs,h = W_uk,h q_nope,h, length kv_lora_rank) and
//             W_uv into the output, so attention is multi-query over the latent cache itself:
//             head_dim_qk = kv_lora_rank + qk_rope_head_dim, head_dim_v = kv_lora_rank.
//
// Training (layer.h's contract; docs/training.md): the naive path is the training path whatever
// `path` says. TrainForward saves x, the q LoRA's pre-norm latent, the rotated queries, the
// pre-norm c_kv, the rotated k_rope, the attention output and its LSE; the backward recomputes the
// per-head K and V from c_kv and runs DenseBackward (never a tokens × tokens matrix).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"

namespace attnkit {

enum class MlaPath { kNaive, kAbsorbed };
const char* MlaPathName(MlaPath path);

struct MlaConfig {
  int64_t hidden = 0;
  int64_t num_heads = 0;
  int64_t q_lora_rank = 0;  // 0 → direct query projection from h (no W_dq, no q norm)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  RopeConfig rope;  // fraction must be 1: the rope part rotates fully
  float norm_eps = 1e-6f;
  float scale = 0.0f;  // 0 → 1 / sqrt(qk_nope_head_dim + qk_rope_head_dim)
  MlaPath path = MlaPath::kAbsorbed;
  int64_t batch = 1;
  int64_t max_tokens = 4096;  // latent cache capacity
  Backend backend = Backend::kAuto;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // cached per token
  void Validate() const;
  std::string Describe() const;
};

struct MlaWeights {
  Matrix w_dq;                 // [hidden, q_lora_rank]; empty when q_lora_rank == 0
  std::vector<float> q_norm;   // [q_lora_rank]; empty when q_lora_rank == 0
  Matrix w_uq;                 // [q_lora_rank (or hidden), num_heads · (nope + rope)],
                               // per head [q_nope | q_rope]
  Matrix w_dkv;                // [hidden, kv_lora_rank]
  std::vector<float> kv_norm;  // [kv_lora_rank]
  Matrix w_kr;                 // [hidden, qk_rope_head_dim]
  Matrix w_uk;                 // [kv_lora_rank, num_heads · qk_nope_head_dim]
  Matrix w_uv;                 // [kv_lora_rank, num_heads · v_head_dim]
  Matrix w_o;                  // [num_heads · v_head_dim, hidden]

  void Check(const MlaConfig& config) const;
  size_t bytes() const;
  static MlaWeights Random(const MlaConfig& config, uint64_t seed);
};

class MlaBlock final : public Layer {
 public:
  MlaBlock(MlaConfig config, MlaWeights weights);

  std::string Kind() const override { return "mla"; }
  std::string Describe() const override { return config_.Describe(); }
  int64_t hidden() const override { return config_.hidden; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override;
  int64_t tokens_seen() const override { return length_; }
  void Reset() override { length_ = 0, undo_length_ = -1; }
  bool UndoForward() noexcept override;
  size_t CacheBytes() const override { return cache_.size() * sizeof(float); }
  size_t WeightBytes() const override { return weights_.bytes(); }

  // Training: any batch and any number of tokens (no cache is used, max_tokens does not apply).
  bool trainable() const override { return true; }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override;
  void TrainBackward(TrainTape& tape, TensorView<const float> dout, TensorView<float> dx) override;
  // Names are MlaWeights' fields; w_dq and q_norm only when q_lora_rank > 0.
  std::vector<Param> Params() override;
  const MlaWeights& weights() const { return weights_; }

  void FillCacheRandom(int64_t tokens, uint64_t seed);  // see GqaBlock::FillCacheRandom
  // Switches between the two paths; the cache is the same for both.
  void set_path(MlaPath path) { config_.path = path; }
  // Allocates (and touches) the naive path's per-head K/V scratch for `tokens` cached tokens up
  // front, so a benchmark's first timed step does not pay for page faults.
  void ReserveScratch(int64_t tokens);
  // Frees the per-step scratch (the naive path's per-head K and V can be gigabytes).
  void ReleaseScratch();

  // Bytes the naive path materialises per step for `tokens` cached tokens (per-head K and V).
  static double NaiveScratchBytes(const MlaConfig& config, int64_t tokens);

  const MlaConfig& config() const { return config_; }
  // The latent cache: [batch, max_tokens, kv_lora_rank + qk_rope_head_dim], row = [c_kv | k_rope].
  const std::vector<float>& latent_cache() const { return cache_; }

 private:
  void AttendNaive(int64_t rows, int64_t tokens, int64_t position);
  void AttendAbsorbed(int64_t rows, int64_t tokens, int64_t position);
  // The naive path's per-head K [rows, h, nope + rope] and V [rows, h, v] from c_kv [rows, r] and
  // the rotated k_rope [rows, rope] of the same rows (training).
  void UpProject(const float* ckv, const float* k_rope, int64_t rows, float* k, float* v) const;
  void EnsureGrads();

  MlaConfig config_;
  MlaWeights weights_;
  int64_t length_ = 0;
  int64_t undo_length_ = -1;  // length_ before the last successful Forward (−1: nothing to undo)
  std::vector<float> cache_;
  MaskPtr causal_;
  std::vector<float> cq_, q_, o_;                       // scratch
  std::vector<float> k_full_, v_full_, q_abs_, o_lat_;  // path scratch
  MlaWeights grads_;                                    // gradients (training), same shapes
  bool has_grads_ = false;
};

// Latent-cache bytes per token: (kv_lora_rank + qk_rope_head_dim) · 4.
int64_t MlaCacheBytesPerToken(const MlaConfig& config);

}  // namespace attnkit
