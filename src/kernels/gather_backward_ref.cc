// The gather engine's backward: argument checks and the plain reference twins (one query row at a
// time, double accumulation; dk / dv and dk_index accumulated in double buffers).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/kernels/gather_backward.h"
#include "kernels/backward_common.h"
#include "kernels/dense_common.h"
#include "kernels/gather_common.h"

namespace attnkit {
namespace detail {
namespace {

// Every lse value is a log-sum-exp (finite) or −inf (a row with no key).
void CheckLseValues(const char* fn, TensorView<const float> lse) {
  for (int64_t b = 0; b < lse.batch(); ++b) {
    for (int64_t h = 0; h < lse.heads(); ++h) {
      for (int64_t i = 0; i < lse.tokens(); ++i) {
        const float x = lse.at(b, h, i, 0);
        // NaN: a row the forward poisoned (the non-finite rule); its gradients come out NaN.
        Require(std::isfinite(x) || x == kNegInf || std::isnan(x), fn, ": lse[", b, ", ", h, ", ",
                i, "] = ", x, " is not a log-sum-exp (finite, -inf or NaN)");
      }
    }
  }
}

// One selection list per (batch, query): indices [batch, 1, seqlen_q, top_k], entries key rows
// of [0, seqlen_kv) or −1, distinct per row.
void CheckSelection(const char* fn, TensorView<const int32_t> indices, int64_t batch,
                    int64_t seqlen_q, int64_t seqlen_kv) {
  CheckView(indices, fn, "indices");
  Require(indices.batch() == batch && indices.heads() == 1 && indices.tokens() == seqlen_q, fn,
          ": indices must be [batch, 1, seqlen_q, top_k] = [", batch, ", 1, ", seqlen_q,
          ", top_k], got ", indices.ShapeString());
  std::vector<int64_t> seen(static_cast<size_t>(seqlen_kv), -1);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < seqlen_q; ++i) {
      const int32_t* r = indices.row(b, 0, i);
      const int64_t row_id = b * seqlen_q + i;
      for (int64_t j = 0; j < indices.dim(); ++j) {
        Require(r[j] >= -1 && r[j] < seqlen_kv, fn, ": indices[", b, ", 0, ", i, ", ", j,
                "] = ", r[j], " is not a key row (seqlen_kv = ", seqlen_kv, ") or -1");
        if (r[j] < 0) continue;
        Require(seen[static_cast<size_t>(r[j])] != row_id, fn, ": indices[", b, ", 0, ", i,
                "] lists key ", r[j], " twice");
        seen[static_cast<size_t>(r[j])] = row_id;
      }
    }
  }
}

template <typename A>
void RequireNoOverlap(const char* fn, const char* name, TensorView<float> g,
                      std::initializer_list<TensorView<const A>> inputs) {
  for (const auto& in : inputs) {
    Require(!ViewsOverlap(g, in), fn, ": ", name, " overlaps an input");
  }
}

}  // namespace

template <typename KV>
Problem CheckGatherBackwardArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                                TensorView<const KV> v, TensorView<const int32_t> indices,
                                TensorView<const float> out, TensorView<const float> lse,
                                TensorView<const float> dout, const GatherGrads& grads,
                                const GatherOptions& o) {
  CheckView(out, fn, "out");
  Require(!lse.empty(), fn, ": lse (the forward's log-sum-exp) is required");
  const Problem g =
      CheckGatherArgs(fn, q, k, v, indices, ConstCastView(out), ConstCastView(lse), o);
  CheckView(dout, fn, "dout");
  Require(dout.shape == out.shape, fn, ": dout must have out's shape ", out.ShapeString(), ", got ",
          dout.ShapeString());
  CheckGradViews(fn, grads.dq, grads.dk, grads.dv, q, k, v);
  const TensorView<float> gs[3] = {grads.dq, grads.dk, grads.dv};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int a = 0; a < 3; ++a) {
    RequireNoOverlap<float>(fn, names[a], gs[a], {out, lse, dout});
    Require(!ViewsOverlap(gs[a], indices), fn, ": ", names[a], " overlaps an input");
  }
  CheckLseValues(fn, lse);
  return g;
}

template Problem CheckGatherBackwardArgs<float>(const char*, TensorView<const float>,
                                                TensorView<const float>, TensorView<const float>,
                                                TensorView<const int32_t>, TensorView<const float>,
                                                TensorView<const float>, TensorView<const float>,
                                                const GatherGrads&, const GatherOptions&);
template Problem CheckGatherBackwardArgs<bf16>(const char*, TensorView<const float>,
                                               TensorView<const bf16>, TensorView<const bf16>,
                                               TensorView<const int32_t>, TensorView<const float>,
                                               TensorView<const float>, TensorView<const float>,
                                               const GatherGrads&, const GatherOptions&);

