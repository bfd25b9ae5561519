// AdamW with decoupled weight decay (Loshchilov & Hutter; PyTorch's torch.optim.AdamW), a
// linear warm-up + cosine learning-rate schedule, and global gradient-norm clipping.
//
// One step, for every parameter p with gradient g (after clipping, see below), t = step + 1:
//   p ← p − lr_t · wd · p                 (only where Model::DecaysWeight: 2-D weight matrices;
//                                          never the embedding, norm gains or other vectors)
//   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
//   p ← p − lr_t · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps)
// Clipping: with G = sqrt(Σ g²) over all parameters (double), every g is scaled by clip / G
// when G > clip (clip 0 = off). Sums run in a fixed order, so a step is deterministic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/layers/layer.h"

namespace attnkit::train {

struct AdamWConfig {
  double lr = 3e-3;  // peak learning rate
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  double clip = 1.0;        // global gradient-norm bound; 0 = no clipping
  int64_t warmup = 0;       // steps of linear warm-up from lr/warmup to lr
  int64_t total_steps = 0;  // cosine decay from lr at the end of warm-up to min_lr_ratio·lr at
                            // total_steps; 0 = constant lr after warm-up
  double min_lr_ratio = 0.1;
  // Throws attnkit::Error naming a field that is out of range.
  void Check() const;
};

// The learning rate of step `step` (0-based): (step + 1)/warmup · lr during warm-up, then
// min + (lr − min)·(1 + cos(π·progress))/2 with progress = (step − warmup)/(total − warmup)
// clamped to [0, 1].
double LearningRate(const AdamWConfig& c, int64_t step);

class AdamW {
 public:
  explicit AdamW(const AdamWConfig& config);

  // One update of every parameter from its gradient (the gradients are clipped in place).
  // `params` must be the same list (names, sizes) at every call; the first call sizes the
  // moments. Returns the gradient norm before clipping. Throws attnkit::Error, changing nothing,
  // when the list changed or the gradient norm is not finite.
  double Step(const std::vector<Param>& params);

  int64_t step() const { return step_; }
  const AdamWConfig& config() const { return config_; }

  // Optimiser state for checkpoints: first and second moments per parameter (in Params order).
  std::vector<std::vector<float>>& first_moments() { return m_; }
  std::vector<std::vector<float>>& second_moments() { return v_; }
  // Restores the state of a checkpoint; moments must match `params` (attnkit::Error otherwise).
  void Restore(const std::vector<Param>& params, int64_t step, std::vector<std::vector<float>> m,
               std::vector<std::vector<float>> v);

 private:
  void Size(const std::vector<Param>& params);
  AdamWConfig config_;
  int64_t step_ = 0;
  std::vector<std::string> names_;
  std::vector<std::vector<float>> m_, v_;
};

// sqrt(Σ g²) over every parameter's gradient, in double, in a fixed order.
double GradNorm(const std::vector<Param>& params);

}  // namespace attnkit::train
