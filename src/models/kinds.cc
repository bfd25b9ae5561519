// The layer-kind table (models/kinds.h): the built-in rows, and the registry that holds them
// together with kinds registered at run time.
#include "attnkit/models/kinds.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <mutex>

#include "attnkit/core/error.h"
#include "attnkit/models/build.h"
#include "attnkit/models/cost.h"

namespace attnkit::models {
namespace {

// ---------------------------------------------------------------- checks

void NeedWindow(const LayerSpec& l, size_t i) {
  Require(l.window >= 1, "Cost: layer ", i, " (", LayerKindName(l.kind), ") needs window >= 1");
}

void NeedTopK(const LayerSpec& l, size_t i) {
  Require(l.index_topk >= 1, "Cost: layer ", i, " (dsa) needs index_topk >= 1");
}

// ---------------------------------------------------------------- cost formulas (docs/models.md)

void FullCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  const int64_t L = q.context;
  SoftmaxAttentionCost(l, q, L, L, CausalKeySum(L), c);
}

void SlidingCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  const int64_t L = q.context;
  SoftmaxAttentionCost(l, q, std::min(L, l.window), std::min(L, l.window),
                       WindowKeySum(L, l.window), c);
}

void ChunkedCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  const int64_t L = q.context;
  SoftmaxAttentionCost(l, q, std::min(L, l.window), (L - 1) % l.window + 1,
                       ChunkKeySum(L, l.window), c);
}

// MLA keeps the latent (kv_lora_rank) and the shared RoPE key per token. Decode runs absorbed
// (scores over latent + RoPE keys, values in the latent, plus absorbing W_UK into the query and
// W_UV into the output once a token); prefill runs decompressed, as ordinary attention with
// head_dim_qk / head_dim_v. DSA adds the indexer's keys and scores and attends to top-k keys.
void LatentCost(const LayerSpec& l, const CostQuery& q, int64_t decode_keys, double prefill_keys,
                LayerCost* c) {
  const int64_t L = q.context;
  const int64_t cb = DtypeBytes(q.cache_dtype);
  c->kv_bytes_per_token = c->shared ? 0 : CostMul(CostAdd(l.kv_lora_rank, l.qk_rope_head_dim), cb);
  c->cached_tokens = L;
  const double hq = static_cast<double>(l.num_heads_q);
  const double r_kv = static_cast<double>(l.kv_lora_rank);
  const double absorbed_per_key = 2.0 * hq * (2.0 * r_kv + static_cast<double>(l.qk_rope_head_dim));
  const double absorb = 2.0 * hq * r_kv * static_cast<double>(l.qk_nope_head_dim + l.head_dim_v);
  c->decode_flops = absorbed_per_key * static_cast<double>(decode_keys) + absorb;
  c->prefill_flops = 2.0 * hq * static_cast<double>(l.head_dim_qk + l.head_dim_v) * prefill_keys;
}

void MlaCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  LatentCost(l, q, q.context, CausalKeySum(q.context), c);
}

void DsaCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  const int64_t L = q.context;
  LatentCost(l, q, std::min(L, l.index_topk), WindowKeySum(L, l.index_topk), c);
  c->indexer_bytes_per_token = c->shared ? 0 : CostMul(l.index_head_dim, DtypeBytes(q.cache_dtype));
  const double idx =
      2.0 * static_cast<double>(l.index_num_heads) * static_cast<double>(l.index_head_dim);
  c->decode_flops += idx * static_cast<double>(L);
  c->prefill_flops += idx * CausalKeySum(L);
}

// A fixed state of state_heads x state_dim_k x state_dim_v plus conv_channels x (conv_kernel - 1)
// convolution inputs. FLOPs a token: `per_entry` per state entry (delta rule: decay 1, S^T k 2,
// rank-1 update 2, read-out 2 = 7; Mamba-2 and lightning: decay, update, read-out = 5) plus the
// short convolution.
void RecurrentCost(const LayerSpec& l, const CostQuery& q, double per_entry, LayerCost* c) {
  const int64_t sb = DtypeBytes(q.state_dtype);
  c->state_bytes = CostMul(CostMul(CostMul(l.state_heads, l.state_dim_k), l.state_dim_v), sb);
  c->conv_state_bytes =
      CostMul(CostMul(l.conv_channels, std::max<int64_t>(l.conv_kernel - 1, 0)), sb);
  const double hkv = static_cast<double>(l.state_heads) * static_cast<double>(l.state_dim_k) *
                     static_cast<double>(l.state_dim_v);
  const double conv =
      2.0 * static_cast<double>(l.conv_channels) * static_cast<double>(l.conv_kernel);
  c->decode_flops = per_entry * hkv + conv;
  c->prefill_flops = c->decode_flops * static_cast<double>(q.context);
}

void DeltaRuleCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  RecurrentCost(l, q, 7.0, c);
}
void DecayCost(const LayerSpec& l, const CostQuery& q, LayerCost* c) {
  RecurrentCost(l, q, 5.0, c);
}
void NoCost(const LayerSpec&, const CostQuery&, LayerCost*) {}

