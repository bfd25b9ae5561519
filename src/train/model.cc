// The small decoder-only model of include/attnkit/train/model.h: forward, cross-entropy and the
// backward of every piece (embedding, RMSNorm, attention layer, SwiGLU MLP, tied/untied head).
#include "attnkit/train/model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/factory.h"
#include "nlohmann/json.hpp"

namespace attnkit::train {

namespace {

uint64_t MixSeed(uint64_t seed, uint64_t salt) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (salt + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TensorView<float> HiddenView(float* p, int64_t batch, int64_t seqlen, int64_t hidden) {
  return MakeBhsd(p, batch, int64_t{1}, seqlen, hidden);
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void LossStats::Add(const LossStats& o) {
  loss_sum += o.loss_sum;
  count += o.count;
  correct += o.correct;
  if (position_loss.size() < o.position_loss.size()) {
    position_loss.resize(o.position_loss.size(), 0.0);
    position_count.resize(o.position_count.size(), 0);
  }
  for (size_t i = 0; i < o.position_loss.size(); ++i) {
    position_loss[i] += o.position_loss[i];
    position_count[i] += o.position_count[i];
  }
}

// ------------------------------------------------------------------------------------- config

ModelConfig ModelConfig::Resolved() const {
  ModelConfig c = *this;
  auto range = [](int64_t v, int64_t lo, int64_t hi, const char* name) {
    Require(v >= lo && v <= hi, "model config: ", name, " must be in [", lo, ", ", hi, "], got ",
            v);
  };
  range(c.vocab, 2, int64_t{1} << 24, "vocab");
  range(c.hidden, 1, int64_t{1} << 16, "hidden");
  range(c.layers, 1, 1024, "layers");
  range(c.heads, 1, 4096, "heads");
  range(c.kv_heads, 0, 4096, "kv_heads");
  range(c.head_dim, 0, int64_t{1} << 14, "head_dim");
  range(c.window, 0, int64_t{1} << 40, "window");
  range(c.ffn, 0, int64_t{1} << 20, "ffn");
  range(c.q_lora_rank, 0, int64_t{1} << 16, "q_lora_rank");
  range(c.kv_lora_rank, 0, int64_t{1} << 16, "kv_lora_rank");
  range(c.rope_head_dim, 0, int64_t{1} << 14, "rope_head_dim");
  range(c.max_seqlen, 1, int64_t{1} << 30, "max_seqlen");
  Require(std::isfinite(c.norm_eps) && c.norm_eps > 0, "model config: norm_eps must be > 0");
  if (c.kv_heads == 0) c.kv_heads = c.heads;
  Require(c.heads % c.kv_heads == 0, "model config: kv_heads (", c.kv_heads,
          ") must divide heads (", c.heads, ")");
  if (c.head_dim == 0) {
    Require(c.hidden % c.heads == 0, "model config: hidden (", c.hidden,
            ") must be a multiple of heads (", c.heads, ") unless head_dim is given");
    c.head_dim = c.hidden / c.heads;
  }
  if (c.ffn == 0) c.ffn = ((8 * c.hidden / 3) + 7) / 8 * 8;
  if (c.kv_lora_rank == 0) c.kv_lora_rank = 4 * c.head_dim;
  if (c.rope_head_dim == 0) c.rope_head_dim = std::max<int64_t>(2, c.head_dim / 2 / 2 * 2);
  (void)c.LayerKindList();  // checks the variant
  return c;
}

std::vector<std::string> ModelConfig::LayerKindList() const {
  std::vector<std::string> pattern;
  try {
    pattern = ParseLayerList(variant);
  } catch (const Error& e) {
    throw Error(std::string("variant: ") + e.what());
  }
  Require(!pattern.empty(), "variant: empty");
  Require(layers % static_cast<int64_t>(pattern.size()) == 0, "variant '", variant, "' has ",
          pattern.size(), " kinds, which must divide layers (", layers, ")");
  std::vector<std::string> kinds;
  for (int64_t i = 0; i < layers; ++i) kinds.push_back(pattern[i % pattern.size()]);
  return kinds;
}

std::string ModelConfig::ToJson() const {
  nlohmann::json j = {{"format", "attnkit-train-model"},
                      {"vocab", vocab},
                      {"hidden", hidden},
                      {"layers", layers},
                      {"variant", variant},
                      {"heads", heads},
                      {"kv_heads", kv_heads},
                      {"head_dim", head_dim},
                      {"window", window},
                      {"q_lora_rank", q_lora_rank},
                      {"kv_lora_rank", kv_lora_rank},
                      {"rope_head_dim", rope_head_dim},
                      {"ffn", ffn},
                      {"tied", tied},
                      {"max_seqlen", max_seqlen},
                      {"norm_eps", norm_eps}};
  return j.dump(2);
}

ModelConfig ModelConfig::FromJson(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("model config: not valid JSON (") + e.what() + ")");
  }
  Require(j.is_object(), "model config: must be a JSON object");
  Require(j.value("format", std::string()) == "attnkit-train-model",
          "model config: \"format\" must be \"attnkit-train-model\"");
  ModelConfig c;
  auto integer = [&](const char* key, int64_t& out) {
    Require(j.contains(key) && j[key].is_number_integer(), "model config: \"", key,
            "\" must be an integer");
    out = j[key].get<int64_t>();
  };
  integer("vocab", c.vocab);
  integer("hidden", c.hidden);
  integer("layers", c.layers);
  integer("heads", c.heads);
  integer("kv_heads", c.kv_heads);
  integer("head_dim", c.head_dim);
  integer("window", c.window);
  integer("q_lora_rank", c.q_lora_rank);
  integer("kv_lora_rank", c.kv_lora_rank);
  integer("rope_head_dim", c.rope_head_dim);
  integer("ffn", c.ffn);
  integer("max_seqlen", c.max_seqlen);
  Require(j.contains("variant") && j["variant"].is_string(),
          "model config: \"variant\" must be a string");
  c.variant = j["variant"].get<std::string>();
  Require(j.contains("tied") && j["tied"].is_boolean(), "model config: \"tied\" must be a boolean");
  c.tied = j["tied"].get<bool>();
  Require(j.contains("norm_eps") && j["norm_eps"].is_number(),
          "model config: \"norm_eps\" must be a number");
  c.norm_eps = j["norm_eps"].get<float>();
  return c.Resolved();
}

void CheckBatch(const Batch& b, const ModelConfig& c, const char* fn) {
  Require(b.batch >= 1 && b.seqlen >= 1, fn, ": batch and seqlen must be >= 1, got ", b.batch,
          " and ", b.seqlen);
  Require(b.seqlen <= c.max_seqlen, fn, ": seqlen ", b.seqlen, " exceeds the model's max_seqlen ",
          c.max_seqlen);
  const size_t n = static_cast<size_t>(CheckedMul(b.batch, b.seqlen, fn, "batch*seqlen"));
  Require(b.inputs.size() == n && b.targets.size() == n, fn, ": inputs and targets must hold ",
          "batch*seqlen = ", n, " tokens, got ", b.inputs.size(), " and ", b.targets.size());
  for (size_t i = 0; i < n; ++i) {
    Require(b.inputs[i] >= 0 && b.inputs[i] < c.vocab, fn, ": input token ", b.inputs[i], " at ", i,
            " is outside the vocabulary [0, ", c.vocab, ")");
    Require(b.targets[i] >= -1 && b.targets[i] < c.vocab, fn, ": target ", b.targets[i], " at ", i,
            " is outside [-1, ", c.vocab, ")");
  }
}

// -------------------------------------------------------------------------------------- model

struct Model::Block {
  std::unique_ptr<Layer> attn;
  std::vector<float> attn_norm, attn_norm_grad, mlp_norm, mlp_norm_grad;
  Matrix w_gate, w_up, w_down;
  std::vector<float> g_gate, g_up, g_down;
};

struct Model::Activations {
  int64_t rows = 0;
  std::vector<std::vector<float>> attn_in, mlp_in, mlp_x, gate, up, act;  // per block
  std::vector<std::unique_ptr<TrainTape>> tapes;
  std::vector<float> final_in, final_out, logits;
  std::vector<float> normed, delta;                    // forward workspace
  std::vector<float> dx, dh, ds, dgate, dup, dxm, da;  // backward workspace
};

Model::Model(const ModelConfig& config, uint64_t seed)
    : config_(config.Resolved()), act_(std::make_unique<Activations>()) {
  const ModelConfig& c = config_;
  const auto kinds = c.LayerKindList();
  LayerShape shape;
  shape.hidden = c.hidden;
  shape.num_heads = c.heads;
  shape.num_heads_kv = c.kv_heads;
  shape.head_dim = c.head_dim;
  if (c.window > 0) shape.window = c.window;
  shape.q_lora_rank = c.q_lora_rank;
  shape.kv_lora_rank = c.kv_lora_rank;
  shape.rope_head_dim = c.rope_head_dim;
  shape.batch = 1;
  shape.max_tokens = c.max_seqlen;
  embed_ = Matrix(c.vocab, c.hidden);
  FillUniform(embed_.data.data(), embed_.data.size(), InitScale(c.hidden), MixSeed(seed, 1));
  embed_grad_.assign(embed_.data.size(), 0.0f);
  if (!c.tied) {
    head_ = RandomMatrix(c.hidden, c.vocab, MixSeed(seed, 2));
    head_grad_.assign(head_.data.size(), 0.0f);
  }
  const float down_scale = InitScale(c.ffn) / std::sqrt(2.0f * static_cast<float>(c.layers));
  for (int64_t i = 0; i < c.layers; ++i) {
    auto b = std::make_unique<Block>();
    const uint64_t s = MixSeed(seed, 100 + static_cast<uint64_t>(i));
    b->attn = MakeLayer(kinds[static_cast<size_t>(i)], shape, MixSeed(s, 0));
    Require(b->attn->trainable(), "variant: layer kind '", kinds[static_cast<size_t>(i)],
            "' cannot be trained yet");
    b->attn_norm.assign(static_cast<size_t>(c.hidden), 1.0f);
    b->mlp_norm.assign(static_cast<size_t>(c.hidden), 1.0f);
    b->attn_norm_grad.assign(static_cast<size_t>(c.hidden), 0.0f);
    b->mlp_norm_grad.assign(static_cast<size_t>(c.hidden), 0.0f);
    b->w_gate = RandomMatrix(c.hidden, c.ffn, MixSeed(s, 1));
    b->w_up = RandomMatrix(c.hidden, c.ffn, MixSeed(s, 2));
    b->w_down = Matrix(c.ffn, c.hidden);
    FillUniform(b->w_down.data.data(), b->w_down.data.size(), down_scale, MixSeed(s, 3));
    b->g_gate.assign(b->w_gate.data.size(), 0.0f);
    b->g_up.assign(b->w_up.data.size(), 0.0f);
    b->g_down.assign(b->w_down.data.size(), 0.0f);
    blocks_.push_back(std::move(b));
  }
  final_norm_.assign(static_cast<size_t>(c.hidden), 1.0f);
  final_norm_grad_.assign(static_cast<size_t>(c.hidden), 0.0f);
}

Model::~Model() = default;

std::vector<Param> Model::Params() {
  const int64_t h = config_.hidden;
  std::vector<Param> ps;
  ps.push_back({"embed", {config_.vocab, h}, embed_.data.data(), embed_grad_.data()});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    Block& b = *blocks_[i];
    const std::string pre = "blocks." + std::to_string(i) + ".";
    ps.push_back({pre + "attn_norm", {h}, b.attn_norm.data(), b.attn_norm_grad.data()});
    for (Param p : b.attn->Params()) {
      p.name = pre + "attn." + p.name;
      ps.push_back(std::move(p));
    }
    ps.push_back({pre + "mlp_norm", {h}, b.mlp_norm.data(), b.mlp_norm_grad.data()});
    ps.push_back({pre + "mlp.w_gate", {h, config_.ffn}, b.w_gate.data.data(), b.g_gate.data()});
    ps.push_back({pre + "mlp.w_up", {h, config_.ffn}, b.w_up.data.data(), b.g_up.data()});
    ps.push_back({pre + "mlp.w_down", {config_.ffn, h}, b.w_down.data.data(), b.g_down.data()});
  }
  ps.push_back({"final_norm", {h}, final_norm_.data(), final_norm_grad_.data()});
  if (!config_.tied) {
    ps.push_back({"head", {h, config_.vocab}, head_.data.data(), head_grad_.data()});
  }
  return ps;
}

Layer& Model::attention(size_t i) {
  Require(i < blocks_.size(), "Model::attention: block ", i, " of ", blocks_.size());
  return *blocks_[i]->attn;
}

int64_t Model::NumParams() {
  int64_t n = 0;
  for (const Param& p : Params()) n += p.size();
  return n;
}

void Model::ZeroGrad() {
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

bool Model::DecaysWeight(const Param& p) { return p.shape.size() == 2 && p.name != "embed"; }

void Model::Forward(const Batch& batch, Activations& act, bool keep_tapes) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden, f = c.ffn, rows = batch.batch * batch.seqlen;
  const size_t nh = static_cast<size_t>(CheckedMul(rows, h, "Model", "batch*seqlen*hidden"));
  const size_t nf = static_cast<size_t>(CheckedMul(rows, f, "Model", "batch*seqlen*ffn"));
  const size_t nv = static_cast<size_t>(CheckedMul(rows, c.vocab, "Model", "batch*seqlen*vocab"));
  act.rows = rows;
  const size_t nb = blocks_.size();
  // Buffers keep their capacity from step to step (resize, never reallocate at the same size).
  for (auto* v : {&act.attn_in, &act.mlp_in, &act.mlp_x}) {
    v->resize(nb);
    for (auto& e : *v) e.resize(nh);
  }
  for (auto* v : {&act.gate, &act.up, &act.act}) {
    v->resize(nb);
    for (auto& e : *v) e.resize(nf);
  }
  act.tapes.clear();
  act.tapes.resize(nb);
  act.normed.resize(nh);
  act.delta.resize(nh);
  act.final_in.resize(nh);
  std::vector<float>& x = act.final_in;  // the residual stream, in place
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(x.data() + r * h, embed_.row(batch.inputs[static_cast<size_t>(r)]),
                sizeof(float) * static_cast<size_t>(h));
  }
  std::vector<float>& normed = act.normed;
  std::vector<float>& delta = act.delta;
  for (size_t l = 0; l < nb; ++l) {
    Block& b = *blocks_[l];
    std::copy(x.begin(), x.end(), act.attn_in[l].begin());
    std::copy(x.begin(), x.end(), normed.begin());
    RmsNorm(normed.data(), rows, h, h, b.attn_norm, c.norm_eps);
    auto tape = b.attn->TrainForward(HiddenView(normed.data(), batch.batch, batch.seqlen, h),
                                     HiddenView(delta.data(), batch.batch, batch.seqlen, h));
    if (keep_tapes) act.tapes[l] = std::move(tape);
    for (size_t i = 0; i < nh; ++i) x[i] += delta[i];
    std::vector<float>& xm = act.mlp_x[l];
    float* gate = act.gate[l].data();
    float* up = act.up[l].data();
    float* s = act.act[l].data();
    std::copy(x.begin(), x.end(), act.mlp_in[l].begin());
    std::copy(x.begin(), x.end(), xm.begin());
    RmsNorm(xm.data(), rows, h, h, b.mlp_norm, c.norm_eps);
    Linear(xm.data(), rows, b.w_gate, gate);
    Linear(xm.data(), rows, b.w_up, up);
#pragma omp parallel for schedule(static) if (nf > 32768) num_threads(GetNumThreads())
    for (int64_t i = 0; i < static_cast<int64_t>(nf); ++i) {
      s[i] = gate[i] * Sigmoid(gate[i]) * up[i];
    }
    Linear(s, rows, b.w_down, delta.data());
    for (size_t i = 0; i < nh; ++i) x[i] += delta[i];
  }
  act.final_out.resize(nh);
  std::copy(x.begin(), x.end(), act.final_out.begin());
  RmsNorm(act.final_out.data(), rows, h, h, final_norm_, c.norm_eps);
  act.logits.resize(nv);
  if (c.tied) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(c.vocab), static_cast<int>(h), 1.0f, act.final_out.data(),
                static_cast<int>(h), embed_.data.data(), static_cast<int>(h), 0.0f,
                act.logits.data(), static_cast<int>(c.vocab));
  } else {
    Linear(act.final_out.data(), rows, head_, act.logits.data());
  }
}