template <typename KV>
void CheckIndexerTargetArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                            TensorView<const int32_t> indices, TensorView<const float> lse,
                            TensorView<float> target, const GatherOptions& o) {
  CheckView(q, fn, "q");
  CheckView(k, fn, "k");
  CheckView(lse, fn, "lse");
  CheckView(target, fn, "target");
  Require(k.batch() == q.batch() && q.heads() % k.heads() == 0 && k.dim() == q.dim(), fn, ": k ",
          k.ShapeString(), " does not match q ", q.ShapeString(),
          " (same batch and head_dim, num_heads_q a multiple of num_heads_kv)");
  Require(lse.batch() == q.batch() && lse.heads() == q.heads() && lse.tokens() == q.tokens() &&
              lse.dim() == 1,
          fn, ": lse must be [batch, num_heads_q, seqlen_q, 1], got ", lse.ShapeString());
  CheckSelection(fn, indices, q.batch(), q.tokens(), k.tokens());
  Require(target.shape == indices.shape, fn, ": target must have indices' shape ",
          indices.ShapeString(), ", got ", target.ShapeString());
  Require(!ViewsOverlap(target, q) && !ViewsOverlap(target, k) && !ViewsOverlap(target, lse) &&
              !ViewsOverlap(target, indices),
          fn, ": target overlaps an input");
  if (o.scale) Require(std::isfinite(*o.scale), fn, ": scale must be finite, got ", *o.scale);
  Require(o.num_threads >= 0, fn, ": num_threads must be >= 0, got ", o.num_threads);
  CheckLseValues(fn, lse);
}

template void CheckIndexerTargetArgs<float>(const char*, TensorView<const float>,
                                            TensorView<const float>, TensorView<const int32_t>,
                                            TensorView<const float>, TensorView<float>,
                                            const GatherOptions&);
template void CheckIndexerTargetArgs<bf16>(const char*, TensorView<const float>,
                                           TensorView<const bf16>, TensorView<const int32_t>,
                                           TensorView<const float>, TensorView<float>,
                                           const GatherOptions&);

void CheckIndexerKlArgs(const char* fn, TensorView<const float> q_index,
                        TensorView<const float> weights, TensorView<const float> k_index,
                        TensorView<const int32_t> indices, TensorView<const float> target,
                        const IndexerGrads& grads, const IndexerOptions& o) {
  CheckIndexerArgs(fn, q_index, weights, k_index, o);
  CheckSelection(fn, indices, q_index.batch(), q_index.tokens(), k_index.tokens());
  CheckView(target, fn, "target");
  Require(target.shape == indices.shape, fn, ": target must have indices' shape ",
          indices.ShapeString(), ", got ", target.ShapeString());
  CheckView(grads.dq_index, fn, "dq_index");
  CheckView(grads.dweights, fn, "dweights");
  CheckView(grads.dk_index, fn, "dk_index");
  Require(grads.dq_index.shape == q_index.shape, fn, ": dq_index must have q_index's shape ",
          q_index.ShapeString(), ", got ", grads.dq_index.ShapeString());
  Require(grads.dweights.shape == weights.shape, fn, ": dweights must have weights' shape ",
          weights.ShapeString(), ", got ", grads.dweights.ShapeString());
  Require(grads.dk_index.shape == k_index.shape, fn, ": dk_index must have k_index's shape ",
          k_index.ShapeString(), ", got ", grads.dk_index.ShapeString());
  const TensorView<float> gs[3] = {grads.dq_index, grads.dweights, grads.dk_index};
  const char* names[3] = {"dq_index", "dweights", "dk_index"};
  for (int a = 0; a < 3; ++a) {
    for (int c = a + 1; c < 3; ++c) {
      Require(!ViewsOverlap(gs[a], gs[c]), fn, ": ", names[a], " overlaps ", names[c]);
    }
    RequireNoOverlap<float>(fn, names[a], gs[a], {q_index, weights, k_index, target});
    Require(!ViewsOverlap(gs[a], indices), fn, ": ", names[a], " overlaps an input");
  }
  for (int64_t b = 0; b < target.batch(); ++b) {
    for (int64_t i = 0; i < target.tokens(); ++i) {
      for (int64_t j = 0; j < target.dim(); ++j) {
        const float p = target.at(b, 0, i, j);
        Require(std::isfinite(p) && p >= 0.0f, fn, ": target[", b, ", 0, ", i, ", ", j, "] = ", p,
                " is not a probability");
      }
    }
  }
}

}  // namespace detail

