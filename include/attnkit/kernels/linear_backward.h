// Gradients of the linear engine (linear.h): Performer FAVOR+ (through the positive random
// features, with W fixed), elu + 1 and ReLU; bidirectional and causal.
//
// The stabilisers of the forward (each FAVOR+ row's own maximum, the keys' running maximum) cancel
// exactly in the normalised output, so they are constants of the backward. The causal backward is
// chunk-wise like the forward: a forward pass over the chunks that keeps the feature rows and
// the per-row output gradients (dq is finished there, with the intra-chunk part of dk and dv),
// then the chunks in reverse carrying the gradient of the m × d_v state for the inter-chunk
// part of dk and dv. Math: docs/linear.md (section "Backward").
#pragma once

#include <cstdint>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/linear.h"

namespace attnkit {

// q, k, v and options as LinearForward (no LinearState: the backward covers a whole sequence
// from an empty state). dout is the gradient of out [batch, num_heads_q, seqlen_q, head_dim_v];
// dq, dk, dv (q's, k's and v's shapes) are overwritten; dk and dv are summed over the query heads
// that share a kv head. Rows whose normaliser is zero (out = 0) pass no gradient. Bad input
// throws attnkit::Error naming the argument before any output is written.
void LinearBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const float> dout, TensorView<float> dq, TensorView<float> dk,
                    TensorView<float> dv, const LinearOptions& options = {});

// 2 · multiply-adds of LinearBackward, including its recomputation of the forward.
double LinearBackwardFlops(int64_t batch, int64_t num_heads_q, int64_t num_heads_kv, int64_t seqlen,
                           int64_t head_dim_qk, int64_t head_dim_v, const LinearOptions& options);

namespace ref {
// The plain twin: double precision, every (query, key) pair written out (O(T²) time, for tests).
void LinearBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const float> dout, TensorView<float> dq, TensorView<float> dk,
                    TensorView<float> dv, const LinearOptions& options = {});
}  // namespace ref

}  // namespace attnkit
