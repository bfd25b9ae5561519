// What a model's attention costs at a given context: KV-cache bytes, recurrent state bytes and
// attention FLOPs, per layer and in total, computed from a ModelConfig (models/config.h).
//
// Formulas per layer kind are in docs/models.md. In short, per token and layer, in cache-dtype
// elements: full / sliding / chunked 2 * num_heads_kv * head_dim (sliding capped at the window,
// chunked at the chunk size); MLA and DSA kv_lora_rank + qk_rope_head_dim; DSA also index_head_dim
// indexer keys, reported apart; layers reusing another layer's KV add nothing. Linear / recurrent
// layers hold state_heads * state_dim_k * state_dim_v values plus conv_channels * (conv_kernel - 1)
// convolution values, in the state dtype, whatever the context. All byte counts are exact
// integers; an overflow of 64 bits throws attnkit::Error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/models/config.h"

namespace attnkit::models {

enum class CacheDtype { kF32, kBf16, kF16, kFp8, kInt8 };

// Bytes per element: f32 4, bf16 / f16 2, fp8 / int8 1 (scales of quantised caches not counted).
int64_t DtypeBytes(CacheDtype dtype);
std::string_view DtypeName(CacheDtype dtype);
// "f32" / "fp32" / "float32", "bf16" / "bfloat16", "f16" / "fp16" / "float16", "fp8", "int8".
CacheDtype ParseCacheDtype(std::string_view name);

struct CostQuery {
  int64_t context = 4096;  // L: tokens in the cache (the prompt plus what was generated)
  int64_t batch = 1;       // B: sequences held at once
  CacheDtype cache_dtype = CacheDtype::kBf16;
  CacheDtype state_dtype = CacheDtype::kF32;  // recurrent + conv state, as engines keep it
};

struct LayerCost {
  int index = 0;
  LayerKind kind = LayerKind::kFull;
  int64_t window = 0;                   // window or chunk size; 0 = none
  bool shared = false;                  // reuses another layer's KV (adds no bytes)
  int64_t kv_bytes_per_token = 0;       // while the context is shorter than the window
  int64_t cached_tokens = 0;            // tokens this layer keeps at the query's context
  int64_t kv_bytes = 0;                 // per sequence at the query's context
  int64_t indexer_bytes_per_token = 0;  // DSA indexer keys
  int64_t indexer_bytes = 0;            // per sequence at the query's context
  int64_t state_bytes = 0;              // recurrent state per sequence (state dtype)
  int64_t conv_state_bytes = 0;         // convolution state per sequence (state dtype)
  double decode_flops = 0;   // attention FLOPs for one new token with `context` tokens in cache
  double prefill_flops = 0;  // attention FLOPs for a causal prefill of `context` tokens
};

struct CostReport {
  CostQuery query;
  int64_t kv_bytes_per_token = 0;       // all layers, context shorter than every window
  int64_t kv_bytes_total = 0;           // all layers at the context, times batch
  int64_t indexer_bytes_per_token = 0;  // DSA indexer keys, apart from kv_bytes_per_token
  int64_t indexer_bytes_total = 0;      // at the context, times batch
  int64_t state_bytes = 0;              // recurrent + conv state per sequence
  int64_t conv_state_bytes = 0;         // the convolution part of state_bytes
  int64_t state_bytes_total = 0;        // state_bytes times batch
  int64_t total_bytes = 0;              // kv + indexer + state, at the context, times batch
  double decode_flops = 0;              // per sequence
  double prefill_flops = 0;             // per sequence
  std::vector<LayerCost> layers;
};

// Throws attnkit::Error for context < 1, batch < 1, or an overflow of 64-bit byte counts.
// Each layer's figures come from its kind's row (models/kinds.h).
CostReport Cost(const ModelConfig& config, const CostQuery& query);

// Helpers for the cost formulas of kind rows.
// a * b and a + b; throw attnkit::Error when the result overflows 64 bits.
int64_t CostMul(int64_t a, int64_t b);
int64_t CostAdd(int64_t a, int64_t b);
// Sum over query positions i = 1..L of the keys query i sees, as a double (FLOP counts):
// causally, within a window of w keys, within chunks of c tokens.
double CausalKeySum(int64_t L);
double WindowKeySum(int64_t L, int64_t w);
double ChunkKeySum(int64_t L, int64_t c);
// Softmax attention over a cache of K and V (num_heads_kv x (head_dim_qk + head_dim_v) values a
// token, none when out->shared): sets kv_bytes_per_token, cached_tokens and the FLOPs of one
// decode step over `decode_keys` keys and of a prefill over `prefill_keys` (query, key) pairs.
void SoftmaxAttentionCost(const LayerSpec& layer, const CostQuery& query, int64_t cached_tokens,
                          int64_t decode_keys, double prefill_keys, LayerCost* out);

// The report as JSON (kv_bytes_per_token, kv_bytes_total, indexer_bytes_per_token, state_bytes,
// layers[] ...). With include_layers false, layers[] is left out.
std::string CostReportToJson(const ModelConfig& config, const CostReport& report,
                             bool include_layers = true);

// "131,072" style grouping and "17.18 GB" (10^9) / "16.00 GiB" style sizes for text output.
std::string GroupDigits(int64_t value);
std::string HumanBytes(double bytes);     // decimal units: B, kB, MB, GB, TB
std::string HumanTokens(int64_t tokens);  // 4096 -> "4k", 131072 -> "128k", 1048576 -> "1m"

}  // namespace attnkit::models
