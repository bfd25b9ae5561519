// The pieces around the recurrent kernel in Gated DeltaNet / KDA layers: gates, the short causal
// depthwise convolution with its decode state, and the gated RMSNorm. Plain loops: these are
// O(tokens · channels) next to the kernel's O(tokens · dk · dv).
#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/recurrent.h"
#include "kernels/problem.h"

namespace attnkit {
namespace {

// softplus(x) = log(1 + e^x), without overflow for large x.
float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
float Silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

void ComputeDecayGate(TensorView<const float> a, std::span<const float> a_log,
                      std::span<const float> dt_bias, TensorView<float> log_alpha) {
  const char* fn = "ComputeDecayGate";
  CheckView(a, fn, "a");
  CheckView(log_alpha, fn, "log_alpha");
  Require(log_alpha.shape == a.shape, fn, ": log_alpha ", log_alpha.ShapeString(),
          " must have a's shape ", a.ShapeString());
  const int64_t width = a.dim();
  const detail::PerHeadRules required{.allow_empty = false};
  detail::CheckPerHead(fn, "a_log", a_log, a.heads(), "num_heads_v", required);
  detail::CheckPerHead(fn, "dt_bias", dt_bias, a.heads() * width, "num_heads_v * width", required);
  for (int64_t h = 0; h < a.heads(); ++h) {  // before anything is written
    Require(std::isfinite(std::exp(a_log[h])), fn, ": exp(a_log[", h,
            "]) is not finite (a_log = ", a_log[h], ")");
  }
  for (int64_t b = 0; b < a.batch(); ++b) {
    for (int64_t h = 0; h < a.heads(); ++h) {
      const float rate = std::exp(a_log[h]);
      for (int64_t t = 0; t < a.tokens(); ++t) {
        for (int64_t c = 0; c < width; ++c) {
          log_alpha.at(b, h, t, c) = -rate * Softplus(a.at(b, h, t, c) + dt_bias[h * width + c]);
        }
      }
    }
  }
}

void ComputeWriteGate(TensorView<const float> b_logits, TensorView<float> beta) {
  const char* fn = "ComputeWriteGate";
  CheckView(b_logits, fn, "b");
  CheckView(beta, fn, "beta");
  Require(beta.shape == b_logits.shape && b_logits.dim() == 1, fn,
          ": b and beta must both be [batch, heads, seqlen, 1], got ", b_logits.ShapeString(),
          " and ", beta.ShapeString());
  for (int64_t b = 0; b < beta.batch(); ++b) {
    for (int64_t h = 0; h < beta.heads(); ++h) {
      for (int64_t t = 0; t < beta.tokens(); ++t) {
        beta.at(b, h, t, 0) = 1.0f / (1.0f + std::exp(-b_logits.at(b, h, t, 0)));
      }
    }
  }
}

void ShortConvForward(TensorView<const float> x, std::span<const float> weight, int64_t kernel,
                      TensorView<float> out, TensorView<float> conv_state) {
  const char* fn = "ShortConvForward";
  CheckView(x, fn, "x");
  CheckView(out, fn, "out");
  Require(kernel >= 1, fn, ": kernel must be >= 1, got ", kernel);
  Require(x.heads() == 1 && out.shape == x.shape, fn,
          ": x and out must both be [batch, 1, seqlen, channels], got ", x.ShapeString(), " and ",
          out.ShapeString());
  detail::CheckPerHead(fn, "weight", weight, x.dim() * kernel, "channels * kernel",
                       {.allow_empty = false});
  const int64_t batch = x.batch(), seqlen = x.tokens(), channels = x.dim(), hist = kernel - 1;
  if (!conv_state.empty() && hist > 0) {
    CheckView(conv_state, fn, "conv_state");
    Require(conv_state.batch() == batch && conv_state.heads() == 1 && conv_state.tokens() == hist &&
                conv_state.dim() == channels,
            fn, ": conv_state must be [", batch, ", 1, ", hist, ", ", channels, "], got ",
            conv_state.ShapeString());
  }
  const bool has_state = !conv_state.empty() && hist > 0;
  // Window of the last `kernel` inputs per channel: history rows then the new tokens.
  std::vector<float> buf;  // allocated before conv_state is written
  CheckedResize(buf, CheckedMul(hist + seqlen, channels, fn, "(kernel-1+seqlen)*channels"), fn,
                "the input window");
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < hist; ++i) {
      for (int64_t c = 0; c < channels; ++c) {
        buf[i * channels + c] = has_state ? conv_state.at(b, 0, i, c) : 0.0f;
      }
    }
    for (int64_t t = 0; t < seqlen; ++t) {
      std::copy(x.row(b, 0, t), x.row(b, 0, t) + channels, buf.data() + (hist + t) * channels);
    }
    for (int64_t t = 0; t < seqlen; ++t) {
      float* orow = out.row(b, 0, t);
      for (int64_t c = 0; c < channels; ++c) {
        float acc = 0.0f;
        for (int64_t i = 0; i < kernel; ++i)
          acc += weight[c * kernel + i] * buf[(t + i) * channels + c];
        orow[c] = Silu(acc);
      }
    }
    if (has_state) {
      for (int64_t i = 0; i < hist; ++i) {
        std::copy(buf.data() + (seqlen + i) * channels, buf.data() + (seqlen + i + 1) * channels,
                  conv_state.row(b, 0, i));
      }
    }
  }
}

void GatedRmsNorm(TensorView<const float> o, TensorView<const float> gate,
                  std::span<const float> weight, float eps, TensorView<float> out) {
  const char* fn = "GatedRmsNorm";
  CheckView(o, fn, "o");
  CheckView(gate, fn, "gate");
  CheckView(out, fn, "out");
  Require(gate.shape == o.shape && out.shape == o.shape, fn, ": o ", o.ShapeString(), ", gate ",
          gate.ShapeString(), " and out ", out.ShapeString(), " must have the same shape");
  detail::CheckPerHead(fn, "weight", weight, o.dim(), "head_dim_v", {.allow_empty = false});
  Require(eps > 0.0f, fn, ": eps must be > 0, got ", eps);
  const int64_t dv = o.dim();
  for (int64_t b = 0; b < o.batch(); ++b) {
    for (int64_t h = 0; h < o.heads(); ++h) {
      for (int64_t t = 0; t < o.tokens(); ++t) {
        const float* orow = o.row(b, h, t);
        const float* grow = gate.row(b, h, t);
        double sq = 0;
        for (int64_t e = 0; e < dv; ++e) sq += static_cast<double>(orow[e]) * orow[e];
        const float inv = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(dv) + eps));
        float* dst = out.row(b, h, t);
        for (int64_t e = 0; e < dv; ++e) dst[e] = orow[e] * inv * weight[e] * Silu(grow[e]);
      }
    }
  }
}

}  // namespace attnkit
