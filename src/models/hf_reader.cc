// Reader for Hugging Face config.json files: turns the fields of each family into a per-layer
// ModelConfig, applying (and reporting) the family's defaults for absent fields.
//
// The family rules mirror what each family's modelling code does with its config (which layers
// slide, which skip RoPE, which share KV); docs/models.md lists them.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/models/config.h"
#include "nlohmann/json.hpp"

namespace attnkit::models {
namespace {

using nlohmann::json;

// Bounds that keep every later product far from 64-bit overflow and reject nonsense early.
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 1 << 16;
constexpr int64_t kMaxDim = 1 << 16;
constexpr int64_t kMaxTokens = int64_t{1} << 40;

enum class Family {
  kUnknown,
  kGpt2,
  kLlama,
  kLlama4,
  kMistral,
  kQwen2,
  kQwenNext,
  kGemma,
  kGemma2,
  kGemma3,
  kGemma3n,
  kGemma4,
  kGptOss,
  kOlmo,
  kOlmo3,
  kPhi3,
  kSmolLm3,
  kDeepseek,
  kKimiLinear,
  kMiniMax,
  kMiniMaxM2,
  kGlm,
  kNemotronH,
  kExaone4,
  kCohere2,
};

Family ClassifyModelType(const std::string& t) {
  static const std::map<std::string, Family> kTypes = {
      {"gpt2", Family::kGpt2},
      {"llama", Family::kLlama},
      {"llama4", Family::kLlama4},
      {"llama4_text", Family::kLlama4},
      {"mistral", Family::kMistral},
      {"mixtral", Family::kMistral},
      {"ministral", Family::kMistral},
      {"ministral3", Family::kMistral},
      {"mistral3", Family::kMistral},
      {"qwen2", Family::kQwen2},
      {"qwen2_moe", Family::kQwen2},
      {"qwen3", Family::kQwen2},
      {"qwen3_moe", Family::kQwen2},
      {"qwen3_next", Family::kQwenNext},
      {"qwen3_5", Family::kQwenNext},
      {"qwen3_5_text", Family::kQwenNext},
      {"qwen3_5_moe", Family::kQwenNext},
      {"qwen3_5_moe_text", Family::kQwenNext},
      {"gemma", Family::kGemma},
      {"gemma2", Family::kGemma2},
      {"gemma3", Family::kGemma3},
      {"gemma3_text", Family::kGemma3},
      {"gemma3n", Family::kGemma3n},
      {"gemma3n_text", Family::kGemma3n},
      {"gemma4", Family::kGemma4},
      {"gemma4_text", Family::kGemma4},
      {"gpt_oss", Family::kGptOss},
      {"olmo", Family::kOlmo},
      {"olmo2", Family::kOlmo},
      {"olmoe", Family::kOlmo},
      {"olmo3", Family::kOlmo3},
      {"phi3", Family::kPhi3},
      {"phimoe", Family::kPhi3},
      {"smollm3", Family::kSmolLm3},
      {"deepseek_v2", Family::kDeepseek},
      {"deepseek_v3", Family::kDeepseek},
      {"deepseek_v32", Family::kDeepseek},
      {"kimi_k2", Family::kDeepseek},
      {"glm_moe_dsa", Family::kDeepseek},
      {"kimi_linear", Family::kKimiLinear},
      {"minimax", Family::kMiniMax},
      {"minimax_m1", Family::kMiniMax},
      {"minimaxm1", Family::kMiniMax},
      {"minimax_text_01", Family::kMiniMax},
      {"minimaxtext01", Family::kMiniMax},
      {"minimax_m2", Family::kMiniMaxM2},
      {"minimaxm2", Family::kMiniMaxM2},
      {"glm", Family::kGlm},
      {"glm4", Family::kGlm},
      {"glm4_moe", Family::kGlm},
      {"nemotron_h", Family::kNemotronH},
      {"exaone4", Family::kExaone4},
      {"cohere2", Family::kCohere2},
  };
  // Remote-code models sometimes spell model_type in CamelCase ("MiniMaxM1").
  std::string key = t;
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto it = kTypes.find(key);
  return it == kTypes.end() ? Family::kUnknown : it->second;
}

// Defaults that a family's configuration class applies when a field is absent from config.json.
struct FamilyDefaults {
  const char* origin;  // named in the assumption note
  std::map<std::string, double> values;
};

const FamilyDefaults* DefaultsFor(Family f) {
  static const FamilyDefaults kGemma3 = {"Gemma3TextConfig default",
                                         {{"hidden_size", 2304},
                                          {"num_hidden_layers", 26},
                                          {"num_attention_heads", 8},
                                          {"num_key_value_heads", 4},
                                          {"head_dim", 256},
                                          {"sliding_window", 4096},
                                          {"sliding_window_pattern", 6},
                                          {"query_pre_attn_scalar", 256},
                                          {"max_position_embeddings", 131072}}};
  static const FamilyDefaults kGemma2 = {"Gemma2Config default",
                                         {{"hidden_size", 2304},
                                          {"num_hidden_layers", 26},
                                          {"num_attention_heads", 8},
                                          {"num_key_value_heads", 4},
                                          {"head_dim", 256},
                                          {"sliding_window", 4096},
                                          {"query_pre_attn_scalar", 256},
                                          {"attn_logit_softcapping", 50},
                                          {"final_logit_softcapping", 30},
                                          {"max_position_embeddings", 8192}}};
  static const FamilyDefaults kGemma = {"GemmaConfig default",
                                        {{"hidden_size", 3072},
                                         {"num_hidden_layers", 28},
                                         {"num_attention_heads", 16},
                                         {"num_key_value_heads", 16},
                                         {"head_dim", 256},
                                         {"max_position_embeddings", 8192}}};
  static const FamilyDefaults kGemma3n = {"Gemma3nTextConfig default",
                                          {{"hidden_size", 2048},
                                           {"num_hidden_layers", 35},
                                           {"num_attention_heads", 8},
                                           {"num_key_value_heads", 2},
                                           {"head_dim", 256},
                                           {"sliding_window", 512},
                                           {"num_kv_shared_layers", 15},
                                           {"max_position_embeddings", 32768}}};
  static const FamilyDefaults kGemma4 = {
      "Gemma4TextConfig default", {{"num_kv_shared_layers", 0}, {"sliding_window_pattern", 6}}};
  static const FamilyDefaults kGptOss = {"GptOssConfig default",
                                         {{"hidden_size", 2880},
                                          {"num_hidden_layers", 36},
                                          {"num_attention_heads", 64},
                                          {"num_key_value_heads", 8},
                                          {"head_dim", 64},
                                          {"sliding_window", 128},
                                          {"max_position_embeddings", 131072}}};
  static const FamilyDefaults kQwenNext = {"Qwen3NextConfig default",
                                           {{"full_attention_interval", 4},
                                            {"linear_conv_kernel_dim", 4},
                                            {"partial_rotary_factor", 0.25}}};
  static const FamilyDefaults kLlama4 = {"Llama4TextConfig default",
                                         {{"head_dim", 128}, {"no_rope_layer_interval", 4}}};
  static const FamilyDefaults kSmolLm3 = {"SmolLM3Config default", {{"no_rope_layer_interval", 4}}};
  static const FamilyDefaults kOlmo3 = {"Olmo3Config default", {{"sliding_window", 4096}}};
  static const FamilyDefaults kCohere2 = {
      "Cohere2Config default", {{"sliding_window", 4096}, {"sliding_window_pattern", 4}}};
  static const FamilyDefaults kGlm = {"Glm4Config default", {{"partial_rotary_factor", 0.5}}};
  static const FamilyDefaults kQwen2 = {"Qwen2Config default", {{"max_window_layers", 28}}};
  static const FamilyDefaults kNemotronH = {
      "NemotronHConfig default",
      {{"conv_kernel", 4}, {"n_groups", 8}, {"ssm_state_size", 128}, {"mamba_head_dim", 64}}};
  switch (f) {
    case Family::kGemma3:
      return &kGemma3;
    case Family::kGemma2:
      return &kGemma2;
    case Family::kGemma:
      return &kGemma;
    case Family::kGemma3n:
      return &kGemma3n;
    case Family::kGemma4:
      return &kGemma4;
    case Family::kGptOss:
      return &kGptOss;
    case Family::kQwenNext:
      return &kQwenNext;
    case Family::kLlama4:
      return &kLlama4;
    case Family::kSmolLm3:
      return &kSmolLm3;
    case Family::kOlmo3:
      return &kOlmo3;
    case Family::kCohere2:
      return &kCohere2;
    case Family::kGlm:
      return &kGlm;
    case Family::kQwen2:
      return &kQwen2;
    case Family::kNemotronH:
      return &kNemotronH;
    default:
      return nullptr;
  }
}

std::string FormatNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// A short description of a JSON value for messages. Containers are named, not printed, so a
// deeply nested value cannot recurse through dump().
std::string Describe(const json& j) {
  if (j.is_object()) return "an object";
  if (j.is_array()) return "an array";
  std::string s = j.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Typed, checked access to one JSON object of the config, recording defaults as assumptions.
class Fields {
 public:
  Fields(const json& obj, std::string prefix, const std::string& source, Family family,
         ModelConfig* out)
      : obj_(obj),
        prefix_(std::move(prefix)),
        source_(source),
        defaults_(DefaultsFor(family)),
        out_(out) {}

  std::string Name(const std::string& key) const { return prefix_ + key; }

  // Present and not null.
  bool Has(const std::string& key) const {
    const auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  const json& At(const std::string& key) const { return obj_.at(key); }
  // The family supplies a default for the field.
  bool HasDefault(const std::string& key) const {
    return defaults_ != nullptr && defaults_->values.count(key) > 0;
  }

  // A required integer in [lo, hi]; the family default (reported) when absent.
  int64_t Int(const std::string& key, int64_t lo = 1, int64_t hi = kMaxDim) const {
    if (!Has(key)) {
      if (const double* d = FamilyDefault(key)) return Checked(key, *d, lo, hi);
      Fail(key, "is missing");
    }
    return IntValue(key, At(key), lo, hi);
  }
  // The integer, or `fallback` with the note `why` when absent (family default first).
  int64_t IntOr(const std::string& key, int64_t fallback, const std::string& why, int64_t lo = 1,
                int64_t hi = kMaxDim) const {
    if (Has(key)) return IntValue(key, At(key), lo, hi);
    if (const double* d = FamilyDefault(key)) return Checked(key, *d, lo, hi);
    Note(Name(key) + " absent: " + std::to_string(fallback) + " (" + why + ")");
    return fallback;
  }
  // The integer when present, else the family default when there is one, else `fallback` with
  // no note (for optional fields whose absence means "off").
  int64_t OptInt(const std::string& key, int64_t fallback, int64_t lo = 0,
                 int64_t hi = kMaxTokens) const {
    if (Has(key)) return IntValue(key, At(key), lo, hi);
    if (const double* d = FamilyDefault(key)) return Checked(key, *d, lo, hi);
    return fallback;
  }
  double Double(const std::string& key, double fallback, double lo, double hi) const {
    double v = fallback;
    if (Has(key)) {
      const json& j = At(key);
      if (!j.is_number()) Fail(key, "must be a number, got " + Describe(j));
      v = j.get<double>();
    } else if (const double* d = FamilyDefault(key)) {
      v = *d;
    } else {
      return fallback;
    }
    if (!(v >= lo && v <= hi))
      Fail(key, "must be in [" + FormatNumber(lo) + ", " + FormatNumber(hi) + "], got " +
                    FormatNumber(v));
    return v;
  }
  bool Bool(const std::string& key, bool fallback) const {
    if (!Has(key)) return fallback;
    const json& j = At(key);
    if (!j.is_boolean()) Fail(key, "must be true or false, got " + Describe(j));
    return j.get<bool>();
  }
  std::string Str(const std::string& key, const std::string& fallback) const {
    if (!Has(key)) return fallback;
    const json& j = At(key);
    if (!j.is_string()) Fail(key, "must be a string, got " + Describe(j));
    return j.get<std::string>();
  }
  const json* Object(const std::string& key) const {
    if (!Has(key)) return nullptr;
    const json& j = At(key);
    if (!j.is_object()) Fail(key, "must be an object, got " + Describe(j));
    return &j;
  }
  const json* Array(const std::string& key) const {
    if (!Has(key)) return nullptr;
    const json& j = At(key);
    if (!j.is_array()) Fail(key, "must be an array, got " + Describe(j));
    return &j;
  }

  int64_t IntValue(const std::string& key, const json& j, int64_t lo, int64_t hi) const {
    if (!j.is_number()) Fail(key, "must be an integer, got " + Describe(j));
    if (j.is_number_integer()) {
      if (j.is_number_unsigned()) {
        const uint64_t u = j.get<uint64_t>();
        if (u > static_cast<uint64_t>(hi)) OutOfRange(key, std::to_string(u), lo, hi);
        return Checked(key, static_cast<double>(u), lo, hi);
      }
      const int64_t v = j.get<int64_t>();
      if (v < lo || v > hi) OutOfRange(key, std::to_string(v), lo, hi);
      return v;
    }
    const double d = j.get<double>();
    if (!(std::floor(d) == d)) Fail(key, "must be an integer, got " + FormatNumber(d));
    return Checked(key, d, lo, hi);
  }

  [[noreturn]] void Fail(const std::string& key, const std::string& what) const {
    throw Error(source_ + ": " + Name(key) + (what.starts_with("[") ? "" : " ") + what);
  }
  void Note(const std::string& s) const {
    auto& a = out_->assumptions;
    if (std::find(a.begin(), a.end(), s) == a.end()) a.push_back(s);
  }

 private:
  const double* FamilyDefault(const std::string& key) const {
    if (defaults_ == nullptr) return nullptr;
    const auto it = defaults_->values.find(key);
    if (it == defaults_->values.end()) return nullptr;
    Note(Name(key) + " absent: " + FormatNumber(it->second) + " (" + defaults_->origin + ")");
    return &it->second;
  }
  int64_t Checked(const std::string& key, double d, int64_t lo, int64_t hi) const {
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) {
      OutOfRange(key, FormatNumber(d), lo, hi);
    }
    return static_cast<int64_t>(d);
  }
  [[noreturn]] void OutOfRange(const std::string& key, const std::string& got, int64_t lo,
                               int64_t hi) const {
    Fail(key, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "], got " + got);
  }
  const json& obj_;
  std::string prefix_;
  const std::string& source_;
  const FamilyDefaults* defaults_;
  ModelConfig* out_;
};

// Replaces the non-standard tokens Infinity and NaN outside strings with numbers of the same
// length, so byte positions in later parser messages stay true.
std::string ReplaceNonStandardTokens(std::string_view text, int* replaced) {
  std::string s(text);
  bool in_string = false;
  *replaced = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (s.compare(i, 8, "Infinity") == 0) {
      s.replace(i, 8, "1e308   ");
      ++*replaced;
      i += 7;
    } else if (s.compare(i, 3, "NaN") == 0) {
      s.replace(i, 3, "0e0");
      ++*replaced;
      i += 2;
    }
  }
  return s;
}

// What each entry of layer_types names.
enum class TypeName { kFull, kSliding, kChunked, kLinear, kMamba, kMlp };

TypeName ParseTypeName(const Fields& f, const std::string& key, size_t index, const json& j) {
  if (!j.is_string()) {
    f.Fail(key, "[" + std::to_string(index) + "] must be a string, got " + Describe(j));
  }
  const std::string s = j.get<std::string>();
  if (s == "full_attention" || s == "attention" || s == "global_attention" || s == "global") {
    return TypeName::kFull;
  }
  if (s == "sliding_attention" || s == "sliding_window" || s == "local_attention" || s == "local") {
    return TypeName::kSliding;
  }
  if (s == "chunked_attention") return TypeName::kChunked;
  if (s == "linear_attention") return TypeName::kLinear;
  if (s == "mamba" || s == "mamba2") return TypeName::kMamba;
  f.Fail(key, "[" + std::to_string(index) + "] is '" + s +
                  "', not one of full_attention, sliding_attention, chunked_attention, "
                  "linear_attention, mamba");
}

// The layer types from `layer_types` when present (its length checked against num_layers).
std::vector<TypeName> LayerTypesField(const Fields& f, int64_t num_layers) {
  std::vector<TypeName> types;
  const json* arr = f.Array("layer_types");
  if (arr == nullptr) return types;
  if (static_cast<int64_t>(arr->size()) != num_layers) {
    f.Fail("layer_types", "has " + std::to_string(arr->size()) +
                              " entries but num_hidden_layers is " + std::to_string(num_layers));
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    types.push_back(ParseTypeName(f, "layer_types", i, (*arr)[i]));
  }
  return types;
}

// Layer i is `other` unless (i + 1) % n == 0, where it is `every_nth` (Gemma 3: 5 sliding then
// 1 full; Qwen3-Next: 3 linear then 1 full).
std::vector<TypeName> EveryNth(int64_t num_layers, int64_t n, TypeName other, TypeName every_nth) {
  std::vector<TypeName> t(static_cast<size_t>(num_layers));
  for (int64_t i = 0; i < num_layers; ++i) t[i] = (i + 1) % n == 0 ? every_nth : other;
  return t;
}

// sliding_window_pattern as an int (every n-th layer global) or a string such as "LLLG".
std::vector<TypeName> SlidingPatternField(const Fields& f, int64_t num_layers) {
  if (f.Has("sliding_window_pattern") && f.At("sliding_window_pattern").is_string()) {
    const std::string p = f.At("sliding_window_pattern").get<std::string>();
    if (p.empty()) f.Fail("sliding_window_pattern", "is an empty string");
    std::vector<TypeName> t;
    for (int64_t i = 0; i < num_layers; ++i) {
      const char c = p[static_cast<size_t>(i) % p.size()];
      if (c == 'L' || c == 'l' || c == 'S' || c == 's') {
        t.push_back(TypeName::kSliding);
      } else if (c == 'G' || c == 'g' || c == 'F' || c == 'f') {
        t.push_back(TypeName::kFull);
      } else {
        f.Fail("sliding_window_pattern", "'" + p + "' may only hold L (local) and G (global)");
      }
    }
    return t;
  }
  const int64_t n = f.Int("sliding_window_pattern", 1, kMaxLayers);
  return EveryNth(num_layers, n, TypeName::kSliding, TypeName::kFull);
}

// A list of per-layer 0/1 flags (no_rope_layers, attn_type_list), length checked.
std::vector<int> FlagList(const Fields& f, const std::string& key, int64_t num_layers) {
  const json* arr = f.Array(key);
  if (arr == nullptr) f.Fail(key, "is missing");
  std::vector<int> v;
  if (static_cast<int64_t>(arr->size()) != num_layers) {
    f.Fail(key, "has " + std::to_string(arr->size()) + " entries but num_hidden_layers is " +
                    std::to_string(num_layers));
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    v.push_back(static_cast<int>(f.IntValue(key + "[" + std::to_string(i) + "]", (*arr)[i], 0, 1)));
  }
  return v;
}

// A list of distinct 1-based layer numbers (Kimi Linear's linear_attn_config).
std::set<int64_t> LayerNumberList(const Fields& f, const std::string& key, int64_t num_layers) {
  const json* arr = f.Array(key);
  if (arr == nullptr) f.Fail(key, "is missing");
  std::set<int64_t> s;
  for (size_t i = 0; i < arr->size(); ++i) {
    const int64_t n = f.IntValue(key + "[" + std::to_string(i) + "]", (*arr)[i], 1, num_layers);
    if (!s.insert(n).second) f.Fail(key, "lists layer " + std::to_string(n) + " twice");
  }
  return s;
}

double RopeFraction(const Fields& f, const json* rope_params) {
  double r = 1.0;
  if (f.Has("partial_rotary_factor")) {
    r = f.Double("partial_rotary_factor", 1.0, 0.0, 1.0);
  } else if (rope_params != nullptr && rope_params->contains("partial_rotary_factor") &&
             (*rope_params)["partial_rotary_factor"].is_number()) {
    r = (*rope_params)["partial_rotary_factor"].get<double>();
    if (!(r >= 0 && r <= 1)) f.Fail("rope_parameters.partial_rotary_factor", "must be in [0, 1]");
  } else {
    r = f.Double("partial_rotary_factor", 1.0, 0.0, 1.0);  // family default, if any
  }
  return r;
}

// Standard multi-head / grouped-query attention shape of a decoder.
struct AttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
};

AttentionShape ReadAttentionShape(const Fields& f, int64_t hidden, const char* heads_key,
                                  const char* head_dim_key) {
  AttentionShape s;
  s.heads = f.Int(heads_key, 1, kMaxHeads);
  s.kv_heads = f.IntOr("num_key_value_heads", s.heads, std::string("= ") + heads_key + ", MHA", 1,
                       kMaxHeads);
  if (s.heads % s.kv_heads != 0) {
    f.Fail(heads_key, "(" + std::to_string(s.heads) + ") must be a multiple of " +
                          f.Name("num_key_value_heads") + " (" + std::to_string(s.kv_heads) + ")");
  }
  if (f.Has(head_dim_key) || f.HasDefault(head_dim_key)) {
    s.head_dim = f.Int(head_dim_key, 1, kMaxDim);
  } else {
    if (hidden % s.heads != 0) {
      f.Fail(head_dim_key, "is missing and hidden_size (" + std::to_string(hidden) +
                               ") is not a multiple of " + heads_key + " (" +
                               std::to_string(s.heads) + ")");
    }
    s.head_dim =
        f.IntOr(head_dim_key, hidden / s.heads, "= hidden_size / " + std::string(heads_key));
  }
  return s;
}

LayerSpec SoftmaxLayer(LayerKind kind, const AttentionShape& s, int64_t window,
                       double rope_fraction) {
  LayerSpec l;
  l.kind = kind;
  l.num_heads_q = s.heads;
  l.num_heads_kv = s.kv_heads;
  l.head_dim_qk = s.head_dim;
  l.head_dim_v = s.head_dim;
  l.window = kind == LayerKind::kFull ? 0 : window;
  l.rope_fraction = rope_fraction;
  return l;
}

// MLA (and DSA when the indexer fields are present) from the DeepSeek-style fields.
LayerSpec MlaLayer(const Fields& f) {
  LayerSpec l;
  l.kind = LayerKind::kMla;
  l.num_heads_q = f.Int("num_attention_heads", 1, kMaxHeads);
  l.num_heads_kv = l.num_heads_q;
  l.q_lora_rank = f.OptInt("q_lora_rank", 0, 0, kMaxDim);
  l.kv_lora_rank = f.Int("kv_lora_rank");
  l.qk_nope_head_dim = f.Int("qk_nope_head_dim", 0, kMaxDim);
  l.qk_rope_head_dim = f.Int("qk_rope_head_dim", 0, kMaxDim);
  l.head_dim_v = f.Int("v_head_dim");
  l.head_dim_qk = l.qk_nope_head_dim + l.qk_rope_head_dim;
  if (l.head_dim_qk == 0) f.Fail("qk_nope_head_dim", "and qk_rope_head_dim are both 0");
  l.rope_fraction = static_cast<double>(l.qk_rope_head_dim) / static_cast<double>(l.head_dim_qk);
  if (f.Has("index_topk")) {
    l.kind = LayerKind::kDsa;
    l.index_topk = f.Int("index_topk", 1, kMaxTokens);
    l.index_num_heads = f.Int("index_n_heads", 1, kMaxHeads);
    l.index_head_dim = f.Int("index_head_dim");
  }
  return l;
}

void ReadMtp(const Fields& f, ModelConfig* m) {
  for (const char* key : {"num_nextn_predict_layers", "mtp_num_hidden_layers", "num_mtp_modules"}) {
    const int64_t n = f.OptInt(key, 0, 0, kMaxLayers);
    if (n > 0) {
      m->mtp_layers = n;
      m->assumptions.push_back(std::to_string(n) + " multi-token-prediction layer(s) (" +
                               f.Name(key) + ") left out of the layer count");
      return;
    }
  }
}

// Gemma 3n / Gemma 4: the last num_kv_shared_layers layers reuse the KV of the last earlier
// layer of the same type.
void ShareKv(const Fields& f, ModelConfig* m) {
  const int64_t n = static_cast<int64_t>(m->layers.size());
  const int64_t shared = f.OptInt("num_kv_shared_layers", 0, 0, n);
  if (shared == 0) return;
  const int64_t first_shared = n - shared;
  for (int64_t i = first_shared; i < n; ++i) {
    LayerSpec& l = m->layers[i];
    for (int64_t j = first_shared - 1; j >= 0; --j) {
      if (m->layers[j].kind == l.kind) {
        l.kv_source = static_cast<int>(j);
        break;
      }
    }
    if (l.kv_source < 0) {
      f.Fail("num_kv_shared_layers", "(" + std::to_string(shared) + "): layer " +
                                         std::to_string(i) +
                                         " has no earlier unshared layer of its type to share");
    }
  }
}

// Nemotron-H: one character per block: M Mamba-2, * attention, - MLP, E MoE.
void ReadNemotronH(const Fields& f, int64_t hidden, ModelConfig* m) {
  const std::string p = f.Str("hybrid_override_pattern", "");
  if (p.empty()) f.Fail("hybrid_override_pattern", "is missing");
  const int64_t n = f.OptInt("num_hidden_layers", static_cast<int64_t>(p.size()), 1, kMaxLayers);
  if (static_cast<int64_t>(p.size()) != n) {
    f.Fail("hybrid_override_pattern", "has " + std::to_string(p.size()) +
                                          " characters but num_hidden_layers is " +
                                          std::to_string(n));
  }
  AttentionShape s;
  const bool has_attention = p.find('*') != std::string::npos;
  if (has_attention) {
    s = ReadAttentionShape(f, hidden, "num_attention_heads",
                           f.Has("attention_head_dim") ? "attention_head_dim" : "head_dim");
  }
  LayerSpec mamba;
  if (p.find('M') != std::string::npos) {
    mamba.kind = LayerKind::kMamba2;
    const int64_t heads = f.Int("mamba_num_heads", 1, kMaxHeads);
    const int64_t head_dim = f.Int("mamba_head_dim");
    const int64_t state = f.Int("ssm_state_size");
    const int64_t groups = f.Int("n_groups", 1, kMaxHeads);
    mamba.state_heads = heads;
    mamba.state_dim_k = state;
    mamba.state_dim_v = head_dim;
    mamba.conv_kernel = f.Int("conv_kernel", 1, 1024);
    mamba.conv_channels = heads * head_dim + 2 * groups * state;
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == 'M') {
      m->layers.push_back(mamba);
    } else if (c == '*') {
      LayerSpec l = SoftmaxLayer(LayerKind::kFull, s, 0, 1.0);
      l.rope = false;
      m->layers.push_back(l);
    } else if (c == '-' || c == 'E') {
      LayerSpec l;
      l.kind = LayerKind::kMlp;
      m->layers.push_back(l);
    } else {
      f.Fail("hybrid_override_pattern",
             "[" + std::to_string(i) + "] is '" + std::string(1, c) +
                 "', not one of M (Mamba-2), * (attention), - (MLP), E (MoE)");
    }
  }
  if (has_attention) {
    m->assumptions.push_back("Nemotron-H attention layers use no position encoding (NoPE)");
  }
}

