// The linear-attention layer (see include/attnkit/layers/linear_attention.h).
#include "attnkit/layers/linear_attention.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/linear_backward.h"

namespace attnkit {

const char* LinearAttentionKind(FeatureMap map) {
  switch (map) {
    case FeatureMap::kFavorPositive:
      return "performer";
    case FeatureMap::kEluPlusOne:
      return "linear_elu";
    case FeatureMap::kRelu:
      return "linear_relu";
  }
  return "linear";
}

int64_t LinearAttentionConfig::features() const {
  if (feature_map != FeatureMap::kFavorPositive) return head_dim;
  if (num_features > 0) return num_features;
  const double d = static_cast<double>(head_dim);
  return std::max(head_dim, static_cast<int64_t>(std::lround(d * std::log(d))));
}

void LinearAttentionConfig::Validate() const {
  constexpr const char* fn = "LinearAttentionConfig";
  Require(hidden > 0, fn, ": hidden must be > 0, got ", hidden);
  Require(num_heads > 0, fn, ": num_heads must be > 0, got ", num_heads);
  Require(num_heads_kv >= 0 && num_heads % kv_heads() == 0, fn, ": num_heads_kv (", num_heads_kv,
          ") must divide num_heads (", num_heads, ")");
  Require(head_dim > 0 && head_dim_v >= 0, fn, ": head_dim must be > 0 and head_dim_v >= 0, got ",
          head_dim, " and ", head_dim_v);
  Require(num_features >= 0, fn, ": num_features must be >= 0, got ", num_features);
  Require(num_features == 0 || feature_map == FeatureMap::kFavorPositive, fn,
          ": num_features applies to FAVOR+ only (elu+1 and ReLU have head_dim features)");
  Require(chunk_size >= 1, fn, ": chunk_size must be >= 1, got ", chunk_size);
  Require(num_threads >= 0, fn, ": num_threads must be >= 0, got ", num_threads);
  Require(batch > 0, fn, ": batch must be > 0, got ", batch);
}

std::string LinearAttentionConfig::Describe() const {
  std::ostringstream os;
  os << LinearAttentionKind(feature_map) << "(h=" << num_heads << ",hkv=" << kv_heads()
     << ",d=" << head_dim << ",dv=" << dv() << ",m=" << features() << ",chunk=" << chunk_size
     << ")";
  return os.str();
}

void LinearAttentionWeights::Check(const LinearAttentionConfig& c) const {
  constexpr const char* fn = "LinearAttentionWeights";
  CheckMatrix(fn, "w_q", w_q, c.hidden, c.num_heads * c.head_dim);
  CheckMatrix(fn, "w_k", w_k, c.hidden, c.kv_heads() * c.head_dim);
  CheckMatrix(fn, "w_v", w_v, c.hidden, c.kv_heads() * c.dv());
  CheckMatrix(fn, "w_o", w_o, c.num_heads * c.dv(), c.hidden);
}

size_t LinearAttentionWeights::bytes() const {
  return w_q.bytes() + w_k.bytes() + w_v.bytes() + w_o.bytes();
}

LinearAttentionWeights LinearAttentionWeights::Random(const LinearAttentionConfig& c,
                                                      uint64_t seed) {
  c.Validate();
  LinearAttentionWeights w;
  w.w_q = RandomMatrix(c.hidden, c.num_heads * c.head_dim, seed * 131 + 1);
  w.w_k = RandomMatrix(c.hidden, c.kv_heads() * c.head_dim, seed * 131 + 2);
  w.w_v = RandomMatrix(c.hidden, c.kv_heads() * c.dv(), seed * 131 + 3);
  w.w_o = RandomMatrix(c.num_heads * c.dv(), c.hidden, seed * 131 + 4);
  return w;
}

LinearAttentionBlock::LinearAttentionBlock(LinearAttentionConfig config,
                                           LinearAttentionWeights weights)
    : config_(config), weights_(std::move(weights)) {
  config_.Validate();
  weights_.Check(config_);
  if (config_.feature_map == FeatureMap::kFavorPositive) {
    features_ = PerformerFeatures(config_.features(), config_.head_dim, config_.feature_kind,
                                  config_.feature_seed);
  }
  state_ = LinearState(config_.batch, config_.kv_heads(), config_.features(), config_.dv());
}

LinearOptions LinearAttentionBlock::Options() const {
  LinearOptions o;
  o.feature_map = config_.feature_map;
  if (config_.feature_map == FeatureMap::kFavorPositive) o.features = &features_;
  o.causal = true;
  o.chunk_size = config_.chunk_size;
  o.num_threads = config_.num_threads;
  o.backend = config_.backend;
  return o;
}

void LinearAttentionBlock::Reset() {
  seen_ = 0;
  undo_seen_ = -1;
  state_.Reset();
}

bool LinearAttentionBlock::UndoForward() noexcept {
  if (undo_seen_ < 0) return false;
  std::copy(saved_.s.begin(), saved_.s.end(), state_.s.begin());
  std::copy(saved_.z.begin(), saved_.z.end(), state_.z.begin());
  std::copy(saved_.max_shift.begin(), saved_.max_shift.end(), state_.max_shift.begin());
  state_.tokens = saved_.tokens;
  seen_ = undo_seen_;
  undo_seen_ = -1;
  return true;
}

void LinearAttentionBlock::RedrawFeatures(uint64_t seed) {
  Require(config_.feature_map == FeatureMap::kFavorPositive,
          "LinearAttentionBlock::RedrawFeatures: only FAVOR+ (performer) has random features, "
          "this block is ",
          Kind());
  features_.Redraw(seed);
  ++draw_;
  Reset();
}

void LinearAttentionBlock::Forward(TensorView<const float> x, int64_t position,
                                   TensorView<float> out) {
  constexpr const char* fn = "LinearAttentionBlock::Forward";
  const LinearAttentionConfig& c = config_;
  undo_seen_ = -1;
  CheckHidden(fn, c.hidden, x, out);
  Require(x.batch() == c.batch, fn, ": x has batch ", x.batch(), " but the block was built for ",
          c.batch);
  CheckPosition(fn, position, seen_);
  const int64_t n = x.tokens(), rows = c.batch * n;
  const int64_t hq = c.num_heads, hkv = c.kv_heads(), dk = c.head_dim, dv = c.dv();
  // Buffers first; the engine checks everything before it updates the state, so a failed call
  // leaves the block unchanged.
  CheckedResize(q_, CheckedProduct({rows, hq, dk}, fn, "rows*heads*head_dim"), fn, "q");
  CheckedResize(k_, CheckedProduct({rows, hkv, dk}, fn, "rows*heads*head_dim"), fn, "k");
  CheckedResize(v_, CheckedProduct({rows, hkv, dv}, fn, "rows*heads*head_dim_v"), fn, "v");
  CheckedResize(o_, CheckedProduct({rows, hq, dv}, fn, "rows*heads*head_dim_v"), fn, "o");
  // A copy of the state for UndoForward (a Stack's rollback): one pass over it per call.
  CheckedResize(saved_.s, static_cast<int64_t>(state_.s.size()), fn, "the state copy");
  CheckedResize(saved_.z, static_cast<int64_t>(state_.z.size()), fn, "the state copy");
  CheckedResize(saved_.max_shift, static_cast<int64_t>(state_.max_shift.size()), fn,
                "the state copy");
  std::copy(state_.s.begin(), state_.s.end(), saved_.s.begin());
  std::copy(state_.z.begin(), state_.z.end(), saved_.z.begin());
  std::copy(state_.max_shift.begin(), state_.max_shift.end(), saved_.max_shift.begin());
  saved_.tokens = state_.tokens;
  Linear(x.data, rows, weights_.w_q, q_.data());
  Linear(x.data, rows, weights_.w_k, k_.data());
  Linear(x.data, rows, weights_.w_v, v_.data());
  LinearForward(MakeBshd<const float>(q_.data(), c.batch, n, hq, dk),
                MakeBshd<const float>(k_.data(), c.batch, n, hkv, dk),
                MakeBshd<const float>(v_.data(), c.batch, n, hkv, dv),
                MakeBshd(o_.data(), c.batch, n, hq, dv), Options(), &state_);
  Linear(o_.data(), rows, weights_.w_o, out.data);
  undo_seen_ = seen_;
  seen_ += n;
}

// ---- Training ----

namespace {
// What the backward needs, row-major over rows = batch · tokens: x, the projections and the
// attention output (for W_o's gradient). Nothing is tokens × tokens.
struct LinearAttentionTape final : TrainTape {
  uint64_t draw = 0;     // the block's feature draw when written
  std::vector<float> x;  // [rows, hidden]
  std::vector<float> q;  // [rows, num_heads · head_dim]
  std::vector<float> k;  // [rows, num_heads_kv · head_dim]
  std::vector<float> v;  // [rows, num_heads_kv · head_dim_v]
  std::vector<float> o;  // [rows, num_heads · head_dim_v]
};
}  // namespace

void LinearAttentionBlock::EnsureGrads() {
  if (has_grads_) return;
  grads_ = weights_;
  has_grads_ = true;
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

std::vector<Param> LinearAttentionBlock::Params() {
  EnsureGrads();
  std::vector<Param> ps;
  AppendParam(ps, "w_q", weights_.w_q, grads_.w_q);
  AppendParam(ps, "w_k", weights_.w_k, grads_.w_k);
  AppendParam(ps, "w_v", weights_.w_v, grads_.w_v);
  AppendParam(ps, "w_o", weights_.w_o, grads_.w_o);
  return ps;
}

std::unique_ptr<TrainTape> LinearAttentionBlock::TrainForward(TensorView<const float> x,
                                                              TensorView<float> out) {
  constexpr const char* fn = "LinearAttentionBlock::TrainForward";
  const LinearAttentionConfig& c = config_;
  CheckHidden(fn, c.hidden, x, out);
  const int64_t batch = x.batch(), n = x.tokens();
  Require(n > 0, fn, ": x must hold at least one token");
  const int64_t rows = CheckedMul(batch, n, fn, "batch*tokens");
  const int64_t hq = c.num_heads, hkv = c.kv_heads(), dk = c.head_dim, dv = c.dv();
  auto buf = [&](std::initializer_list<int64_t> dims, const char* what) {
    return CheckedVector(CheckedProduct(dims, fn, what), 0.0f, fn, what);
  };
  auto tape = std::make_unique<LinearAttentionTape>();
  tape->owner = this;
  tape->shape = x.shape;
  tape->draw = draw_;
  tape->x = buf({rows, c.hidden}, "x");
  tape->q = buf({rows, hq, dk}, "q");
  tape->k = buf({rows, hkv, dk}, "k");
  tape->v = buf({rows, hkv, dv}, "v");
  tape->o = buf({rows, hq, dv}, "the attention output");
  std::copy(x.data, x.data + rows * c.hidden, tape->x.begin());
  Linear(x.data, rows, weights_.w_q, tape->q.data());
  Linear(x.data, rows, weights_.w_k, tape->k.data());
  Linear(x.data, rows, weights_.w_v, tape->v.data());
  LinearForward(MakeBshd<const float>(tape->q.data(), batch, n, hq, dk),
                MakeBshd<const float>(tape->k.data(), batch, n, hkv, dk),
                MakeBshd<const float>(tape->v.data(), batch, n, hkv, dv),
                MakeBshd(tape->o.data(), batch, n, hq, dv), Options());
  Linear(tape->o.data(), rows, weights_.w_o, out.data);
  return tape;
}

void LinearAttentionBlock::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                                         TensorView<float> dx) {
  constexpr const char* fn = "LinearAttentionBlock::TrainBackward";
  tape_base.Check(fn, this, dout, dx);
  auto& t = dynamic_cast<LinearAttentionTape&>(tape_base);
  Require(t.draw == draw_, fn,
          ": tape was written before RedrawFeatures (its features are gone; run TrainForward "
          "again)");
  const LinearAttentionConfig& c = config_;
  const int64_t batch = t.shape[0], n = t.shape[2], rows = batch * n;
  const int64_t hq = c.num_heads, hkv = c.kv_heads(), dk = c.head_dim, dv = c.dv();
  // Every buffer before anything is written: a failed allocation changes nothing.
  EnsureGrads();
  auto buf = [&](size_t count, const char* what) {
    return CheckedVector(static_cast<int64_t>(count), 0.0f, fn, what);
  };
  std::vector<float> d_o = buf(t.o.size(), "do"), dq = buf(t.q.size(), "dq"),
                     dk_ = buf(t.k.size(), "dk"), dv_ = buf(t.v.size(), "dv");
  // do = dout W_oᵀ, then the engine's backward (which may still fail: nothing written yet).
  LinearBackward(t.o.data(), rows, weights_.w_o, dout.data, d_o.data(), nullptr);
  LinearBackward(MakeBshd<const float>(t.q.data(), batch, n, hq, dk),
                 MakeBshd<const float>(t.k.data(), batch, n, hkv, dk),
                 MakeBshd<const float>(t.v.data(), batch, n, hkv, dv),
                 MakeBshd<const float>(d_o.data(), batch, n, hq, dv),
                 MakeBshd(dq.data(), batch, n, hq, dk), MakeBshd(dk_.data(), batch, n, hkv, dk),
                 MakeBshd(dv_.data(), batch, n, hkv, dv), Options());
  t.consumed = true;
  LinearBackward(t.o.data(), rows, weights_.w_o, dout.data, nullptr, grads_.w_o.data.data());
  float* dxp = dx.data;  // null → only the weight gradients
  const float* xs = t.x.data();
  LinearBackward(xs, rows, weights_.w_q, dq.data(), dxp, grads_.w_q.data.data());
  LinearBackward(xs, rows, weights_.w_k, dk_.data(), dxp, grads_.w_k.data.data(), true);
  LinearBackward(xs, rows, weights_.w_v, dv_.data(), dxp, grads_.w_v.data.data(), true);
}

}  // namespace attnkit
