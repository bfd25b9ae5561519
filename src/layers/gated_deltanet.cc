// The Gated DeltaNet / KDA layer (see include/attnkit/layers/gated_deltanet.h).
#include "attnkit/layers/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "attnkit/core/checked.h"

namespace attnkit {

void GatedDeltaNetConfig::Validate() const {
  const char* fn = "GatedDeltaNetConfig";
  Require(hidden > 0, fn, ": hidden must be > 0, got ", hidden);
  Require(num_heads_qk > 0, fn, ": num_heads_qk must be > 0, got ", num_heads_qk);
  Require(num_heads_v > 0 && num_heads_v % num_heads_qk == 0, fn, ": num_heads_v (", num_heads_v,
          ") must be a positive multiple of num_heads_qk (", num_heads_qk, ")");
  Require(head_dim_qk > 0 && head_dim_v > 0, fn, ": head dims must be > 0, got ", head_dim_qk,
          " and ", head_dim_v);
  Require(conv_kernel >= 1, fn, ": conv_kernel must be >= 1, got ", conv_kernel);
  Require(norm_eps > 0, fn, ": norm_eps must be > 0, got ", norm_eps);
  Require(batch > 0, fn, ": batch must be > 0, got ", batch);
}

std::string GatedDeltaNetConfig::Describe() const {
  std::ostringstream os;
  os << (per_channel_decay ? "kda" : "gated_deltanet") << "(hqk=" << num_heads_qk
     << ",hv=" << num_heads_v << ",dk=" << head_dim_qk << ",dv=" << head_dim_v
     << ",conv=" << conv_kernel << ",chunk=" << kernel.chunk_size << ")";
  return os.str();
}

void GatedDeltaNetWeights::Check(const GatedDeltaNetConfig& c) const {
  const char* fn = "GatedDeltaNetWeights";
  const int64_t hv = c.num_heads_v;
  CheckMatrix(fn, "w_qkv", w_qkv, c.hidden, c.conv_channels());
  CheckMatrix(fn, "w_a", w_a, c.hidden, hv * c.decay_width());
  CheckMatrix(fn, "w_b", w_b, c.hidden, hv);
  CheckMatrix(fn, "w_g", w_g, c.hidden, hv * c.head_dim_v);
  CheckMatrix(fn, "w_o", w_o, hv * c.head_dim_v, c.hidden);
  CheckMatrix(fn, "conv", conv, c.conv_channels(), c.conv_kernel);
  CheckVector(fn, "a_log", a_log, hv);
  CheckVector(fn, "dt_bias", dt_bias, hv * c.decay_width());
  CheckVector(fn, "norm", norm, c.head_dim_v);
}

size_t GatedDeltaNetWeights::bytes() const {
  return w_qkv.bytes() + w_a.bytes() + w_b.bytes() + w_g.bytes() + w_o.bytes() + conv.bytes() +
         (a_log.size() + dt_bias.size() + norm.size()) * sizeof(float);
}

GatedDeltaNetWeights GatedDeltaNetWeights::Random(const GatedDeltaNetConfig& c, uint64_t seed) {
  c.Validate();
  GatedDeltaNetWeights w;
  const int64_t hv = c.num_heads_v;
  auto mat = [&](int64_t r, int64_t cols, float scale, uint64_t s) {
    Matrix m(r, cols);
    FillUniform(m.data.data(), m.data.size(), scale, seed * 131 + s);
    return m;
  };
  w.w_qkv = mat(c.hidden, c.conv_channels(), InitScale(c.hidden), 1);
  w.w_a = mat(c.hidden, hv * c.decay_width(), InitScale(c.hidden), 2);
  w.w_b = mat(c.hidden, hv, InitScale(c.hidden), 3);
  w.w_g = mat(c.hidden, hv * c.head_dim_v, InitScale(c.hidden), 4);
  w.w_o = mat(hv * c.head_dim_v, c.hidden, InitScale(hv * c.head_dim_v), 5);
  w.conv = mat(c.conv_channels(), c.conv_kernel, InitScale(c.conv_kernel), 6);
  // Decay rates exp(A_log) in about [1, 16] as the models initialise A ~ U(1, 16); dt_bias near
  // softplus⁻¹ of small time steps.
  w.a_log.resize(static_cast<size_t>(hv));
  FillUniform(w.a_log.data(), w.a_log.size(), 1.0f, seed * 131 + 7);
  for (auto& x : w.a_log) x = std::log(8.5f + 7.5f * x);
  w.dt_bias.resize(static_cast<size_t>(hv * c.decay_width()));
  FillUniform(w.dt_bias.data(), w.dt_bias.size(), 1.0f, seed * 131 + 8);
  for (auto& x : w.dt_bias) x = -4.0f + 1.5f * x;
  w.norm.assign(static_cast<size_t>(c.head_dim_v), 1.0f);
  return w;
}

GatedDeltaNetBlock::GatedDeltaNetBlock(GatedDeltaNetConfig config, GatedDeltaNetWeights weights)
    : config_(config), weights_(std::move(weights)) {
  config_.Validate();
  weights_.Check(config_);
  Reset();
}

void GatedDeltaNetBlock::Reset() {
  const GatedDeltaNetConfig& c = config_;
  seen_ = 0;
  undo_seen_ = -1;
  state_.assign(static_cast<size_t>(c.batch * c.num_heads_v * c.head_dim_qk * c.head_dim_v), 0.0f);
  conv_state_.assign(static_cast<size_t>(c.batch * (c.conv_kernel - 1) * c.conv_channels()), 0.0f);
}

void GatedDeltaNetBlock::Forward(TensorView<const float> x, int64_t position,
                                 TensorView<float> out) {
  constexpr const char* fn = "GatedDeltaNetBlock::Forward";
  const GatedDeltaNetConfig& c = config_;
  undo_seen_ = -1;
  CheckHidden(fn, c.hidden, x, out);
  Require(x.batch() == c.batch, fn, ": x has batch ", x.batch(), " but the block was built for ",
          c.batch);
  CheckPosition(fn, position, seen_);
  const int64_t n = x.tokens(), batch = c.batch, rows = batch * n;
  const int64_t hqk = c.num_heads_qk, hv = c.num_heads_v, dk = c.head_dim_qk, dv = c.head_dim_v;
  const int64_t ch = c.conv_channels(), width = c.decay_width();
  // Buffers first: a failed allocation leaves the block unchanged.
  const int64_t np = CheckedMul(rows, ch, fn, "rows*conv_channels");
  const int64_t na = CheckedProduct({rows, hv, width}, fn, "rows*heads*decay_width");
  const int64_t no = CheckedProduct({rows, hv, dv}, fn, "rows*heads*head_dim_v");
  CheckedResize(proj_, np, fn, "the projections");
  CheckedResize(conv_, np, fn, "the convolution output");
  CheckedResize(a_, na, fn, "the decay inputs");
  CheckedResize(la_, na, fn, "the decay gates");
  CheckedResize(b_, rows * hv, fn, "the write inputs");
  CheckedResize(beta_, rows * hv, fn, "the write gates");
  CheckedResize(o_, no, fn, "the output");
  CheckedResize(g_, no, fn, "the output gate");
  CheckedResize(conv_saved_, static_cast<int64_t>(conv_state_.size()), fn, "the state copy");
  CheckedResize(state_saved_, static_cast<int64_t>(state_.size()), fn, "the state copy");

  // Projections (BLAS) and the short convolution over [q | k | v] channels.
  Linear(x.data, rows, weights_.w_qkv, proj_.data());
  Linear(x.data, rows, weights_.w_a, a_.data());
  Linear(x.data, rows, weights_.w_b, b_.data());
  Linear(x.data, rows, weights_.w_g, g_.data());
  TensorView<const float> pv = MakeBhsd<const float>(proj_.data(), batch, 1, n, ch);
  TensorView<float> cv = MakeBhsd(conv_.data(), batch, 1, n, ch);
  TensorView<float> cs = c.conv_kernel > 1
                             ? MakeBhsd(conv_state_.data(), batch, 1, c.conv_kernel - 1, ch)
                             : TensorView<float>{};
  // The convolution state changes here, the recurrent state in GatedDeltaForward (which checks
  // and allocates before it writes): if that fails, the convolution state is put back and the
  // block is as if never called. Both copies also serve UndoForward (a Stack's rollback); the
  // recurrent state's copy costs one pass over it, small beside the projections' weights.
  std::copy(conv_state_.begin(), conv_state_.end(), conv_saved_.begin());
  std::copy(state_.begin(), state_.end(), state_saved_.begin());
  ShortConvForward(pv, weights_.conv.data, c.conv_kernel, cv, cs);

  // [batch, tokens, channels] rows viewed per head without copies.
  auto heads_view = [&](float* base, int64_t heads, int64_t dim, int64_t row_stride) {
    return TensorView<float>{base, {batch, heads, n, dim}, {n * row_stride, dim, row_stride, 1}};
  };
  const TensorView<float> q = heads_view(conv_.data(), hqk, dk, ch);
  const TensorView<float> k = heads_view(conv_.data() + hqk * dk, hqk, dk, ch);
  const TensorView<float> v = heads_view(conv_.data() + 2 * hqk * dk, hv, dv, ch);
  const TensorView<float> av = heads_view(a_.data(), hv, width, hv * width);
  const TensorView<float> lav = heads_view(la_.data(), hv, width, hv * width);
  const TensorView<float> bv = heads_view(b_.data(), hv, 1, hv);
  const TensorView<float> betav = heads_view(beta_.data(), hv, 1, hv);
  ComputeDecayGate(av, weights_.a_log, weights_.dt_bias, lav);
  ComputeWriteGate(bv, betav);

  const TensorView<float> ov = heads_view(o_.data(), hv, dv, hv * dv);
  const TensorView<float> sv = MakeBhsd(state_.data(), batch, hv, dk, dv);
  try {
    GatedDeltaForward(q, k, v, lav, betav, ov, sv, c.kernel);
  } catch (...) {
    std::copy(conv_saved_.begin(), conv_saved_.end(), conv_state_.begin());
    throw;
  }

  // Gated RMSNorm per head, in place, then the output projection.
  const TensorView<float> gv = heads_view(g_.data(), hv, dv, hv * dv);
  GatedRmsNorm(ov, gv, weights_.norm, c.norm_eps, ov);
  Linear(o_.data(), rows, weights_.w_o, out.data);
  undo_seen_ = seen_;
  seen_ += n;
}

bool GatedDeltaNetBlock::UndoForward() noexcept {
  if (undo_seen_ < 0) return false;
  std::copy(conv_saved_.begin(), conv_saved_.end(), conv_state_.begin());
  std::copy(state_saved_.begin(), state_saved_.end(), state_.begin());
  seen_ = undo_seen_;
  undo_seen_ = -1;
  return true;
}

}  // namespace attnkit
