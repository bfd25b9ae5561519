// Gradients of the pieces around the recurrent kernel (recurrent_ops.cc): the decay and write
// gates, the short causal convolution and the gated RMSNorm. Plain loops, double accumulation
// for the parameter gradients (sums over every row).
//   decay gate  log α = −e^A softplus(a + b):  ∂/∂a = −e^A σ(a + b),  ∂/∂A = log α,  ∂/∂b = ∂/∂a
//   write gate  β = σ(b):  ∂β/∂b = β (1 − β)
//   short conv  y_t = SiLU(p_t), p_t = Σ_i w_i x_{t−K+1+i}:  dp = dy · SiLU'(p),
//               SiLU'(p) = σ(p) (1 + p (1 − σ(p))), dx_{t−K+1+i} += w_i dp_t, dw_i += dp_t
//               x_{t−K+1+i}
//   gated norm  y = o r w SiLU(g), r = (mean(o²) + eps)^(−1/2):  with a = dy w SiLU(g),
//               do = r a − r³ o (a · o) / d,  dg = dy o r w SiLU'(g),  dw = Σ_rows dy o r SiLU(g)
#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/kernels/recurrent_backward.h"
#include "kernels/problem.h"

namespace attnkit {
namespace {

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double Silu(double x) { return x * Sigmoid(x); }
double SiluGrad(double x) {
  const double s = Sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

void RequireSameShape(const char* fn, const char* name, TensorView<float> g,
                      TensorView<const float> x, const char* like) {
  CheckView(g, fn, name);
  Require(g.shape == x.shape, fn, ": ", name, " must have ", like, "'s shape ", x.ShapeString(),
          ", got ", g.ShapeString());
}

void RequireSameShape(const char* fn, const char* name, TensorView<const float> g,
                      TensorView<const float> x, const char* like) {
  CheckView(g, fn, name);
  Require(g.shape == x.shape, fn, ": ", name, " must have ", like, "'s shape ", x.ShapeString(),
          ", got ", g.ShapeString());
}

// An output span for a parameter gradient: exactly n values.
void RequireLength(const char* fn, const char* name, std::span<float> g, int64_t n,
                   const char* n_name) {
  Require(static_cast<int64_t>(g.size()) == n, fn, ": ", name, " must have ", n_name, " = ", n,
          " values, got ", g.size());
}

}  // namespace

void ComputeDecayGateBackward(TensorView<const float> a, std::span<const float> a_log,
                              std::span<const float> dt_bias, TensorView<const float> dlog_alpha,
                              TensorView<float> da, std::span<float> da_log,
                              std::span<float> ddt_bias) {
  const char* fn = "ComputeDecayGateBackward";
  CheckView(a, fn, "a");
  RequireSameShape(fn, "dlog_alpha", dlog_alpha, a, "a");
  RequireSameShape(fn, "da", da, a, "a");
  const int64_t heads = a.heads(), width = a.dim();
  const detail::PerHeadRules required{.allow_empty = false};
  detail::CheckPerHead(fn, "a_log", a_log, heads, "num_heads_v", required);
  detail::CheckPerHead(fn, "dt_bias", dt_bias, heads * width, "num_heads_v * width", required);
  RequireLength(fn, "da_log", da_log, heads, "num_heads_v");
  RequireLength(fn, "ddt_bias", ddt_bias, heads * width, "num_heads_v * width");
  for (int64_t h = 0; h < heads; ++h) {
    Require(std::isfinite(std::exp(a_log[h])), fn, ": exp(a_log[", h,
            "]) is not finite (a_log = ", a_log[h], ")");
  }
  std::vector<double> dal(static_cast<size_t>(heads), 0.0),
      dbias(static_cast<size_t>(heads * width), 0.0);
  for (int64_t b = 0; b < a.batch(); ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const double rate = std::exp(static_cast<double>(a_log[h]));
      for (int64_t t = 0; t < a.tokens(); ++t) {
        for (int64_t c = 0; c < width; ++c) {
          const double x = static_cast<double>(a.at(b, h, t, c)) + dt_bias[h * width + c];
          const double sp = x > 20.0 ? x : std::log1p(std::exp(x));
          const double dl = dlog_alpha.at(b, h, t, c);
          const double dx = -dl * rate * Sigmoid(x);
          da.at(b, h, t, c) = static_cast<float>(dx);
          dbias[h * width + c] += dx;
          dal[h] += dl * (-rate * sp);
        }
      }
    }
  }
  for (int64_t h = 0; h < heads; ++h) da_log[h] = static_cast<float>(dal[h]);
  for (int64_t i = 0; i < heads * width; ++i) ddt_bias[i] = static_cast<float>(dbias[i]);
}

void ComputeWriteGateBackward(TensorView<const float> b_logits, TensorView<const float> dbeta,
                              TensorView<float> db) {
  const char* fn = "ComputeWriteGateBackward";
  CheckView(b_logits, fn, "b");
  Require(b_logits.dim() == 1, fn, ": b must be [batch, heads, seqlen, 1], got ",
          b_logits.ShapeString());
  RequireSameShape(fn, "dbeta", dbeta, b_logits, "b");
  RequireSameShape(fn, "db", db, b_logits, "b");
  for (int64_t b = 0; b < b_logits.batch(); ++b) {
    for (int64_t h = 0; h < b_logits.heads(); ++h) {
      for (int64_t t = 0; t < b_logits.tokens(); ++t) {
        const double s = Sigmoid(b_logits.at(b, h, t, 0));
        db.at(b, h, t, 0) = static_cast<float>(dbeta.at(b, h, t, 0) * s * (1.0 - s));
      }
    }
  }
}

void ShortConvBackward(TensorView<const float> x, std::span<const float> weight, int64_t kernel,
                       TensorView<const float> conv_state, TensorView<const float> dout,
                       TensorView<float> dx, std::span<float> dweight,
                       TensorView<float> dconv_state) {
  const char* fn = "ShortConvBackward";
  CheckView(x, fn, "x");
  Require(x.heads() == 1, fn, ": x must be [batch, 1, seqlen, channels], got ", x.ShapeString());
  RequireSameShape(fn, "dout", dout, x, "x");
  RequireSameShape(fn, "dx", dx, x, "x");
  Require(kernel >= 1, fn, ": kernel must be >= 1, got ", kernel);
  detail::CheckPerHead(fn, "weight", weight, x.dim() * kernel, "channels * kernel",
                       {.allow_empty = false});
  RequireLength(fn, "dweight", dweight, x.dim() * kernel, "channels * kernel");
  const int64_t batch = x.batch(), seqlen = x.tokens(), channels = x.dim(), hist = kernel - 1;
  const bool has_state = !conv_state.empty() && hist > 0;
  if (has_state) {
    CheckView(conv_state, fn, "conv_state");
    Require(conv_state.batch() == batch && conv_state.heads() == 1 && conv_state.tokens() == hist &&
                conv_state.dim() == channels,
            fn, ": conv_state must be [", batch, ", 1, ", hist, ", ", channels, "], got ",
            conv_state.ShapeString());
  }
  if (!dconv_state.empty()) {
    Require(has_state, fn, ": dconv_state needs the conv_state the forward read");
    CheckView(dconv_state, fn, "dconv_state");
    Require(dconv_state.shape == conv_state.shape, fn,
            ": dconv_state must have conv_state's shape ", conv_state.ShapeString(), ", got ",
            dconv_state.ShapeString());
  }
  // Window: history rows then the tokens; its gradient likewise.
  std::vector<double> buf(static_cast<size_t>((hist + seqlen) * channels));
  std::vector<double> dbuf(buf.size()), dw(static_cast<size_t>(channels * kernel), 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < hist; ++i) {
      for (int64_t c = 0; c < channels; ++c) {
        buf[i * channels + c] = has_state ? conv_state.at(b, 0, i, c) : 0.0;
      }
    }
    for (int64_t t = 0; t < seqlen; ++t) {
      for (int64_t c = 0; c < channels; ++c) buf[(hist + t) * channels + c] = x.at(b, 0, t, c);
    }
    std::fill(dbuf.begin(), dbuf.end(), 0.0);
    for (int64_t t = 0; t < seqlen; ++t) {
      for (int64_t c = 0; c < channels; ++c) {
        double pre = 0;
        for (int64_t i = 0; i < kernel; ++i)
          pre += weight[c * kernel + i] * buf[(t + i) * channels + c];
        const double dp = dout.at(b, 0, t, c) * SiluGrad(pre);
        for (int64_t i = 0; i < kernel; ++i) {
          dbuf[(t + i) * channels + c] += weight[c * kernel + i] * dp;
          dw[c * kernel + i] += dp * buf[(t + i) * channels + c];
        }
      }
    }
    for (int64_t t = 0; t < seqlen; ++t) {
      for (int64_t c = 0; c < channels; ++c) {
        dx.at(b, 0, t, c) = static_cast<float>(dbuf[(hist + t) * channels + c]);
      }
    }
    if (!dconv_state.empty()) {
      for (int64_t i = 0; i < hist; ++i) {
        for (int64_t c = 0; c < channels; ++c) {
          dconv_state.at(b, 0, i, c) = static_cast<float>(dbuf[i * channels + c]);
        }
      }
    }
  }
  for (int64_t i = 0; i < channels * kernel; ++i) dweight[i] = static_cast<float>(dw[i]);
}

