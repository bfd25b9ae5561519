// The gather engine's backward: gradients of DeepSeek Sparse Attention, and the lightning
// indexer's training signal as DeepSeek V3.2 defines it. Math: docs/sparse.md, "Backward".
//
// Attention over each query's selected keys S(t) (GatherForward):
//   P_h(t, s) = exp(scale · q_h(t) · k(s) − lse_h(t)),   D_h(t) = dO_h(t) · O_h(t)
//   dS_h(t, s) = P_h(t, s) (dO_h(t) · v(s) − D_h(t)) · scale
//   dq_h(t) = Σ_{s ∈ S(t)} dS_h(t, s) k(s),   dk(s) = Σ_{t, h: s ∈ S(t)} dS_h(t, s) q_h(t),
//   dv(s) = Σ_{t, h: s ∈ S(t)} P_h(t, s) dO_h(t)           (h over the kv head's group)
// computed without float atomics and independently of the thread count: dq per query, dk/dv per
// key from the inverted selection (each key's (query, slot) pairs in ascending query order).
//
// Indexer training (DeepSeek V3.2, sparse stage): the indexer is trained, with the main model's
// graph detached, to match the main attention's distribution over the selected keys,
//   p_t(s) = Σ_h P_h(t, s) / Σ_{s' ∈ S(t)} Σ_h P_h(t, s')       (all query heads summed)
//   L_I    = Σ_t KL( p_t ‖ softmax_{s ∈ S(t)} I(t, s) ),
//   I(t, s) = Σ_j w(t, j) · ReLU(q_I(t, j) · k_I(s))            (the lightning indexer)
// with ∂L_I/∂I(t, s) = softmax(I)_t(s) · Σ_s p_t(s) − p_t(s), then through the ReLU to q_I, k_I
// and w. IndexerTarget computes p; IndexerKlBackward the loss and its gradients. The training
// path computes I in f32 from the given inputs (IndexerOptions::reduced_precision is ignored: it
// is an inference shortcut).
#pragma once

#include <cstdint>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/gather.h"

namespace attnkit {

// Gradient outputs of GatherBackward; each is overwritten.
struct GatherGrads {
  TensorView<float> dq;  // [batch, num_heads_q,  seqlen_q,  head_dim_qk]
  TensorView<float> dk;  // [batch, num_heads_kv, seqlen_kv, head_dim_qk]
  TensorView<float> dv;  // [batch, num_heads_kv, seqlen_kv, head_dim_v]
};

// q, k, v, indices, options: as given to GatherForward; out and lse its results (lse required);
// dout ∂loss/∂out. v may alias k's memory (MLA's absorbed form); then dk and dv are separate
// tensors and the caller adds dv into dk's first head_dim_v columns. Throws attnkit::Error naming
// the argument; a call that throws during its checks writes nothing.
void GatherBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options = {});
void GatherBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options = {});

// target [batch, 1, seqlen_q, top_k]: p_t(s) for each slot of indices [batch, 1, seqlen_q,
// top_k] (one list per query, as DsaSelect writes it), 0 for unused slots and rows with no key.
void IndexerTarget(TensorView<const float> q, TensorView<const float> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options = {});
void IndexerTarget(TensorView<const float> q, TensorView<const bf16> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options = {});

// Gradient outputs of IndexerKlBackward; each is overwritten.
struct IndexerGrads {
  TensorView<float> dq_index;  // [batch, index_heads, seqlen_q, index_dim]
  TensorView<float> dweights;  // [batch, 1, seqlen_q, index_heads]
  TensorView<float> dk_index;  // [batch, 1, seqlen_kv, index_dim]
};

// Returns L_I summed over the batch and the queries, and writes its gradients. q_index, weights,
// k_index as for LightningIndexer (k_index f32); indices and target as above (target rows sum to
// 1, or 0 for a row with no key).
double IndexerKlBackward(TensorView<const float> q_index, TensorView<const float> weights,
                         TensorView<const float> k_index, TensorView<const int32_t> indices,
                         TensorView<const float> target, const IndexerGrads& grads,
                         const IndexerOptions& options = {});

namespace ref {
// Plain twins: one query row at a time, double accumulation.
void GatherBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options = {});
void GatherBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options = {});
void IndexerTarget(TensorView<const float> q, TensorView<const float> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options = {});
void IndexerTarget(TensorView<const float> q, TensorView<const bf16> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options = {});
double IndexerKlBackward(TensorView<const float> q_index, TensorView<const float> weights,
                         TensorView<const float> k_index, TensorView<const int32_t> indices,
                         TensorView<const float> target, const IndexerGrads& grads,
                         const IndexerOptions& options = {});
}  // namespace ref

}  // namespace attnkit
