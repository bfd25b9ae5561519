// Projections (OpenBLAS sgemm), RMSNorm, sigmoid gate, RoPE (fast and reference), weight checks.
#include "attnkit/layers/ops.h"

#include <cblas.h>

#include <cmath>
#include <vector>

#include "attnkit/core/error.h"

namespace attnkit {

void CheckMatrix(const char* owner, const char* name, const Matrix& m, int64_t rows, int64_t cols) {
  Require(m.rows == rows && m.cols == cols && m.data.size() == static_cast<size_t>(rows * cols),
          owner, ": weight ", name, " is [", m.rows, ", ", m.cols, "] (", m.data.size(),
          " values), expected [", rows, ", ", cols, "]");
}

void CheckVector(const char* owner, const char* name, const std::vector<float>& v, int64_t n) {
  Require(v.size() == static_cast<size_t>(n), owner, ": weight ", name, " has ", v.size(),
          " values, expected ", n);
}

void FillUniform(float* data, size_t n, float scale, uint64_t seed) {
  // splitmix64: fast, seedable, good enough for test and benchmark weights.
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  for (size_t i = 0; i < n; ++i) {
    s += 0x9e3779b97f4a7c15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    data[i] = (2.0f * u - 1.0f) * scale;
  }
}

Matrix RandomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  Matrix m(rows, cols);
  FillUniform(m.data.data(), m.data.size(), InitScale(rows), seed);
  return m;
}

std::vector<float> RandomNormWeight(int64_t n, uint64_t seed, bool zero_centred) {
  std::vector<float> v(static_cast<size_t>(n));
  FillUniform(v.data(), v.size(), 0.2f, seed);
  if (!zero_centred) {
    for (float& x : v) x += 1.0f;
  }
  return v;
}

void Linear(const float* x, int64_t rows, const Matrix& w, float* y, int64_t ldx, int64_t ldy) {
  Require(!w.empty(), "Linear: weight is empty");
  if (rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
              static_cast<int>(w.cols), static_cast<int>(w.rows), 1.0f, x,
              static_cast<int>(ldx > 0 ? ldx : w.rows), w.data.data(), static_cast<int>(w.cols),
              0.0f, y, static_cast<int>(ldy > 0 ? ldy : w.cols));
}

void LinearBackward(const float* x, int64_t rows, const Matrix& w, const float* dy, float* dx,
                    float* dw, bool accumulate_dx, int64_t ldx, int64_t ldy) {
  Require(!w.empty(), "LinearBackward: weight is empty");
  if (rows == 0) return;
  const int lx = static_cast<int>(ldx > 0 ? ldx : w.rows);
  const int ly = static_cast<int>(ldy > 0 ? ldy : w.cols);
  if (dx != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(w.rows), static_cast<int>(w.cols), 1.0f, dy, ly, w.data.data(),
                static_cast<int>(w.cols), accumulate_dx ? 1.0f : 0.0f, dx, lx);
  }
  if (dw != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(w.rows),
                static_cast<int>(w.cols), static_cast<int>(rows), 1.0f, x, lx, dy, ly, 1.0f, dw,
                static_cast<int>(w.cols));
  }
}

void RmsNorm(float* x, int64_t rows, int64_t dim, int64_t stride, const std::vector<float>& weight,
             float eps, bool zero_centred) {
  Require(weight.empty() || weight.size() == static_cast<size_t>(dim), "RmsNorm: weight has ",
          weight.size(), " values, expected ", dim);
  for (int64_t r = 0; r < rows; ++r) {
    float* p = x + r * stride;
    double ss = 0;
    for (int64_t d = 0; d < dim; ++d) ss += static_cast<double>(p[d]) * p[d];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    if (weight.empty()) {
      for (int64_t d = 0; d < dim; ++d) p[d] *= inv;
    } else if (zero_centred) {
      for (int64_t d = 0; d < dim; ++d) p[d] = p[d] * inv * (1.0f + weight[d]);
    } else {
      for (int64_t d = 0; d < dim; ++d) p[d] = p[d] * inv * weight[d];
    }
  }
}

void RmsNormBackward(const float* x, int64_t rows, int64_t dim, int64_t stride,
                     const std::vector<float>& weight, float eps, bool zero_centred,
                     const float* dy, float* dx, float* dweight) {
  Require(weight.empty() || weight.size() == static_cast<size_t>(dim),
          "RmsNormBackward: weight has ", weight.size(), " values, expected ", dim);
  // y_d = x_d · inv · g_d, inv = (mean x² + eps)^(−1/2):
  // dx_d = inv · (g_d dy_d − x_d · inv² · Σ_e g_e dy_e x_e / dim),  dg_d += dy_d x_d inv.
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * stride;
    const float* gy = dy + r * stride;
    float* gx = dx + r * stride;
    double ss = 0, dot = 0;
    for (int64_t d = 0; d < dim; ++d) ss += static_cast<double>(p[d]) * p[d];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    auto gain = [&](int64_t d) -> double {
      if (weight.empty()) return 1.0;
      return zero_centred ? 1.0 + weight[d] : weight[d];
    };
    for (int64_t d = 0; d < dim; ++d) dot += gain(d) * gy[d] * p[d];
    const double c = inv * inv * inv * dot / static_cast<double>(dim);
    for (int64_t d = 0; d < dim; ++d) {
      const double gyd = gy[d];
      if (dweight != nullptr) dweight[d] += static_cast<float>(gyd * p[d] * inv);
      gx[d] = static_cast<float>(inv * gain(d) * gyd - p[d] * c);
    }
  }
}

