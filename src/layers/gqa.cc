// The GQA-family block: projections, QK-norm, RoPE, dense attention over the KV cache, output
// gate and output projection.
#include "attnkit/layers/gqa.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "attnkit/core/checked.h"

namespace attnkit {

void GqaConfig::Validate() const {
  constexpr const char* fn = "GqaConfig";
  Require(hidden > 0, fn, ": hidden must be positive, got ", hidden);
  Require(num_heads_q > 0 && num_heads_kv > 0, fn, ": head counts must be positive, got ",
          num_heads_q, " and ", num_heads_kv);
  Require(num_heads_q % num_heads_kv == 0, fn, ": num_heads_kv (", num_heads_kv,
          ") must divide num_heads_q (", num_heads_q, ")");
  Require(head_dim > 0 && head_dim_v >= 0, fn, ": head_dim must be positive, got ", head_dim);
  Require(norm_eps > 0, fn, ": norm_eps must be positive, got ", norm_eps);
  Require(window >= 0, fn, ": window must be >= 0 (0 = full), got ", window);
  Require(softcap >= 0 && scale >= 0, fn, ": softcap and scale must be >= 0");
  Require(batch > 0, fn, ": batch must be positive, got ", batch);
  Require(max_tokens > 0, fn, ": max_tokens must be positive, got ", max_tokens);
  Require(max_step >= 1, fn, ": max_step must be >= 1, got ", max_step);
  if (use_rope) RotaryDim(rope, head_dim);  // throws on a bad theta / fraction
}

std::string GqaConfig::Describe() const {
  std::ostringstream os;
  const char* family = num_heads_kv == num_heads_q ? "mha" : num_heads_kv == 1 ? "mqa" : "gqa";
  os << family << "(hidden=" << hidden << ",hq=" << num_heads_q << ",hkv=" << num_heads_kv
     << ",d=" << head_dim;
  if (dv() != head_dim) os << ",dv=" << dv();
  if (use_rope) {
    os << ",rope=" << RopeLayoutName(rope.layout);
    if (rope.fraction != 1.0f) os << "*" << rope.fraction;
  }
  if (qk_norm) os << (qk_norm_zero_centred ? ",qknorm(1+w)" : ",qknorm");
  if (output_gate) os << ",gate";
  if (sinks) os << ",sinks";
  if (softcap > 0) os << ",softcap=" << softcap;
  os << ",window=" << window << ")";
  return os.str();
}

void GqaWeights::Check(const GqaConfig& c) const {
  constexpr const char* fn = "GqaWeights";
  c.Validate();
  CheckMatrix(fn, "w_q", w_q, c.hidden, c.num_heads_q * c.head_dim);
  CheckMatrix(fn, "w_k", w_k, c.hidden, c.num_heads_kv * c.head_dim);
  CheckMatrix(fn, "w_v", w_v, c.hidden, c.num_heads_kv * c.dv());
  CheckMatrix(fn, "w_o", w_o, c.num_heads_q * c.dv(), c.hidden);
  if (c.output_gate) {
    CheckMatrix(fn, "w_gate", w_gate, c.hidden, c.num_heads_q * c.dv());
  } else {
    CheckMatrix(fn, "w_gate", w_gate, 0, 0);
  }
  CheckVector(fn, "q_norm", q_norm, c.qk_norm ? c.head_dim : 0);
  CheckVector(fn, "k_norm", k_norm, c.qk_norm ? c.head_dim : 0);
  CheckVector(fn, "sinks", sinks, c.sinks ? c.num_heads_q : 0);
}

size_t GqaWeights::bytes() const {
  return w_q.bytes() + w_k.bytes() + w_v.bytes() + w_o.bytes() + w_gate.bytes() +
         (q_norm.size() + k_norm.size() + sinks.size()) * sizeof(float);
}

GqaWeights GqaWeights::Random(const GqaConfig& c, uint64_t seed) {
  c.Validate();
  const uint64_t s = seed * 131;
  GqaWeights w;
  w.w_q = RandomMatrix(c.hidden, c.num_heads_q * c.head_dim, s + 1);
  w.w_k = RandomMatrix(c.hidden, c.num_heads_kv * c.head_dim, s + 2);
  w.w_v = RandomMatrix(c.hidden, c.num_heads_kv * c.dv(), s + 3);
  w.w_o = RandomMatrix(c.num_heads_q * c.dv(), c.hidden, s + 4);
  if (c.output_gate) w.w_gate = RandomMatrix(c.hidden, c.num_heads_q * c.dv(), s + 5);
  if (c.qk_norm) {
    w.q_norm = RandomNormWeight(c.head_dim, s + 6, c.qk_norm_zero_centred);
    w.k_norm = RandomNormWeight(c.head_dim, s + 7, c.qk_norm_zero_centred);
  }
  if (c.sinks) {
    w.sinks.resize(static_cast<size_t>(c.num_heads_q));
    FillUniform(w.sinks.data(), w.sinks.size(), 1.0f, s + 8);
  }
  return w;
}

namespace {
KvCache<float> MakeCache(const GqaConfig& c) {
  c.Validate();
  return KvCache<float>(c.batch, c.num_heads_kv, c.head_dim, c.dv(), c.max_tokens, c.window,
                        c.max_step);
}
}  // namespace

GqaBlock::GqaBlock(GqaConfig config, GqaWeights weights)
    : config_(config), weights_(std::move(weights)), cache_(MakeCache(config_)) {
  weights_.Check(config_);
  if (config_.window > 0) window_mask_ = CausalWindowMask(config_.window);
}

void GqaBlock::Forward(TensorView<const float> x, int64_t position, TensorView<float> out) {
  constexpr const char* fn = "GqaBlock::Forward";
  const GqaConfig& c = config_;
  undo_.length = -1;  // nothing to undo until this call succeeds
  CheckHidden(fn, c.hidden, x, out);
  Require(x.batch() == c.batch, fn, ": x has batch ", x.batch(), " but the block was built for ",
          c.batch);
  CheckPosition(fn, position, tokens_seen());
  const int64_t n = x.tokens(), batch = c.batch, rows = batch * n;
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  if (c.window == 0) {
    Require(position + n <= c.max_tokens, fn, ": ", n, " tokens at position ", position,
            " exceed the KV cache capacity max_tokens = ", c.max_tokens);
  }
  // Every buffer first: nothing below changes the block until attention has succeeded.
  CheckedResize(q_, CheckedProduct({rows, hq, dk}, fn, "rows*heads*head_dim"), fn, "q");
  CheckedResize(k_, CheckedProduct({rows, hkv, dk}, fn, "rows*heads*head_dim"), fn, "k");
  CheckedResize(v_, CheckedProduct({rows, hkv, dv}, fn, "rows*heads*head_dim"), fn, "v");
  CheckedResize(o_, CheckedProduct({rows, hq, dv}, fn, "rows*heads*head_dim"), fn, "o");
  if (c.output_gate) CheckedResize(g_, static_cast<int64_t>(o_.size()), fn, "the gate");

  // Projections: x [rows, hidden] → q [rows, hq·dk], k [rows, hkv·dk], v [rows, hkv·dv].
  Linear(x.data, rows, weights_.w_q, q_.data());
  Linear(x.data, rows, weights_.w_k, k_.data());
  Linear(x.data, rows, weights_.w_v, v_.data());
  if (c.qk_norm) {
    RmsNorm(q_.data(), rows * hq, dk, dk, weights_.q_norm, c.norm_eps, c.qk_norm_zero_centred);
    RmsNorm(k_.data(), rows * hkv, dk, dk, weights_.k_norm, c.norm_eps, c.qk_norm_zero_centred);
  }
  // [batch, tokens, heads, dim] memory viewed as [batch, heads, tokens, dim].
  TensorView<float> qv = MakeBshd(q_.data(), batch, n, hq, dk);
  TensorView<float> kv = MakeBshd(k_.data(), batch, n, hkv, dk);
  TensorView<float> vv = MakeBshd(v_.data(), batch, n, hkv, dv);
  TensorView<float> ov = MakeBshd(o_.data(), batch, n, hq, dv);
  if (c.use_rope) {
    ApplyRope(qv, position, c.rope);
    ApplyRope(kv, position, c.rope);
  }

  DenseOptions opt;
  if (c.scale != 0.0f) opt.scale = c.scale;
  opt.softcap = c.softcap;
  if (c.sinks) opt.sinks = weights_.sinks;
  opt.backend = c.backend;
  if (c.window == 0 || n <= c.max_step) {
    // The keys go in before attention; if attention fails (out of memory), the cache is put
    // back exactly (ring slots included) and the block is as if never called.
    cache_.SaveUndo(n, &undo_);
    cache_.Append(kv, vv);
    try {
      DenseDecode(TensorView<const float>(qv), cache_, ov, opt);
    } catch (...) {
      cache_.Undo(undo_);
      undo_.length = -1;
      throw;
    }
  } else {
    // A windowed call longer than the ring buffer serves: attend over [held tokens | new tokens]
    // gathered into scratch, then append (the ring keeps the newest slots).
    const auto segs = cache_.Segments();
    const int64_t held = cache_.stored();
    const int64_t total = held + n;
    Tensor<float> kt(batch, hkv, total, dk), vt(batch, hkv, total, dv);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < hkv; ++h) {
        int64_t t = 0;
        for (const auto& s : segs) {
          for (int64_t i = 0; i < s.k.tokens(); ++i, ++t) {
            std::memcpy(kt.view().row(b, h, t), s.k.row(b, h, i), sizeof(float) * dk);
            std::memcpy(vt.view().row(b, h, t), s.v.row(b, h, i), sizeof(float) * dv);
          }
        }
        for (int64_t i = 0; i < n; ++i, ++t) {
          std::memcpy(kt.view().row(b, h, t), kv.row(b, h, i), sizeof(float) * dk);
          std::memcpy(vt.view().row(b, h, t), vv.row(b, h, i), sizeof(float) * dv);
        }
      }
    }
    opt.mask = window_mask_.get();
    opt.k_start = position - held;
    opt.q_start = position;
    DenseForward(qv, kt.view(), vt.view(), ov, opt);
    cache_.SaveUndo(n, &undo_);  // for UndoForward (the whole ring is overwritten)
    cache_.Append(kv, vv);
  }

  if (c.output_gate) {
    Linear(x.data, rows, weights_.w_gate, g_.data());
    SigmoidGate(o_.data(), g_.data(), static_cast<int64_t>(o_.size()));
  }
  Linear(o_.data(), rows, weights_.w_o, out.data);
}

