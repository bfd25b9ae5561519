// The GQA-family block: projections, QK-norm, RoPE, dense attention over the KV cache, output
// gate and output projection.
#include "attnkit/layers/gqa.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/dense_backward.h"

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
  if (!pattern.name.empty()) {
    Require(window == 0, fn, ": a sparse pattern ('", pattern.name,
            "') needs window = 0 (its cache is contiguous; use pattern 'window' instead)");
    Require(pattern.seqlen >= 0, fn, ": pattern.seqlen must be >= 0, got ", pattern.seqlen);
    MakePattern(ResolvedPattern());  // checks the name and every parameter
  }
}

PatternSpec GqaConfig::ResolvedPattern() const {
  PatternSpec s = pattern;
  if (s.seqlen == 0) s.seqlen = max_tokens;
  return DefaultPatternSpec(s);
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
  if (!pattern.name.empty()) os << ",pattern=" << pattern.name;
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
  if (!config_.pattern.name.empty()) pattern_mask_ = MakePattern(config_.ResolvedPattern());
  train_mask_ = pattern_mask_ ? pattern_mask_ : config_.window > 0 ? window_mask_ : CausalMask();
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

  DenseOptions opt = AttentionOptions();
  opt.mask = pattern_mask_.get();  // DenseDecode adds causality; null → causal only
  if (c.window == 0 || n <= c.max_step) {
    // The keys go in before attention; if attention fails (out of memory), the cache is put
    // back exactly (ring slots included) and the block is as if never called.
    cache_.SaveUndo(n, &undo_);
    cache_.Append(kv, vv);
    try {
      DenseDecode(TensorView<const float>(qv), cache_, ov, opt);
    } catch (...) {
      cache_.TakeBack(&undo_);
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

bool GqaBlock::UndoForward() noexcept { return cache_.TakeBack(&undo_); }

DenseOptions GqaBlock::AttentionOptions() const {
  const GqaConfig& c = config_;
  DenseOptions opt;
  if (c.scale != 0.0f) opt.scale = c.scale;
  opt.softcap = c.softcap;
  if (c.sinks) opt.sinks = weights_.sinks;
  opt.backend = c.backend;
  return opt;
}

DenseOptions GqaBlock::TrainOptions() const {
  DenseOptions opt = AttentionOptions();
  opt.mask = train_mask_.get();  // causal or causal window, queries and keys from position 0
  opt.k_start = 0;
  opt.q_start = 0;
  return opt;
}

std::unique_ptr<TrainTape> GqaBlock::TrainForward(TensorView<const float> x,
                                                  TensorView<float> out) {
  constexpr const char* fn = "GqaBlock::TrainForward";
  const GqaConfig& c = config_;
  CheckHidden(fn, c.hidden, x, out);
  const int64_t batch = x.batch(), n = x.tokens();
  if (pattern_mask_) {
    const int64_t extent = c.ResolvedPattern().seqlen;
    Require(n <= extent, fn, ": ", n, " tokens exceed the ", extent,
            " positions the sparse pattern was built for (pattern.seqlen, or max_tokens)");
  }
  const int64_t rows = CheckedMul(batch, n, fn, "batch*tokens");
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  // Every buffer first: `out` is written last, by one sgemm that cannot fail.
  auto tape = std::make_unique<GqaTape>();
  tape->owner = this;
  tape->shape = x.shape;
  auto size = [&](int64_t heads, int64_t dim) {
    return CheckedProduct({rows, heads, dim}, fn, "rows*heads*head_dim");
  };
  CheckedResize(tape->x, CheckedMul(rows, c.hidden, fn, "rows*hidden"), fn, "x");
  CheckedResize(tape->q, size(hq, dk), fn, "q");
  CheckedResize(tape->k, size(hkv, dk), fn, "k");
  CheckedResize(tape->v, size(hkv, dv), fn, "v");
  CheckedResize(tape->o, size(hq, dv), fn, "o");
  CheckedResize(tape->lse, size(hq, 1), fn, "lse");
  std::vector<float> gated;
  if (c.output_gate) {
    CheckedResize(tape->g, size(hq, dv), fn, "the gate");
    CheckedResize(gated, size(hq, dv), fn, "the gated output");
  }
  if (c.qk_norm) {
    CheckedResize(tape->q_pre, size(hq, dk), fn, "q before the norm");
    CheckedResize(tape->k_pre, size(hkv, dk), fn, "k before the norm");
  }
  std::copy(x.data, x.data + tape->x.size(), tape->x.begin());
  Linear(x.data, rows, weights_.w_q, tape->q.data());
  Linear(x.data, rows, weights_.w_k, tape->k.data());
  Linear(x.data, rows, weights_.w_v, tape->v.data());
  if (c.qk_norm) {
    std::copy(tape->q.begin(), tape->q.end(), tape->q_pre.begin());
    std::copy(tape->k.begin(), tape->k.end(), tape->k_pre.begin());
    RmsNorm(tape->q.data(), rows * hq, dk, dk, weights_.q_norm, c.norm_eps, c.qk_norm_zero_centred);
    RmsNorm(tape->k.data(), rows * hkv, dk, dk, weights_.k_norm, c.norm_eps,
            c.qk_norm_zero_centred);
  }
  TensorView<float> qv = MakeBshd(tape->q.data(), batch, n, hq, dk);
  TensorView<float> kv = MakeBshd(tape->k.data(), batch, n, hkv, dk);
  if (c.use_rope) {
    ApplyRope(qv, 0, c.rope);
    ApplyRope(kv, 0, c.rope);
  }
  const DenseOptions opt = TrainOptions();
  DenseForward(TensorView<const float>(qv), TensorView<const float>(kv),
               TensorView<const float>(MakeBshd(tape->v.data(), batch, n, hkv, dv)),
               MakeBshd(tape->o.data(), batch, n, hq, dv), opt,
               MakeBhsd(tape->lse.data(), batch, hq, n, int64_t{1}));
  const float* o = tape->o.data();
  if (c.output_gate) {
    Linear(x.data, rows, weights_.w_gate, tape->g.data());
    std::copy(tape->o.begin(), tape->o.end(), gated.begin());
    SigmoidGate(gated.data(), tape->g.data(), static_cast<int64_t>(gated.size()));
    o = gated.data();
  }
  Linear(o, rows, weights_.w_o, out.data);
  return tape;
}

void GqaBlock::EnsureGrads() {
  if (grads_ready_) return;
  const GqaConfig& c = config_;
  GqaWeights g;
  auto like = [](const Matrix& m) { return m.empty() ? Matrix() : Matrix(m.rows, m.cols); };
  g.w_q = like(weights_.w_q);
  g.w_k = like(weights_.w_k);
  g.w_v = like(weights_.w_v);
  g.w_o = like(weights_.w_o);
  g.w_gate = like(weights_.w_gate);
  const char* fn = "GqaBlock::EnsureGrads";
  g.q_norm = CheckedVector(static_cast<int64_t>(weights_.q_norm.size()), 0.0f, fn, "q_norm grad");
  g.k_norm = CheckedVector(static_cast<int64_t>(weights_.k_norm.size()), 0.0f, fn, "k_norm grad");
  g.sinks = CheckedVector(static_cast<int64_t>(weights_.sinks.size()), 0.0f, fn, "sinks grad");
  g.Check(c);
  grads_ = std::move(g);
  grads_ready_ = true;
}

std::vector<Param> GqaBlock::Params() {
  EnsureGrads();
  std::vector<Param> ps;
  AppendParam(ps, "w_q", weights_.w_q, grads_.w_q);
  AppendParam(ps, "w_k", weights_.w_k, grads_.w_k);
  AppendParam(ps, "w_v", weights_.w_v, grads_.w_v);
  AppendParam(ps, "w_o", weights_.w_o, grads_.w_o);
  AppendParam(ps, "w_gate", weights_.w_gate, grads_.w_gate);
  AppendParam(ps, "q_norm", weights_.q_norm, grads_.q_norm);
  AppendParam(ps, "k_norm", weights_.k_norm, grads_.k_norm);
  AppendParam(ps, "sinks", weights_.sinks, grads_.sinks);
  return ps;
}

void GqaBlock::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                             TensorView<float> dx) {
  constexpr const char* fn = "GqaBlock::TrainBackward";
  const GqaConfig& c = config_;
  tape_base.Check(fn, this, dout, dx);
  auto* tape = dynamic_cast<GqaTape*>(&tape_base);
  Require(tape != nullptr, fn, ": tape is not a GqaTape");
  const int64_t batch = tape->shape[0], n = tape->shape[2], rows = batch * n;
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  // Every buffer first; no gradient, dx or the tape is written until attention's backward has
  // succeeded (a failure leaves the block, dx and the tape as they were).
  EnsureGrads();
  auto buffer = [&](int64_t count, const char* what) {
    return CheckedVector(count, 0.0f, fn, what);
  };
  std::vector<float> o_in =
      c.output_gate ? buffer(rows * hq * dv, "the gated output") : std::vector<float>{};
  std::vector<float> d_o = buffer(rows * hq * dv, "d o");
  std::vector<float> dg = c.output_gate ? buffer(rows * hq * dv, "d gate") : std::vector<float>{};
  std::vector<float> dq = buffer(rows * hq * dk, "dq"), dkk = buffer(rows * hkv * dk, "dk");
  std::vector<float> dvv = buffer(rows * hkv * dv, "dv");
  std::vector<float> dsinks = buffer(c.sinks ? hq : 0, "dsinks");
  // y = o_g W_o: d o_g = dy W_oᵀ now, dW_o += o_gᵀ dy once attention's backward has succeeded.
  const float* og = tape->o.data();
  if (c.output_gate) {
    std::copy(tape->o.begin(), tape->o.end(), o_in.begin());
    SigmoidGate(o_in.data(), tape->g.data(), static_cast<int64_t>(o_in.size()));
    og = o_in.data();
  }
  LinearBackward(og, rows, weights_.w_o, dout.data, d_o.data(), nullptr);
  // o_g = o ⊙ σ(g): d o = d o_g ⊙ σ(g), dg = d o_g ⊙ o ⊙ σ'(g).
  if (c.output_gate) {
    SigmoidGateBackward(tape->o.data(), tape->g.data(), d_o.data(), d_o.data(), dg.data(),
                        static_cast<int64_t>(d_o.size()));
  }
  // Attention (probabilities recomputed from the saved LSE).
  const DenseOptions opt = TrainOptions();
  auto cv = [&](const std::vector<float>& b, int64_t heads, int64_t dim) {
    return MakeBshd<const float>(b.data(), batch, n, heads, dim);
  };
  DenseGrads grads{MakeBshd(dq.data(), batch, n, hq, dk), MakeBshd(dkk.data(), batch, n, hkv, dk),
                   MakeBshd(dvv.data(), batch, n, hkv, dv), c.sinks ? dsinks.data() : nullptr};
  DenseBackward(cv(tape->q, hq, dk), cv(tape->k, hkv, dk), cv(tape->v, hkv, dv),
                cv(tape->o, hq, dv), MakeBhsd<const float>(tape->lse.data(), batch, hq, n, 1),
                cv(d_o, hq, dv), grads, opt);
  // Everything below writes the gradients and dx and cannot fail: only now is the tape used.
  tape->consumed = true;
  LinearBackward(og, rows, weights_.w_o, dout.data, nullptr, grads_.w_o.data.data());
  for (size_t h = 0; h < dsinks.size(); ++h) grads_.sinks[h] += dsinks[h];
  // RoPE is a rotation: its backward rotates back. Then QK-norm (from the saved pre-norm rows).
  if (c.use_rope) {
    ApplyRopeBackward(grads.dq, 0, c.rope);
    ApplyRopeBackward(grads.dk, 0, c.rope);
  }
  if (c.qk_norm) {
    RmsNormBackward(tape->q_pre.data(), rows * hq, dk, dk, weights_.q_norm, c.norm_eps,
                    c.qk_norm_zero_centred, dq.data(), dq.data(), grads_.q_norm.data());
    RmsNormBackward(tape->k_pre.data(), rows * hkv, dk, dk, weights_.k_norm, c.norm_eps,
                    c.qk_norm_zero_centred, dkk.data(), dkk.data(), grads_.k_norm.data());
  }
  // The projections of x: dx = Σ d(proj) Wᵀ (the first overwrites dx), dW += xᵀ d(proj).
  const float* x = tape->x.data();
  float* gx = dx.data;
  LinearBackward(x, rows, weights_.w_q, dq.data(), gx, grads_.w_q.data.data());
  LinearBackward(x, rows, weights_.w_k, dkk.data(), gx, grads_.w_k.data.data(), true);
  LinearBackward(x, rows, weights_.w_v, dvv.data(), gx, grads_.w_v.data.data(), true);
  if (c.output_gate) {
    LinearBackward(x, rows, weights_.w_gate, dg.data(), gx, grads_.w_gate.data.data(), true);
  }
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

int64_t GqaTrainBytesPerToken(const GqaConfig& c) {
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv;
  const int64_t floats = c.hidden + (c.qk_norm ? 2 : 1) * (hq + hkv) * c.head_dim +
                         (hkv + hq * (c.output_gate ? 2 : 1)) * c.dv() + hq;
  return floats * static_cast<int64_t>(sizeof(float));
}

}  // namespace attnkit