LossStats Model::Loss(const Batch& batch, Activations& act, bool want_grad) {
  const int64_t v = config_.vocab, rows = act.rows;
  int64_t count = 0;
  for (int32_t t : batch.targets) count += t >= 0 ? 1 : 0;
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  std::vector<char> row_correct(static_cast<size_t>(rows), 0);
  const double inv = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;
#pragma omp parallel for schedule(static) if (rows * v > 32768) num_threads(GetNumThreads())
  for (int64_t r = 0; r < rows; ++r) {
    float* z = act.logits.data() + r * v;
    const int32_t target = batch.targets[static_cast<size_t>(r)];
    if (target < 0) {
      if (want_grad) std::fill(z, z + v, 0.0f);
      continue;
    }
    int64_t arg = 0;
    for (int64_t i = 1; i < v; ++i) arg = z[i] > z[arg] ? i : arg;
    const double m = z[arg];
    double sum = 0;
    for (int64_t i = 0; i < v; ++i) sum += std::exp(static_cast<double>(z[i]) - m);
    const double lse = m + std::log(sum);
    row_loss[static_cast<size_t>(r)] = lse - static_cast<double>(z[target]);
    row_correct[static_cast<size_t>(r)] = arg == target ? 1 : 0;
    if (want_grad) {
      for (int64_t i = 0; i < v; ++i) {
        z[i] = static_cast<float>(std::exp(static_cast<double>(z[i]) - lse) * inv);
      }
      z[target] -= static_cast<float>(inv);
    }
  }
  LossStats st;
  st.position_loss.assign(static_cast<size_t>(batch.seqlen), 0.0);
  st.position_count.assign(static_cast<size_t>(batch.seqlen), 0);
  for (int64_t r = 0; r < rows; ++r) {
    if (batch.targets[static_cast<size_t>(r)] < 0) continue;
    const size_t t = static_cast<size_t>(r % batch.seqlen);
    st.loss_sum += row_loss[static_cast<size_t>(r)];
    st.correct += row_correct[static_cast<size_t>(r)];
    st.position_loss[t] += row_loss[static_cast<size_t>(r)];
    st.position_count[t] += 1;
  }
  st.count = count;
  return st;
}

