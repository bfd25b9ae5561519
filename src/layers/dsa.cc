// DeepSeek Sparse Attention as a layer (see include/attnkit/layers/dsa.h).
#include "attnkit/layers/dsa.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/kernels/gather_backward.h"

namespace attnkit {

void DsaConfig::Validate() const {
  constexpr const char* fn = "DsaConfig";
  attention.Validate();
  const GqaConfig& a = attention;
  Require(!a.qk_norm && !a.output_gate && !a.sinks && a.softcap == 0.0f && a.window == 0 &&
              a.pattern.name.empty(),
          fn,
          ": qk_norm, output_gate, sinks, softcap, window and pattern are GqaBlock options, not "
          "supported by the DSA block");
  Require(index_heads > 0 && index_dim > 0, fn, ": index_heads and index_dim must be > 0, got ",
          index_heads, " and ", index_dim);
  Require(top_k >= 1, fn, ": top_k must be >= 1, got ", top_k);
}

std::string DsaConfig::Describe() const {
  std::ostringstream os;
  os << "dsa(hq=" << attention.num_heads_q << ",hkv=" << attention.num_heads_kv
     << ",d=" << attention.head_dim << ",index_heads=" << index_heads << ",index_dim=" << index_dim
     << ",top_k=" << top_k << ")";
  return os.str();
}

void DsaWeights::Check(const DsaConfig& c) const {
  constexpr const char* fn = "DsaWeights";
  c.Validate();
  attention.Check(c.attention);
  CheckMatrix(fn, "w_index_q", w_index_q, c.attention.hidden, c.index_heads * c.index_dim);
  CheckMatrix(fn, "w_index_k", w_index_k, c.attention.hidden, c.index_dim);
  CheckMatrix(fn, "w_index_w", w_index_w, c.attention.hidden, c.index_heads);
}

size_t DsaWeights::bytes() const {
  return attention.bytes() + w_index_q.bytes() + w_index_k.bytes() + w_index_w.bytes();
}

DsaWeights DsaWeights::Random(const DsaConfig& c, uint64_t seed) {
  c.Validate();
  DsaWeights w;
  w.attention = GqaWeights::Random(c.attention, seed);
  const uint64_t s = seed * 131 + 50;
  w.w_index_q = RandomMatrix(c.attention.hidden, c.index_heads * c.index_dim, s + 1);
  w.w_index_k = RandomMatrix(c.attention.hidden, c.index_dim, s + 2);
  w.w_index_w = RandomMatrix(c.attention.hidden, c.index_heads, s + 3);
  return w;
}

DsaBlock::DsaBlock(DsaConfig config, DsaWeights weights)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      cache_(config_.attention.batch, config_.attention.num_heads_kv, config_.attention.head_dim,
             config_.attention.dv(), config_.attention.max_tokens) {
  weights_.Check(config_);
  const GqaConfig& c = config_.attention;
  index_keys_ = CheckedVector(CheckedProduct({c.batch, c.max_tokens, config_.index_dim}, "DsaBlock",
                                             "batch*max_tokens*index_dim"),
                              0.0f, "DsaBlock", "the indexer key cache");
}

namespace {
GatherOptions AttentionOptions(const GqaConfig& c) {
  GatherOptions o;
  if (c.scale != 0.0f) o.scale = c.scale;
  o.backend = c.backend;
  return o;
}

// f32 indexer (training and inference select alike) with queries from q_start.
IndexerOptions IndexOptions(const GqaConfig& c, int64_t q_start) {
  IndexerOptions o;
  o.k_start = 0;
  o.q_start = q_start;
  o.reduced_precision = false;
  o.backend = c.backend;
  return o;
}
}  // namespace

void DsaBlock::Forward(TensorView<const float> x, int64_t position, TensorView<float> out) {
  constexpr const char* fn = "DsaBlock::Forward";
  const GqaConfig& c = config_.attention;
  undo_.length = -1;  // nothing to undo until this call succeeds
  CheckHidden(fn, c.hidden, x, out);
  Require(x.batch() == c.batch, fn, ": x has batch ", x.batch(), " but the block was built for ",
          c.batch);
  CheckPosition(fn, position, tokens_seen());
  const int64_t n = x.tokens(), batch = c.batch, rows = batch * n;
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  const int64_t ih = config_.index_heads, id = config_.index_dim, top_k = config_.top_k;
  Require(position + n <= c.max_tokens, fn, ": ", n, " tokens at position ", position,
          " exceed the KV cache capacity max_tokens = ", c.max_tokens);
  // Every buffer first: nothing below changes the block until attention has succeeded.
  CheckedResize(q_, CheckedProduct({rows, hq, dk}, fn, "rows*heads*head_dim"), fn, "q");
  CheckedResize(k_, CheckedProduct({rows, hkv, dk}, fn, "rows*heads*head_dim"), fn, "k");
  CheckedResize(v_, CheckedProduct({rows, hkv, dv}, fn, "rows*heads*head_dim_v"), fn, "v");
  CheckedResize(o_, CheckedProduct({rows, hq, dv}, fn, "rows*heads*head_dim_v"), fn, "o");
  CheckedResize(qi_, CheckedProduct({rows, ih, id}, fn, "rows*index_heads*index_dim"), fn, "q_I");
  CheckedResize(ki_, CheckedMul(rows, id, fn, "rows*index_dim"), fn, "k_I");
  CheckedResize(wi_, CheckedMul(rows, ih, fn, "rows*index_heads"), fn, "w");
  CheckedResize(sel_, CheckedMul(rows, top_k, fn, "rows*top_k"), fn, "the selection");
  const Matrix* w[] = {&weights_.attention.w_q, &weights_.attention.w_k, &weights_.attention.w_v,
                       &weights_.w_index_q,     &weights_.w_index_k,     &weights_.w_index_w};
  float* y[] = {q_.data(), k_.data(), v_.data(), qi_.data(), ki_.data(), wi_.data()};
  for (int i = 0; i < 6; ++i) Linear(x.data, rows, *w[i], y[i]);
  const TensorView<float> qv = MakeBshd(q_.data(), batch, n, hq, dk);
  const TensorView<float> kv = MakeBshd(k_.data(), batch, n, hkv, dk);
  if (c.use_rope) {
    ApplyRope(qv, position, c.rope);
    ApplyRope(kv, position, c.rope);
  }
  // The new indexer keys go into slots [position, position + n), past the cached length: a failed
  // call leaves them invisible.
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(index_keys_.data() + (b * c.max_tokens + position) * id, ki_.data() + b * n * id,
                sizeof(float) * static_cast<size_t>(n * id));
  }
  const int64_t length = position + n;
  const TensorView<const float> keys{
      index_keys_.data(), {batch, 1, length, id}, {c.max_tokens * id, id, id, 1}};
  const TensorView<int32_t> sel = MakeBshd(sel_.data(), batch, n, 1, top_k);
  DsaSelect(MakeBshd<const float>(qi_.data(), batch, n, ih, id),
            MakeBshd<const float>(wi_.data(), batch, n, 1, ih), keys, top_k, sel,
            IndexOptions(c, position));
  cache_.SaveUndo(n, &undo_);
  cache_.Append(kv, MakeBshd<const float>(v_.data(), batch, n, hkv, dv));
  try {
    const auto segs = cache_.Segments();  // one contiguous piece: rows are positions
    GatherForward(TensorView<const float>(qv), segs[0].k, segs[0].v, TensorView<const int32_t>(sel),
                  MakeBshd(o_.data(), batch, n, hq, dv), AttentionOptions(c));
  } catch (...) {
    cache_.TakeBack(&undo_);
    throw;
  }
  Linear(o_.data(), rows, weights_.attention.w_o, out.data);
}