namespace ref {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename KV>
double Dot(const float* a, const KV* b, int64_t n) {
  double s = 0;
  for (int64_t d = 0; d < n; ++d) s += double{a[d]} * double{ToFloat(b[d])};
  return s;
}

template <typename KV>
void RefGatherBackward(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                       TensorView<const int32_t> idx, TensorView<const float> out,
                       TensorView<const float> lse, TensorView<const float> dout,
                       const GatherGrads& grads, const GatherOptions& o) {
  detail::CheckGatherBackwardArgs("ref::GatherBackward", q, k, v, idx, out, lse, dout, grads, o);
  const int64_t group = q.heads() / k.heads(), dk = q.dim(), dv = v.dim();
  const int64_t hkv = k.heads(), skv = k.tokens();
  const double scale = o.scale ? double{*o.scale} : 1.0 / std::sqrt(static_cast<double>(dk));
  std::vector<double> gk(static_cast<size_t>(q.batch() * hkv * skv * dk), 0.0);
  std::vector<double> gv(static_cast<size_t>(q.batch() * hkv * skv * dv), 0.0);
  std::vector<double> gq(static_cast<size_t>(dk));
  for (int64_t b = 0; b < q.batch(); ++b) {
    for (int64_t h = 0; h < q.heads(); ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < q.tokens(); ++i) {
        const int32_t* sel = idx.row(b, idx.heads() == 1 ? 0 : hk, i);
        const float* qr = q.row(b, h, i);
        const float* dor = dout.row(b, h, i);
        const double l = lse.at(b, h, i, 0);
        const double D = Dot(dor, out.row(b, h, i), dv);
        std::fill(gq.begin(), gq.end(), 0.0);
        for (int64_t j = 0; j < idx.dim() && l != -kInf; ++j) {
          if (sel[j] < 0) continue;
          const KV* kr = k.row(b, hk, sel[j]);
          const KV* vr = v.row(b, hk, sel[j]);
          const double p = std::exp(Dot(qr, kr, dk) * scale - l);
          const double ds = p * (Dot(dor, vr, dv) - D) * scale;
          double* gkr = gk.data() + ((b * hkv + hk) * skv + sel[j]) * dk;
          double* gvr = gv.data() + ((b * hkv + hk) * skv + sel[j]) * dv;
          for (int64_t d = 0; d < dk; ++d) {
            gq[d] += ds * double{ToFloat(kr[d])};
            gkr[d] += ds * double{qr[d]};
          }
          for (int64_t d = 0; d < dv; ++d) gvr[d] += p * double{dor[d]};
        }
        float* dqr = grads.dq.row(b, h, i);
        for (int64_t d = 0; d < dk; ++d) dqr[d] = static_cast<float>(gq[d]);
      }
    }
  }
  for (int64_t b = 0; b < q.batch(); ++b) {
    for (int64_t hk = 0; hk < hkv; ++hk) {
      for (int64_t s = 0; s < skv; ++s) {
        const double* gkr = gk.data() + ((b * hkv + hk) * skv + s) * dk;
        const double* gvr = gv.data() + ((b * hkv + hk) * skv + s) * dv;
        float* dkr = grads.dk.row(b, hk, s);
        float* dvr = grads.dv.row(b, hk, s);
        for (int64_t d = 0; d < dk; ++d) dkr[d] = static_cast<float>(gkr[d]);
        for (int64_t d = 0; d < dv; ++d) dvr[d] = static_cast<float>(gvr[d]);
      }
    }
  }
}

template <typename KV>
void RefTarget(TensorView<const float> q, TensorView<const KV> k, TensorView<const int32_t> idx,
               TensorView<const float> lse, TensorView<float> target, const GatherOptions& o) {
  detail::CheckIndexerTargetArgs("ref::IndexerTarget", q, k, idx, lse, target, o);
  const int64_t group = q.heads() / k.heads(), dk = q.dim(), top = idx.dim();
  const double scale = o.scale ? double{*o.scale} : 1.0 / std::sqrt(static_cast<double>(dk));
  std::vector<double> p(static_cast<size_t>(top));
  for (int64_t b = 0; b < q.batch(); ++b) {
    for (int64_t i = 0; i < q.tokens(); ++i) {
      const int32_t* sel = idx.row(b, 0, i);
      std::fill(p.begin(), p.end(), 0.0);
      double total = 0;
      for (int64_t h = 0; h < q.heads(); ++h) {
        const double l = lse.at(b, h, i, 0);
        if (l == -kInf) continue;
        for (int64_t j = 0; j < top; ++j) {
          if (sel[j] < 0) continue;
          const double e =
              std::exp(Dot(q.row(b, h, i), k.row(b, h / group, sel[j]), dk) * scale - l);
          p[j] += e;
          total += e;
        }
      }
      float* t = target.row(b, 0, i);
      for (int64_t j = 0; j < top; ++j) t[j] = total > 0 ? static_cast<float>(p[j] / total) : 0.0f;
    }
  }
}

}  // namespace

