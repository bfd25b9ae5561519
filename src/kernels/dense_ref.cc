// The dense engine's plain reference twin, argument checks, FLOP count and the LSE merge.
//
// ref::DenseForward is deliberately obvious: one query row at a time, every logit in double,
// a two-pass softmax. It is the yardstick the tiled kernel is tested against.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "kernels/dense_common.h"

namespace attnkit {

namespace {

template <typename T>
std::pair<const char*, const char*> Extent(const TensorView<T>& v) {
  const auto* base = reinterpret_cast<const char*>(v.data);
  int64_t last = 0;
  for (int i = 0; i < 4; ++i) last += (v.shape[i] - 1) * v.stride[i];
  return {base, base + (last + 1) * static_cast<int64_t>(sizeof(T))};
}

template <typename A, typename B>
bool Overlaps(const TensorView<A>& a, const TensorView<B>& b) {
  const auto [a0, a1] = Extent(a);
  const auto [b0, b1] = Extent(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace

template <typename KV>
void CheckDenseArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                    TensorView<const KV> v, TensorView<float> out, const DenseOptions& o,
                    TensorView<float> lse) {
  CheckView(q, fn, "q");
  CheckView(k, fn, "k");
  CheckView(v, fn, "v");
  CheckView(out, fn, "out");
  Require(k.batch() == q.batch() && v.batch() == q.batch(), fn,
          ": batch sizes differ: q ", q.ShapeString(), ", k ", k.ShapeString(), ", v ",
          v.ShapeString());
  Require(v.heads() == k.heads(), fn, ": k and v must have the same number of heads: k ",
          k.ShapeString(), ", v ", v.ShapeString());
  Require(q.heads() % k.heads() == 0, fn, ": num_heads_q (", q.heads(),
          ") must be a multiple of num_heads_kv (", k.heads(), ")");
  Require(v.tokens() == k.tokens(), fn, ": k and v must have the same seqlen_kv: k ",
          k.ShapeString(), ", v ", v.ShapeString());
  Require(k.dim() == q.dim(), fn, ": head_dim_qk of q (", q.dim(), ") and k (", k.dim(),
          ") differ");
  Require(out.batch() == q.batch() && out.heads() == q.heads() && out.tokens() == q.tokens() &&
              out.dim() == v.dim(),
          fn, ": out must be [batch, num_heads_q, seqlen_q, head_dim_v] = [", q.batch(), ", ",
          q.heads(), ", ", q.tokens(), ", ", v.dim(), "], got ", out.ShapeString());
  Require(!Overlaps(out, q) && !Overlaps(out, k) && !Overlaps(out, v), fn,
          ": out overlaps an input (q, k or v)");
  if (!lse.empty()) {
    CheckView(lse, fn, "lse");
    Require(lse.batch() == q.batch() && lse.heads() == q.heads() && lse.tokens() == q.tokens() &&
                lse.dim() == 1,
            fn, ": lse must be [batch, num_heads_q, seqlen_q, 1], got ", lse.ShapeString());
    Require(!Overlaps(lse, out) && !Overlaps(lse, q) && !Overlaps(lse, k) && !Overlaps(lse, v),
            fn, ": lse overlaps out or an input");
  }
  Require(std::isfinite(o.scale), fn, ": scale must be finite, got ", o.scale);
  Require(std::isfinite(o.softcap) && o.softcap >= 0.0f, fn,
          ": softcap must be finite and >= 0 (0 = off), got ", o.softcap);
  Require(o.num_threads >= 0, fn, ": num_threads must be >= 0, got ", o.num_threads);
  for (int64_t h = 0; h < q.heads(); ++h) {
    if (o.alibi_slopes) {
      Require(std::isfinite(o.alibi_slopes[h]), fn, ": alibi_slopes[", h, "] is not finite");
    }
    if (o.sinks) {
      Require(!std::isnan(o.sinks[h]) && o.sinks[h] != std::numeric_limits<float>::infinity(), fn,
              ": sinks[", h, "] must be a finite logit (or -inf), got ", o.sinks[h]);
    }
  }
  if (o.q_start != kAutoPosition) {
    Require(o.q_start > -kUnbounded && o.q_start < kUnbounded, fn, ": q_start out of range");
  }
  Require(o.k_start > -kUnbounded && o.k_start < kUnbounded, fn, ": k_start out of range");
}

template void CheckDenseArgs<float>(const char*, TensorView<const float>, TensorView<const float>,
                                    TensorView<const float>, TensorView<float>,
                                    const DenseOptions&, TensorView<float>);
template void CheckDenseArgs<bf16>(const char*, TensorView<const float>, TensorView<const bf16>,
                                   TensorView<const bf16>, TensorView<float>, const DenseOptions&,
                                   TensorView<float>);

double DenseFlops(int64_t batch, int64_t num_heads_q, int64_t seqlen_q, int64_t seqlen_kv,
                  int64_t head_dim_qk, int64_t head_dim_v, const Mask* mask) {
  const double pairs = MaskDensity(mask, seqlen_q, seqlen_kv) * static_cast<double>(seqlen_q) *
                       static_cast<double>(seqlen_kv);
  return 2.0 * pairs * static_cast<double>(batch * num_heads_q) *
         static_cast<double>(head_dim_qk + head_dim_v);
}

namespace ref {
namespace {

template <typename KV>
void RefImpl(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
             TensorView<float> out, const DenseOptions& o, TensorView<float> lse) {
  CheckDenseArgs("ref::DenseForward", q, k, v, out, o, lse);
  const detail::DenseGeometry g = detail::ResolveDense(q, k, v, o);
  std::vector<double> logits(static_cast<size_t>(g.seqlen_kv));
  std::vector<double> acc(static_cast<size_t>(g.dv));
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads_q; ++h) {
      const int64_t hk = h / g.group;
      const float slope = o.alibi_slopes ? o.alibi_slopes[h] : 0.0f;
      for (int64_t i = 0; i < g.seqlen_q; ++i) {
        const int64_t qp = g.q_start + i;
        const float* qr = q.row(b, h, i);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < g.seqlen_kv; ++j) {
          const int64_t kp = g.k_start + j;
          if (o.mask && !o.mask->Allowed(qp, kp)) {
            logits[j] = -std::numeric_limits<double>::infinity();
            continue;
          }
          const KV* kr = k.row(b, hk, j);
          double dot = 0;
          for (int64_t d = 0; d < g.dk; ++d) dot += double{qr[d]} * double{ToFloat(kr[d])};
          double s = dot * g.scale;
          if (o.softcap > 0) s = o.softcap * std::tanh(s / o.softcap);
          if (slope != 0) s -= double{slope} * static_cast<double>(std::llabs(qp - kp));
          logits[j] = s;
          mx = std::max(mx, s);
        }
        const double sink = o.sinks ? double{o.sinks[h]} : -std::numeric_limits<double>::infinity();
        mx = std::max(mx, sink);
        std::fill(acc.begin(), acc.end(), 0.0);
        double denom = 0;
        float* orow = out.row(b, h, i);
        if (mx == -std::numeric_limits<double>::infinity()) {  // every key masked, no sink
          for (int64_t d = 0; d < g.dv; ++d) orow[d] = 0.0f;
          if (!lse.empty()) lse.at(b, h, i, 0) = -std::numeric_limits<float>::infinity();
          continue;
        }
        for (int64_t j = 0; j < g.seqlen_kv; ++j) {
          if (logits[j] == -std::numeric_limits<double>::infinity()) continue;
          const double p = std::exp(logits[j] - mx);
          denom += p;
          const KV* vr = v.row(b, hk, j);
          for (int64_t d = 0; d < g.dv; ++d) acc[d] += p * double{ToFloat(vr[d])};
        }
        if (o.sinks) denom += std::exp(sink - mx);
        for (int64_t d = 0; d < g.dv; ++d) orow[d] = static_cast<float>(acc[d] / denom);
        if (!lse.empty()) lse.at(b, h, i, 0) = static_cast<float>(mx + std::log(denom));
      }
    }
  }
}

}  // namespace

void DenseForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                  TensorView<float> out, const DenseOptions& options, TensorView<float> lse) {
  RefImpl(q, k, v, out, options, lse);
}
void DenseForward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                  TensorView<float> out, const DenseOptions& options, TensorView<float> lse) {
  RefImpl(q, k, v, out, options, lse);
}

}  // namespace ref

