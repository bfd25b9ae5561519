// Internal: the dense engine's score modifiers, each defined once and used by both the fast
// kernel (T = float) and the reference twin (T = double).
//
// A modifier either rewrites a scaled logit (soft-cap, ALiBi: applied in that order, before the
// mask) or joins only the softmax normaliser (sinks: a per-head logit that adds exp(sink) to the
// denominator and contributes no value). DispatchScoreMods resolves which are active once per
// call into the compile-time flags of ScoreMods<...>, so the kernel's inner loops carry no test
// for a modifier that is off (FlashAttention's static switches).
//
// Adding a modifier: its option in DenseOptions (checked in CheckDenseArgs), one struct here
// with its math and its derivative, a flag in ScoreMods and a BoolSwitch in DispatchScoreMods;
// the forward kernel, the forward reference and the backward reference then all apply it. The
// fast backward (dense_backward.cc) evaluates soft-cap and ALiBi with Highway vectors and must be
// extended by hand; its tests compare it with the reference for every combination
// (docs/ARCHITECTURE.md, "Adding a variant").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

#include "attnkit/kernels/dense.h"

namespace attnkit::detail {

// s ← cap · tanh(s / cap) (Gemma 2), cap > 0.
struct SoftCap {
  float cap = 0.0f;
  static bool Active(const DenseOptions& o) { return o.softcap > 0.0f; }
  template <typename T>
  T operator()(T s) const {
    const T c = static_cast<T>(cap);
    return c * std::tanh(s / c);
  }
  // ∂(cap · tanh(s / cap))/∂s = 1 − tanh²(s / cap).
  template <typename T>
  T Derivative(T s) const {
    const T t = std::tanh(s / static_cast<T>(cap));
    return T{1} - t * t;
  }
};

// s ← s − slope[head] · |q_pos − k_pos| (Press et al., 2022).
struct Alibi {
  std::span<const float> slopes;  // [num_heads_q]
  static bool Active(const DenseOptions& o) { return !o.alibi_slopes.empty(); }
  template <typename T>
  T operator()(T s, int64_t head, int64_t q_pos, int64_t k_pos) const {
    const int64_t dist = q_pos > k_pos ? q_pos - k_pos : k_pos - q_pos;
    return s - static_cast<T>(slopes[static_cast<size_t>(head)]) * static_cast<T>(dist);
  }
};

// A per-head logit in the softmax denominator only (gpt-oss). Folds exp(sink) into a row's
// running max m and sum l (l = Σ exp(s − m)); returns the factor the row's unnormalised output
// must be multiplied by (the max may have moved). A sink of −inf changes nothing.
struct Sinks {
  std::span<const float> logits;  // [num_heads_q]
  static bool Active(const DenseOptions& o) { return !o.sinks.empty(); }
  template <typename T>
  T Fold(int64_t head, T& m, T& l) const {
    const T sink = static_cast<T>(logits[static_cast<size_t>(head)]);
    if (sink == -std::numeric_limits<T>::infinity()) return T{1};
    const T m_new = std::max(m, sink);
    const T corr = std::exp(m - m_new);  // 0 when the row saw no key (m = −inf)
    l = l * corr + std::exp(sink - m_new);
    m = m_new;
    return corr;
  }
  // A row's contribution to ∂loss/∂sink_head given its log-sum-exp and D = Σ dO ∘ O:
  // −exp(sink − lse) · D (the sink's probability times −D). Zero for a sink of −inf.
  template <typename T>
  T Gradient(int64_t head, T lse, T D) const {
    const T sink = static_cast<T>(logits[static_cast<size_t>(head)]);
    if (sink == -std::numeric_limits<T>::infinity()) return T{0};
    return -std::exp(sink - lse) * D;
  }
};

// The active set of modifiers, as compile-time flags.
template <bool kSoftCap, bool kAlibi, bool kSinks>
struct ScoreMods {
  static constexpr bool kRewritesLogits = kSoftCap || kAlibi;
  static constexpr bool kHasSinks = kSinks;
  SoftCap softcap;
  Alibi alibi;
  Sinks sinks;

  explicit ScoreMods(const DenseOptions& o)
      : softcap{o.softcap}, alibi{o.alibi_slopes}, sinks{o.sinks} {}

  // The modified logit of an already scaled score s.
  template <typename T>
  T Logit(T s, int64_t head, int64_t q_pos, int64_t k_pos) const {
    if constexpr (kSoftCap) s = softcap(s);
    if constexpr (kAlibi) s = alibi(s, head, q_pos, k_pos);
    return s;
  }
  // ∂Logit/∂s at the scaled score s (ALiBi's shift does not depend on s).
  template <typename T>
  T LogitDerivative(T s) const {
    if constexpr (kSoftCap) return softcap.Derivative(s);
    return T{1};
  }
  // Folds the normaliser-only modifiers into a finished row (see Sinks::Fold).
  template <typename T>
  T Normaliser(int64_t head, T& m, T& l) const {
    if constexpr (kSinks) return sinks.Fold(head, m, l);
    return T{1};
  }
};

// fn(std::true_type{}) or fn(std::false_type{}): a run-time bool made a compile-time one.
template <typename Fn>
decltype(auto) BoolSwitch(bool b, Fn&& fn) {
  if (b) return fn(std::true_type{});
  return fn(std::false_type{});
}

// Calls fn(ScoreMods<...>{options}) with the flags of the modifiers options turns on.
template <typename Fn>
decltype(auto) DispatchScoreMods(const DenseOptions& o, Fn&& fn) {
  return BoolSwitch(SoftCap::Active(o), [&](auto softcap) -> decltype(auto) {
    return BoolSwitch(Alibi::Active(o), [&](auto alibi) -> decltype(auto) {
      return BoolSwitch(Sinks::Active(o), [&](auto sinks) -> decltype(auto) {
        return fn(
            ScoreMods<decltype(softcap)::value, decltype(alibi)::value, decltype(sinks)::value>(o));
      });
    });
  });
}

}  // namespace attnkit::detail
