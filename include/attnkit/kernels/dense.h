// The dense engine: exact softmax attention under a mask, flash style.
//
//   O = softmax(scale · Q Kᵀ (soft-capped) + bias, masked) V
//
// computed tile by tile with an online softmax; no seqlen_q × seqlen_kv buffer ever exists.
// Hq query heads share Hkv key/value heads (Hq % Hkv == 0): MHA (Hq == Hkv), GQA, MQA (Hkv == 1).
// head_dim_qk may differ from head_dim_v (MLA's absorbed form uses 576 / 512).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "attnkit/core/backend.h"
#include "attnkit/core/tensor.h"
#include "attnkit/masks/mask.h"

namespace attnkit {

// Counters the kernel fills when DenseOptions::stats is set. A tile is one
// (query block, key block) pair of one (batch, kv head); all query heads of a group share it.
struct DenseStats {
  int64_t tiles_total = 0;    // tiles in the seqlen_q × seqlen_kv rectangle
  int64_t tiles_skipped = 0;  // classified empty, never touched
  int64_t tiles_full = 0;     // computed without per-element mask checks
  int64_t tiles_partial = 0;  // computed with per-element mask checks
  int64_t block_q = 0, block_kv = 0;
};

// The score modifiers (softcap, alibi_slopes, sinks) are defined once, in
// src/kernels/score_mods.h, for the fast kernel and the reference alike; docs/dense.md.
struct DenseOptions {
  // Logit scale (finite); unset → 1 / sqrt(head_dim_qk).
  std::optional<float> scale = std::nullopt;
  // nullptr → every key visible (bidirectional).
  const Mask* mask = nullptr;
  // > 0: s ← softcap · tanh(s / softcap) (Gemma 2), after scale; 0 = off.
  float softcap = 0.0f;
  // Empty, or [num_heads_q]: adds −slope · |q_pos − k_pos| (ALiBi), after the soft-cap.
  std::span<const float> alibi_slopes = {};
  // Empty, or [num_heads_q]: a logit per head (finite or −inf) that joins the softmax
  // denominator and contributes no value (gpt-oss).
  std::span<const float> sinks = {};
  // Absolute position of key row 0.
  int64_t k_start = 0;
  // Absolute position of query row 0; unset → bottom-right: k_start + seqlen_kv − seqlen_q.
  std::optional<int64_t> q_start = std::nullopt;
  int num_threads = 0;  // 0 → GetNumThreads()
  Backend backend = Backend::kAuto;
  DenseStats* stats = nullptr;  // optional counters (filled by the fast kernel)
};

// KV, the storage type of k and v: float or bf16, const or not (the same for k and v); the library
// instantiates all four.
// q   [batch, num_heads_q,  seqlen_q,  head_dim_qk]
// k   [batch, num_heads_kv, seqlen_kv, head_dim_qk]   f32 or bf16
// v   [batch, num_heads_kv, seqlen_kv, head_dim_v]    same dtype as k
// out [batch, num_heads_q,  seqlen_q,  head_dim_v]    must not overlap the inputs
// lse [batch, num_heads_q,  seqlen_q,  1] optional: natural-log sum of exp of the final logits
//     (sink included). A row whose keys are all masked gets out = 0 and lse = −inf (or the sink).
// Throws attnkit::Error on bad input.
template <typename KV>
void DenseForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                  TensorView<float> out, const DenseOptions& options = {},
                  TensorView<float> lse = {});

// Merges results computed over disjoint key sets into the exact result over their union:
// out = Σ_i exp(lse_i − lse) out_i with lse = log Σ_i exp(lse_i). A sink must have been included
// in exactly one part. outs[i] [b, hq, sq, dv], lses[i] [b, hq, sq, 1]; lse_out optional.
void MergeAttention(std::span<const TensorView<const float>> outs,
                    std::span<const TensorView<const float>> lses, TensorView<float> out,
                    TensorView<float> lse_out = {});

// Number of multiply-adds ×2 the kernel performs for the unmasked pairs:
// 2 · pairs · num_heads_q · (head_dim_qk + head_dim_v) summed over the batch.
double DenseFlops(int64_t batch, int64_t num_heads_q, int64_t seqlen_q, int64_t seqlen_kv,
                  int64_t head_dim_qk, int64_t head_dim_v, const Mask* mask);

namespace ref {
// The plain twin: obvious loops, double accumulation, same signature and semantics.
template <typename KV>
void DenseForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                  TensorView<float> out, const DenseOptions& options = {},
                  TensorView<float> lse = {});
}  // namespace ref

}  // namespace attnkit