bool GqaBlock::UndoForward() noexcept {
  if (undo_.length < 0) return false;
  cache_.Undo(undo_);
  undo_.length = -1;
  return true;
}

void GqaBlock::FillCacheRandom(int64_t tokens, uint64_t seed) {
  Require(tokens >= 0, "GqaBlock::FillCacheRandom: tokens must be >= 0, got ", tokens);
  const GqaConfig& c = config_;
  if (c.window == 0) {
    Require(tokens <= c.max_tokens, "GqaBlock::FillCacheRandom: ", tokens,
            " tokens exceed max_tokens = ", c.max_tokens);
  }
  cache_.Clear();
  undo_.length = -1;
  const int64_t chunk = 1024;
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t n = std::min(chunk, tokens - t0);
    Tensor<float> k(c.batch, c.num_heads_kv, n, c.head_dim), v(c.batch, c.num_heads_kv, n, c.dv());
    FillUniform(k.data(), static_cast<size_t>(k.numel()), 1.0f, seed * 7919 + t0);
    FillUniform(v.data(), static_cast<size_t>(v.numel()), 1.0f, seed * 7919 + t0 + 1);
    cache_.Append(k.view(), v.view());
  }
}

int64_t GqaCacheBytesPerToken(const GqaConfig& c) {
  return c.num_heads_kv * (c.head_dim + c.dv()) * static_cast<int64_t>(sizeof(float));
}

}  // namespace attnkit
