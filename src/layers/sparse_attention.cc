// The static-sparse attention layer (see include/attnkit/layers/sparse_attention.h).
#include "attnkit/layers/sparse_attention.h"

#include <algorithm>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/dense_backward.h"

namespace attnkit {

PatternSpec SparseAttentionConfig::Resolved() const {
  PatternSpec s = pattern;
  if (s.seqlen == 0) s.seqlen = attention.max_tokens;
  return DefaultPatternSpec(s);
}

void SparseAttentionConfig::Validate() const {
  constexpr const char* fn = "SparseAttentionConfig";
  attention.Validate();
  const GqaConfig& a = attention;
  Require(!a.qk_norm && !a.output_gate && !a.sinks && a.softcap == 0.0f && a.window == 0, fn,
          ": qk_norm, output_gate, sinks, softcap and window are GqaBlock options, not supported "
          "by the sparse block");
  Require(pattern.seqlen >= 0, fn, ": pattern.seqlen must be >= 0, got ", pattern.seqlen);
  Require(pattern.name != "causal", fn,
          ": pattern 'causal' is not sparse (use GqaBlock, kinds mha / gqa / mqa)");
  MakePattern(Resolved());  // checks the name and every parameter
}

std::string SparseAttentionConfig::Describe() const {
  const PatternSpec p = Resolved();
  std::ostringstream os;
  os << p.name << "(hq=" << attention.num_heads_q << ",hkv=" << attention.num_heads_kv
     << ",d=" << attention.head_dim;
  auto field = [&](const char* name, const std::optional<int64_t>& v) {
    if (v) os << "," << name << "=" << *v;
  };
  field("block", p.block);
  field("stride", p.stride);
  field("summary", p.summary);
  field("window", p.window);
  field("window_blocks", p.window_blocks);
  field("global_blocks", p.global_blocks);
  field("random_blocks", p.random_blocks);
  os << ",seqlen=" << p.seqlen << ")";
  return os.str();
}

SparseAttentionBlock::SparseAttentionBlock(SparseAttentionConfig config, GqaWeights weights)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      cache_(config_.attention.batch, config_.attention.num_heads_kv, config_.attention.head_dim,
             config_.attention.dv(), config_.attention.max_tokens) {
  config_.Validate();
  weights_.Check(config_.attention);
  mask_ = MakePattern(config_.Resolved());
}

DenseOptions SparseAttentionBlock::Options() const {
  DenseOptions opt;
  if (config_.attention.scale != 0.0f) opt.scale = config_.attention.scale;
  opt.mask = mask_.get();
  opt.backend = config_.attention.backend;
  return opt;
}

void SparseAttentionBlock::Forward(TensorView<const float> x, int64_t position,
                                   TensorView<float> out) {
  constexpr const char* fn = "SparseAttentionBlock::Forward";
  const GqaConfig& c = config_.attention;
  undo_.length = -1;  // nothing to undo until this call succeeds
  CheckHidden(fn, c.hidden, x, out);
  Require(x.batch() == c.batch, fn, ": x has batch ", x.batch(), " but the block was built for ",
          c.batch);
  CheckPosition(fn, position, tokens_seen());
  const int64_t n = x.tokens(), batch = c.batch, rows = batch * n;
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  Require(position + n <= c.max_tokens, fn, ": ", n, " tokens at position ", position,
          " exceed the KV cache capacity max_tokens = ", c.max_tokens);
  // Every buffer first: nothing below changes the block until attention has succeeded.
  CheckedResize(q_, CheckedProduct({rows, hq, dk}, fn, "rows*heads*head_dim"), fn, "q");
  CheckedResize(k_, CheckedProduct({rows, hkv, dk}, fn, "rows*heads*head_dim"), fn, "k");
  CheckedResize(v_, CheckedProduct({rows, hkv, dv}, fn, "rows*heads*head_dim_v"), fn, "v");
  CheckedResize(o_, CheckedProduct({rows, hq, dv}, fn, "rows*heads*head_dim_v"), fn, "o");
  Linear(x.data, rows, weights_.w_q, q_.data());
  Linear(x.data, rows, weights_.w_k, k_.data());
  Linear(x.data, rows, weights_.w_v, v_.data());
  const TensorView<float> qv = MakeBshd(q_.data(), batch, n, hq, dk);
  const TensorView<float> kv = MakeBshd(k_.data(), batch, n, hkv, dk);
  const TensorView<float> vv = MakeBshd(v_.data(), batch, n, hkv, dv);
  if (c.use_rope) {
    ApplyRope(qv, position, c.rope);
    ApplyRope(kv, position, c.rope);
  }
  // The new keys go in before attention (DenseDecode reads them from the cache, at their absolute
  // positions, under the pattern); a failure puts the cache back.
  cache_.SaveUndo(n, &undo_);
  cache_.Append(kv, vv);
  try {
    DenseDecode(TensorView<const float>(qv), cache_, MakeBshd(o_.data(), batch, n, hq, dv),
                Options());
  } catch (...) {
    cache_.TakeBack(&undo_);
    throw;
  }
  Linear(o_.data(), rows, weights_.w_o, out.data);
}

bool SparseAttentionBlock::UndoForward() noexcept { return cache_.TakeBack(&undo_); }

// ---- Training ----

namespace {
// What the backward needs, row-major over rows = batch · tokens: x, q and k after RoPE, v, the
// attention output and its LSE [batch, hq, tokens]. Nothing is tokens × tokens.
struct SparseTape final : TrainTape {
  std::vector<float> x, q, k, v, o, lse;
};
}  // namespace

void SparseAttentionBlock::EnsureGrads() {
  if (has_grads_) return;
  grads_ = weights_;
  has_grads_ = true;
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

std::vector<Param> SparseAttentionBlock::Params() {
  EnsureGrads();
  std::vector<Param> ps;
  AppendParam(ps, "w_q", weights_.w_q, grads_.w_q);
  AppendParam(ps, "w_k", weights_.w_k, grads_.w_k);
  AppendParam(ps, "w_v", weights_.w_v, grads_.w_v);
  AppendParam(ps, "w_o", weights_.w_o, grads_.w_o);
  return ps;
}

std::unique_ptr<TrainTape> SparseAttentionBlock::TrainForward(TensorView<const float> x,
                                                              TensorView<float> out) {
  constexpr const char* fn = "SparseAttentionBlock::TrainForward";
  const GqaConfig& c = config_.attention;
  CheckHidden(fn, c.hidden, x, out);
  const int64_t batch = x.batch(), n = x.tokens();
  Require(n > 0, fn, ": x must hold at least one token");
  Require(n <= c.max_tokens, fn, ": ", n, " tokens exceed max_tokens = ", c.max_tokens,
          " (the pattern covers positions [0, max_tokens))");
  const int64_t rows = CheckedMul(batch, n, fn, "batch*tokens");
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  auto buf = [&](std::initializer_list<int64_t> dims, const char* what) {
    return CheckedVector(CheckedProduct(dims, fn, what), 0.0f, fn, what);
  };
  auto tape = std::make_unique<SparseTape>();
  tape->owner = this;
  tape->shape = x.shape;
  tape->x = buf({rows, c.hidden}, "x");
  tape->q = buf({rows, hq, dk}, "q");
  tape->k = buf({rows, hkv, dk}, "k");
  tape->v = buf({rows, hkv, dv}, "v");
  tape->o = buf({rows, hq, dv}, "the attention output");
  tape->lse = buf({rows, hq}, "the log-sum-exp");
  std::copy(x.data, x.data + rows * c.hidden, tape->x.begin());
  Linear(x.data, rows, weights_.w_q, tape->q.data());
  Linear(x.data, rows, weights_.w_k, tape->k.data());
  Linear(x.data, rows, weights_.w_v, tape->v.data());
  const TensorView<float> qv = MakeBshd(tape->q.data(), batch, n, hq, dk);
  const TensorView<float> kv = MakeBshd(tape->k.data(), batch, n, hkv, dk);
  if (c.use_rope) {
    ApplyRope(qv, 0, c.rope);
    ApplyRope(kv, 0, c.rope);
  }
  DenseOptions opt = Options();
  opt.q_start = 0;
  DenseForward(TensorView<const float>(qv), TensorView<const float>(kv),
               MakeBshd<const float>(tape->v.data(), batch, n, hkv, dv),
               MakeBshd(tape->o.data(), batch, n, hq, dv), opt,
               MakeBhsd(tape->lse.data(), batch, hq, n, 1));
  Linear(tape->o.data(), rows, weights_.w_o, out.data);
  return tape;
}

void SparseAttentionBlock::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                                         TensorView<float> dx) {
  constexpr const char* fn = "SparseAttentionBlock::TrainBackward";
  tape_base.Check(fn, this, dout, dx);
  auto& t = dynamic_cast<SparseTape&>(tape_base);
  const GqaConfig& c = config_.attention;
  const int64_t batch = t.shape[0], n = t.shape[2], rows = batch * n;
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  // Every buffer before anything is written: a failed allocation changes nothing.
  EnsureGrads();
  auto buf = [&](size_t count, const char* what) {
    return CheckedVector(static_cast<int64_t>(count), 0.0f, fn, what);
  };
  std::vector<float> d_o = buf(t.o.size(), "do"), dq = buf(t.q.size(), "dq"),
                     dk_ = buf(t.k.size(), "dk"), dv_ = buf(t.v.size(), "dv");
  t.consumed = true;

  LinearBackward(t.o.data(), rows, weights_.w_o, dout.data, d_o.data(), grads_.w_o.data.data());
  DenseOptions opt = Options();
  opt.q_start = 0;
  const TensorView<float> dqv = MakeBshd(dq.data(), batch, n, hq, dk);
  const TensorView<float> dkv = MakeBshd(dk_.data(), batch, n, hkv, dk);
  DenseBackward(MakeBshd<const float>(t.q.data(), batch, n, hq, dk),
                MakeBshd<const float>(t.k.data(), batch, n, hkv, dk),
                MakeBshd<const float>(t.v.data(), batch, n, hkv, dv),
                MakeBshd<const float>(t.o.data(), batch, n, hq, dv),
                MakeBhsd<const float>(t.lse.data(), batch, hq, n, 1),
                MakeBshd<const float>(d_o.data(), batch, n, hq, dv),
                DenseGrads{.dq = dqv, .dk = dkv, .dv = MakeBshd(dv_.data(), batch, n, hkv, dv)},
                opt);
  if (c.use_rope) {
    ApplyRopeBackward(dqv, 0, c.rope);
    ApplyRopeBackward(dkv, 0, c.rope);
  }
  float* dxp = dx.data;  // null → only the weight gradients
  const float* xs = t.x.data();
  LinearBackward(xs, rows, weights_.w_q, dq.data(), dxp, grads_.w_q.data.data());
  LinearBackward(xs, rows, weights_.w_k, dk_.data(), dxp, grads_.w_k.data.data(), true);
  LinearBackward(xs, rows, weights_.w_v, dv_.data(), dxp, grads_.w_v.data.data(), true);
}

}  // namespace attnkit
