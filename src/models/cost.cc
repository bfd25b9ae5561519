// The cost model: KV-cache and state bytes and attention FLOPs per layer kind (docs/models.md).
#include "attnkit/models/cost.h"

#include <algorithm>
#include <cstdio>

#include "attnkit/core/error.h"
#include "attnkit/models/kinds.h"
#include "nlohmann/json.hpp"

namespace attnkit::models {

int64_t DtypeBytes(CacheDtype dtype) {
  switch (dtype) {
    case CacheDtype::kF32:
      return 4;
    case CacheDtype::kBf16:
    case CacheDtype::kF16:
      return 2;
    case CacheDtype::kFp8:
    case CacheDtype::kInt8:
      return 1;
  }
  return 0;
}

std::string_view DtypeName(CacheDtype dtype) {
  switch (dtype) {
    case CacheDtype::kF32:
      return "f32";
    case CacheDtype::kBf16:
      return "bf16";
    case CacheDtype::kF16:
      return "f16";
    case CacheDtype::kFp8:
      return "fp8";
    case CacheDtype::kInt8:
      return "int8";
  }
  return "?";
}

CacheDtype ParseCacheDtype(std::string_view name) {
  if (name == "f32" || name == "fp32" || name == "float32") return CacheDtype::kF32;
  if (name == "bf16" || name == "bfloat16") return CacheDtype::kBf16;
  if (name == "f16" || name == "fp16" || name == "float16") return CacheDtype::kF16;
  if (name == "fp8" || name == "f8" || name == "float8") return CacheDtype::kFp8;
  if (name == "int8" || name == "i8") return CacheDtype::kInt8;
  throw Error(
      detail::StrCat("dtype: unknown cache dtype '", name, "' (f32, bf16, f16, fp8, int8)"));
}

int64_t CostMul(int64_t a, int64_t b) {
  int64_t r = 0;
  Require(!__builtin_mul_overflow(a, b, &r), "Cost: byte count overflows 64 bits (", a, " * ", b,
          "); use a smaller context or batch");
  return r;
}
int64_t CostAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  Require(!__builtin_add_overflow(a, b, &r), "Cost: byte count overflows 64 bits (", a, " + ", b,
          ")");
  return r;
}

double CausalKeySum(int64_t L) { return 0.5 * static_cast<double>(L) * static_cast<double>(L + 1); }
double WindowKeySum(int64_t L, int64_t w) {
  if (L <= w) return CausalKeySum(L);
  return CausalKeySum(w) + static_cast<double>(L - w) * static_cast<double>(w);
}
double ChunkKeySum(int64_t L, int64_t c) {
  const int64_t full = L / c, rest = L % c;
  return static_cast<double>(full) * CausalKeySum(c) + CausalKeySum(rest);
}

void SoftmaxAttentionCost(const LayerSpec& l, const CostQuery& q, int64_t cached_tokens,
                          int64_t decode_keys, double prefill_keys, LayerCost* c) {
  const int64_t elems = CostMul(l.num_heads_kv, CostAdd(l.head_dim_qk, l.head_dim_v));
  c->kv_bytes_per_token = c->shared ? 0 : CostMul(elems, DtypeBytes(q.cache_dtype));
  c->cached_tokens = cached_tokens;
  const double per_key =
      2.0 * static_cast<double>(l.num_heads_q) * static_cast<double>(l.head_dim_qk + l.head_dim_v);
  c->decode_flops = per_key * static_cast<double>(decode_keys);
  c->prefill_flops = per_key * prefill_keys;
}

namespace {

// A ModelConfig may be built by hand: reject what the formulas cannot take.
void CheckLayer(const LayerSpec& l, size_t i) {
  const int64_t fields[] = {
      l.num_heads_q,    l.num_heads_kv, l.head_dim_qk,      l.head_dim_v,       l.window,
      l.q_lora_rank,    l.kv_lora_rank, l.qk_nope_head_dim, l.qk_rope_head_dim, l.index_num_heads,
      l.index_head_dim, l.index_topk,   l.state_heads,      l.state_dim_k,      l.state_dim_v,
      l.conv_channels,  l.conv_kernel};
  for (int64_t v : fields) {
    Require(v >= 0, "Cost: layer ", i, " (", LayerKindName(l.kind), ") has a negative size field");
  }
  if (const auto check = KindInfo(l.kind).check) check(l, i);
  Require(l.kv_source < static_cast<int64_t>(i), "Cost: layer ", i, " kv_source (", l.kv_source,
          ") must name an earlier layer");
}

}  // namespace