void GatedRmsNormBackward(TensorView<const float> o, TensorView<const float> gate,
                          std::span<const float> weight, float eps, TensorView<const float> dout,
                          TensorView<float> d_o, TensorView<float> dgate,
                          std::span<float> dweight) {
  const char* fn = "GatedRmsNormBackward";
  CheckView(o, fn, "o");
  RequireSameShape(fn, "gate", gate, o, "o");
  RequireSameShape(fn, "dout", dout, o, "o");
  RequireSameShape(fn, "d_o", d_o, o, "o");
  RequireSameShape(fn, "dgate", dgate, o, "o");
  detail::CheckPerHead(fn, "weight", weight, o.dim(), "head_dim_v", {.allow_empty = false});
  RequireLength(fn, "dweight", dweight, o.dim(), "head_dim_v");
  Require(eps > 0.0f, fn, ": eps must be > 0, got ", eps);
  const int64_t dv = o.dim();
  std::vector<double> dw(static_cast<size_t>(dv), 0.0), a(static_cast<size_t>(dv));
  for (int64_t b = 0; b < o.batch(); ++b) {
    for (int64_t h = 0; h < o.heads(); ++h) {
      for (int64_t t = 0; t < o.tokens(); ++t) {
        const float* orow = o.row(b, h, t);
        const float* grow = gate.row(b, h, t);
        const float* dy = dout.row(b, h, t);
        double sq = 0;
        for (int64_t e = 0; e < dv; ++e) sq += static_cast<double>(orow[e]) * orow[e];
        const double r = 1.0 / std::sqrt(sq / static_cast<double>(dv) + eps);
        double ao = 0;
        for (int64_t e = 0; e < dv; ++e) {
          const double sg = Silu(grow[e]);
          a[e] = dy[e] * weight[e] * sg;
          ao += a[e] * orow[e];
          dw[e] += dy[e] * orow[e] * r * sg;
          dgate.at(b, h, t, e) =
              static_cast<float>(dy[e] * orow[e] * r * weight[e] * SiluGrad(grow[e]));
        }
        for (int64_t e = 0; e < dv; ++e) {
          d_o.at(b, h, t, e) =
              static_cast<float>(r * a[e] - r * r * r * orow[e] * ao / static_cast<double>(dv));
        }
      }
    }
  }
  for (int64_t e = 0; e < dv; ++e) dweight[e] = static_cast<float>(dw[e]);
}

}  // namespace attnkit
