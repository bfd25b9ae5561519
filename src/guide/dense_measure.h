// Measurements of the dense engine shared by several guide sections: prefill time and peak
// memory against sequence length, decode time against cached context, fast-vs-reference error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/core/tensor.h"
#include "attnkit/guide/measure.h"
#include "attnkit/masks/mask.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {

struct DenseShape {
  int64_t num_heads_q = 8;
  int64_t num_heads_kv = 8;
  int64_t head_dim = 128;
};

// Bytes of Q, K, V and O for one prefill of seqlen tokens (batch 1, f32).
int64_t DensePrefillBytes(const DenseShape& shape, int64_t seqlen);
// Bytes of the f32 KV cache plus the query/output of one decode at `context` tokens.
int64_t DenseDecodeBytes(const DenseShape& shape, int64_t context);

// Prefill sweep of DenseForward with the given mask over the config's prefill range; memoised
// in ctx under `key` (so sections share it). Each point: median time, peak resident memory of
// allocation + run (inputs included), and tiles computed / skipped in `value` (fraction
// skipped). `mask` may be null (bidirectional).
std::vector<SweepPoint> DensePrefillSweep(Context& ctx, const std::string& key,
                                          const std::string& label, const DenseShape& shape,
                                          const MaskPtr& mask);

// The causal prefill sweep of 8 query heads over 2 KV heads (head_dim 128) that the sections
// comparing a variant with exact attention share (measured once per run).
std::vector<SweepPoint> SharedCausalSweep(Context& ctx);

// Decode sweep: 1 new token over a KV cache of `context` tokens (contiguous when window == 0,
// else a ring buffer of that window), context over the config's decode range. Memoised by key.
std::vector<SweepPoint> DenseDecodeSweep(Context& ctx, const std::string& key,
                                         const std::string& label, const DenseShape& shape,
                                         int64_t window);

// Relative max error of the fast kernel against ref::DenseForward (double accumulation) on one
// random input of seqlen tokens with the given mask.
double DenseErrorVsReference(const DenseShape& shape, int64_t seqlen, const MaskPtr& mask);

// Relative error ‖a − b‖ / ‖b‖ over all elements (Frobenius norms), the metric of every "error
// against exact" figure in the guide.
double RelativeError(const Tensor<float>& a, const Tensor<float>& b);

// Mean over rows (tokens) of the cosine between a and b, both [1, 1, n, d] (one head).
double MeanRowCosine(const Tensor<float>& a, const Tensor<float>& b);

// Planned steps of the two sweeps for a config (for the progress bar).
int64_t PrefillSteps(const SweepConfig& config);
int64_t DecodeSteps(const SweepConfig& config);

// Fills a buffer with reproducible values uniform in [-1, 1) (cheap, for timing inputs).
void FillUniform(float* data, int64_t n, uint64_t seed);

}  // namespace attnkit::guide::detail