// ---- Training ----

namespace {
// What the backward needs, row-major over rows = batch · tokens: x, q and k after RoPE, v, the
// attention output and its LSE, the indexer's q_I, k_I, w and the selection (top_k per row).
struct DsaTape final : TrainTape {
  std::vector<float> x, q, k, v, o, lse, qi, ki, wi;
  std::vector<int32_t> sel;
};
}  // namespace

void DsaBlock::EnsureGrads() {
  if (has_grads_) return;
  grads_ = weights_;
  has_grads_ = true;
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

std::vector<Param> DsaBlock::Params() {
  EnsureGrads();
  std::vector<Param> ps;
  GqaWeights& w = weights_.attention;
  GqaWeights& g = grads_.attention;
  AppendParam(ps, "w_q", w.w_q, g.w_q);
  AppendParam(ps, "w_k", w.w_k, g.w_k);
  AppendParam(ps, "w_v", w.w_v, g.w_v);
  AppendParam(ps, "w_o", w.w_o, g.w_o);
  AppendParam(ps, "w_index_q", weights_.w_index_q, grads_.w_index_q);
  AppendParam(ps, "w_index_k", weights_.w_index_k, grads_.w_index_k);
  AppendParam(ps, "w_index_w", weights_.w_index_w, grads_.w_index_w);
  return ps;
}

std::unique_ptr<TrainTape> DsaBlock::TrainForward(TensorView<const float> x,
                                                  TensorView<float> out) {
  constexpr const char* fn = "DsaBlock::TrainForward";
  const GqaConfig& c = config_.attention;
  CheckHidden(fn, c.hidden, x, out);
  const int64_t batch = x.batch(), n = x.tokens();
  Require(n > 0, fn, ": x must hold at least one token");
  const int64_t rows = CheckedMul(batch, n, fn, "batch*tokens");
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  const int64_t ih = config_.index_heads, id = config_.index_dim, top_k = config_.top_k;
  auto buf = [&](std::initializer_list<int64_t> dims, const char* what) {
    return CheckedVector(CheckedProduct(dims, fn, what), 0.0f, fn, what);
  };
  auto tape = std::make_unique<DsaTape>();
  tape->owner = this;
  tape->shape = x.shape;
  tape->x = buf({rows, c.hidden}, "x");
  tape->q = buf({rows, hq, dk}, "q");
  tape->k = buf({rows, hkv, dk}, "k");
  tape->v = buf({rows, hkv, dv}, "v");
  tape->o = buf({rows, hq, dv}, "the attention output");
  tape->lse = buf({rows, hq}, "the log-sum-exp");
  tape->qi = buf({rows, ih, id}, "q_I");
  tape->ki = buf({rows, id}, "k_I");
  tape->wi = buf({rows, ih}, "w");
  tape->sel =
      CheckedVector(CheckedMul(rows, top_k, fn, "rows*top_k"), int32_t{-1}, fn, "the selection");
  std::copy(x.data, x.data + rows * c.hidden, tape->x.begin());
  const Matrix* w[] = {&weights_.attention.w_q, &weights_.attention.w_k, &weights_.attention.w_v,
                       &weights_.w_index_q,     &weights_.w_index_k,     &weights_.w_index_w};
  float* y[] = {tape->q.data(),  tape->k.data(),  tape->v.data(),
                tape->qi.data(), tape->ki.data(), tape->wi.data()};
  for (int i = 0; i < 6; ++i) Linear(x.data, rows, *w[i], y[i]);
  const TensorView<float> qv = MakeBshd(tape->q.data(), batch, n, hq, dk);
  const TensorView<float> kv = MakeBshd(tape->k.data(), batch, n, hkv, dk);
  if (c.use_rope) {
    ApplyRope(qv, 0, c.rope);
    ApplyRope(kv, 0, c.rope);
  }
  const TensorView<int32_t> sel = MakeBshd(tape->sel.data(), batch, n, 1, top_k);
  DsaSelect(MakeBshd<const float>(tape->qi.data(), batch, n, ih, id),
            MakeBshd<const float>(tape->wi.data(), batch, n, 1, ih),
            MakeBshd<const float>(tape->ki.data(), batch, n, 1, id), top_k, sel,
            IndexOptions(c, 0));
  GatherForward(TensorView<const float>(qv), TensorView<const float>(kv),
                MakeBshd<const float>(tape->v.data(), batch, n, hkv, dv),
                TensorView<const int32_t>(sel), MakeBshd(tape->o.data(), batch, n, hq, dv),
                AttentionOptions(c), MakeBhsd(tape->lse.data(), batch, hq, n, 1));
  Linear(tape->o.data(), rows, weights_.attention.w_o, out.data);
  return tape;
}

void DsaBlock::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                             TensorView<float> dx) {
  constexpr const char* fn = "DsaBlock::TrainBackward";
  tape_base.Check(fn, this, dout, dx);
  auto& t = dynamic_cast<DsaTape&>(tape_base);
  const GqaConfig& c = config_.attention;
  const int64_t batch = t.shape[0], n = t.shape[2], rows = batch * n;
  const int64_t hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv();
  const int64_t ih = config_.index_heads, id = config_.index_dim, top_k = config_.top_k;
  // Every buffer before anything is written: a failed allocation changes nothing.
  EnsureGrads();
  auto buf = [&](size_t count, const char* what) {
    return CheckedVector(static_cast<int64_t>(count), 0.0f, fn, what);
  };
  std::vector<float> d_o = buf(t.o.size(), "do"), dq = buf(t.q.size(), "dq"),
                     dk_ = buf(t.k.size(), "dk"), dv_ = buf(t.v.size(), "dv"),
                     target = buf(t.sel.size(), "the indexer target"),
                     dqi = buf(t.qi.size(), "dq_I"), dki = buf(t.ki.size(), "dk_I"),
                     dwi = buf(t.wi.size(), "dw");
  // The kernels first: they may still fail, and nothing is written before they have succeeded.
  // The attention: do = dout W_oᵀ, then the gathered attention's backward.
  GqaWeights& w = weights_.attention;
  GqaWeights& g = grads_.attention;
  LinearBackward(t.o.data(), rows, w.w_o, dout.data, d_o.data(), nullptr);
  const TensorView<const float> qv = MakeBshd<const float>(t.q.data(), batch, n, hq, dk);
  const TensorView<const float> kv = MakeBshd<const float>(t.k.data(), batch, n, hkv, dk);
  const TensorView<const int32_t> sel = MakeBshd<const int32_t>(t.sel.data(), batch, n, 1, top_k);
  const TensorView<const float> lse = MakeBhsd<const float>(t.lse.data(), batch, hq, n, 1);
  const TensorView<float> dqv = MakeBshd(dq.data(), batch, n, hq, dk);
  const TensorView<float> dkv = MakeBshd(dk_.data(), batch, n, hkv, dk);
  GatherBackward(qv, kv, MakeBshd<const float>(t.v.data(), batch, n, hkv, dv), sel,
                 MakeBshd<const float>(t.o.data(), batch, n, hq, dv), lse,
                 MakeBshd<const float>(d_o.data(), batch, n, hq, dv),
                 GatherGrads{.dq = dqv, .dk = dkv, .dv = MakeBshd(dv_.data(), batch, n, hkv, dv)},
                 AttentionOptions(c));
  // The indexer, by its own loss: KL(main attention's distribution over the selected keys ‖
  // the indexer's softmax), the target a constant; its input x detached (no dx).
  IndexerTarget(qv, kv, sel, lse, MakeBshd(target.data(), batch, n, 1, top_k), AttentionOptions(c));
  const double indexer_loss =
      IndexerKlBackward(MakeBshd<const float>(t.qi.data(), batch, n, ih, id),
                        MakeBshd<const float>(t.wi.data(), batch, n, 1, ih),
                        MakeBshd<const float>(t.ki.data(), batch, n, 1, id), sel,
                        MakeBshd<const float>(target.data(), batch, n, 1, top_k),
                        IndexerGrads{.dq_index = MakeBshd(dqi.data(), batch, n, ih, id),
                                     .dweights = MakeBshd(dwi.data(), batch, n, 1, ih),
                                     .dk_index = MakeBshd(dki.data(), batch, n, 1, id)},
                        IndexOptions(c, 0));

  // Every kernel has succeeded: the gradients and dx.
  t.consumed = true;
  last_indexer_loss_ = indexer_loss;
  LinearBackward(t.o.data(), rows, w.w_o, dout.data, nullptr, g.w_o.data.data());
  if (c.use_rope) {
    ApplyRopeBackward(dqv, 0, c.rope);
    ApplyRopeBackward(dkv, 0, c.rope);
  }
  float* dxp = dx.data;  // null → only the weight gradients
  const float* xs = t.x.data();
  LinearBackward(xs, rows, w.w_q, dq.data(), dxp, g.w_q.data.data());
  LinearBackward(xs, rows, w.w_k, dk_.data(), dxp, g.w_k.data.data(), true);
  LinearBackward(xs, rows, w.w_v, dv_.data(), dxp, g.w_v.data.data(), true);
  LinearBackward(xs, rows, weights_.w_index_q, dqi.data(), nullptr, grads_.w_index_q.data.data());
  LinearBackward(xs, rows, weights_.w_index_k, dki.data(), nullptr, grads_.w_index_k.data.data());
  LinearBackward(xs, rows, weights_.w_index_w, dwi.data(), nullptr, grads_.w_index_w.data.data());
}

}  // namespace attnkit
