// A tiny trainable token-mixing layer for the trainer's tests (so they do not depend on which
// attention blocks can be trained yet): out_t = (mean of x_0 … x_t) · W, W [hidden, hidden].
// Registered with the layer factory as "test_causal_mean".
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"

namespace attnkit::testing {

class CausalMeanLayer : public Layer {
 public:
  CausalMeanLayer(int64_t hidden, uint64_t seed)
      : hidden_(hidden), w_(RandomMatrix(hidden, hidden, seed)), gw_(w_.data.size(), 0.0f) {}
  std::string Kind() const override { return "test_causal_mean"; }
  std::string Describe() const override {
    return "test_causal_mean(hidden=" + std::to_string(hidden_) + ")";
  }
  int64_t hidden() const override { return hidden_; }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override {
    CheckHidden("CausalMeanLayer::Forward", hidden_, x, out);
    CheckPosition("CausalMeanLayer::Forward", position, seen_);
    const int64_t b = x.batch(), t = x.tokens(), h = hidden_;
    if (sum_.empty()) sum_.assign(static_cast<size_t>(b * h), 0.0);
    std::vector<float> m(static_cast<size_t>(b * t * h));
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t s = 0; s < t; ++s) {
        for (int64_t d = 0; d < h; ++d) {
          double& acc = sum_[static_cast<size_t>(i * h + d)];
          acc += x.data[(i * t + s) * h + d];
          m[static_cast<size_t>((i * t + s) * h + d)] =
              static_cast<float>(acc / static_cast<double>(seen_ + s + 1));
        }
      }
    }
    Linear(m.data(), b * t, w_, out.data);
    seen_ += t;
  }
  int64_t tokens_seen() const override { return seen_; }
  void Reset() override {
    seen_ = 0;
    sum_.clear();
  }
  size_t CacheBytes() const override { return sum_.size() * sizeof(double); }
  size_t WeightBytes() const override { return w_.bytes(); }

  bool trainable() const override { return true; }
  struct Tape : TrainTape {
    std::vector<float> mean;
  };
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x,
                                          TensorView<float> out) override {
    CheckHidden("CausalMeanLayer::TrainForward", hidden_, x, out);
    auto tape = std::make_unique<Tape>();
    tape->owner = this;
    tape->shape = x.shape;
    const int64_t b = x.batch(), t = x.tokens(), h = hidden_;
    tape->mean.resize(static_cast<size_t>(b * t * h));
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t d = 0; d < h; ++d) {
        double acc = 0;
        for (int64_t s = 0; s < t; ++s) {
          acc += x.data[(i * t + s) * h + d];
          tape->mean[static_cast<size_t>((i * t + s) * h + d)] =
              static_cast<float>(acc / static_cast<double>(s + 1));
        }
      }
    }
    Linear(tape->mean.data(), b * t, w_, out.data);
    return tape;
  }
  void TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                     TensorView<float> dx) override {
    tape_base.Check("CausalMeanLayer::TrainBackward", this, dout, dx);
    auto& tape = dynamic_cast<Tape&>(tape_base);
    tape.consumed = true;
    const int64_t b = tape.shape[0], t = tape.shape[2], h = hidden_;
    std::vector<float> dm(static_cast<size_t>(b * t * h));
    LinearBackward(tape.mean.data(), b * t, w_, dout.data, dm.data(), gw_.data());
    if (dx.data == nullptr) return;
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t d = 0; d < h; ++d) {
        double acc = 0;
        for (int64_t s = t - 1; s >= 0; --s) {
          acc += dm[static_cast<size_t>((i * t + s) * h + d)] / static_cast<double>(s + 1);
          dx.data[(i * t + s) * h + d] = static_cast<float>(acc);
        }
      }
    }
  }
  std::vector<Param> Params() override {
    return {{"w", {hidden_, hidden_}, w_.data.data(), gw_.data()}};
  }

 private:
  int64_t hidden_;
  Matrix w_;
  std::vector<float> gw_;
  int64_t seen_ = 0;
  std::vector<double> sum_;
};

inline const bool kCausalMeanRegistered = [] {
  RegisterLayerFactory("test_causal_mean", [](const LayerShape& s, uint64_t seed) {
    return std::make_unique<CausalMeanLayer>(s.hidden, seed);
  });
  return true;
}();

}  // namespace attnkit::testing
