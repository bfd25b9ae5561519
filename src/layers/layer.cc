// The Layer conveniences, hidden-state checks, and the Stack runner (residual + RMSNorm).
#include "attnkit/layers/layer.h"

#include <algorithm>
#include <cstring>

#include "attnkit/core/checked.h"
#include "attnkit/layers/ops.h"

namespace attnkit {

void Layer::Decode(TensorView<const float> x, int64_t position, TensorView<float> out) {
  Require(x.tokens() == 1, "Layer::Decode: x must hold one token, got shape ", x.ShapeString());
  Forward(x, position, out);
}

std::unique_ptr<TrainTape> Layer::TrainForward(TensorView<const float>, TensorView<float>) {
  throw Error(Kind() + " layers cannot be trained yet (Layer::TrainForward)");
}

void Layer::TrainBackward(TrainTape&, TensorView<const float>, TensorView<float>) {
  throw Error(Kind() + " layers cannot be trained yet (Layer::TrainBackward)");
}

std::vector<Param> Layer::Params() {
  throw Error(Kind() + " layers cannot be trained yet (Layer::Params)");
}

void Layer::ZeroGrad() {
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

void AppendParam(std::vector<Param>& params, const char* name, Matrix& value, Matrix& grad) {
  if (!value.empty()) {
    params.push_back({name, {value.rows, value.cols}, value.data.data(), grad.data.data()});
  }
}

void AppendParam(std::vector<Param>& params, const char* name, std::vector<float>& value,
                 std::vector<float>& grad) {
  if (!value.empty()) {
    params.push_back({name, {static_cast<int64_t>(value.size())}, value.data(), grad.data()});
  }
}

void TrainTape::Check(const char* fn, const void* layer, TensorView<const float> dout,
                      TensorView<float> dx) const {
  Require(owner == layer, fn, ": tape was written by another layer's TrainForward");
  Require(!consumed, fn, ": tape was already used by a backward (a tape is used once)");
  Require(dout.shape == shape, fn, ": dout ", dout.ShapeString(),
          " must have the shape of the forward's x [", shape[0], ", ", shape[1], ", ", shape[2],
          ", ", shape[3], "]");
  CheckView(dout, fn, "dout");
  Require(
      dout.stride[3] == 1 && dout.stride[2] == shape[3] && dout.stride[0] == shape[2] * shape[3],
      fn, ": dout rows must be contiguous ([batch, tokens, hidden] row-major)");
  if (dx.data != nullptr) {
    Require(dx.shape == shape, fn, ": dx ", dx.ShapeString(), " must have x's shape");
    CheckView(dx, fn, "dx");
    Require(dx.stride[3] == 1 && dx.stride[2] == shape[3] && dx.stride[0] == shape[2] * shape[3],
            fn, ": dx rows must be contiguous ([batch, tokens, hidden] row-major)");
  }
}

void CheckHidden(const char* fn, int64_t hidden, TensorView<const float> x, TensorView<float> out) {
  CheckView(x, fn, "x");
  CheckView(out, fn, "out");
  Require(x.heads() == 1 && x.dim() == hidden, fn, ": x must be [batch, 1, tokens, ", hidden,
          "], got ", x.ShapeString());
  Require(out.shape == x.shape, fn, ": out ", out.ShapeString(), " must have x's shape ",
          x.ShapeString());
  Require(x.stride[2] == hidden && x.stride[0] == x.tokens() * hidden, fn,
          ": x rows must be contiguous ([batch, tokens, hidden] row-major)");
  Require(out.stride[2] == hidden && out.stride[0] == out.tokens() * hidden, fn,
          ": out rows must be contiguous ([batch, tokens, hidden] row-major)");
  const float* xb = x.data;
  const float* xe = x.data + x.numel();
  const float* ob = out.data;
  const float* oe = out.data + out.numel();
  Require(xe <= ob || oe <= xb, fn, ": out must not overlap x");
}

void CheckPosition(const char* fn, int64_t position, int64_t tokens_seen) {
  Require(position == tokens_seen, fn, ": position ", position,
          " must continue the sequence at tokens_seen = ", tokens_seen,
          position > tokens_seen ? " (positions may not skip)" : " (positions may not repeat)");
}

Tensor<float> SliceTokens(const Tensor<float>& x, int64_t t0, int64_t n) {
  const auto& s = x.shape();
  Require(s[1] == 1 && t0 >= 0 && n > 0 && t0 + n <= s[2], "SliceTokens: tokens [", t0, ", ",
          t0 + n, ") outside x with ", s[2], " tokens (or x is not [batch, 1, tokens, hidden])");
  Tensor<float> y(s[0], 1, n, s[3]);
  for (int64_t b = 0; b < s[0]; ++b) {
    std::memcpy(y.data() + b * n * s[3], x.data() + (b * s[2] + t0) * s[3],
                sizeof(float) * static_cast<size_t>(n * s[3]));
  }
  return y;
}

Tensor<float> ForwardInChunks(Layer& layer, const Tensor<float>& x,
                              const std::vector<int64_t>& chunks) {
  const auto& s = x.shape();
  int64_t sum = 0;
  for (int64_t n : chunks) {
    Require(n > 0, "ForwardInChunks: chunk sizes must be positive, got ", n);
    sum += n;
  }
  Require(sum == s[2], "ForwardInChunks: chunks sum to ", sum, " but x has ", s[2], " tokens");
  Tensor<float> out(s[0], 1, s[2], s[3]);
  const int64_t start = layer.tokens_seen();
  int64_t t0 = 0;
  for (int64_t n : chunks) {
    Tensor<float> xi = SliceTokens(x, t0, n), oi(s[0], 1, n, s[3]);
    layer.Forward(xi.view(), start + t0, oi.view());
    for (int64_t b = 0; b < s[0]; ++b) {
      std::memcpy(out.data() + (b * s[2] + t0) * s[3], oi.data() + b * n * s[3],
                  sizeof(float) * static_cast<size_t>(n * s[3]));
    }
    t0 += n;
  }
  return out;
}

std::vector<int64_t> PrefillThenDecodeChunks(int64_t prefill, int64_t total) {
  Require(prefill >= 0 && prefill <= total, "PrefillThenDecodeChunks: prefill ", prefill,
          " must be in [0, total = ", total, "]");
  std::vector<int64_t> chunks;
  if (prefill > 0) chunks.push_back(prefill);
  for (int64_t t = prefill; t < total; ++t) chunks.push_back(1);
  return chunks;
}

Stack::Stack(int64_t hidden, float norm_eps) : hidden_(hidden), eps_(norm_eps) {
  Require(hidden > 0, "Stack: hidden must be positive, got ", hidden);
  Require(norm_eps > 0, "Stack: norm_eps must be positive, got ", norm_eps);
  final_norm_.assign(static_cast<size_t>(hidden), 1.0f);
}

void Stack::Add(std::unique_ptr<Layer> layer) {
  Require(layer != nullptr, "Stack::Add: layer is null");
  Require(layer->hidden() == hidden_, "Stack::Add: layer ", layer->Describe(), " has hidden ",
          layer->hidden(), " but the stack has ", hidden_);
  Require(layer->tokens_seen() == tokens_seen() || layers_.empty(), "Stack::Add: layer has seen ",
          layer->tokens_seen(), " tokens, the stack ", tokens_seen());
  layers_.push_back(std::move(layer));
  norms_.emplace_back(static_cast<size_t>(hidden_), 1.0f);
}

void Stack::Forward(TensorView<const float> x, int64_t position, TensorView<float> out) {
  CheckHidden("Stack::Forward", hidden_, x, out);
  CheckPosition("Stack::Forward", position, tokens_seen());
  const int64_t rows = x.batch() * x.tokens();
  const int64_t numel = x.numel();
  const size_t n = static_cast<size_t>(numel);
  std::vector<float> h = CheckedVector(numel, 0.0f, "Stack::Forward", "the residual stream");
  std::vector<float> normed = CheckedVector(numel, 0.0f, "Stack::Forward", "the normed input");
  std::vector<float> delta = CheckedVector(numel, 0.0f, "Stack::Forward", "a layer's output");
  std::copy(x.data, x.data + n, h.begin());
  auto view = [&](float* p) { return MakeBhsd(p, x.batch(), int64_t{1}, x.tokens(), hidden_); };
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::copy(h.begin(), h.end(), normed.begin());
    RmsNorm(normed.data(), rows, hidden_, hidden_, norms_[i], eps_);
    try {
      layers_[i]->Forward(view(normed.data()), position, view(delta.data()));
    } catch (...) {
      RollBack(i);
      throw;
    }
    for (size_t j = 0; j < n; ++j) h[j] += delta[j];
  }
  RmsNorm(h.data(), rows, hidden_, hidden_, final_norm_, eps_);
  std::copy(h.begin(), h.end(), out.data);
  if (layers_.empty()) seen_ += x.tokens();
}

void Stack::RollBack(size_t failed) noexcept {
  // Layer `failed` left itself unchanged; the ones before it advanced and are put back, newest
  // first. A layer that cannot undo (one defined outside attnkit) stays advanced: its
  // tokens_seen() then differs from layer 0's, and the next call's position check says so.
  for (size_t j = failed; j-- > 0;) layers_[j]->UndoForward();
}

void Stack::Reset() {
  for (auto& l : layers_) l->Reset();
  seen_ = 0;
}

size_t Stack::CacheBytes() const {
  size_t s = 0;
  for (const auto& l : layers_) s += l->CacheBytes();
  return s;
}

size_t Stack::WeightBytes() const {
  size_t s = (norms_.size() + 1) * static_cast<size_t>(hidden_) * sizeof(float);
  for (const auto& l : layers_) s += l->WeightBytes();
  return s;
}

namespace {
// The Stack's tape: each layer's tape, and the residual stream h_i before layer i (h_L before the
// final norm), [rows, hidden] each.
class StackTape final : public TrainTape {
 public:
  std::vector<std::unique_ptr<TrainTape>> tapes;
  std::vector<std::vector<float>> h;
};
}  // namespace

bool Stack::trainable() const {
  return std::all_of(layers_.begin(), layers_.end(), [](const auto& l) { return l->trainable(); });
}

void Stack::RequireTrainable(const char* fn) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    Require(layers_[i]->trainable(), fn, ": layer ", i, " (", layers_[i]->Describe(),
            ") cannot be trained: ", layers_[i]->Kind(), " layers have no backward yet");
  }
}

