// Per-layer description of a real model's attention stack, and the Hugging Face config.json reader.
//
// A ModelConfig is a list of LayerSpec, one per decoder layer, each saying which attention
// computation the layer runs (full, sliding window, chunked-local, MLA, DSA, or a linear /
// recurrent kind) with its head counts and dims. The same description feeds the cost model
// (models/cost.h), the model cards (models/card.h) and, later, the attention blocks.
//
// ReadHfConfig understands the config.json files of the families in use today (see
// docs/models.md for the list and the defaults applied). Family defaults used because a field is
// absent are listed in ModelConfig::assumptions; guesses made for an unknown model_type in
// ModelConfig::warnings. A config that cannot be understood throws attnkit::Error naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit::models {

// What one decoder layer does to mix tokens. Each kind is a row of the layer-kind table
// (models/kinds.h: name, cost formula, colour, block, ...); the enumerators are the built-in
// rows, and RegisterLayerKind adds kinds with ids from 100 up.
enum class LayerKind : int {
  kFull,           // "full": softmax attention over the whole causal prefix
  kSliding,        // "sliding": softmax attention over the last `window` tokens
  kChunked,        // "chunked": softmax attention inside fixed chunks of `window` tokens (Llama 4)
  kMla,            // "mla": multi-head latent attention (DeepSeek V2/V3, Kimi K2)
  kDsa,            // "dsa": MLA + lightning indexer choosing top-k keys (DeepSeek V3.2, GLM-5)
  kGatedDeltaNet,  // "gated_deltanet": gated delta rule recurrence (Qwen3-Next, Qwen3.5)
  kKda,            // "kda": Kimi Delta Attention, per-channel decay (Kimi Linear)
  kMamba2,         // "mamba2": Mamba-2 selective state space layer (Nemotron-H, Granite 4.0-H)
  kLightning,      // "lightning": decayed linear attention (MiniMax-Text-01 / M1)
  kMlp,            // "mlp": no token mixing (Nemotron-H '-' and 'E' blocks)
};

// The kind's name from its row ("full", "sliding", ..., or a registered kind's name).
std::string_view LayerKindName(LayerKind kind);
// Inverse of LayerKindName over every kind in the table; throws attnkit::Error for an unknown
// name, listing the known ones.
LayerKind ParseLayerKind(std::string_view name);
// Layers whose cache grows with the context (full, sliding, chunked, MLA, DSA, ...).
bool HasKvCache(LayerKind kind);
// Layers holding a fixed-size recurrent state (gated_deltanet, kda, mamba2, lightning, ...).
bool IsRecurrent(LayerKind kind);

// One decoder layer. Fields that do not apply to the layer's kind stay 0.
struct LayerSpec {
  LayerKind kind = LayerKind::kFull;

  // Softmax attention (full / sliding / chunked) and the decompressed view of MLA / DSA.
  int64_t num_heads_q = 0;
  int64_t num_heads_kv = 0;  // MLA / DSA: heads after the up-projection (= num_heads_q)
  int64_t head_dim_qk = 0;   // MLA / DSA: qk_nope_head_dim + qk_rope_head_dim
  int64_t head_dim_v = 0;
  int64_t window = 0;        // sliding: keys a query sees (itself included); chunked: chunk size
  bool rope = true;          // false: a layer without rotary position encoding (NoPE)
  double rope_fraction = 1;  // share of head_dim_qk that is rotated (partial RoPE)
  bool sinks = false;        // learned per-head sink logits (gpt-oss)
  bool output_gate = false;  // sigmoid output gate (Qwen3-Next gated attention)
  double softcap = 0;        // attention logit soft-cap (Gemma 2); 0 = none
  double query_pre_attn_scalar = 0;  // scores scaled by 1/sqrt(this) (Gemma); 0 = head_dim_qk
  int kv_source = -1;  // >= 0: reuses that earlier layer's KV cache (Gemma 3n); counted once

  // MLA / DSA (latent cache = kv_lora_rank + qk_rope_head_dim values per token).
  int64_t q_lora_rank = 0;  // 0: queries are not compressed
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;

  // DSA lightning indexer (keys of index_head_dim values per token, cached apart).
  int64_t index_num_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;

  // Linear / recurrent layers: a state of state_heads * state_dim_k * state_dim_v values, plus a
  // short causal convolution over conv_channels that keeps conv_kernel - 1 past inputs.
  int64_t state_heads = 0;
  int64_t state_dim_k = 0;
  int64_t state_dim_v = 0;
  int64_t conv_channels = 0;
  int64_t conv_kernel = 0;

  bool operator==(const LayerSpec&) const = default;
};

struct ModelConfig {
  std::string name;        // catalogue name or file stem
  std::string model_type;  // model_type of the text model as written in config.json
  std::string source;      // where the description came from (path or URL)
  int64_t hidden_size = 0;
  int64_t max_position_embeddings = 0;  // 0 when the config does not say
  double final_logit_softcap = 0;
  std::vector<LayerSpec> layers;
  int64_t mtp_layers = 0;  // multi-token-prediction layers published but left out of `layers`
  std::vector<std::string> assumptions;  // family defaults applied because a field was absent
  std::vector<std::string> warnings;     // guesses (unknown model_type, odd fields)
  // Fields that change attention but that the reader does not model (e.g. "compress_ratios"),
  // read past only with ReadOptions::allow_unknown: every figure derived from this description
  // is then an estimate that ignores them. Empty for a description the reader fully understood.
  std::vector<std::string> unmodelled;

  // True when `unmodelled` is not empty: figures from this description are estimates.
  bool IsEstimate() const { return !unmodelled.empty(); }

  // Number of layers of a kind.
  int64_t Count(LayerKind kind) const;
  // One character per layer: F full, S sliding, C chunked, M mla, D dsa, G gated_deltanet,
  // K kda, B mamba2 (Mamba), L lightning, '-' mlp; lower case for NoPE layers, '=' for a layer
  // that reuses another layer's KV.
  std::string Pattern() const;
  // Short human summary, e.g. "40 sliding(1024) + 8 full" or "61 mla".
  std::string Summary() const;
};

struct ReadOptions {
  // Read past fields that change attention but that the reader does not model (DeepSeek V4's
  // compress_ratios, kv_source_layers, indexer fields outside the DSA families, unknown
  // layer_types entries, unknown RoPE scaling types, state-space fields of unknown families):
  // they are listed in ModelConfig::unmodelled instead of refused, and unknown layer_types
  // entries are read as layers without attention. Off: such a config throws, naming the fields.
  bool allow_unknown = false;
};

// Reads a Hugging Face config.json. Throws attnkit::Error: for a file that cannot be read, for
// malformed JSON (with the parser's byte position and message), for text holding a NUL byte,
// for a config that cannot be understood (naming the field), and, unless
// options.allow_unknown, for fields that change attention in a way the reader does not model
// (naming them). The non-standard tokens Infinity / -Infinity / NaN outside strings are accepted
// (read as +-1e308 / 0) and reported in `assumptions`.
ModelConfig ReadHfConfig(const std::string& path, const ReadOptions& options = {});
// The same from text; `source` names it in messages and in ModelConfig::source.
ModelConfig ReadHfConfigText(std::string_view json_text, const std::string& source = "<text>",
                             const ReadOptions& options = {});

// The description as JSON (one object: name, model_type, layers[] with every non-zero field).
std::string ModelConfigToJson(const ModelConfig& config, int indent = -1);

}  // namespace attnkit::models