CostReport Cost(const ModelConfig& config, const CostQuery& query) {
  Require(query.context >= 1, "Cost: context must be >= 1, got ", query.context);
  Require(query.batch >= 1, "Cost: batch must be >= 1, got ", query.batch);
  Require(!config.layers.empty(), "Cost: model '", config.name, "' has no layers");
  CostReport r;
  r.query = query;
  for (size_t i = 0; i < config.layers.size(); ++i) {
    const LayerSpec& l = config.layers[i];
    CheckLayer(l, i);
    LayerCost c;
    c.index = static_cast<int>(i);
    c.kind = l.kind;
    c.window = l.window;
    c.shared = l.kv_source >= 0;
    KindInfo(l.kind).cost(l, query, &c);
    c.kv_bytes = CostMul(c.kv_bytes_per_token, c.cached_tokens);
    c.indexer_bytes = CostMul(c.indexer_bytes_per_token, c.cached_tokens);
    r.kv_bytes_per_token = CostAdd(r.kv_bytes_per_token, c.kv_bytes_per_token);
    r.indexer_bytes_per_token = CostAdd(r.indexer_bytes_per_token, c.indexer_bytes_per_token);
    r.kv_bytes_total = CostAdd(r.kv_bytes_total, c.kv_bytes);
    r.indexer_bytes_total = CostAdd(r.indexer_bytes_total, c.indexer_bytes);
    r.state_bytes = CostAdd(r.state_bytes, CostAdd(c.state_bytes, c.conv_state_bytes));
    r.conv_state_bytes = CostAdd(r.conv_state_bytes, c.conv_state_bytes);
    r.decode_flops += c.decode_flops;
    r.prefill_flops += c.prefill_flops;
    r.layers.push_back(c);
  }
  r.kv_bytes_total = CostMul(r.kv_bytes_total, query.batch);
  r.indexer_bytes_total = CostMul(r.indexer_bytes_total, query.batch);
  r.state_bytes_total = CostMul(r.state_bytes, query.batch);
  r.total_bytes = CostAdd(CostAdd(r.kv_bytes_total, r.indexer_bytes_total), r.state_bytes_total);
  return r;
}

std::string CostReportToJson(const ModelConfig& config, const CostReport& r, bool include_layers) {
  nlohmann::ordered_json j;
  j["model"] = config.name;
  j["model_type"] = config.model_type;
  j["source"] = config.source;
  j["context"] = r.query.context;
  j["batch"] = r.query.batch;
  j["dtype"] = std::string(DtypeName(r.query.cache_dtype));
  j["state_dtype"] = std::string(DtypeName(r.query.state_dtype));
  j["num_layers"] = config.layers.size();
  j["pattern"] = config.Pattern();
  j["summary"] = config.Summary();
  j["kv_bytes_per_token"] = r.kv_bytes_per_token;
  j["kv_bytes_total"] = r.kv_bytes_total;
  j["indexer_bytes_per_token"] = r.indexer_bytes_per_token;
  j["indexer_bytes_total"] = r.indexer_bytes_total;
  j["state_bytes"] = r.state_bytes;
  j["conv_state_bytes"] = r.conv_state_bytes;
  j["state_bytes_total"] = r.state_bytes_total;
  j["total_bytes"] = r.total_bytes;
  j["decode_flops_per_token"] = r.decode_flops;
  j["prefill_flops"] = r.prefill_flops;
  j["mtp_layers_left_out"] = config.mtp_layers;
  j["assumptions"] = config.assumptions;
  j["warnings"] = config.warnings;
  if (config.IsEstimate()) {  // read with allow_unknown: the figures ignore these fields
    j["estimate"] = true;
    j["unmodelled"] = config.unmodelled;
  }
  if (include_layers) {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (const auto& c : r.layers) {
      nlohmann::ordered_json o;
      o["index"] = c.index;
      o["kind"] = std::string(LayerKindName(c.kind));
      o["window"] = c.window;
      o["shared_kv"] = c.shared;
      o["bytes_per_token"] = c.kv_bytes_per_token;
      o["cached_tokens"] = c.cached_tokens;
      o["kv_bytes"] = c.kv_bytes;
      o["indexer_bytes_per_token"] = c.indexer_bytes_per_token;
      o["state_bytes"] = c.state_bytes;
      o["conv_state_bytes"] = c.conv_state_bytes;
      o["decode_flops"] = c.decode_flops;
      o["prefill_flops"] = c.prefill_flops;
      layers.push_back(std::move(o));
    }
    j["layers"] = std::move(layers);
  }
  return j.dump();
}

std::string GroupDigits(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return value < 0 ? "-" + out : out;
}

std::string HumanBytes(double bytes) {
  static const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 6) {
    bytes /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, kUnits[u]);
  return buf;
}

std::string HumanTokens(int64_t tokens) {
  const int64_t m = 1024 * 1024;
  if (tokens >= m && tokens % m == 0) return std::to_string(tokens / m) + "m";
  if (tokens >= 1024 && tokens % 1024 == 0) return std::to_string(tokens / 1024) + "k";
  return std::to_string(tokens);
}

}  // namespace attnkit::models
