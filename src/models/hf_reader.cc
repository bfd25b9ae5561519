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
#include "attnkit/models/kinds.h"
#include "nlohmann/json.hpp"

namespace attnkit::models {
namespace {

using nlohmann::json;

// Bounds that keep every later product far from 64-bit overflow and reject nonsense early.
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 1 << 16;
constexpr int64_t kMaxDim = 1 << 16;
constexpr int64_t kMaxTokens = int64_t{1} << 40;

// Defaults that a family's configuration class applies when a field is absent from config.json.
struct FamilyDefaults {
  const char* origin = "";  // named in the assumption note
  std::map<std::string, double> values;
};

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
class Fields : public ConfigFields {
 public:
  Fields(const json& obj, std::string prefix, const std::string& source,
         const FamilyDefaults* defaults, ModelConfig* out)
      : obj_(obj), prefix_(std::move(prefix)), source_(source), defaults_(defaults), out_(out) {}

  std::string Name(const std::string& key) const { return prefix_ + key; }

  // Present and not null.
  bool Has(const std::string& key) const override {
    const auto it = obj_.find(key);
    return it != obj_.end() && !it->is_null();
  }
  const json& At(const std::string& key) const { return obj_.at(key); }
  // The family supplies a default for the field.
  bool HasDefault(const std::string& key) const {
    return defaults_ != nullptr && defaults_->values.count(key) > 0;
  }

