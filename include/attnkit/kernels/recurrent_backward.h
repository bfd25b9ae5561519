// Gradients of the recurrent engine (recurrent.h): the gated delta rule family (DeltaNet, Gated
// DeltaNet, KDA, gated linear attention) and the layer pieces around it (gates, short
// convolution, gated RMSNorm).
//
// GatedDeltaBackward recomputes the forward from the inputs: a first pass over the chunks keeps
// only the state at each chunk start (and the chunk-local products it needs again), a second
// pass runs the chunks in reverse with the WY / UT representation. Memory per (batch, value
// head) is O(T·(d_v + C) + (T / C)·d_k·d_v): no state is stored per token. Math: docs/linear.md
// (section "Backward").
#pragma once

#include <cstdint>
#include <span>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/recurrent.h"

namespace attnkit {

// Where GatedDeltaBackward writes the gradients (every view is overwritten, never accumulated).
struct GatedDeltaGrads {
  TensorView<float> dq;          // q's shape (summed over the value heads that share a q/k head)
  TensorView<float> dk;          // k's shape (likewise)
  TensorView<float> dv;          // v's shape
  TensorView<float> dlog_alpha;  // log_alpha's shape; required iff log_alpha is given
  TensorView<float> dbeta;       // beta's shape; required iff options.delta_rule
  TensorView<float> dstate;      // [batch, num_heads_v, head_dim_qk, head_dim_v], optional: the
                                 // gradient of the initial state (zero when it was empty)
};

// The inputs are those of GatedDeltaForward (initial_state empty → zeros). dout is the gradient
// of out [batch, num_heads_v, seqlen, head_dim_v]; dfinal_state (optional, the state's shape) is
// the gradient of the final state that the forward wrote to `state`. The L2 normalisation of q
// and k and the scale are differentiated as the forward applies them. Always chunk-wise (chunks
// of options.chunk_size; options.algorithm is ignored). Bad input throws attnkit::Error naming
// the argument before any output is written.
void GatedDeltaBackward(TensorView<const float> q, TensorView<const float> k,
                        TensorView<const float> v, TensorView<const float> log_alpha,
                        TensorView<const float> beta, TensorView<const float> initial_state,
                        TensorView<const float> dout, TensorView<const float> dfinal_state,
                        const GatedDeltaGrads& grads, const GatedDeltaOptions& options = {});

// 2 · multiply-adds of GatedDeltaBackward, including its recomputation of the forward.
double GatedDeltaBackwardFlops(int64_t batch, int64_t num_heads_v, int64_t seqlen,
                               int64_t head_dim_qk, int64_t head_dim_v,
                               const GatedDeltaOptions& options);

// Gradients of ComputeDecayGate (log α = −exp(a_log[h]) · softplus(a + dt_bias[h, c])):
// da (a's shape), da_log [num_heads_v] and ddt_bias [num_heads_v · width] (both sums over
// batch and tokens; overwritten).
void ComputeDecayGateBackward(TensorView<const float> a, std::span<const float> a_log,
                              std::span<const float> dt_bias, TensorView<const float> dlog_alpha,
                              TensorView<float> da, std::span<float> da_log,
                              std::span<float> ddt_bias);

// Gradient of ComputeWriteGate (β = sigmoid(b)): db = dβ · β (1 − β).
void ComputeWriteGateBackward(TensorView<const float> b, TensorView<const float> dbeta,
                              TensorView<float> db);

// Gradients of ShortConvForward given dout: dx (x's shape), dweight [channels × kernel]
// (overwritten) and, if conv_state (the inputs before token 0 that the forward read) is given,
// dconv_state (its shape; optional). The final conv_state the forward wrote has no gradient here.
void ShortConvBackward(TensorView<const float> x, std::span<const float> weight, int64_t kernel,
                       TensorView<const float> conv_state, TensorView<const float> dout,
                       TensorView<float> dx, std::span<float> dweight,
                       TensorView<float> dconv_state = {});

// Gradients of GatedRmsNorm given dout: do and dgate (o's shape), dweight [head_dim_v] (summed
// over rows; overwritten).
void GatedRmsNormBackward(TensorView<const float> o, TensorView<const float> gate,
                          std::span<const float> weight, float eps, TensorView<const float> dout,
                          TensorView<float> d_o, TensorView<float> dgate, std::span<float> dweight);

namespace ref {
// The plain twin: reverse mode through the token-by-token recurrence in double precision, with
// every state kept (O(T·d_k·d_v) memory: for tests). Same signature.
void GatedDeltaBackward(TensorView<const float> q, TensorView<const float> k,
                        TensorView<const float> v, TensorView<const float> log_alpha,
                        TensorView<const float> beta, TensorView<const float> initial_state,
                        TensorView<const float> dout, TensorView<const float> dfinal_state,
                        const GatedDeltaGrads& grads, const GatedDeltaOptions& options = {});
}  // namespace ref

}  // namespace attnkit