// ---------------------------------------------------------------- blocks (layers/factory.h)

void PlanSoftmax(const LayerSpec& l, int64_t max_tokens, LayerPlan* p) {
  if (l.rope && l.rope_fraction != 1 && !l.output_gate) {
    p->note += (p->note.empty() ? "" : "; ") + std::string("partial RoPE (") +
               std::to_string(l.rope_fraction) + ") built with full RoPE";
  }
  if (l.head_dim_qk != l.head_dim_v) {
    p->missing = "head_dim_qk != head_dim_v";
    return;
  }
  if (l.kind == LayerKind::kSliding) {
    p->kind = l.sinks ? "sinks" : "swa";
  } else if (l.sinks) {
    p->kind = "sinks";  // gpt-oss full layers: sinks with a window as long as the cache
    p->shape.window = max_tokens;
  } else if (l.output_gate) {
    p->kind = "gated";
  } else if (l.num_heads_kv == l.num_heads_q) {
    p->kind = "mha";
  } else if (l.num_heads_kv == 1) {
    p->kind = "mqa";
  } else {
    p->kind = "gqa";
  }
}

void PlanMla(const LayerSpec& l, int64_t, LayerPlan* p) {
  if (l.qk_nope_head_dim != l.head_dim_v) {
    p->missing = "MLA block needs qk_nope_head_dim == v_head_dim";
    return;
  }
  p->kind = "mla";
  p->shape.head_dim = l.qk_nope_head_dim;
  p->shape.num_heads_kv = l.num_heads_q;
  p->shape.q_lora_rank = l.q_lora_rank;
  p->shape.kv_lora_rank = l.kv_lora_rank;
  p->shape.rope_head_dim = l.qk_rope_head_dim;
}

// ---------------------------------------------------------------- shape column of `attnkit kv`

std::string Format(const char* fmt, long long a, long long b, long long c, long long d = 0,
                   long long e = 0) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), fmt, a, b, c, d, e);
  return buf;
}

std::string DescribeLatent(const LayerSpec& l) {
  return Format("heads %lld, latent %lld + rope %lld", l.num_heads_q, l.kv_lora_rank,
                l.qk_rope_head_dim);
}

std::string DescribeState(const LayerSpec& l) {
  return Format("state %lld x %lld x %lld, conv %lld x %lld", l.state_heads, l.state_dim_k,
                l.state_dim_v, l.conv_channels, l.conv_kernel);
}

// ---------------------------------------------------------------- the built-in rows

LayerKindInfo Row(std::string name, char pattern, std::string label, std::string color,
                  LayerMemory memory, std::string guide_section,
                  void (*cost)(const LayerSpec&, const CostQuery&, LayerCost*)) {
  LayerKindInfo r;
  r.name = std::move(name);
  r.pattern = pattern;
  r.label = std::move(label);
  r.color = std::move(color);
  r.memory = memory;
  r.guide_section = std::move(guide_section);
  r.cost = cost;
  return r;
}

// Built-in kinds are their enumerator's index in this table.
std::deque<LayerKindInfo> BuiltinRows() {
  std::deque<LayerKindInfo> rows;
  auto add = [&rows](LayerKind kind, const LayerKindInfo& row) {
    if (rows.size() != static_cast<size_t>(kind)) throw Error("BuiltinRows: rows out of order");
    rows.push_back(row);
  };
  using M = LayerMemory;

  LayerKindInfo full =
      Row("full", 'F', "full attention", "#4e79a7", M::kKvCache, "heads", FullCost);
  full.layer_types = {"full_attention", "attention", "global_attention", "global"};
  full.plan = PlanSoftmax;
  full.describe = DescribeSoftmaxLayer;
  add(LayerKind::kFull, full);

  LayerKindInfo sliding =
      Row("sliding", 'S', "sliding window", "#59a14f", M::kKvCache, "window", SlidingCost);
  sliding.window_label = "window";
  sliding.layer_types = {"sliding_attention", "sliding_window", "local_attention", "local"};
  sliding.check = NeedWindow;
  sliding.plan = PlanSoftmax;
  sliding.describe = DescribeSoftmaxLayer;
  add(LayerKind::kSliding, sliding);

  LayerKindInfo chunked =
      Row("chunked", 'C', "chunked local", "#8cd17d", M::kKvCache, "window", ChunkedCost);
  chunked.window_label = "chunk";
  chunked.layer_types = {"chunked_attention"};
  chunked.check = NeedWindow;
  chunked.no_block = "chunked-local attention has no block kind yet";
  chunked.describe = DescribeSoftmaxLayer;
  add(LayerKind::kChunked, chunked);

  LayerKindInfo mla = Row("mla", 'M', "MLA", "#e15759", M::kKvCache, "mla", MlaCost);
  mla.plan = PlanMla;
  mla.describe = DescribeLatent;
  add(LayerKind::kMla, mla);

  LayerKindInfo dsa =
      Row("dsa", 'D', "DSA (MLA + indexer)", "#b07aa1", M::kKvCache, "dsa", DsaCost);
  dsa.check = NeedTopK;
  dsa.no_block = "DSA (MLA + indexer) has no block kind yet";
  dsa.describe = DescribeLatent;
  add(LayerKind::kDsa, dsa);

  LayerKindInfo gdn =
      Row("gated_deltanet", 'G', "Gated DeltaNet", "#f28e2b", M::kState, "delta", DeltaRuleCost);
  // TODO: gated_deltanet and kda have factory kinds now; map their q/k head counts.
  gdn.describe = DescribeState;
  add(LayerKind::kGatedDeltaNet, gdn);

  LayerKindInfo kda =
      Row("kda", 'K', "Kimi Delta Attention", "#edc948", M::kState, "delta", DeltaRuleCost);
  kda.describe = DescribeState;
  add(LayerKind::kKda, kda);

  LayerKindInfo mamba = Row("mamba2", 'B', "Mamba-2", "#76b7b2", M::kState, "hybrid", DecayCost);
  mamba.layer_types = {"mamba", "mamba2"};
  mamba.describe = DescribeState;
  add(LayerKind::kMamba2, mamba);

  LayerKindInfo lightning =
      Row("lightning", 'L', "lightning (linear)", "#ff9da7", M::kState, "linear", DecayCost);
  lightning.describe = DescribeState;
  add(LayerKind::kLightning, lightning);

  LayerKindInfo mlp = Row("mlp", '-', "MLP only", "#d3d3d3", M::kNone, "", NoCost);
  mlp.no_block = "MLP-only layer (no attention block)";
  add(LayerKind::kMlp, mlp);
  return rows;
}