void MergeAttention(std::span<const TensorView<const float>> outs,
                    std::span<const TensorView<const float>> lses, TensorView<float> out,
                    TensorView<float> lse_out) {
  constexpr const char* fn = "MergeAttention";
  Require(!outs.empty(), fn, ": outs is empty");
  Require(outs.size() == lses.size(), fn, ": outs (", outs.size(), ") and lses (", lses.size(),
          ") differ in length");
  CheckView(out, fn, "out");
  for (size_t p = 0; p < outs.size(); ++p) {
    CheckView(outs[p], fn, "outs[i]");
    CheckView(lses[p], fn, "lses[i]");
    Require(outs[p].shape == out.shape, fn, ": outs[", p, "] ", outs[p].ShapeString(),
            " differs from out ", out.ShapeString());
    Require(lses[p].batch() == out.batch() && lses[p].heads() == out.heads() &&
                lses[p].tokens() == out.tokens() && lses[p].dim() == 1,
            fn, ": lses[", p, "] must be [batch, num_heads_q, seqlen_q, 1], got ",
            lses[p].ShapeString());
  }
  if (!lse_out.empty()) {
    CheckView(lse_out, fn, "lse_out");
    Require(lse_out.batch() == out.batch() && lse_out.heads() == out.heads() &&
                lse_out.tokens() == out.tokens() && lse_out.dim() == 1,
            fn, ": lse_out must be [batch, num_heads_q, seqlen_q, 1], got ",
            lse_out.ShapeString());
  }
  const int64_t dv = out.dim();
  std::vector<float> w(outs.size());
  std::vector<float> acc(static_cast<size_t>(dv));
  for (int64_t b = 0; b < out.batch(); ++b) {
    for (int64_t h = 0; h < out.heads(); ++h) {
      for (int64_t i = 0; i < out.tokens(); ++i) {
        float mx = detail::kNegInf;
        for (const auto& l : lses) mx = std::max(mx, l.at(b, h, i, 0));
        float* orow = out.row(b, h, i);
        if (mx == detail::kNegInf) {
          std::fill(orow, orow + dv, 0.0f);
          if (!lse_out.empty()) lse_out.at(b, h, i, 0) = detail::kNegInf;
          continue;
        }
        double total = 0;
        for (size_t p = 0; p < outs.size(); ++p) {
          w[p] = std::exp(lses[p].at(b, h, i, 0) - mx);
          total += w[p];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (size_t p = 0; p < outs.size(); ++p) {
          const float wp = static_cast<float>(w[p] / total);
          const float* r = outs[p].row(b, h, i);
          for (int64_t d = 0; d < dv; ++d) acc[d] += wp * r[d];
        }
        std::copy(acc.begin(), acc.end(), orow);
        if (!lse_out.empty()) lse_out.at(b, h, i, 0) = mx + static_cast<float>(std::log(total));
      }
    }
  }
}

}  // namespace attnkit
