// The Gated DeltaNet / KDA layer (see include/attnkit/layers/gated_deltanet.h).
#include "attnkit/layers/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/recurrent_backward.h"

namespace attnkit {

namespace {
// Rows of `row_stride` floats ([batch, tokens, row_stride] memory) viewed as
// [batch, heads, tokens, dim] without a copy, starting at base.
TensorView<float> HeadsView(float* base, int64_t batch, int64_t n, int64_t heads, int64_t dim,
                            int64_t row_stride) {
  return {base, {batch, heads, n, dim}, {n * row_stride, dim, row_stride, 1}};
}
}  // namespace

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
  Require(decay_gate || !per_channel_decay, fn,
          ": per_channel_decay (KDA) needs decay_gate (DeltaNet has no decay)");
}

std::string GatedDeltaNetConfig::Describe() const {
  std::ostringstream os;
  os << kind() << "(hqk=" << num_heads_qk << ",hv=" << num_heads_v << ",dk=" << head_dim_qk
     << ",dv=" << head_dim_v << ",conv=" << conv_kernel << ",chunk=" << kernel.chunk_size << ")";
  return os.str();
}

void GatedDeltaNetWeights::Check(const GatedDeltaNetConfig& c) const {
  const char* fn = "GatedDeltaNetWeights";
  const int64_t hv = c.num_heads_v;
  CheckMatrix(fn, "w_qkv", w_qkv, c.hidden, c.conv_channels());
  const int64_t gate = c.decay_gate ? 1 : 0;  // the decay gate's weights are empty without it
  CheckMatrix(fn, "w_a", w_a, gate * c.hidden, gate * hv * c.decay_width());
  CheckMatrix(fn, "w_b", w_b, c.hidden, hv);
  CheckMatrix(fn, "w_g", w_g, c.hidden, hv * c.head_dim_v);
  CheckMatrix(fn, "w_o", w_o, hv * c.head_dim_v, c.hidden);
  CheckMatrix(fn, "conv", conv, c.conv_channels(), c.conv_kernel);
  CheckVector(fn, "a_log", a_log, gate * hv);
  CheckVector(fn, "dt_bias", dt_bias, gate * hv * c.decay_width());
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
  if (!c.decay_gate) {  // DeltaNet: drawn as above (same other weights), then dropped
    w.w_a = Matrix();
    w.a_log.clear();
    w.dt_bias.clear();
  }
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
  const int64_t na =
      c.decay_gate ? CheckedProduct({rows, hv, width}, fn, "rows*heads*decay_width") : 0;
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
  if (c.decay_gate) Linear(x.data, rows, weights_.w_a, a_.data());
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
    return HeadsView(base, batch, n, heads, dim, row_stride);
  };
  const TensorView<float> q = heads_view(conv_.data(), hqk, dk, ch);
  const TensorView<float> k = heads_view(conv_.data() + hqk * dk, hqk, dk, ch);
  const TensorView<float> v = heads_view(conv_.data() + 2 * hqk * dk, hv, dv, ch);
  const TensorView<float> bv = heads_view(b_.data(), hv, 1, hv);
  const TensorView<float> betav = heads_view(beta_.data(), hv, 1, hv);
  TensorView<float> lav;  // empty → α ≡ 1 (DeltaNet)
  if (c.decay_gate) {
    lav = heads_view(la_.data(), hv, width, hv * width);
    ComputeDecayGate(heads_view(a_.data(), hv, width, hv * width), weights_.a_log, weights_.dt_bias,
                     lav);
  }
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

// ---- Training ----

namespace {
// What the backward needs, per row (batch · tokens rows): x, the projections and the recurrent
// output before the gated norm. The convolution, the gates and the norm's output are recomputed.
struct GdnTape final : TrainTape {
  std::vector<float> x;     // [rows, hidden]
  std::vector<float> proj;  // [rows, conv_channels]: x W_qkv, the convolution's input
  std::vector<float> a;     // [rows, num_heads_v · decay_width]: x W_a
  std::vector<float> b;     // [rows, num_heads_v]: x W_b
  std::vector<float> g;     // [rows, num_heads_v · head_dim_v]: x W_g
  std::vector<float> o;     // [rows, num_heads_v · head_dim_v]: the recurrence's output
};

// The training path's views of one sequence batch: q, k, v inside the convolution output, the gate
// inputs and outputs, the recurrent output and the output gate, each [batch, heads, tokens, dim].
struct GdnViews {
  TensorView<float> q, k, v, a, la, b, beta, o, g;
};

GdnViews MakeGdnViews(const GatedDeltaNetConfig& c, int64_t batch, int64_t n, float* conv, float* a,
                      float* la, float* b, float* beta, float* o, float* g) {
  const int64_t hqk = c.num_heads_qk, hv = c.num_heads_v, dk = c.head_dim_qk, dv = c.head_dim_v;
  const int64_t ch = c.conv_channels(), width = c.decay_width();
  // Without the decay gate (DeltaNet) the gate views are empty: α ≡ 1.
  const auto gate = [&](float* base) {
    return c.decay_gate ? HeadsView(base, batch, n, hv, width, hv * width) : TensorView<float>{};
  };
  return {HeadsView(conv, batch, n, hqk, dk, ch),
          HeadsView(conv + hqk * dk, batch, n, hqk, dk, ch),
          HeadsView(conv + 2 * hqk * dk, batch, n, hv, dv, ch),
          gate(a),
          gate(la),
          HeadsView(b, batch, n, hv, 1, hv),
          HeadsView(beta, batch, n, hv, 1, hv),
          HeadsView(o, batch, n, hv, dv, hv * dv),
          HeadsView(g, batch, n, hv, dv, hv * dv)};
}

// The convolution (from a zero history) and the gates, from the tape's projections.
void ConvAndGates(const GatedDeltaNetConfig& c, const GatedDeltaNetWeights& w, int64_t batch,
                  int64_t n, const float* proj, float* conv, const GdnViews& v) {
  const int64_t ch = c.conv_channels();
  ShortConvForward(MakeBhsd<const float>(proj, batch, 1, n, ch), w.conv.data, c.conv_kernel,
                   MakeBhsd(conv, batch, 1, n, ch), TensorView<float>{});
  if (c.decay_gate) ComputeDecayGate(v.a, w.a_log, w.dt_bias, v.la);
  ComputeWriteGate(v.b, v.beta);
}

void AddInto(std::vector<float>& acc, const std::vector<float>& g) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += g[i];
}
}  // namespace

