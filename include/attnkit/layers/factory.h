// Layer kinds by name, for the stack runner (`attnkit stack`), the guide and the bindings:
// MakeLayer("gqa", shape, seed) builds a block with seeded random weights.
//
// Kinds: mha, gqa, mqa, swa (GQA with a causal sliding window), sinks (gpt-oss: window + sinks),
// gated (Qwen3-Next full attention: zero-centred QK-norm, partial rotary 0.25, output gate),
// qknorm (Qwen3), mla (absorbed path), mla-naive, gated_deltanet, kda and deltanet
// (layers/gated_deltanet.h: value heads = num_heads, q/k heads = num_heads_kv, fixed-size
// recurrent state; deltanet without the decay gate), performer (FAVOR+, m = d ln d random
// features drawn from the seed), linear_elu and linear_relu (layers/linear_attention.h:
// num_heads heads of head_dim for q, k and v, fixed-size state), and the static sparse patterns
// strided, fixed, bigbird, longformer and chunked (GQA blocks with GqaConfig::pattern built for
// max_tokens positions with seqlen-scaled defaults; chunked's chunk = window), and dsa
// (layers/dsa.h: DeepSeek Sparse Attention on GQA heads, 4 indexer heads of head_dim, top_k =
// window).
// Trainable kinds: docs/training.md.
// Other layer families add their kinds in src/layers/factory.cc (one entry in the table there,
// building from the same LayerShape), or at run time with RegisterLayerFactory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/layers/layer.h"

namespace attnkit {

// One shape shared by every layer of a stack; each kind takes the fields it needs.
struct LayerShape {
  int64_t hidden = 1024;
  int64_t num_heads = 16;    // query heads (all kinds)
  int64_t num_heads_kv = 4;  // gqa / swa / sinks / gated / qknorm
  int64_t head_dim = 64;
  int64_t window = 128;        // swa / sinks
  int64_t q_lora_rank = 384;   // mla (0 = direct query projection)
  int64_t kv_lora_rank = 256;  // mla
  int64_t rope_head_dim = 32;  // mla: qk_rope_head_dim (qk_nope = v = head_dim)
  float rope_theta = 10000.0f;
  int64_t batch = 1;
  int64_t max_tokens = 4096;  // cache capacity of full-attention layers
};

std::unique_ptr<Layer> MakeLayer(const std::string& kind, const LayerShape& shape, uint64_t seed);
// Every kind MakeLayer accepts, sorted.
std::vector<std::string> LayerKinds();

using LayerFactory = std::function<std::unique_ptr<Layer>(const LayerShape&, uint64_t seed)>;
// Adds a block kind for MakeLayer, ParseLayerList, `attnkit stack` and the bindings. Throws
// attnkit::Error for an empty name, a name that is taken or an empty factory. Thread-safe.
void RegisterLayerFactory(const std::string& kind, LayerFactory factory);
// "3*swa,gqa,mla" → {swa, swa, swa, gqa, mla}; throws attnkit::Error on an unknown kind.
std::vector<std::string> ParseLayerList(const std::string& spec);
// The same syntax with `known` deciding which kinds exist (src/layers/layer_list.cc: no layer
// code, so the libFuzzer target fuzz/cli_args_fuzz.cc can build it alone).
std::vector<std::string> ParseLayerList(const std::string& spec,
                                        const std::function<bool(const std::string&)>& known);

}  // namespace attnkit