void SigmoidGate(float* x, const float* g, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= 1.0f / (1.0f + std::exp(-g[i]));
}

void SigmoidGateBackward(const float* x, const float* g, const float* dy, float* dx, float* dg,
                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-g[i]));
    const float gy = dy[i];
    dg[i] = gy * x[i] * s * (1.0f - s);
    dx[i] = gy * s;
  }
}

const char* RopeLayoutName(RopeLayout layout) {
  return layout == RopeLayout::kHalf ? "half" : "interleaved";
}

RopeLayout ParseRopeLayout(const std::string& name) {
  if (name == "half" || name == "neox") return RopeLayout::kHalf;
  if (name == "interleaved" || name == "gptj") return RopeLayout::kInterleaved;
  throw Error("rope layout must be 'half' (NeoX/Llama) or 'interleaved' (GPT-J), got '" + name +
              "'");
}

int64_t RotaryDim(const RopeConfig& rope, int64_t head_dim) {
  Require(rope.theta > 0 && std::isfinite(rope.theta), "RoPE: theta must be positive, got ",
          rope.theta);
  Require(rope.fraction > 0.0f && rope.fraction <= 1.0f,
          "RoPE: rotary fraction must be in (0, 1], got ", rope.fraction);
  Require(head_dim >= 2, "RoPE: head_dim must be >= 2, got ", head_dim);
  int64_t rd = static_cast<int64_t>(std::floor(static_cast<double>(rope.fraction) * head_dim));
  rd -= rd % 2;
  Require(rd >= 2, "RoPE: rotary fraction ", rope.fraction, " of head_dim ", head_dim,
          " leaves fewer than 2 rotary dims");
  return rd;
}

namespace {
// Index of the two members of pair i for the layout.
inline void PairIndex(RopeLayout layout, int64_t rd, int64_t i, int64_t* a, int64_t* b) {
  if (layout == RopeLayout::kHalf) {
    *a = i;
    *b = i + rd / 2;
  } else {
    *a = 2 * i;
    *b = 2 * i + 1;
  }
}
}  // namespace

namespace {
// Rotates every row by +angle (direction 1: the forward) or −angle (−1: its transpose).
void Rotate(TensorView<float> x, int64_t start_position, const RopeConfig& rope, double direction,
            const char* fn) {
  CheckView(x, fn, "x");
  Require(start_position >= 0, fn, ": start_position must be >= 0, got ", start_position);
  const int64_t rd = RotaryDim(rope, x.dim());
  const int64_t half = rd / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(rope.theta), -2.0 * i / static_cast<double>(rd));
  }
  // cos/sin once per token, shared by every (batch, head).
  std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
  for (int64_t t = 0; t < x.tokens(); ++t) {
    const double pos = static_cast<double>(start_position + t);
    for (int64_t i = 0; i < half; ++i) {
      const double ang = pos * inv_freq[i];
      cs[i] = static_cast<float>(std::cos(ang));
      sn[i] = static_cast<float>(direction * std::sin(ang));
    }
    for (int64_t b = 0; b < x.batch(); ++b) {
      for (int64_t h = 0; h < x.heads(); ++h) {
        float* p = x.row(b, h, t);
        if (rope.layout == RopeLayout::kHalf) {
          for (int64_t i = 0; i < half; ++i) {
            const float x1 = p[i], x2 = p[i + half];
            p[i] = x1 * cs[i] - x2 * sn[i];
            p[i + half] = x2 * cs[i] + x1 * sn[i];
          }
        } else {
          for (int64_t i = 0; i < half; ++i) {
            const float x1 = p[2 * i], x2 = p[2 * i + 1];
            p[2 * i] = x1 * cs[i] - x2 * sn[i];
            p[2 * i + 1] = x2 * cs[i] + x1 * sn[i];
          }
        }
      }
    }
  }
}

}  // namespace

void ApplyRope(TensorView<float> x, int64_t start_position, const RopeConfig& rope) {
  Rotate(x, start_position, rope, 1.0, "ApplyRope");
}

void ApplyRopeBackward(TensorView<float> dx, int64_t start_position, const RopeConfig& rope) {
  Rotate(dx, start_position, rope, -1.0, "ApplyRopeBackward");
}

namespace ref {
void ApplyRope(TensorView<float> x, int64_t start_position, const RopeConfig& rope) {
  CheckView(x, "ref::ApplyRope", "x");
  Require(start_position >= 0, "ref::ApplyRope: start_position must be >= 0, got ", start_position);
  const int64_t rd = RotaryDim(rope, x.dim());
  for (int64_t b = 0; b < x.batch(); ++b) {
    for (int64_t h = 0; h < x.heads(); ++h) {
      for (int64_t t = 0; t < x.tokens(); ++t) {
        float* p = x.row(b, h, t);
        for (int64_t i = 0; i < rd / 2; ++i) {
          int64_t a, c;
          PairIndex(rope.layout, rd, i, &a, &c);
          const double freq = std::pow(static_cast<double>(rope.theta),
                                       -static_cast<double>(2 * i) / static_cast<double>(rd));
          const double ang = static_cast<double>(start_position + t) * freq;
          const double x1 = p[a], x2 = p[c];
          p[a] = static_cast<float>(x1 * std::cos(ang) - x2 * std::sin(ang));
          p[c] = static_cast<float>(x2 * std::cos(ang) + x1 * std::sin(ang));
        }
      }
    }
  }
}
}  // namespace ref

}  // namespace attnkit