void Stack::EnsureGrads() {
  constexpr const char* fn = "Stack";
  if (final_norm_grad_.empty()) {
    final_norm_grad_ = CheckedVector(hidden_, 0.0f, fn, "the final norm's gradient");
  }
  while (norm_grads_.size() < layers_.size()) {
    norm_grads_.push_back(CheckedVector(hidden_, 0.0f, fn, "a norm's gradient"));
  }
}

std::vector<Param> Stack::Params() {
  RequireTrainable("Stack::Params");
  EnsureGrads();
  std::vector<Param> ps;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string prefix = "layers." + std::to_string(i) + ".";
    for (Param& p : layers_[i]->Params()) {
      p.name = prefix + p.name;
      ps.push_back(std::move(p));
    }
    ps.push_back({prefix + "norm", {hidden_}, norms_[i].data(), norm_grads_[i].data()});
  }
  ps.push_back({"final_norm", {hidden_}, final_norm_.data(), final_norm_grad_.data()});
  return ps;
}

void Stack::ZeroGrad() {
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

std::unique_ptr<TrainTape> Stack::TrainForward(TensorView<const float> x, TensorView<float> out) {
  constexpr const char* fn = "Stack::TrainForward";
  CheckHidden(fn, hidden_, x, out);
  RequireTrainable(fn);
  const int64_t batch = x.batch(), tokens = x.tokens();
  const int64_t rows = CheckedMul(batch, tokens, fn, "batch*tokens");
  const int64_t n = CheckedMul(rows, hidden_, fn, "rows*hidden");
  auto tape = std::make_unique<StackTape>();
  tape->owner = this;
  tape->shape = x.shape;
  for (size_t i = 0; i <= layers_.size(); ++i) {
    tape->h.push_back(CheckedVector(n, 0.0f, fn, "the residual stream"));
  }
  std::vector<float> normed = CheckedVector(n, 0.0f, fn, "the normed stream");
  std::vector<float> delta = CheckedVector(n, 0.0f, fn, "a layer's output");
  auto view = [&](float* p) { return MakeBhsd(p, batch, int64_t{1}, tokens, hidden_); };
  std::copy(x.data, x.data + n, tape->h[0].begin());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::vector<float>& h = tape->h[i];
    std::copy(h.begin(), h.end(), normed.begin());
    RmsNorm(normed.data(), rows, hidden_, hidden_, norms_[i], eps_);
    tape->tapes.push_back(layers_[i]->TrainForward(view(normed.data()), view(delta.data())));
    std::vector<float>& next = tape->h[i + 1];
    for (size_t j = 0; j < next.size(); ++j) next[j] = h[j] + delta[j];
  }
  std::copy(tape->h.back().begin(), tape->h.back().end(), out.data);
  RmsNorm(out.data, rows, hidden_, hidden_, final_norm_, eps_);
  return tape;
}