// Kimi Linear: KDA layers and MLA layers listed (1-based) in linear_attn_config.
void ReadKimiLinear(const Fields& f, const std::string& source, int64_t num_layers,
                    ModelConfig* m) {
  const json* lac = f.Object("linear_attn_config");
  if (lac == nullptr) f.Fail("linear_attn_config", "is missing");
  Fields lf(*lac, f.Name("linear_attn_config."), source, Family::kUnknown, m);
  const std::set<int64_t> kda = LayerNumberList(lf, "kda_layers", num_layers);
  const std::set<int64_t> full = LayerNumberList(lf, "full_attn_layers", num_layers);
  LayerSpec k;
  k.kind = LayerKind::kKda;
  k.state_heads = lf.Int("num_heads", 1, kMaxHeads);
  k.state_dim_k = lf.Int("head_dim");
  k.state_dim_v = k.state_dim_k;
  k.conv_kernel = lf.IntOr("short_conv_kernel_size", 4, "KimiLinearConfig default", 1, 1024);
  k.conv_channels = 3 * k.state_heads * k.state_dim_k;  // q, k and v each pass a short conv
  LayerSpec mla = MlaLayer(f);
  mla.rope = !f.Bool("mla_use_nope", false);
  for (int64_t i = 1; i <= num_layers; ++i) {
    const bool is_kda = kda.count(i) > 0, is_full = full.count(i) > 0;
    if (is_kda == is_full) {
      lf.Fail(is_kda ? "kda_layers" : "full_attn_layers",
              "and full_attn_layers / kda_layers must name layer " + std::to_string(i) +
                  " exactly once (1-based)");
    }
    m->layers.push_back(is_kda ? k : mla);
  }
}