void Model::Backward(const Batch& batch, Activations& act) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden, f = c.ffn, rows = act.rows;
  const size_t nh = static_cast<size_t>(rows * h), nf = static_cast<size_t>(rows * f);
  for (auto* v : {&act.dx, &act.dh, &act.dxm, &act.da}) v->resize(nh);
  for (auto* v : {&act.ds, &act.dgate, &act.dup}) v->resize(nf);
  std::vector<float>&dx = act.dx, &dh = act.dh, &ds = act.ds, &dgate = act.dgate, &dup = act.dup,
  &dxm = act.dxm, &da = act.da;
  // Output head: logits = out · Eᵀ (tied) or out · W_head.
  if (c.tied) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                static_cast<int>(h), static_cast<int>(c.vocab), 1.0f, act.logits.data(),
                static_cast<int>(c.vocab), embed_.data.data(), static_cast<int>(h), 0.0f, dx.data(),
                static_cast<int>(h));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(c.vocab),
                static_cast<int>(h), static_cast<int>(rows), 1.0f, act.logits.data(),
                static_cast<int>(c.vocab), act.final_out.data(), static_cast<int>(h), 1.0f,
                embed_grad_.data(), static_cast<int>(h));
  } else {
    LinearBackward(act.final_out.data(), rows, head_, act.logits.data(), dx.data(),
                   head_grad_.data());
  }
  RmsNormBackward(act.final_in.data(), rows, h, h, final_norm_, c.norm_eps, false, dx.data(),
                  dh.data(), final_norm_grad_.data());
  for (size_t l = blocks_.size(); l-- > 0;) {
    Block& b = *blocks_[l];
    // MLP: y = s · W_down, s = silu(g) ⊙ u.
    LinearBackward(act.act[l].data(), rows, b.w_down, dh.data(), ds.data(), b.g_down.data());
    const float* g = act.gate[l].data();
    const float* u = act.up[l].data();
#pragma omp parallel for schedule(static) if (nf > 32768) num_threads(GetNumThreads())
    for (int64_t i = 0; i < static_cast<int64_t>(nf); ++i) {
      const float sg = Sigmoid(g[i]);
      dup[i] = ds[i] * g[i] * sg;
      dgate[i] = ds[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
    LinearBackward(act.mlp_x[l].data(), rows, b.w_gate, dgate.data(), dxm.data(), b.g_gate.data());
    LinearBackward(act.mlp_x[l].data(), rows, b.w_up, dup.data(), dxm.data(), b.g_up.data(),
                   /*accumulate_dx=*/true);
    RmsNormBackward(act.mlp_in[l].data(), rows, h, h, b.mlp_norm, c.norm_eps, false, dxm.data(),
                    dxm.data(), b.mlp_norm_grad.data());
    for (size_t i = 0; i < nh; ++i) dh[i] += dxm[i];
    // Attention: y = Attn(RMSNorm(x)).
    b.attn->TrainBackward(*act.tapes[l], HiddenView(dh.data(), batch.batch, batch.seqlen, h),
                          HiddenView(da.data(), batch.batch, batch.seqlen, h));
    RmsNormBackward(act.attn_in[l].data(), rows, h, h, b.attn_norm, c.norm_eps, false, da.data(),
                    da.data(), b.attn_norm_grad.data());
    for (size_t i = 0; i < nh; ++i) dh[i] += da[i];
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* g = embed_grad_.data() + static_cast<size_t>(batch.inputs[static_cast<size_t>(r)]) * h;
    const float* d = dh.data() + r * h;
    for (int64_t i = 0; i < h; ++i) g[i] += d[i];
  }
}

LossStats Model::ForwardBackward(const Batch& batch) {
  CheckBatch(batch, config_, "Model::ForwardBackward");
  Forward(batch, *act_, true);
  LossStats st = Loss(batch, *act_, true);
  if (st.count > 0) Backward(batch, *act_);
  act_->tapes.clear();
  return st;
}

LossStats Model::Evaluate(const Batch& batch) {
  CheckBatch(batch, config_, "Model::Evaluate");
  Forward(batch, *act_, false);
  return Loss(batch, *act_, false);
}

std::vector<float> Model::Logits(const Batch& batch) {
  CheckBatch(batch, config_, "Model::Logits");
  Forward(batch, *act_, false);
  return act_->logits;
}

}  // namespace attnkit::train
