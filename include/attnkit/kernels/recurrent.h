// The recurrent engine: the gated delta rule family with a matrix state per head.
//
// State S (head_dim_qk × head_dim_v) per (batch, value head). Per token t, with k_t L2-normalised,
// q_t L2-normalised and scaled by 1/sqrt(head_dim_qk), decay α_t ∈ (0, 1] and write strength
// β_t ∈ [0, 1]:
//   S ← diag(α_t) S                       (α_t scalar, or a vector over the key dim for KDA)
//   S ← S + β_t k_t (v_t − Sᵀ k_t)ᵀ       (delta rule; plain gated linear attention: S + k_t v_tᵀ)
//   o_t = Sᵀ q_t
// DeltaNet is α ≡ 1; Gated DeltaNet (Yang et al., 2024) a scalar α_t; Kimi Delta Attention a
// per-channel α_t. Two algorithms with the same numbers: token by token (the decode path) and
// chunk-wise for prefill (the WY / UT representation: inside a chunk the updates become
// triangular solves and matrix products). Math: docs/linear.md.
//
// Also here: the pieces around the kernel in Qwen3-Next / Kimi Linear layers — the gates as the
// models compute them, the short causal depthwise convolution with its decode state, and the
// gated RMSNorm on the output.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "attnkit/core/backend.h"
#include "attnkit/core/tensor.h"

namespace attnkit {

enum class DeltaAlgorithm {
  kAuto,       // chunked for prefill, token by token for short inputs (decode)
  kChunked,    // chunks of options.chunk_size with the WY / UT representation
  kRecurrent,  // token by token
};

struct GatedDeltaOptions {
  bool delta_rule = true;       // false: gated linear attention S ← diag(α) S + k vᵀ (no beta)
  bool l2_normalize_qk = true;  // L2-normalise q and k rows inside the kernel (as the models do)
  std::optional<float> scale = std::nullopt;  // on q after normalisation; unset → 1/sqrt(dk)
  int64_t chunk_size = 64;                    // >= 1
  DeltaAlgorithm algorithm = DeltaAlgorithm::kAuto;
  int num_threads = 0;  // 0 → GetNumThreads()
  Backend backend = Backend::kAuto;
};

// q         [batch, num_heads_qk, seqlen, head_dim_qk]
// k         [batch, num_heads_qk, seqlen, head_dim_qk]
// v         [batch, num_heads_v,  seqlen, head_dim_v]   (num_heads_v % num_heads_qk == 0;
//                                                       value head h reads q/k head
//                                                       h / (num_heads_v / num_heads_qk))
// log_alpha [batch, num_heads_v, seqlen, 1] (scalar decay) or [.., head_dim_qk] (per channel);
//           entries must be finite and <= 0. Empty view → α ≡ 1 (DeltaNet).
// beta      [batch, num_heads_v, seqlen, 1], entries in [0, 1]; required with the delta rule,
//           must be empty without it.
// out       [batch, num_heads_v, seqlen, head_dim_v]
// state     [batch, num_heads_v, head_dim_qk, head_dim_v] optional, in/out: read as the state
//           before token 0 and overwritten with the state after the last token, so prefill of T
//           tokens then decode of M equals one pass over T + M. Empty → start from zero.
void GatedDeltaForward(TensorView<const float> q, TensorView<const float> k,
                       TensorView<const float> v, TensorView<const float> log_alpha,
                       TensorView<const float> beta, TensorView<float> out,
                       TensorView<float> state = {}, const GatedDeltaOptions& options = {});

// 2 · multiply-adds of the chosen algorithm (for GFLOP/s figures).
double GatedDeltaFlops(int64_t batch, int64_t num_heads_v, int64_t seqlen, int64_t head_dim_qk,
                       int64_t head_dim_v, bool per_channel_decay,
                       const GatedDeltaOptions& options);

// Gates as Gated DeltaNet / KDA layers compute them from their projections:
//   log α = −exp(a_log[h]) · softplus(a + dt_bias[h, c])      (α = exp(log α) ∈ (0, 1])
// a [batch, num_heads_v, seqlen, width] with width 1 (scalar) or head_dim_qk (per channel);
// a_log [num_heads_v]; dt_bias [num_heads_v * width] (row h, channel c at h * width + c);
// log_alpha has a's shape.
void ComputeDecayGate(TensorView<const float> a, std::span<const float> a_log,
                      std::span<const float> dt_bias, TensorView<float> log_alpha);
// β = sigmoid(b); b and beta [batch, num_heads_v, seqlen, 1].
void ComputeWriteGate(TensorView<const float> b, TensorView<float> beta);

// Short causal depthwise convolution over tokens with SiLU, per channel:
//   out[t, c] = SiLU(Σ_{i<kernel} weight[c, i] · x[t − kernel + 1 + i, c])
// x, out [batch, 1, seqlen, channels]; weight [channels × kernel] row-major.
// conv_state [batch, 1, kernel − 1, channels] optional, in/out: the inputs before token 0
// (zeros for a fresh sequence), overwritten with the last kernel − 1 inputs, so decode continues.
void ShortConvForward(TensorView<const float> x, std::span<const float> weight, int64_t kernel,
                      TensorView<float> out, TensorView<float> conv_state = {});

// out = RMSNorm(o) ⊙ weight ⊙ SiLU(gate), per row over head_dim_v (Qwen3-Next's output norm).
// o, gate, out [batch, heads, seqlen, head_dim_v]; weight [head_dim_v].
void GatedRmsNorm(TensorView<const float> o, TensorView<const float> gate,
                  std::span<const float> weight, float eps, TensorView<float> out);

namespace ref {
// The plain twin: the token-by-token recurrence in double precision, same signature.
void GatedDeltaForward(TensorView<const float> q, TensorView<const float> k,
                       TensorView<const float> v, TensorView<const float> log_alpha,
                       TensorView<const float> beta, TensorView<float> out,
                       TensorView<float> state = {}, const GatedDeltaOptions& options = {});
}  // namespace ref

}  // namespace attnkit