  // A required integer in [lo, hi]; the family default (reported) when absent.
  int64_t Int(const std::string& key, int64_t lo = 1, int64_t hi = kMaxDim) const override {
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
  double Double(const std::string& key, double fallback, double lo, double hi) const override {
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

// What each entry of layer_types names. kRegistered: a kind registered in the kind table
// (models/kinds.h) under that layer type; kUnknown: an entry nothing here reads (refused unless
// ReadOptions::allow_unknown, then read as a layer without attention).
enum class TypeName { kFull, kSliding, kChunked, kLinear, kMamba, kMlp, kRegistered, kUnknown };

struct LayerType {
  TypeName type = TypeName::kFull;
  LayerKind kind = LayerKind::kFull;  // for kRegistered
  bool operator==(TypeName t) const { return type == t; }
};

// The entry's type; kUnknown (with the entry in *unknown when given) for names nothing reads.
LayerType ParseTypeName(const Fields& f, const std::string& key, size_t index, const json& j) {
  if (!j.is_string()) {
    f.Fail(key, "[" + std::to_string(index) + "] must be a string, got " + Describe(j));
  }
  const std::string s = j.get<std::string>();
  if (s == "linear_attention") return {TypeName::kLinear};  // the family says which kind
  LayerKind kind = LayerKind::kFull;
  if (FindLayerKindByType(s, &kind) == nullptr) return {TypeName::kUnknown};
  switch (kind) {
    case LayerKind::kFull:
      return {TypeName::kFull};
    case LayerKind::kSliding:
      return {TypeName::kSliding};
    case LayerKind::kChunked:
      return {TypeName::kChunked};
    case LayerKind::kMamba2:
      return {TypeName::kMamba};
    default:
      return {TypeName::kRegistered, kind};
  }
}

// The layer types from `layer_types` when present (its length checked against num_layers).
std::vector<LayerType> LayerTypesField(const Fields& f, int64_t num_layers) {
  std::vector<LayerType> types;
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
std::vector<LayerType> EveryNth(int64_t num_layers, int64_t n, TypeName other, TypeName every_nth) {
  std::vector<LayerType> t(static_cast<size_t>(num_layers));
  for (int64_t i = 0; i < num_layers; ++i) t[i].type = (i + 1) % n == 0 ? every_nth : other;
  return t;
}

// sliding_window_pattern as an int (every n-th layer global) or a string such as "LLLG".
std::vector<LayerType> SlidingPatternField(const Fields& f, int64_t num_layers) {
  if (f.Has("sliding_window_pattern") && f.At("sliding_window_pattern").is_string()) {
    const std::string p = f.At("sliding_window_pattern").get<std::string>();
    if (p.empty()) f.Fail("sliding_window_pattern", "is an empty string");
    std::vector<LayerType> t;
    for (int64_t i = 0; i < num_layers; ++i) {
      const char c = p[static_cast<size_t>(i) % p.size()];
      if (c == 'L' || c == 'l' || c == 'S' || c == 's') {
        t.push_back({TypeName::kSliding});
      } else if (c == 'G' || c == 'g' || c == 'F' || c == 'f') {
        t.push_back({TypeName::kFull});
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
LayerSpec MlaLayer(const Fields& f, bool indexer) {
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
  if (indexer && f.Has("index_topk")) {
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
  Fields lf(*lac, f.Name("linear_attn_config."), source, nullptr, m);
  const std::set<int64_t> kda = LayerNumberList(lf, "kda_layers", num_layers);
  const std::set<int64_t> full = LayerNumberList(lf, "full_attn_layers", num_layers);
  LayerSpec k;
  k.kind = LayerKind::kKda;
  k.state_heads = lf.Int("num_heads", 1, kMaxHeads);
  k.state_dim_k = lf.Int("head_dim");
  k.state_dim_v = k.state_dim_k;
  k.conv_kernel = lf.IntOr("short_conv_kernel_size", 4, "KimiLinearConfig default", 1, 1024);
  k.conv_channels = 3 * k.state_heads * k.state_dim_k;  // q, k and v each pass a short conv
  LayerSpec mla = MlaLayer(f, false);
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

// ---------------------------------------------------------------- family rules
//
// One rule per family (the model_types it covers, the defaults of its configuration class, and
// the few hooks where it differs from a standard decoder), in the style of gemma.cpp's
// configs.cc: the families are data, read by one Parse below.

struct FamilyRule;

// What a family rule reads and fills while one config is read.
struct Reader {
  Reader(const Fields& fields, ModelConfig& model, const std::string& src, const FamilyRule& r)
      : f(fields), m(model), source(src), rule(r) {}
  const Fields& f;
  ModelConfig& m;
  const std::string& source;
  const FamilyRule& rule;
  int64_t n = 0;          // decoder layers
  bool gpt2 = false;      // GPT-2 field names (n_layer, n_embd, n_head)
  AttentionShape local;   // sliding / chunked layers, and full ones unless `global` differs
  AttentionShape global;  // full layers (Gemma 4 gives them their own dims)
  double local_rope = 1, global_rope = 1;
  double qscale = 0;             // query_pre_attn_scalar (0: 1/sqrt(head_dim))
  std::vector<LayerType> types;  // one per layer
  bool had_layer_types = false;  // `types` came from config.json
  std::vector<int> rope_flags;   // 1: RoPE, 0: NoPE

  bool Any(TypeName t) const { return std::find(types.begin(), types.end(), t) != types.end(); }
  // Sets `types` unless config.json gave layer_types, noting the family default.
  void DefaultTypes(std::vector<LayerType> t, const std::string& why) {
    if (had_layer_types) return;
    types = std::move(t);
    m.assumptions.push_back(f.Name("layer_types") + " absent: " + why);
  }
  // RoPE flags from no_rope_layers, or every no_rope_layer_interval-th layer without RoPE.
  void NoRopeFromList(const std::string& origin) {
    if (f.Has("no_rope_layers")) {
      rope_flags = FlagList(f, "no_rope_layers", n);
      return;
    }
    const int64_t k = f.Int("no_rope_layer_interval", 1, kMaxLayers);
    for (int64_t i = 0; i < n; ++i) rope_flags[i] = (i + 1) % k != 0;
    m.assumptions.push_back(f.Name("no_rope_layers") + " absent: every " + std::to_string(k) +
                            "th layer without RoPE (" + origin + ")");
  }
};

struct FamilyRule {
  std::vector<std::string> model_types;  // lower case
  FamilyDefaults defaults;               // what its configuration class fills in
  // For a model_type no rule lists: the rule claims the config by its fields.
  bool (*claims)(const Fields& f) = nullptr;
  // A family with its own layout: reads every layer. Null: the standard decoder in Parse.
  void (*read_all)(Reader& r) = nullptr;
  // Standard decoder: layer types when config.json has no layer_types, and RoPE flags.
  void (*pattern)(Reader& r) = nullptr;
  // Standard decoder: per-family shapes once the windows are read (Gemma 4's global layers).
  void (*shape)(Reader& r) = nullptr;
  // What its linear_attention / mamba layer_types entries are. Null linear: Gated DeltaNet or
  // lightning by the fields present; null mamba: not read (unmodelled).
  LayerSpec (*linear)(Reader& r) = nullptr;
  LayerSpec (*mamba)(Reader& r) = nullptr;
  // Adjusts the layers once built (sinks, output gates, NoPE, KV sharing, ...).
  void (*finish)(Reader& r) = nullptr;
  bool indexer = false;      // reads the DSA indexer fields (index_topk, ...)
  bool state_space = false;  // reads Mamba / SSM fields
  bool gpt2_names = false;   // n_layer / n_embd / n_head
};

// ---- hooks shared by several families

void AllSlidingIfWindow(Reader& r) {  // Mistral, Phi-3, unknown: one window for every layer
  if (!r.types.empty()) return;
  const bool sliding = r.f.Has("sliding_window") && r.f.Bool("use_sliding_window", true);
  r.types.assign(static_cast<size_t>(r.n), {sliding ? TypeName::kSliding : TypeName::kFull});
}

void AttnTypeList(Reader& r) {  // MiniMax: 1 softmax, 0 lightning
  if (r.had_layer_types) return;
  r.types.clear();
  for (int v : FlagList(r.f, "attn_type_list", r.n)) {
    r.types.push_back({v ? TypeName::kFull : TypeName::kLinear});
  }
}

void SlidingPattern(Reader& r) {  // Gemma 3 / 4, Cohere 2: sliding_window_pattern
  if (!r.had_layer_types) r.types = SlidingPatternField(r.f, r.n);
}

void AlternateSliding(Reader& r) {  // Gemma 2, gpt-oss
  r.DefaultTypes(EveryNth(r.n, 2, TypeName::kSliding, TypeName::kFull),
                 "sliding and full layers alternate, layer 0 sliding (family default)");
}

void NoPeGlobal(Reader& r) {  // Cohere 2, EXAONE 4: full layers skip RoPE when sliding ones exist
  if (!r.Any(TypeName::kSliding)) return;
  for (auto& l : r.m.layers) {
    if (l.kind == LayerKind::kFull) l.rope = false;
  }
}

void ShareKvLayers(Reader& r) { ShareKv(r.f, &r.m); }  // Gemma 3n

LayerSpec Lightning(Reader& r) {  // MiniMax: decayed linear attention over the softmax shape
  LayerSpec l;
  l.kind = LayerKind::kLightning;
  l.state_heads = r.local.heads;
  l.state_dim_k = r.local.head_dim;
  l.state_dim_v = r.local.head_dim;
  return l;
}

LayerSpec GatedDeltaNet(Reader& r) { return GatedDeltaNetLayer(r.f); }

// linear_attention in a family with no rule of its own for it.
LayerSpec AnyLinear(Reader& r) {
  if (r.f.Has("attn_type_list")) return Lightning(r);
  if (r.f.Has("linear_num_value_heads")) {
    r.m.warnings.push_back("linear_attention layers read as Gated DeltaNet (Qwen3-Next fields)");
    return GatedDeltaNetLayer(r.f);
  }
  r.f.Fail("layer_types", "names linear_attention layers but the linear_* head fields are missing");
}

// ---- families with their own layout

void ReadDeepseek(Reader& r) {  // MLA everywhere (DSA with the indexer fields)
  r.n = r.f.Int("num_hidden_layers", 1, kMaxLayers);
  r.m.layers.assign(static_cast<size_t>(r.n), MlaLayer(r.f, true));
}

void ReadKimi(Reader& r) {
  r.n = r.f.Int("num_hidden_layers", 1, kMaxLayers);
  ReadKimiLinear(r.f, r.source, r.n, &r.m);
}

void ReadNemotron(Reader& r) { ReadNemotronH(r.f, r.m.hidden_size, &r.m); }

// Granite 4.0-H: Mamba-2 layers (mamba_* fields) and attention layers named in layer_types.
LayerSpec GraniteMamba(Reader& r) {
  LayerSpec l;
  l.kind = LayerKind::kMamba2;
  const int64_t heads = r.f.Int("mamba_n_heads", 1, kMaxHeads);
  int64_t head_dim = 0;
  if (r.f.Has("mamba_d_head") && r.f.At("mamba_d_head").is_number()) {
    head_dim = r.f.Int("mamba_d_head");
  } else {  // "auto" or absent: the inner width split over the heads
    const int64_t inner = r.f.Int("mamba_expand", 1, 64) * r.m.hidden_size;
    if (inner % heads != 0) r.f.Fail("mamba_n_heads", "must divide mamba_expand * hidden_size");
    head_dim = inner / heads;
  }
  const int64_t state = r.f.Int("mamba_d_state");
  const int64_t groups = r.f.Int("mamba_n_groups", 1, kMaxHeads);
  l.state_heads = heads;
  l.state_dim_k = state;
  l.state_dim_v = head_dim;
  l.conv_kernel = r.f.Int("mamba_d_conv", 1, 1024);
  l.conv_channels = heads * head_dim + 2 * groups * state;
  return l;
}

void GranitePattern(Reader& r) {
  if (!r.had_layer_types)
    r.f.Fail("layer_types", "is missing (it names mamba and attention layers)");
}

void GraniteFinish(Reader& r) {  // RoPE only with position_embedding_type "rope"
  const std::string pe = r.f.Str("position_embedding_type", "");
  if (pe == "rope") return;
  for (auto& l : r.m.layers) {
    if (HasKvCache(l.kind)) l.rope = false;
  }
  if (pe.empty()) {
    r.m.assumptions.push_back(r.f.Name("position_embedding_type") +
                              " absent: no RoPE (GraniteMoeHybrid applies RoPE only for 'rope')");
  }
}

// ---- the rules, one per family

const std::vector<FamilyRule>& Rules() {
  static const std::vector<FamilyRule> rules = [] {
    std::vector<FamilyRule> v;
    auto add = [&v](std::vector<std::string> types, FamilyDefaults d = {}) -> FamilyRule& {
      v.push_back({});
      v.back().model_types = std::move(types);
      v.back().defaults = std::move(d);
      return v.back();
    };
    add({"gpt2"}).gpt2_names = true;
    add({"llama"});
    {
      FamilyRule& r =
          add({"llama4", "llama4_text"},
              {"Llama4TextConfig default", {{"head_dim", 128}, {"no_rope_layer_interval", 4}}});
      r.pattern = [](Reader& x) {
        x.NoRopeFromList("Llama4TextConfig default");
        if (x.had_layer_types) return;
        const int64_t chunk = x.f.OptInt("attention_chunk_size", 0, 0, kMaxTokens);
        x.types.assign(static_cast<size_t>(x.n), {TypeName::kFull});
        if (chunk == 0) return;
        for (int64_t i = 0; i < x.n; ++i) {
          if (x.rope_flags[i]) x.types[i] = {TypeName::kChunked};  // NoPE layers stay global
        }
      };
    }
    add({"mistral", "mixtral", "ministral", "ministral3", "mistral3"}).pattern = AllSlidingIfWindow;
    add({"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"},
        {"Qwen2Config default", {{"max_window_layers", 28}}})
        .pattern = [](Reader& x) {  // windows only with use_sliding_window, from max_window_layers
      if (!x.types.empty()) return;
      x.types.assign(static_cast<size_t>(x.n), {TypeName::kFull});
      if (!x.f.Bool("use_sliding_window", false) || !x.f.Has("sliding_window")) return;
      const int64_t from = x.f.Int("max_window_layers", 0, kMaxLayers);
      for (int64_t i = from; i < x.n; ++i) x.types[i] = {TypeName::kSliding};
    };
    {
      FamilyRule& r =
          add({"qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"},
              {"Qwen3NextConfig default",
               {{"full_attention_interval", 4},
                {"linear_conv_kernel_dim", 4},
                {"partial_rotary_factor", 0.25}}});
      r.pattern = [](Reader& x) {  // 3 Gated DeltaNet then 1 gated full attention
        if (x.had_layer_types) return;
        const int64_t k = x.f.Int("full_attention_interval", 1, kMaxLayers);
        x.types = EveryNth(x.n, k, TypeName::kLinear, TypeName::kFull);
      };
      r.linear = GatedDeltaNet;
      r.finish = [](Reader& x) {
        for (auto& l : x.m.layers) {
          if (l.kind == LayerKind::kFull) l.output_gate = x.f.Bool("attn_output_gate", true);
        }
      };
    }
    add({"gemma"}, {"GemmaConfig default",
                    {{"hidden_size", 3072},
                     {"num_hidden_layers", 28},
                     {"num_attention_heads", 16},
                     {"num_key_value_heads", 16},
                     {"head_dim", 256},
                     {"max_position_embeddings", 8192}}});
    add({"gemma2"}, {"Gemma2Config default",
                     {{"hidden_size", 2304},
                      {"num_hidden_layers", 26},
                      {"num_attention_heads", 8},
                      {"num_key_value_heads", 4},
                      {"head_dim", 256},
                      {"sliding_window", 4096},
                      {"query_pre_attn_scalar", 256},
                      {"attn_logit_softcapping", 50},
                      {"final_logit_softcapping", 30},
                      {"max_position_embeddings", 8192}}})
        .pattern = AlternateSliding;
    add({"gemma3", "gemma3_text"}, {"Gemma3TextConfig default",
                                    {{"hidden_size", 2304},
                                     {"num_hidden_layers", 26},
                                     {"num_attention_heads", 8},
                                     {"num_key_value_heads", 4},
                                     {"head_dim", 256},
                                     {"sliding_window", 4096},
                                     {"sliding_window_pattern", 6},
                                     {"query_pre_attn_scalar", 256},
                                     {"max_position_embeddings", 131072}}})
        .pattern = SlidingPattern;
    {
      FamilyRule& r = add({"gemma3n", "gemma3n_text"}, {"Gemma3nTextConfig default",
                                                        {{"hidden_size", 2048},
                                                         {"num_hidden_layers", 35},
                                                         {"num_attention_heads", 8},
                                                         {"num_key_value_heads", 2},
                                                         {"head_dim", 256},
                                                         {"sliding_window", 512},
                                                         {"num_kv_shared_layers", 15},
                                                         {"max_position_embeddings", 32768}}});
      r.pattern = [](Reader& x) {
        x.DefaultTypes(EveryNth(x.n, 5, TypeName::kSliding, TypeName::kFull),
                       "4 sliding then 1 full (Gemma3nTextConfig default)");
      };
      r.finish = ShareKvLayers;
    }
    {
      FamilyRule& r = add({"gemma4", "gemma4_text"},
                          {"Gemma4TextConfig default",
                           {{"num_kv_shared_layers", 0}, {"sliding_window_pattern", 6}}});
      r.pattern = SlidingPattern;
      r.shape = [](Reader& x) {  // full layers have their own head_dim and KV head count
        if (x.f.Has("global_head_dim")) x.global.head_dim = x.f.Int("global_head_dim");
        if (!x.f.Bool("attention_k_eq_v", false) || !x.f.Has("num_global_key_value_heads")) return;
        x.global.kv_heads = x.f.Int("num_global_key_value_heads", 1, kMaxHeads);
        if (x.global.heads % x.global.kv_heads != 0) {
          x.f.Fail("num_global_key_value_heads", "must divide num_attention_heads");
        }
        x.m.assumptions.push_back(
            "attention_k_eq_v: full layers take V from the K projection but cache K (rotated) and "
            "V (normed) apart, so both are counted");
      };
      r.finish = [](Reader& x) {
        if (x.qscale == 0) {
          for (auto& l : x.m.layers) l.query_pre_attn_scalar = 1;  // QK-norm, scores not scaled
          x.m.assumptions.push_back(
              "Gemma 4 scales scores by 1 (QK-norm instead of 1/sqrt(head_dim))");
        }
        ShareKv(x.f, &x.m);
      };
    }
    {
      FamilyRule& r = add({"gpt_oss"}, {"GptOssConfig default",
                                        {{"hidden_size", 2880},
                                         {"num_hidden_layers", 36},
                                         {"num_attention_heads", 64},
                                         {"num_key_value_heads", 8},
                                         {"head_dim", 64},
                                         {"sliding_window", 128},
                                         {"max_position_embeddings", 131072}}});
      r.pattern = AlternateSliding;
      r.finish = [](Reader& x) {  // learned sink logits in every attention layer
        for (auto& l : x.m.layers) l.sinks = HasKvCache(l.kind);
      };
    }
    add({"olmo", "olmo2", "olmoe"});
    add({"olmo3"}, {"Olmo3Config default", {{"sliding_window", 4096}}}).pattern = [](Reader& x) {
      x.DefaultTypes(EveryNth(x.n, 4, TypeName::kSliding, TypeName::kFull),
                     "3 sliding then 1 full (Olmo3Config default)");
    };
    add({"phi3", "phimoe"}).pattern = AllSlidingIfWindow;
    add({"smollm3"}, {"SmolLM3Config default", {{"no_rope_layer_interval", 4}}}).pattern =
        [](Reader& x) { x.NoRopeFromList("SmolLM3Config default"); };
    {
      FamilyRule& r = add({"deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2", "glm_moe_dsa"});
      r.claims = [](const Fields& f) { return f.Has("kv_lora_rank"); };
      r.read_all = ReadDeepseek;
      r.indexer = true;
    }
    {
      FamilyRule& r =
          add({"minimax", "minimax_m1", "minimaxm1", "minimax_text_01", "minimaxtext01"});
      r.pattern = AttnTypeList;
      r.linear = Lightning;
    }
    {
      FamilyRule& r = add({"minimax_m2", "minimaxm2"});
      r.pattern = [](Reader& x) {
        if (x.f.Has("attn_type_list")) AttnTypeList(x);
      };
      r.linear = Lightning;
    }
    add({"glm", "glm4", "glm4_moe"}, {"Glm4Config default", {{"partial_rotary_factor", 0.5}}});
    {
      FamilyRule& r = add(
          {"nemotron_h"},
          {"NemotronHConfig default",
           {{"conv_kernel", 4}, {"n_groups", 8}, {"ssm_state_size", 128}, {"mamba_head_dim", 64}}});
      r.claims = [](const Fields& f) { return f.Has("hybrid_override_pattern"); };
      r.read_all = ReadNemotron;
      r.state_space = true;
    }
    {
      FamilyRule& r = add({"granitemoehybrid"}, {"GraniteMoeHybridConfig default",
                                                 {{"mamba_n_heads", 128},
                                                  {"mamba_n_groups", 1},
                                                  {"mamba_d_state", 256},
                                                  {"mamba_d_conv", 4},
                                                  {"mamba_expand", 2}}});
      r.pattern = GranitePattern;
      r.mamba = GraniteMamba;
      r.finish = GraniteFinish;
      r.state_space = true;
    }
    {
      FamilyRule& r = add({"exaone4"});
      r.pattern = [](Reader& x) {
        if (!x.had_layer_types && x.f.Has("sliding_window_pattern") && x.f.Has("sliding_window")) {
          x.types = SlidingPatternField(x.f, x.n);
        }
      };
      r.finish = NoPeGlobal;
    }
    {
      FamilyRule& r = add({"cohere2"}, {"Cohere2Config default",
                                        {{"sliding_window", 4096}, {"sliding_window_pattern", 4}}});
      r.pattern = SlidingPattern;
      r.finish = NoPeGlobal;
    }
    // Kimi Linear is claimed before DeepSeek for an unknown model_type (both have kv_lora_rank).
    {
      FamilyRule& r = add({"kimi_linear"});
      r.claims = [](const Fields& f) {
        return f.Has("linear_attn_config") && f.Has("kv_lora_rank");
      };
      r.read_all = ReadKimi;
    }
    return v;
  }();
  return rules;
}

// A config.json whose model_type no rule lists: a standard decoder, with MiniMax's
// attn_type_list and one window for every layer when sliding_window is given.
const FamilyRule& GenericRule() {
  static const FamilyRule rule = [] {
    FamilyRule r;
    r.pattern = [](Reader& x) {
      if (x.f.Has("attn_type_list")) AttnTypeList(x);
      AllSlidingIfWindow(x);
    };
    return r;
  }();
  return rule;
}

// The rule for a model_type (case-insensitive: remote-code models write "MiniMaxM1"); for an
// unknown one, the first rule that claims the fields (Nemotron-H, Kimi Linear, DeepSeek), else
// the generic decoder. *known: whether a rule lists the model_type.
const FamilyRule& RuleFor(const std::string& model_type, const json& text, bool* known) {
  std::string key = model_type;
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& r : Rules()) {
    if (std::find(r.model_types.begin(), r.model_types.end(), key) != r.model_types.end()) {
      *known = true;
      return r;
    }
  }
  *known = false;
  ModelConfig scratch;
  const Fields probe(text, "", "", nullptr, &scratch);
  for (const char* name : {"nemotron_h", "kimi_linear", "deepseek_v3"}) {
    for (const auto& r : Rules()) {
      const bool lists =
          std::find(r.model_types.begin(), r.model_types.end(), name) != r.model_types.end();
      if (lists && r.claims != nullptr && r.claims(probe)) return r;
    }
  }
  return GenericRule();
}

// ---------------------------------------------------------------- what the reader refuses

bool KnownRopeType(const std::string& t) {
  static const std::set<std::string> kKnown = {
      "default", "linear", "dynamic", "yarn", "longrope", "llama3", "su", "mrope", "proportional"};
  return kKnown.count(t) > 0;
}

// Fields that change attention (or what a layer keeps) but that no rule for this family reads:
// refused unless ReadOptions::allow_unknown.
// Indexer fields count as read only for a family listed by model_type.
std::vector<std::string> UnmodelledFields(const Fields& f, const FamilyRule& rule, bool known) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& s) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  // Compressed / shared KV of DeepSeek V4 and its derivatives.
  if (f.Has("compress_ratios")) {
    const json& c = f.At("compress_ratios");
    bool any = !c.is_array();
    if (c.is_array()) {
      for (const auto& v : c) any |= !(v.is_number() && v.get<double>() == 0);
    }
    if (any) add(f.Name("compress_ratios"));
  }
  for (const char* key : {"kv_source_layers", "kv_source_layer_ids", "index_source_layers",
                          "index_source_layer_ids"}) {
    if (f.Has(key)) add(f.Name(key));
  }
  if (!rule.indexer || !known) {
    for (const char* key : {"index_topk", "index_n_heads", "index_head_dim"}) {
      if (f.Has(key)) add(f.Name(key));
    }
  }
  if (!rule.state_space) {
    for (const char* key : {"mamba_d_ssm", "mamba_n_heads", "mamba_num_heads", "mamba_d_state",
                            "ssm_state_size", "mamba_d_head", "mamba_head_dim"}) {
      if (f.Has(key)) add(f.Name(key));
    }
  }
  // Per-layer-type shapes and hybrid layouts of families without a rule (MiMo-V2's
  // hybrid_layer_pattern and swa_* heads, Jamba / Falcon-H1 attention layer lists), and a value
  // head dim apart from head_dim in a standard decoder.
  for (const char* key : {"hybrid_layer_pattern", "swa_num_attention_heads",
                          "swa_num_key_value_heads", "swa_head_dim", "swa_v_head_dim",
                          "attn_layer_period", "attn_layer_offset", "attn_layer_indices"}) {
    if (f.Has(key)) add(f.Name(key));
  }
  if (rule.read_all == nullptr && f.Has("v_head_dim")) add(f.Name("v_head_dim"));
  // RoPE scaling types (the per-layer-type objects of rope_parameters included).
  auto rope_type = [&](const json& o, const std::string& name) {
    if (!o.is_object()) return;
    for (const char* k : {"rope_type", "type"}) {
      const auto it = o.find(k);
      if (it != o.end() && it->is_string() && !KnownRopeType(it->get<std::string>())) {
        add(f.Name(name + "." + k) + " '" + it->get<std::string>() + "'");
      }
    }
  };
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!f.Has(key)) continue;
    const json& o = f.At(key);
    rope_type(o, key);
    if (o.is_object()) {
      for (const auto& [sub, v] : o.items()) {
        if (v.is_object()) rope_type(v, std::string(key) + "." + sub);
      }
    }
  }
  // layer_types entries nothing reads (the table's kinds, linear_attention, this family's mamba).
  if (f.Has("layer_types") && f.At("layer_types").is_array()) {
    for (const auto& e : f.At("layer_types")) {
      if (!e.is_string()) continue;
      const std::string s = e.get<std::string>();
      const LayerType t = ParseTypeName(f, "layer_types", 0, e);
      if (t.type == TypeName::kUnknown || (t.type == TypeName::kMamba && rule.mamba == nullptr)) {
        add(f.Name("layer_types") + " entry '" + s + "'");
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- the reader

ModelConfig Parse(const json& root, const std::string& source, int replaced_tokens,
                  const ReadOptions& options) {
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
    if (it == root.end() || it->is_null()) continue;
    if (!it->is_object()) {
      throw Error(source + ": " + key + " must be an object, got " + Describe(*it));
    }
    text = &*it;
    prefix = std::string(key) + ".";
    break;
  }
  std::string model_type;
  if (const auto it = text->find("model_type"); it != text->end() && it->is_string()) {
    model_type = it->get<std::string>();
  } else if (const auto top = root.find("model_type"); top != root.end() && top->is_string()) {
    model_type = top->get<std::string>();
  }
  m.model_type = model_type;
  bool known = false;
  const FamilyRule& rule = RuleFor(model_type, *text, &known);
  const Fields f(*text, prefix, source, &rule.defaults, &m);

  m.unmodelled = UnmodelledFields(f, rule, known);
  if (!m.unmodelled.empty()) {
    std::string list;
    for (const auto& u : m.unmodelled) list += (list.empty() ? "" : ", ") + u;
    const bool one = m.unmodelled.size() == 1;
    if (!options.allow_unknown) {
      throw Error(source + ": " + list + (one ? " changes" : " change") +
                  " attention in a way attnkit does not model (model_type '" + model_type +
                  "'); read it with allow_unknown (CLI: --allow-unknown) for an estimate that "
                  "ignores " +
                  (one ? "it" : "them"));
    }
    m.warnings.push_back("estimate: read with allow_unknown; every figure ignores " + list);
  }
  if (!known) {
    m.warnings.push_back(
        "unknown model_type '" + model_type +
        "': read as a standard decoder from num_hidden_layers, hidden_size, num_attention_heads, "
        "num_key_value_heads, head_dim, layer_types and sliding_window (plus MLA, indexer and "
        "linear-attention fields where present); check the result");
  }

  Reader r(f, m, source, rule);
  r.gpt2 = rule.gpt2_names ||
           (!known && rule.model_types.empty() && f.Has("n_layer") && !f.Has("num_hidden_layers"));
  const std::string heads_key = r.gpt2 ? "n_head" : "num_attention_heads";
  m.hidden_size = f.Int(r.gpt2 ? "n_embd" : "hidden_size", 1, int64_t{1} << 20);
  m.max_position_embeddings =
      f.OptInt(r.gpt2 ? "n_positions" : "max_position_embeddings", 0, 0, kMaxTokens);
  m.final_logit_softcap = f.Double("final_logit_softcapping", 0, 0, 1e9);
  ReadMtp(f, &m);
  if (rule.read_all != nullptr) {
    rule.read_all(r);
    return m;
  }
  r.n = f.Int(r.gpt2 ? "n_layer" : "num_hidden_layers", 1, kMaxLayers);

  const json* rope_params = f.Has("rope_parameters") ? f.Object("rope_parameters") : nullptr;
  if (rope_params == nullptr && f.Has("rope_scaling") && f.At("rope_scaling").is_object()) {
    rope_params = &f.At("rope_scaling");
  }
  // Gemma 4 keeps one rope_parameters object per layer type; the plain fraction lives there.
  const bool rope_per_type = rope_params != nullptr && rope_params->contains("full_attention") &&
                             (*rope_params)["full_attention"].is_object();
  double rope_fraction = rope_per_type ? 1.0 : RopeFraction(f, rope_params);
  r.local = ReadAttentionShape(f, m.hidden_size, heads_key.c_str(), "head_dim");
  if (f.Has("rotary_dim")) {
    const int64_t rd = f.Int("rotary_dim", 0, r.local.head_dim);
    rope_fraction = static_cast<double>(rd) / static_cast<double>(r.local.head_dim);
  }

  // ---- the layer pattern
  r.types = LayerTypesField(f, r.n);
  r.had_layer_types = !r.types.empty();
  r.rope_flags.assign(static_cast<size_t>(r.n), 1);
  if (rule.pattern != nullptr) rule.pattern(r);
  if (r.types.empty()) r.types.assign(static_cast<size_t>(r.n), {TypeName::kFull});

  // ---- windows and per-family shapes
  const bool any_registered = r.Any(TypeName::kRegistered);
  const int64_t window = r.Any(TypeName::kSliding) ? f.Int("sliding_window", 1, kMaxTokens)
                         : any_registered          ? f.OptInt("sliding_window", 0, 0, kMaxTokens)
                                                   : 0;
  const int64_t chunk =
      r.Any(TypeName::kChunked) ? f.Int("attention_chunk_size", 1, kMaxTokens) : 0;
  r.qscale = f.Double("query_pre_attn_scalar", 0, 0, 1e9);
  const double softcap = f.Double("attn_logit_softcapping", 0, 0, 1e9);
  r.global = r.local;
  r.global_rope = r.local_rope = rope_fraction;
  if (rule.shape != nullptr) rule.shape(r);
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
    r.global_rope = frac("full_attention");
    r.local_rope = frac("sliding_attention");
  }
  LayerSpec linear, mamba;
  if (r.Any(TypeName::kLinear)) linear = rule.linear != nullptr ? rule.linear(r) : AnyLinear(r);
  if (r.Any(TypeName::kMamba) && rule.mamba != nullptr) mamba = rule.mamba(r);

  // ---- one layer per type
  for (int64_t i = 0; i < r.n; ++i) {
    LayerSpec l;
    const LayerType& t = r.types[static_cast<size_t>(i)];
    switch (t.type) {
      case TypeName::kFull:
        l = SoftmaxLayer(LayerKind::kFull, r.global, 0, r.global_rope);
        break;
      case TypeName::kSliding:
        l = SoftmaxLayer(LayerKind::kSliding, r.local, window, r.local_rope);
        break;
      case TypeName::kChunked:
        l = SoftmaxLayer(LayerKind::kChunked, r.local, chunk, r.local_rope);
        break;
      case TypeName::kLinear:
        l = linear;
        break;
      case TypeName::kMamba:
        if (rule.mamba != nullptr) {
          l = mamba;
          break;
        }
        l.kind = LayerKind::kMlp;  // unmodelled (allowed): counted as no attention
        break;
      case TypeName::kRegistered: {
        l = SoftmaxLayer(LayerKind::kFull, r.local, window, r.local_rope);
        l.kind = t.kind;
        const LayerKindInfo& info = KindInfo(t.kind);
        l.window = info.window_label.empty() ? 0 : window;
        if (info.read != nullptr) l = info.read(f, l);
        l.kind = t.kind;
        break;
      }
      case TypeName::kMlp:
      case TypeName::kUnknown:  // unmodelled (allowed): counted as no attention
        l.kind = LayerKind::kMlp;
        break;
    }
    if (HasKvCache(l.kind)) {
      if (!r.rope_flags[i]) l.rope = false;
      l.softcap = softcap;
      l.query_pre_attn_scalar = r.qscale;
    }
    if (r.gpt2) l.rope = false;
    m.layers.push_back(l);
  }
  if (r.gpt2) m.assumptions.push_back("GPT-2 uses learned absolute position embeddings (no RoPE)");
  if (rule.finish != nullptr) rule.finish(r);
  return m;
}

}  // namespace

ModelConfig ReadHfConfigText(std::string_view json_text, const std::string& source,
                             const ReadOptions& options) {
  if (const size_t nul = json_text.find('\0'); nul != std::string_view::npos) {
    throw Error(source + ": the text holds a NUL byte at offset " + std::to_string(nul) +
                " (a config.json is UTF-8 text)");
  }
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
    return Parse(root, source, replaced, options);
  } catch (const json::exception& e) {
    throw Error(source + ": unexpected JSON content: " + e.what());
  }
}

ModelConfig ReadHfConfig(const std::string& path, const ReadOptions& options) {
  std::ifstream in(path, std::ios::binary);
  Require(in.good(), "ReadHfConfig: cannot open '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  Require(!in.bad(), "ReadHfConfig: cannot read '", path, "'");
  ModelConfig m = ReadHfConfigText(ss.str(), path, options);
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
