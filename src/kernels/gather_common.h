// Internal: argument checks of the gather engine, shared by its fast paths and reference twins.
#pragma once

#include <cstdint>

#include "attnkit/kernels/gather.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// The shared problem checks (kv heads shared by query heads, out/lse shapes and overlaps, scale,
// threads), then the indices. Returns the resolved geometry. Throws attnkit::Error.
template <typename KV>
Problem CheckGatherArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                        TensorView<const KV> v, TensorView<const int32_t> indices,
                        TensorView<float> out, TensorView<float> lse, const GatherOptions& o);

// Checks the indexer's operands and options; returns q_start (resolved: unset → bottom-right).
template <typename KI>
int64_t CheckIndexerArgs(const char* fn, TensorView<const float> q_index,
                         TensorView<const float> weights, TensorView<const KI> k_index,
                         const IndexerOptions& o);

}  // namespace attnkit::detail