// The linear-attention layer of Qwen3-Next / Qwen3.5: Gated DeltaNet.
LayerSpec GatedDeltaNetLayer(const Fields& f) {
  LayerSpec l;
  l.kind = LayerKind::kGatedDeltaNet;
  const int64_t nk = f.Int("linear_num_key_heads", 1, kMaxHeads);
  const int64_t nv = f.Int("linear_num_value_heads", 1, kMaxHeads);
  const int64_t dk = f.Int("linear_key_head_dim");
  const int64_t dv = f.Int("linear_value_head_dim");
  if (nv % nk != 0) {
    f.Fail("linear_num_value_heads", "(" + std::to_string(nv) + ") must be a multiple of " +
                                         f.Name("linear_num_key_heads") + " (" +
                                         std::to_string(nk) + ")");
  }
  l.state_heads = nv;
  l.state_dim_k = dk;
  l.state_dim_v = dv;
  l.conv_kernel = f.Int("linear_conv_kernel_dim", 1, 1024);
  l.conv_channels = 2 * nk * dk + nv * dv;  // the conv runs over the q, k and v projections
  return l;
}

ModelConfig Parse(const json& root, const std::string& source, int replaced_tokens) {
  if (!root.is_object()) throw Error(source + ": the top level must be a JSON object");
  ModelConfig m;
  m.source = source;
  if (replaced_tokens > 0) {
    m.assumptions.push_back(std::to_string(replaced_tokens) +
                            " non-standard JSON token(s) Infinity/NaN read as 1e308/0");
  }
  const json* text = &root;
  std::string prefix;
  for (const char* key : {"text_config", "llm_config", "language_config"}) {
    const auto it = root.find(key);
    if (it != root.end() && it->is_object()) {
      text = &*it;
      prefix = std::string(key) + ".";
      break;
    }
  }
  std::string model_type;
  if (const auto it = text->find("model_type"); it != text->end() && it->is_string()) {
    model_type = it->get<std::string>();
  } else if (const auto top = root.find("model_type"); top != root.end() && top->is_string()) {
    model_type = top->get<std::string>();
  }
  m.model_type = model_type;
  const Family family = ClassifyModelType(model_type);
  const Fields f(*text, prefix, source, family, &m);

  if (family == Family::kUnknown) {
    m.warnings.push_back(
        "unknown model_type '" + model_type +
        "': read as a standard decoder from num_hidden_layers, hidden_size, num_attention_heads, "
        "num_key_value_heads, head_dim, layer_types and sliding_window (plus MLA, indexer and "
        "linear-attention fields where present); check the result");
  }

  // GPT-2 names its fields differently.
  const bool gpt2 = family == Family::kGpt2 ||
                    (family == Family::kUnknown && f.Has("n_layer") && !f.Has("num_hidden_layers"));
  const std::string layers_key = gpt2 ? "n_layer" : "num_hidden_layers";
  const std::string hidden_key = gpt2 ? "n_embd" : "hidden_size";
  const std::string heads_key = gpt2 ? "n_head" : "num_attention_heads";

  m.hidden_size = f.Int(hidden_key, 1, int64_t{1} << 20);
  m.max_position_embeddings =
      f.OptInt(gpt2 ? "n_positions" : "max_position_embeddings", 0, 0, kMaxTokens);
  m.final_logit_softcap = f.Double("final_logit_softcapping", 0, 0, 1e9);
  ReadMtp(f, &m);

  if (family == Family::kNemotronH ||
      (family == Family::kUnknown && f.Has("hybrid_override_pattern"))) {
    ReadNemotronH(f, m.hidden_size, &m);
    return m;
  }
  const int64_t n = f.Int(layers_key, 1, kMaxLayers);

  if (family == Family::kKimiLinear ||
      (family == Family::kUnknown && f.Has("linear_attn_config") && f.Has("kv_lora_rank"))) {
    ReadKimiLinear(f, source, n, &m);
    return m;
  }
  if (family == Family::kDeepseek || (family == Family::kUnknown && f.Has("kv_lora_rank"))) {
    const LayerSpec l = MlaLayer(f);
    m.layers.assign(static_cast<size_t>(n), l);
    return m;
  }

  const json* rope_params = f.Has("rope_parameters") ? f.Object("rope_parameters") : nullptr;
  if (rope_params == nullptr && f.Has("rope_scaling") && f.At("rope_scaling").is_object()) {
    rope_params = &f.At("rope_scaling");
  }
  // Gemma 4 keeps one rope_parameters object per layer type; the plain fraction lives there.
  const bool rope_per_type = rope_params != nullptr && rope_params->contains("full_attention") &&
                             (*rope_params)["full_attention"].is_object();
  double rope_fraction = rope_per_type ? 1.0 : RopeFraction(f, rope_params);
  AttentionShape s = ReadAttentionShape(f, m.hidden_size, heads_key.c_str(), "head_dim");
  if (f.Has("rotary_dim")) {
    const int64_t rd = f.Int("rotary_dim", 0, s.head_dim);
    rope_fraction = static_cast<double>(rd) / static_cast<double>(s.head_dim);
  }

  // ---- the layer pattern
  std::vector<TypeName> types = LayerTypesField(f, n);
  const bool had_layer_types = !types.empty();
  std::vector<int> rope_flags(static_cast<size_t>(n), 1);  // 1: RoPE, 0: NoPE
  auto default_pattern = [&](std::vector<TypeName> t, const std::string& why) {
    if (!had_layer_types) {
      types = std::move(t);
      m.assumptions.push_back(f.Name("layer_types") + " absent: " + why);
    }
  };
  auto no_rope_from_list = [&](const std::string& origin) {
    if (f.Has("no_rope_layers")) {
      rope_flags = FlagList(f, "no_rope_layers", n);
    } else {
      const int64_t k = f.Int("no_rope_layer_interval", 1, kMaxLayers);
      for (int64_t i = 0; i < n; ++i) rope_flags[i] = (i + 1) % k != 0;
      m.assumptions.push_back(f.Name("no_rope_layers") + " absent: every " + std::to_string(k) +
                              "th layer without RoPE (" + origin + ")");
    }
  };
  const bool has_window = f.Has("sliding_window");

  switch (family) {
    case Family::kGemma2:
    case Family::kGptOss:
      default_pattern(EveryNth(n, 2, TypeName::kSliding, TypeName::kFull),
                      "sliding and full layers alternate, layer 0 sliding (family default)");
      break;
    case Family::kGemma3:
    case Family::kGemma4:
    case Family::kCohere2:
      if (!had_layer_types) types = SlidingPatternField(f, n);
      break;
    case Family::kExaone4:
      if (!had_layer_types && f.Has("sliding_window_pattern") && has_window) {
        types = SlidingPatternField(f, n);
      }
      break;
    case Family::kGemma3n:
      default_pattern(EveryNth(n, 5, TypeName::kSliding, TypeName::kFull),
                      "4 sliding then 1 full (Gemma3nTextConfig default)");
      break;
    case Family::kOlmo3:
      default_pattern(EveryNth(n, 4, TypeName::kSliding, TypeName::kFull),
                      "3 sliding then 1 full (Olmo3Config default)");
      break;
    case Family::kQwenNext:
      if (!had_layer_types) {
        const int64_t k = f.Int("full_attention_interval", 1, kMaxLayers);
        types = EveryNth(n, k, TypeName::kLinear, TypeName::kFull);
      }
      break;
    case Family::kLlama4:
      no_rope_from_list("Llama4TextConfig default");
      if (!had_layer_types) {
        const int64_t chunk = f.OptInt("attention_chunk_size", 0, 0, kMaxTokens);
        types.assign(static_cast<size_t>(n), TypeName::kFull);
        if (chunk > 0) {
          for (int64_t i = 0; i < n; ++i) {
            if (rope_flags[i]) types[i] = TypeName::kChunked;
          }
        }
      }
      break;
    case Family::kSmolLm3:
      no_rope_from_list("SmolLM3Config default");
      break;
    case Family::kUnknown:
    case Family::kMiniMax:
    case Family::kMiniMaxM2: {
      if (!had_layer_types && (family == Family::kMiniMax || f.Has("attn_type_list"))) {
        const std::vector<int> a = FlagList(f, "attn_type_list", n);
        types.clear();
        for (int v : a) types.push_back(v ? TypeName::kFull : TypeName::kLinear);
      }
      break;
    }
    default:
      break;
  }
  if (types.empty()) {
    // Mistral, Phi-3 and unknown families: one window for every layer when given; Qwen2/3: only
    // with use_sliding_window, from layer max_window_layers on.
    types.assign(static_cast<size_t>(n), TypeName::kFull);
    if (family == Family::kQwen2) {
      if (f.Bool("use_sliding_window", false) && has_window) {
        const int64_t from = f.Int("max_window_layers", 0, kMaxLayers);
        for (int64_t i = from; i < n; ++i) types[i] = TypeName::kSliding;
      }
    } else if (family == Family::kMistral || family == Family::kPhi3 ||
               family == Family::kUnknown) {
      if (has_window && f.Bool("use_sliding_window", true)) {
        types.assign(static_cast<size_t>(n), TypeName::kSliding);
      }
    }
  }

  // ---- windows and per-family layer details
  const bool any_sliding = std::find(types.begin(), types.end(), TypeName::kSliding) != types.end();
  const bool any_chunked = std::find(types.begin(), types.end(), TypeName::kChunked) != types.end();
  const int64_t window = any_sliding ? f.Int("sliding_window", 1, kMaxTokens) : 0;
  const int64_t chunk = any_chunked ? f.Int("attention_chunk_size", 1, kMaxTokens) : 0;
  const double qscale = f.Double("query_pre_attn_scalar", 0, 0, 1e9);
  const double softcap = f.Double("attn_logit_softcapping", 0, 0, 1e9);
  const bool sinks = family == Family::kGptOss;

  // Gemma 4: full layers have their own head_dim and KV head count.
  AttentionShape global = s;
  double global_rope = rope_fraction, local_rope = rope_fraction;
  if (family == Family::kGemma4) {
    if (f.Has("global_head_dim")) global.head_dim = f.Int("global_head_dim");
    if (f.Bool("attention_k_eq_v", false) && f.Has("num_global_key_value_heads")) {
      global.kv_heads = f.Int("num_global_key_value_heads", 1, kMaxHeads);
      if (global.heads % global.kv_heads != 0) {
        f.Fail("num_global_key_value_heads", "must divide num_attention_heads");
      }
      m.assumptions.push_back(
          "attention_k_eq_v: full layers take V from the K projection but cache K (rotated) and V "
          "(normed) apart, so both are counted");
    }
  }
  if (rope_per_type) {
    auto frac = [&](const char* type) {
      const auto it = rope_params->find(type);
      if (it == rope_params->end() || !it->is_object()) return 1.0;
      const auto pr = it->find("partial_rotary_factor");
      if (pr == it->end() || !pr->is_number()) return 1.0;
      const double v = pr->get<double>();
      if (!(v >= 0 && v <= 1)) {
        f.Fail(std::string("rope_parameters.") + type + ".partial_rotary_factor",
               "must be in [0, 1]");
      }
      return v;
    };
    global_rope = frac("full_attention");
    local_rope = frac("sliding_attention");
  }
  // Families whose global layers skip RoPE when sliding layers exist.
  const bool nope_global =
      (family == Family::kCohere2 || family == Family::kExaone4) && any_sliding;

  LayerSpec gdn;
  if (std::find(types.begin(), types.end(), TypeName::kLinear) != types.end()) {
    if (family == Family::kMiniMax || family == Family::kMiniMaxM2 || f.Has("attn_type_list")) {
      gdn.kind = LayerKind::kLightning;
      gdn.state_heads = s.heads;
      gdn.state_dim_k = s.head_dim;
      gdn.state_dim_v = s.head_dim;
    } else if (f.Has("linear_num_value_heads")) {
      if (family != Family::kQwenNext) {
        m.warnings.push_back("linear_attention layers read as Gated DeltaNet (Qwen3-Next fields)");
      }
      gdn = GatedDeltaNetLayer(f);
    } else {
      f.Fail("layer_types",
             "names linear_attention layers but the linear_* head fields are missing");
    }
  }
  if (std::find(types.begin(), types.end(), TypeName::kMamba) != types.end()) {
    f.Fail("layer_types", "names mamba layers; only Nemotron-H's hybrid_override_pattern is read");
  }

  for (int64_t i = 0; i < n; ++i) {
    LayerSpec l;
    switch (types[i]) {
      case TypeName::kFull:
        l = SoftmaxLayer(LayerKind::kFull, global, 0, global_rope);
        if (nope_global) l.rope = false;
        break;
      case TypeName::kSliding:
        l = SoftmaxLayer(LayerKind::kSliding, s, window, local_rope);
        break;
      case TypeName::kChunked:
        l = SoftmaxLayer(LayerKind::kChunked, s, chunk, local_rope);
        break;
      case TypeName::kLinear:
        l = gdn;
        break;
      case TypeName::kMamba:
      case TypeName::kMlp:
        l.kind = LayerKind::kMlp;
        break;
    }
    if (HasKvCache(l.kind)) {
      if (!rope_flags[i]) l.rope = false;
      l.sinks = sinks;
      l.softcap = softcap;
      l.query_pre_attn_scalar = qscale;
      if (family == Family::kQwenNext && l.kind == LayerKind::kFull) {
        l.output_gate = f.Bool("attn_output_gate", true);
      }
    }
    if (gpt2) l.rope = false;
    m.layers.push_back(l);
  }
  if (gpt2) m.assumptions.push_back("GPT-2 uses learned absolute position embeddings (no RoPE)");
  if (family == Family::kGemma4 && qscale == 0) {
    for (auto& l : m.layers) l.query_pre_attn_scalar = 1;  // QK-norm, scores not scaled
    m.assumptions.push_back("Gemma 4 scales scores by 1 (QK-norm instead of 1/sqrt(head_dim))");
  }
  if (family == Family::kGemma3n || family == Family::kGemma4) ShareKv(f, &m);
  return m;
}

}  // namespace