constexpr int kFirstRegistered = 100;  // ids of registered kinds start here

struct Registry {
  std::mutex mu;
  std::deque<LayerKindInfo> builtin = BuiltinRows();  // index = enumerator value
  std::deque<LayerKindInfo> registered;               // index = id - kFirstRegistered
};

Registry& Reg() {
  static Registry* r = new Registry;  // never destroyed: rows outlive every static user
  return *r;
}

}  // namespace

std::string DescribeSoftmaxLayer(const LayerSpec& l) {
  return Format("q %lld / kv %lld heads x %lld", l.num_heads_q, l.num_heads_kv, l.head_dim_qk) +
         (l.rope ? "" : ", NoPE");
}

const LayerKindInfo& KindInfo(LayerKind kind) {
  Registry& r = Reg();
  const int id = static_cast<int>(kind);
  std::lock_guard<std::mutex> lock(r.mu);
  if (id >= 0 && id < static_cast<int>(r.builtin.size())) return r.builtin[static_cast<size_t>(id)];
  const int j = id - kFirstRegistered;
  if (j >= 0 && j < static_cast<int>(r.registered.size())) {
    return r.registered[static_cast<size_t>(j)];
  }
  throw Error(detail::StrCat("KindInfo: ", id, " names no layer kind"));
}

std::vector<LayerKind> AllLayerKinds() {
  Registry& r = Reg();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<LayerKind> out;
  for (size_t i = 0; i < r.builtin.size(); ++i) out.push_back(static_cast<LayerKind>(i));
  for (size_t i = 0; i < r.registered.size(); ++i) {
    out.push_back(static_cast<LayerKind>(kFirstRegistered + static_cast<int>(i)));
  }
  return out;
}

LayerKind RegisterLayerKind(LayerKindInfo info) {
  Require(!info.name.empty(), "RegisterLayerKind: the row has no name");
  Require(info.cost != nullptr, "RegisterLayerKind: kind '", info.name, "' has no cost formula");
  Registry& r = Reg();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto* rows : {&r.builtin, &r.registered}) {
    for (const auto& row : *rows) {
      Require(row.name != info.name, "RegisterLayerKind: kind '", info.name,
              "' is already registered");
      Require(row.pattern != info.pattern, "RegisterLayerKind: kind '", info.name,
              "': pattern character '", std::string(1, info.pattern), "' is taken by '", row.name,
              "'");
      for (const auto& t : info.layer_types) {
        Require(
            std::find(row.layer_types.begin(), row.layer_types.end(), t) == row.layer_types.end(),
            "RegisterLayerKind: kind '", info.name, "': layer type '", t, "' is taken by '",
            row.name, "'");
      }
    }
  }
  r.registered.push_back(std::move(info));
  return static_cast<LayerKind>(kFirstRegistered + static_cast<int>(r.registered.size()) - 1);
}

const LayerKindInfo* FindLayerKindByType(std::string_view layer_type, LayerKind* kind) {
  Registry& r = Reg();
  std::lock_guard<std::mutex> lock(r.mu);
  auto find = [&](const std::deque<LayerKindInfo>& rows, int first) -> const LayerKindInfo* {
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& t = rows[i].layer_types;
      if (std::find(t.begin(), t.end(), layer_type) != t.end()) {
        if (kind != nullptr) *kind = static_cast<LayerKind>(first + static_cast<int>(i));
        return &rows[i];
      }
    }
    return nullptr;
  };
  if (const LayerKindInfo* row = find(r.builtin, 0)) return row;
  return find(r.registered, kFirstRegistered);
}

}  // namespace attnkit::models
