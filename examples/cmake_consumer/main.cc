// Causal attention through an installed attnkit, checked against the reference twin.
#include <cmath>
#include <cstdio>

#include "attnkit/kernels/dense.h"

int main() {
  attnkit::Tensor<float> q(1, 4, 33, 16), k(1, 2, 33, 16), v(1, 2, 33, 16);
  for (int64_t i = 0; i < q.numel(); ++i) q.data()[i] = std::sin(0.37f * static_cast<float>(i));
  for (int64_t i = 0; i < k.numel(); ++i) k.data()[i] = std::cos(0.11f * static_cast<float>(i));
  for (int64_t i = 0; i < v.numel(); ++i) v.data()[i] = std::sin(0.05f * static_cast<float>(i));
  attnkit::Tensor<float> out(1, 4, 33, 16), expect(1, 4, 33, 16);
  const auto causal = attnkit::CausalMask();
  attnkit::DenseOptions opt;
  opt.mask = causal.get();
  attnkit::DenseForward(q.view(), k.view(), v.view(), out.view(), opt);
  attnkit::ref::DenseForward(q.view(), k.view(), v.view(), expect.view(), opt);
  double err = 0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    err = std::fmax(err, std::fabs(out.data()[i] - expect.data()[i]));
  }
  std::printf("max abs difference fast vs reference: %.3g\n", err);
  return err < 1e-4 ? 0 : 1;
}