void Stack::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                          TensorView<float> dx) {
  constexpr const char* fn = "Stack::TrainBackward";
  tape_base.Check(fn, this, dout, dx);
  auto* tape = dynamic_cast<StackTape*>(&tape_base);
  Require(tape != nullptr, fn, ": tape is not a Stack tape");
  Require(tape->tapes.size() == layers_.size(), fn, ": tape holds ", tape->tapes.size(),
          " layers but the stack has ", layers_.size(), " (a layer was added since its forward)");
  for (size_t i = 0; i < layers_.size(); ++i) {
    Require(tape->tapes[i] != nullptr && tape->tapes[i]->owner == layers_[i].get() &&
                !tape->tapes[i]->consumed,
            fn, ": layer ", i, "'s tape is not that layer's or was already used");
  }
  RequireTrainable(fn);
  const int64_t batch = tape->shape[0], tokens = tape->shape[2], rows = batch * tokens;
  const int64_t n = rows * hidden_;
  // Every buffer (the layers' gradient buffers included) before anything is written.
  EnsureGrads();
  for (auto& l : layers_) l->Params();
  std::vector<float> dh = CheckedVector(n, 0.0f, fn, "the stream's gradient");
  std::vector<float> dnormed = CheckedVector(n, 0.0f, fn, "a layer's input gradient");
  tape->consumed = true;

  auto view = [&](float* p) { return MakeBhsd(p, batch, int64_t{1}, tokens, hidden_); };
  // out = RmsNorm(h_L) ⊙ final_norm.
  RmsNormBackward(tape->h.back().data(), rows, hidden_, hidden_, final_norm_, eps_, false,
                  dout.data, dh.data(), final_norm_grad_.data());
  // h_{i+1} = h_i + layer_i(RmsNorm(h_i) ⊙ w_i): dh_i = dh_{i+1} + J_normᵀ (J_layerᵀ dh_{i+1}).
  for (size_t i = layers_.size(); i-- > 0;) {
    layers_[i]->TrainBackward(*tape->tapes[i], TensorView<const float>(view(dh.data())),
                              view(dnormed.data()));
    RmsNormBackward(tape->h[i].data(), rows, hidden_, hidden_, norms_[i], eps_, false,
                    dnormed.data(), dnormed.data(), norm_grads_[i].data());
    for (size_t j = 0; j < dh.size(); ++j) dh[j] += dnormed[j];
  }
  if (dx.data != nullptr) std::copy(dh.begin(), dh.end(), dx.data);
}

std::string Stack::Describe() const {
  std::string s = "stack(hidden=" + std::to_string(hidden_) + "):";
  for (const auto& l : layers_) s += " " + l->Describe();
  return s;
}

}  // namespace attnkit
