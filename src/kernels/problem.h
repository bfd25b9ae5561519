// Internal: the one description of an attention problem that every kernel family shares (in the
// spirit of FlashAttention's params struct), and its one checker.
//
// Dense, gather, linear and recurrent kernels all take q, k, v and out in the canonical
// [batch, heads, tokens, dim] layout, group heads the same way and resolve the same scale and
// positions. CheckProblem checks those operands once and returns the resolved geometry; each
// family then checks only what is its own (a mask's score modifiers, gather indices, feature
// maps, gates, states).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>

#include "attnkit/core/tensor.h"

namespace attnkit::detail {

// How heads are shared between the operands.
enum class HeadSharing {
  // Query heads share key/value heads (MHA, GQA, MQA): out has q's heads, k and v have
  // num_heads_kv heads that divide num_heads_q; query head h reads kv head h / group.
  kKeyValue,
  // Value heads share query/key heads (Gated DeltaNet's grouped value heads): q and k have the
  // same shape, out has v's heads, and value head h reads q/k head h / group.
  kQueryKey,
};

// What a family asks of the common operands beyond the shared rules.
struct ProblemRules {
  HeadSharing sharing = HeadSharing::kKeyValue;
  bool equal_seqlen = false;  // seqlen_q == seqlen_kv (causal linear, recurrent)
  // The caller's options that every family resolves the same way.
  std::optional<float> scale;      // unset → default_scale
  float default_scale = 0.0f;      // 0 → 1 / sqrt(head_dim_qk)
  int num_threads = 0;             // >= 0
  int64_t k_start = 0;             // absolute position of key row 0
  std::optional<int64_t> q_start;  // unset → bottom-right: k_start + seqlen_kv − seqlen_q
};

// The resolved geometry of a call.
struct Problem {
  int64_t batch = 0;
  int64_t heads_q = 0;   // q's heads
  int64_t heads_kv = 0;  // k's heads (v's heads for kKeyValue)
  int64_t heads = 0;     // out's heads: heads_q (kKeyValue) or v's heads (kQueryKey)
  int64_t group = 1;     // out heads per shared head: out head h reads shared head h / group
  int64_t seqlen_q = 0, seqlen_kv = 0;
  int64_t dk = 0, dv = 0;  // head_dim_qk, head_dim_v
  float scale = 1.0f;
  int64_t q_start = 0, k_start = 0;  // absolute positions of row 0
};

// Checks q, k, v, out (and lse, when given: [batch, heads, seqlen_q, 1]) and the rules' options;
// out and lse may not overlap the inputs or each other. Throws attnkit::Error naming the
// argument, prefixed with fn.
template <typename KV>
Problem CheckProblem(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                     TensorView<const KV> v, TensorView<const float> out,
                     TensorView<const float> lse, const ProblemRules& rules);

// A per-head or per-channel input: empty, or exactly n values (when allow_empty), each finite
// (or −inf where allow_neg_inf). Names the argument and the expected length on failure.
struct PerHeadRules {
  bool allow_empty = true;
  bool allow_neg_inf = false;
};
void CheckPerHead(const char* fn, const char* name, std::span<const float> values, int64_t n,
                  const char* n_name, PerHeadRules rules = {});

// True when the memory of a and b overlaps.
template <typename A, typename B>
bool Overlaps(const TensorView<A>& a, const TensorView<B>& b) {
  if (a.empty() || b.empty()) return false;
  auto extent = [](const auto& t) {
    const auto* base = reinterpret_cast<const char*>(t.data);
    int64_t last = 0;
    for (int i = 0; i < 4; ++i) last += (t.shape[i] - 1) * t.stride[i];
    return std::pair{base, base + (last + 1) * static_cast<int64_t>(sizeof(*t.data))};
  };
  const auto [a0, a1] = extent(a);
  const auto [b0, b1] = extent(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace attnkit::detail