void GatedDeltaNetBlock::EnsureGrads() {
  if (has_grads_) return;
  grads_ = weights_;
  has_grads_ = true;
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

std::vector<Param> GatedDeltaNetBlock::Params() {
  EnsureGrads();
  std::vector<Param> ps;
  AppendParam(ps, "w_qkv", weights_.w_qkv, grads_.w_qkv);
  AppendParam(ps, "w_a", weights_.w_a, grads_.w_a);
  AppendParam(ps, "w_b", weights_.w_b, grads_.w_b);
  AppendParam(ps, "w_g", weights_.w_g, grads_.w_g);
  AppendParam(ps, "w_o", weights_.w_o, grads_.w_o);
  AppendParam(ps, "conv", weights_.conv, grads_.conv);
  AppendParam(ps, "a_log", weights_.a_log, grads_.a_log);
  AppendParam(ps, "dt_bias", weights_.dt_bias, grads_.dt_bias);
  AppendParam(ps, "norm", weights_.norm, grads_.norm);
  return ps;
}

std::unique_ptr<TrainTape> GatedDeltaNetBlock::TrainForward(TensorView<const float> x,
                                                            TensorView<float> out) {
  constexpr const char* fn = "GatedDeltaNetBlock::TrainForward";
  const GatedDeltaNetConfig& c = config_;
  CheckHidden(fn, c.hidden, x, out);
  const int64_t batch = x.batch(), n = x.tokens();
  Require(n > 0, fn, ": x must hold at least one token");
  const int64_t rows = CheckedMul(batch, n, fn, "batch*tokens");
  const int64_t hv = c.num_heads_v, ch = c.conv_channels();
  const int64_t np = CheckedMul(rows, ch, fn, "rows*conv_channels");
  const int64_t na =
      c.decay_gate ? CheckedProduct({rows, hv, c.decay_width()}, fn, "rows*heads*decay_width") : 0;
  const int64_t no = CheckedProduct({rows, hv, c.head_dim_v}, fn, "rows*heads*head_dim_v");
  auto buf = [&](int64_t count, const char* what) { return CheckedVector(count, 0.0f, fn, what); };
  auto tape = std::make_unique<GdnTape>();
  tape->owner = this;
  tape->shape = x.shape;
  tape->x = buf(CheckedMul(rows, c.hidden, fn, "rows*hidden"), "x");
  tape->proj = buf(np, "the projections");
  tape->a = buf(na, "the decay inputs");
  tape->b = buf(rows * hv, "the write inputs");
  tape->g = buf(no, "the output gate");
  tape->o = buf(no, "the output");
  std::vector<float> conv = buf(np, "the convolution output"), la = buf(na, "the decay gates"),
                     beta = buf(rows * hv, "the write gates"), y = buf(no, "the normed output");

  std::copy(x.data, x.data + rows * c.hidden, tape->x.begin());
  Linear(x.data, rows, weights_.w_qkv, tape->proj.data());
  if (c.decay_gate) Linear(x.data, rows, weights_.w_a, tape->a.data());
  Linear(x.data, rows, weights_.w_b, tape->b.data());
  Linear(x.data, rows, weights_.w_g, tape->g.data());
  const GdnViews v = MakeGdnViews(c, batch, n, conv.data(), tape->a.data(), la.data(),
                                  tape->b.data(), beta.data(), tape->o.data(), tape->g.data());
  ConvAndGates(c, weights_, batch, n, tape->proj.data(), conv.data(), v);
  GatedDeltaForward(v.q, v.k, v.v, v.la, v.beta, v.o, TensorView<float>{}, c.kernel);
  const TensorView<float> yv = HeadsView(y.data(), batch, n, hv, c.head_dim_v, hv * c.head_dim_v);
  GatedRmsNorm(v.o, v.g, weights_.norm, c.norm_eps, yv);
  Linear(y.data(), rows, weights_.w_o, out.data);
  return tape;
}

void GatedDeltaNetBlock::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                                       TensorView<float> dx) {
  constexpr const char* fn = "GatedDeltaNetBlock::TrainBackward";
  tape_base.Check(fn, this, dout, dx);
  auto& t = dynamic_cast<GdnTape&>(tape_base);
  const GatedDeltaNetConfig& c = config_;
  const int64_t batch = t.shape[0], n = t.shape[2], rows = batch * n;
  const int64_t hv = c.num_heads_v, dv = c.head_dim_v, ch = c.conv_channels(),
                width = c.decay_width();
  const int64_t np = rows * ch, na = c.decay_gate ? rows * hv * width : 0, no = rows * hv * dv;
  // Every buffer before anything is written: a failed allocation changes nothing.
  EnsureGrads();
  auto buf = [&](int64_t count, const char* what) { return CheckedVector(count, 0.0f, fn, what); };
  std::vector<float> conv = buf(np, "the convolution output"), dconv = buf(np, "dconv"),
                     dproj = buf(np, "dproj");
  std::vector<float> la = buf(na, "the decay gates"), dla = buf(na, "dlog_alpha"),
                     da = buf(na, "da");
  std::vector<float> beta = buf(rows * hv, "the write gates"), dbeta = buf(rows * hv, "dbeta"),
                     db = buf(rows * hv, "db");
  std::vector<float> y = buf(no, "the normed output"), dy = buf(no, "dy"), d_o = buf(no, "do"),
                     dg = buf(no, "dg");
  std::vector<float> dnorm = buf(dv, "dnorm"), da_log = buf(c.decay_gate ? hv : 0, "da_log"),
                     ddt = buf(na > 0 ? hv * width : 0, "ddt_bias"),
                     dconv_w = buf(ch * c.conv_kernel, "dconv_w");
  t.consumed = true;

  const GdnViews v = MakeGdnViews(c, batch, n, conv.data(), t.a.data(), la.data(), t.b.data(),
                                  beta.data(), t.o.data(), t.g.data());
  const GdnViews d = MakeGdnViews(c, batch, n, dconv.data(), da.data(), dla.data(), db.data(),
                                  dbeta.data(), d_o.data(), dg.data());
  // out = y W_o, y = GatedRmsNorm(o, g).
  const TensorView<float> yv = HeadsView(y.data(), batch, n, hv, dv, hv * dv);
  GatedRmsNorm(v.o, v.g, weights_.norm, c.norm_eps, yv);
  LinearBackward(y.data(), rows, weights_.w_o, dout.data, dy.data(), grads_.w_o.data.data());
  GatedRmsNormBackward(v.o, v.g, weights_.norm, c.norm_eps,
                       HeadsView(dy.data(), batch, n, hv, dv, hv * dv), d.o, d.g, dnorm);
  AddInto(grads_.norm, dnorm);

  // The recurrence from its recomputed inputs, then the gates and the convolution.
  ConvAndGates(c, weights_, batch, n, t.proj.data(), conv.data(), v);
  GatedDeltaBackward(v.q, v.k, v.v, v.la, v.beta, TensorView<const float>{}, d.o,
                     TensorView<const float>{},
                     GatedDeltaGrads{.dq = d.q,
                                     .dk = d.k,
                                     .dv = d.v,
                                     .dlog_alpha = d.la,
                                     .dbeta = d.beta,
                                     .dstate = TensorView<float>{}},
                     c.kernel);
  if (c.decay_gate) {
    ComputeDecayGateBackward(v.a, weights_.a_log, weights_.dt_bias, d.la, d.a, da_log, ddt);
    AddInto(grads_.a_log, da_log);
    AddInto(grads_.dt_bias, ddt);
  }
  ComputeWriteGateBackward(v.b, d.beta, d.b);
  ShortConvBackward(MakeBhsd<const float>(t.proj.data(), batch, 1, n, ch), weights_.conv.data,
                    c.conv_kernel, TensorView<const float>{},
                    MakeBhsd<const float>(dconv.data(), batch, 1, n, ch),
                    MakeBhsd(dproj.data(), batch, 1, n, ch), dconv_w);
  AddInto(grads_.conv.data, dconv_w);

  // The four input projections.
  float* dxp = dx.data;  // null → only the weight gradients
  const float* xs = t.x.data();
  LinearBackward(xs, rows, weights_.w_qkv, dproj.data(), dxp, grads_.w_qkv.data.data());
  if (c.decay_gate) {
    LinearBackward(xs, rows, weights_.w_a, da.data(), dxp, grads_.w_a.data.data(), true);
  }
  LinearBackward(xs, rows, weights_.w_b, db.data(), dxp, grads_.w_b.data.data(), true);
  LinearBackward(xs, rows, weights_.w_g, dg.data(), dxp, grads_.w_g.data.data(), true);
}

}  // namespace attnkit
