// AdamW, the learning-rate schedule and gradient clipping (include/attnkit/train/optim.h).
#include "attnkit/train/optim.h"

#include <cmath>
#include <numbers>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/train/model.h"

namespace attnkit::train {

void AdamWConfig::Check() const {
  Require(std::isfinite(lr) && lr > 0, "AdamW: lr must be > 0, got ", lr);
  Require(beta1 >= 0 && beta1 < 1, "AdamW: beta1 must be in [0, 1), got ", beta1);
  Require(beta2 >= 0 && beta2 < 1, "AdamW: beta2 must be in [0, 1), got ", beta2);
  Require(std::isfinite(eps) && eps > 0, "AdamW: eps must be > 0, got ", eps);
  Require(std::isfinite(weight_decay) && weight_decay >= 0,
          "AdamW: weight_decay must be >= 0, got ", weight_decay);
  Require(std::isfinite(clip) && clip >= 0, "AdamW: clip must be >= 0, got ", clip);
  Require(warmup >= 0 && total_steps >= 0, "AdamW: warmup and total_steps must be >= 0");
  Require(min_lr_ratio >= 0 && min_lr_ratio <= 1, "AdamW: min_lr_ratio must be in [0, 1], got ",
          min_lr_ratio);
}

double LearningRate(const AdamWConfig& c, int64_t step) {
  if (step < c.warmup) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  if (c.total_steps <= c.warmup) return c.lr;
  const double progress = std::min(
      1.0, static_cast<double>(step - c.warmup) / static_cast<double>(c.total_steps - c.warmup));
  const double lo = c.lr * c.min_lr_ratio;
  return lo + (c.lr - lo) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

double GradNorm(const std::vector<Param>& params) {
  double s = 0;
  for (const Param& p : params) {
    for (int64_t i = 0; i < p.size(); ++i) s += static_cast<double>(p.grad[i]) * p.grad[i];
  }
  return std::sqrt(s);
}

AdamW::AdamW(const AdamWConfig& config) : config_(config) { config_.Check(); }

void AdamW::Size(const std::vector<Param>& params) {
  if (names_.empty() && m_.empty()) {
    for (const Param& p : params) {
      names_.push_back(p.name);
      m_.emplace_back(static_cast<size_t>(p.size()), 0.0f);
      v_.emplace_back(static_cast<size_t>(p.size()), 0.0f);
    }
    return;
  }
  Require(params.size() == names_.size(), "AdamW::Step: ", params.size(),
          " parameters, but the optimiser holds state for ", names_.size());
  for (size_t i = 0; i < params.size(); ++i) {
    Require(params[i].name == names_[i] && static_cast<size_t>(params[i].size()) == m_[i].size(),
            "AdamW::Step: parameter ", i, " is ", params[i].name, " of ", params[i].size(),
            " values, the optimiser's state is for ", names_[i], " of ", m_[i].size());
  }
}

double AdamW::Step(const std::vector<Param>& params) {
  Size(params);
  const double norm = GradNorm(params);
  Require(std::isfinite(norm), "AdamW::Step: the gradient norm is not finite (", norm, ")");
  const float scale =
      config_.clip > 0 && norm > config_.clip ? static_cast<float>(config_.clip / norm) : 1.0f;
  const double lr = LearningRate(config_, step_);
  const double t = static_cast<double>(step_ + 1);
  const double bc1 = 1.0 - std::pow(config_.beta1, t), bc2 = 1.0 - std::pow(config_.beta2, t);
  const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float eps = static_cast<float>(config_.eps);
  for (size_t k = 0; k < params.size(); ++k) {
    const Param& p = params[k];
    const float decay =
        Model::DecaysWeight(p) ? static_cast<float>(1.0 - lr * config_.weight_decay) : 1.0f;
    float* m = m_[k].data();
    float* v = v_[k].data();
    const int64_t n = p.size();
#pragma omp parallel for schedule(static) if (n > 65536) num_threads(GetNumThreads())
    for (int64_t i = 0; i < n; ++i) {
      const float g = p.grad[i] * scale;
      p.grad[i] = g;
      m[i] = b1 * m[i] + (1.0f - b1) * g;
      v[i] = b2 * v[i] + (1.0f - b2) * g * g;
      p.value[i] = p.value[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  }
  ++step_;
  return norm;
}

void AdamW::Restore(const std::vector<Param>& params, int64_t step,
                    std::vector<std::vector<float>> m, std::vector<std::vector<float>> v) {
  Require(step >= 0, "AdamW::Restore: step must be >= 0, got ", step);
  Require(m.size() == params.size() && v.size() == params.size(), "AdamW::Restore: moments for ",
          m.size(), "/", v.size(), " parameters, the model has ", params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    Require(m[i].size() == static_cast<size_t>(params[i].size()) && v[i].size() == m[i].size(),
            "AdamW::Restore: moments of ", params[i].name, " have the wrong size");
  }
  names_.clear();
  for (const Param& p : params) names_.push_back(p.name);
  m_ = std::move(m);
  v_ = std::move(v);
  step_ = step;
}

}  // namespace attnkit::train