ModelConfig ReadHfConfigText(std::string_view json_text, const std::string& source) {
  int replaced = 0;
  const std::string text = ReplaceNonStandardTokens(json_text, &replaced);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    // e.what() holds the line, column and the parser's message; e.byte the offset.
    throw Error(source + ": malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  } catch (const json::exception& e) {
    throw Error(source + ": malformed JSON: " + e.what());
  }
  try {
    return Parse(root, source, replaced);
  } catch (const json::exception& e) {
    throw Error(source + ": unexpected JSON content: " + e.what());
  }
}

ModelConfig ReadHfConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Require(in.good(), "ReadHfConfig: cannot open '", path, "'");
  // Bounded read: a config.json is kilobytes; /dev/zero or a checkpoint passed by mistake is not.
  constexpr std::streamsize kMaxConfigBytes = std::streamsize{64} << 20;
  std::string text;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    Require(static_cast<std::streamsize>(text.size()) <= kMaxConfigBytes, "ReadHfConfig: '", path,
            "' is larger than ", kMaxConfigBytes >> 20, " MiB: not a model config");
  }
  Require(!in.bad(), "ReadHfConfig: cannot read '", path, "'");
  ModelConfig m = ReadHfConfigText(text, path);
  std::string stem = path.substr(path.find_last_of('/') + 1);
  if (const auto dot = stem.rfind(".json"); dot != std::string::npos && dot > 0) stem.resize(dot);
  if (stem == "config") {
    // Name it after its folder, as Hugging Face snapshots are laid out.
    const auto slash = path.find_last_of('/');
    if (slash != std::string::npos && slash > 0) {
      const std::string dir = path.substr(0, slash);
      stem = dir.substr(dir.find_last_of('/') + 1);
    }
  }
  m.name = stem;
  return m;
}

}  // namespace attnkit::models
