// The dense engine's backward pass: gradients of exact softmax attention, flash style.
//
// Given the forward's inputs (q, k, v, DenseOptions), its saved output O and log-sum-exp, and the
// gradient dO of a loss with respect to O, computes dQ, dK, dV (and the gradient of each learned
// sink logit) without ever holding a seqlen_q × seqlen_kv matrix: every probability tile is
// recomputed from the saved LSE (FlashAttention-2's backward). Math: docs/dense.md, "Backward".
//
//   D_i   = Σ_d dO_id · O_id
//   P_ij  = exp(s_ij − lse_i)                        (s: the forward's final logit, masked → 0)
//   dV_j  = Σ_i P_ij dO_i                            (summed over the query heads of a group)
//   dS_ij = P_ij (dO_i · v_j − D_i) · ∂s_ij/∂(q_i·k_j)   (scale, and soft-cap's 1 − tanh²)
//   dQ_i  = Σ_j dS_ij k_j,   dK_j = Σ_i dS_ij q_i
//   dsink_h = −Σ_{batch, i} exp(sink_h − lse_i) · D_i
//
// Everything the forward supports is supported: every Mask with the same tile skipping, GQA/MQA,
// head_dim_qk != head_dim_v, scale, soft-cap, ALiBi (slopes are constants: no gradient), sinks,
// bf16 K/V (gradients are f32), strided (bshd) views, k_start / q_start. Results do not depend on
// the thread count (bit for bit): dK/dV are computed per key block over its query blocks in
// order, dQ per query block over its key blocks in order, in two passes; no float atomics.
#pragma once

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"

namespace attnkit {

// Gradient outputs of DenseBackward; each is overwritten (not accumulated into).
struct DenseGrads {
  TensorView<float> dq;     // [batch, num_heads_q,  seqlen_q,  head_dim_qk]
  TensorView<float> dk;     // [batch, num_heads_kv, seqlen_kv, head_dim_qk]
  TensorView<float> dv;     // [batch, num_heads_kv, seqlen_kv, head_dim_v]
  float* dsinks = nullptr;  // [num_heads_q], optional; only with DenseOptions::sinks
};

// q, k, v, options: exactly as given to DenseForward.
// out  [batch, num_heads_q, seqlen_q, head_dim_v]  the forward's output O
// lse  [batch, num_heads_q, seqlen_q, 1]           the forward's log-sum-exp (finite or −inf)
// dout [batch, num_heads_q, seqlen_q, head_dim_v]  ∂loss/∂O
// The gradients must not overlap each other or any input. Throws attnkit::Error naming the
// argument on bad input; a call that throws during its checks writes nothing.
void DenseBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options = {});
void DenseBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options = {});

// FLOPs of a backward call by FlashAttention's convention: 2.5 × DenseFlops of the forward
// (the kernel itself does 3.5×: it recomputes S and dP in both of its passes).
double DenseBackwardFlops(int64_t batch, int64_t num_heads_q, int64_t seqlen_q, int64_t seqlen_kv,
                          int64_t head_dim_qk, int64_t head_dim_v, const Mask* mask);

namespace ref {
// The plain twin: one query row at a time, double accumulation (dK, dV in double buffers of the
// size of K and V), never a seqlen_q × seqlen_kv matrix.
void DenseBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options = {});
void DenseBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                   TensorView<const float> out, TensorView<const float> lse,
                   TensorView<const float> dout, const DenseGrads& grads,
                   const DenseOptions& options = {});
}  // namespace ref

}  // namespace attnkit