void GatherBackward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options) {
  RefGatherBackward(q, k, v, indices, out, lse, dout, grads, options);
}
void GatherBackward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                    TensorView<const int32_t> indices, TensorView<const float> out,
                    TensorView<const float> lse, TensorView<const float> dout,
                    const GatherGrads& grads, const GatherOptions& options) {
  RefGatherBackward(q, k, v, indices, out, lse, dout, grads, options);
}
void IndexerTarget(TensorView<const float> q, TensorView<const float> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options) {
  RefTarget(q, k, indices, lse, target, options);
}
void IndexerTarget(TensorView<const float> q, TensorView<const bf16> k,
                   TensorView<const int32_t> indices, TensorView<const float> lse,
                   TensorView<float> target, const GatherOptions& options) {
  RefTarget(q, k, indices, lse, target, options);
}

double IndexerKlBackward(TensorView<const float> qi, TensorView<const float> w,
                         TensorView<const float> ki, TensorView<const int32_t> idx,
                         TensorView<const float> target, const IndexerGrads& grads,
                         const IndexerOptions& o) {
  detail::CheckIndexerKlArgs("ref::IndexerKlBackward", qi, w, ki, idx, target, grads, o);
  const int64_t hi = qi.heads(), dim = qi.dim(), top = idx.dim(), skv = ki.tokens();
  std::vector<double> gk(static_cast<size_t>(qi.batch() * skv * dim), 0.0);
  std::vector<double> score(static_cast<size_t>(top)), g(static_cast<size_t>(top));
  std::vector<double> gq(static_cast<size_t>(hi * dim)), gw(static_cast<size_t>(hi));
  double loss = 0;
  for (int64_t b = 0; b < qi.batch(); ++b) {
    for (int64_t i = 0; i < qi.tokens(); ++i) {
      const int32_t* sel = idx.row(b, 0, i);
      const float* p = target.row(b, 0, i);
      // I(t, s) over the selected keys, then log-softmax.
      double mx = -kInf, psum = 0;
      for (int64_t j = 0; j < top; ++j) {
        if (sel[j] < 0) continue;
        double total = 0;
        for (int64_t h = 0; h < hi; ++h) {
          total += double{w.at(b, 0, i, h)} *
                   std::max(Dot(qi.row(b, h, i), ki.row(b, 0, sel[j]), dim), 0.0);
        }
        score[j] = total;
        mx = std::max(mx, total);
        psum += p[j];
      }
      std::fill(gq.begin(), gq.end(), 0.0);
      std::fill(gw.begin(), gw.end(), 0.0);
      if (mx != -kInf) {
        double denom = 0;
        for (int64_t j = 0; j < top; ++j) {
          if (sel[j] >= 0) denom += std::exp(score[j] - mx);
        }
        const double log_denom = mx + std::log(denom);
        for (int64_t j = 0; j < top; ++j) {
          if (sel[j] < 0) continue;
          const double logq = score[j] - log_denom;
          if (p[j] > 0) loss += double{p[j]} * (std::log(double{p[j]}) - logq);
          g[j] = std::exp(logq) * psum - p[j];  // ∂L/∂I(t, s)
          for (int64_t h = 0; h < hi; ++h) {
            const float* qr = qi.row(b, h, i);
            const float* kr = ki.row(b, 0, sel[j]);
            const double dot = Dot(qr, kr, dim);
            if (dot <= 0) continue;
            const double wt = w.at(b, 0, i, h);
            gw[h] += g[j] * dot;
            double* gkr = gk.data() + (b * skv + sel[j]) * dim;
            for (int64_t d = 0; d < dim; ++d) {
              gq[h * dim + d] += g[j] * wt * double{kr[d]};
              gkr[d] += g[j] * wt * double{qr[d]};
            }
          }
        }
      }
      for (int64_t h = 0; h < hi; ++h) {
        grads.dweights.at(b, 0, i, h) = static_cast<float>(gw[h]);
        float* dq = grads.dq_index.row(b, h, i);
        for (int64_t d = 0; d < dim; ++d) dq[d] = static_cast<float>(gq[h * dim + d]);
      }
    }
  }
  for (int64_t b = 0; b < qi.batch(); ++b) {
    for (int64_t s = 0; s < skv; ++s) {
      float* dk = grads.dk_index.row(b, 0, s);
      for (int64_t d = 0; d < dim; ++d) dk[d] = static_cast<float>(gk[(b * skv + s) * dim + d]);
    }
  }
  return loss;
}

}  // namespace ref
}  // namespace attnkit
