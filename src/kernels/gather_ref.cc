// The gather engine's plain reference twins, argument checks and the indexer key cache.
//
// Deliberately obvious: one query row at a time, double accumulation, a full sort for top-k.
// These are the yardsticks the fast paths (gather.cc, gather_indexer*.cc) are tested against.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/masks/mask.h"  // kUnbounded
#include "kernels/gather_common.h"
#include "kernels/nonfinite.h"

namespace attnkit {
namespace detail {

template <typename KV>
Problem CheckGatherArgs(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                        TensorView<const KV> v, TensorView<const int32_t> indices,
                        TensorView<float> out, TensorView<float> lse, const GatherOptions& o) {
  ProblemRules rules;
  rules.scale = o.scale;
  rules.num_threads = o.num_threads;
  const Problem p = CheckProblem(fn, q, k, v, out, lse, rules);
  CheckView(indices, fn, "indices");
  Require(indices.batch() == q.batch() && indices.tokens() == q.tokens() &&
              (indices.heads() == 1 || indices.heads() == k.heads()),
          fn, ": indices must be [batch, 1 or num_heads_kv, seqlen_q, top_k] = [", q.batch(),
          ", 1 or ", k.heads(), ", ", q.tokens(), ", top_k], got ", indices.ShapeString());
  const int64_t n = k.tokens();
  // A key listed twice in one row would be counted twice in its softmax: a silent wrong answer.
  // seen[key] holds the last row (numbered from 1) that listed it: O(1) per index.
  std::vector<int64_t> seen = CheckedVector<int64_t>(n, 0, fn, "the duplicate check of indices");
  int64_t row_id = 0;
  for (int64_t b = 0; b < indices.batch(); ++b) {
    for (int64_t h = 0; h < indices.heads(); ++h) {
      for (int64_t i = 0; i < indices.tokens(); ++i) {
        const int32_t* r = indices.row(b, h, i);
        ++row_id;
        for (int64_t j = 0; j < indices.dim(); ++j) {
          Require(r[j] >= -1 && r[j] < n, fn, ": indices[", b, ", ", h, ", ", i, ", ", j,
                  "] = ", r[j], " is not a key row of k (seqlen_kv = ", n, ") or -1");
          if (r[j] < 0) continue;
          Require(seen[static_cast<size_t>(r[j])] != row_id, fn, ": indices[", b, ", ", h, ", ", i,
                  "] lists key ", r[j], " twice (a row's keys must be distinct)");
          seen[static_cast<size_t>(r[j])] = row_id;
        }
      }
    }
  }
  return p;
}

template Problem CheckGatherArgs<float>(const char*, TensorView<const float>,
                                        TensorView<const float>, TensorView<const float>,
                                        TensorView<const int32_t>, TensorView<float>,
                                        TensorView<float>, const GatherOptions&);
template Problem CheckGatherArgs<bf16>(const char*, TensorView<const float>, TensorView<const bf16>,
                                       TensorView<const bf16>, TensorView<const int32_t>,
                                       TensorView<float>, TensorView<float>, const GatherOptions&);

template <typename KI>
int64_t CheckIndexerArgs(const char* fn, TensorView<const float> q_index,
                         TensorView<const float> weights, TensorView<const KI> k_index,
                         const IndexerOptions& o) {
  CheckView(q_index, fn, "q_index");
  CheckView(weights, fn, "weights");
  CheckView(k_index, fn, "k_index");
  Require(
      k_index.batch() == q_index.batch() && k_index.heads() == 1 && k_index.dim() == q_index.dim(),
      fn, ": k_index must be [batch, 1, seqlen_kv, index_dim] with q_index ", q_index.ShapeString(),
      ", got ", k_index.ShapeString());
  Require(weights.batch() == q_index.batch() && weights.heads() == 1 &&
              weights.tokens() == q_index.tokens() && weights.dim() == q_index.heads(),
          fn, ": weights must be [batch, 1, seqlen_q, index_heads] = [", q_index.batch(), ", 1, ",
          q_index.tokens(), ", ", q_index.heads(), "], got ", weights.ShapeString());
  Require(o.num_threads >= 0, fn, ": num_threads must be >= 0, got ", o.num_threads);
  Require(o.k_start > -kUnbounded && o.k_start < kUnbounded, fn, ": k_start out of range");
  if (o.q_start) {
    Require(*o.q_start > -kUnbounded && *o.q_start < kUnbounded, fn, ": q_start out of range");
  }
  return o.q_start ? *o.q_start : o.k_start + k_index.tokens() - q_index.tokens();
}

template int64_t CheckIndexerArgs<float>(const char*, TensorView<const float>,
                                         TensorView<const float>, TensorView<const float>,
                                         const IndexerOptions&);
template int64_t CheckIndexerArgs<bf16>(const char*, TensorView<const float>,
                                        TensorView<const float>, TensorView<const bf16>,
                                        const IndexerOptions&);

}  // namespace detail

IndexerCache::IndexerCache(int64_t batch, int64_t index_dim, int64_t capacity)
    : batch_(batch), dim_(index_dim), capacity_(capacity) {
  Require(batch >= 1, "IndexerCache: batch must be >= 1, got ", batch);
  Require(index_dim >= 1, "IndexerCache: index_dim must be >= 1, got ", index_dim);
  Require(capacity >= 1, "IndexerCache: capacity must be >= 1, got ", capacity);
  const int64_t n =
      CheckedProduct({batch, capacity, index_dim}, "IndexerCache", "batch*capacity*index_dim");
  CheckedResize(data_, n, "IndexerCache", "the indexer key buffer");
  const int64_t tiles = (capacity + 31) / 32, depth = (index_dim + 1) / 2;
  CheckedResize(tiles_, CheckedProduct({batch, tiles, depth, 32}, "IndexerCache", "packed tiles"),
                "IndexerCache", "the packed indexer tiles");
}

const uint32_t* IndexerCache::packed_tiles(int64_t b) const {
  Require(b >= 0 && b < batch_, "IndexerCache::packed_tiles: batch entry ", b, " out of [0, ",
          batch_, ")");
  const int64_t tiles = (capacity_ + 31) / 32, depth = (dim_ + 1) / 2;
  return tiles_.data() + b * tiles * depth * 32;
}

void IndexerCache::Append(TensorView<const float> k_index) {
  CheckView(k_index, "IndexerCache::Append", "k_index");
  Require(k_index.batch() == batch_ && k_index.heads() == 1 && k_index.dim() == dim_,
          "IndexerCache::Append: k_index must be [", batch_, ", 1, n, ", dim_, "], got ",
          k_index.ShapeString());
  Require(k_index.tokens() <= capacity_ - length_, "IndexerCache::Append: ", k_index.tokens(),
          " new tokens exceed the capacity ", capacity_, " (holding ", length_, ")");
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = 0; t < k_index.tokens(); ++t) {
      const float* src = k_index.row(b, 0, t);
      bf16* dst = data_.data() + (b * capacity_ + length_ + t) * dim_;
      for (int64_t d = 0; d < dim_; ++d) dst[d] = ToBf16(src[d]);
      // The same bits into the packed tile: key j of tile t, pair p = d / 2.
      const int64_t pos = length_ + t, depth = (dim_ + 1) / 2, tiles = (capacity_ + 31) / 32;
      uint32_t* tile = tiles_.data() + ((b * tiles + pos / 32) * depth) * 32 + pos % 32;
      for (int64_t p = 0; p < depth; ++p) {
        const uint32_t lo = dst[2 * p].bits;
        const uint32_t hi = 2 * p + 1 < dim_ ? dst[2 * p + 1].bits : 0u;
        tile[p * 32] = lo | (hi << 16);
      }
    }
  }
  length_ += k_index.tokens();
}

TensorView<const bf16> IndexerCache::view() const {
  Require(length_ > 0, "IndexerCache::view: the cache is empty");
  return TensorView<const bf16>{
      data_.data(), {batch_, 1, length_, dim_}, {capacity_ * dim_, capacity_ * dim_, dim_, 1}};
}

namespace ref {
namespace {

template <typename KV>
void RefGatherImpl(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
                   TensorView<const int32_t> idx, TensorView<float> out, TensorView<float> lse,
                   const detail::Problem& p) {
  const int64_t group = p.group, dk = p.dk, dv = p.dv;
  const double scale = p.scale;
  std::vector<double> logits(static_cast<size_t>(idx.dim())), acc(static_cast<size_t>(dv));
  for (int64_t b = 0; b < q.batch(); ++b) {
    for (int64_t h = 0; h < q.heads(); ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < q.tokens(); ++i) {
        const int32_t* sel = idx.row(b, idx.heads() == 1 ? 0 : hk, i);
        const float* qr = q.row(b, h, i);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < idx.dim(); ++j) {
          if (sel[j] < 0) continue;
          const KV* kr = k.row(b, hk, sel[j]);
          double dot = 0;
          for (int64_t d = 0; d < dk; ++d) dot += double{qr[d]} * double{ToFloat(kr[d])};
          logits[j] = dot * scale;
          mx = std::max(mx, logits[j]);
        }
        float* orow = out.row(b, h, i);
        if (mx == -std::numeric_limits<double>::infinity()) {
          std::fill(orow, orow + dv, 0.0f);
          if (!lse.empty()) lse.at(b, h, i, 0) = -std::numeric_limits<float>::infinity();
          continue;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double denom = 0;
        for (int64_t j = 0; j < idx.dim(); ++j) {
          if (sel[j] < 0) continue;
          const double p = std::exp(logits[j] - mx);
          denom += p;
          const KV* vr = v.row(b, hk, sel[j]);
          for (int64_t d = 0; d < dv; ++d) acc[d] += p * double{ToFloat(vr[d])};
        }
        for (int64_t d = 0; d < dv; ++d) orow[d] = static_cast<float>(acc[d] / denom);
        if (!lse.empty()) lse.at(b, h, i, 0) = static_cast<float>(mx + std::log(denom));
      }
    }
  }
}

template <typename KV>
void RefGather(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
               TensorView<const int32_t> idx, TensorView<float> out, const GatherOptions& o,
               TensorView<float> lse) {
  const detail::Problem p =
      detail::CheckGatherArgs("ref::GatherForward", q, k, v, idx, out, lse, o);
  detail::GatherNonFiniteRule(
      p, q, k, v, idx, out, lse,
      [&](TensorView<const float> q2, TensorView<const KV> k2, TensorView<const KV> v2) {
        RefGatherImpl(q2, k2, v2, idx, out, lse, p);
      });
}

template <typename KI>
void RefIndexer(TensorView<const float> qi, TensorView<const float> w, TensorView<const KI> ki,
                TensorView<float> scores, const IndexerOptions& o) {
  const int64_t q_start = detail::CheckIndexerArgs("ref::LightningIndexer", qi, w, ki, o);
  CheckView(scores, "ref::LightningIndexer", "scores");
  Require(scores.batch() == qi.batch() && scores.heads() == 1 && scores.tokens() == qi.tokens() &&
              scores.dim() == ki.tokens(),
          "ref::LightningIndexer: scores must be [batch, 1, seqlen_q, seqlen_kv] = [", qi.batch(),
          ", 1, ", qi.tokens(), ", ", ki.tokens(), "], got ", scores.ShapeString());
  const int64_t sq = qi.tokens(), skv = ki.tokens(), dim = qi.dim();
  auto round = [&](float x) { return o.reduced_precision ? ToFloat(ToBf16(x)) : x; };
  for (int64_t b = 0; b < qi.batch(); ++b) {
    for (int64_t i = 0; i < sq; ++i) {
      for (int64_t j = 0; j < skv; ++j) {
        if (o.k_start + j > q_start + i) {
          scores.at(b, 0, i, j) = -std::numeric_limits<float>::infinity();
          continue;
        }
        double total = 0;
        for (int64_t h = 0; h < qi.heads(); ++h) {
          double dot = 0;
          for (int64_t d = 0; d < dim; ++d) {
            dot += double{round(qi.at(b, h, i, d))} * double{round(ToFloat(ki.at(b, 0, j, d)))};
          }
          total += double{w.at(b, 0, i, h)} * std::max(dot, 0.0);
        }
        scores.at(b, 0, i, j) = static_cast<float>(total);
      }
    }
  }
}

template <typename KI>
void RefSelect(TensorView<const float> qi, TensorView<const float> w, TensorView<const KI> ki,
               int64_t top_k, TensorView<int32_t> indices, const IndexerOptions& o) {
  Require(top_k >= 1, "ref::DsaSelect: top_k must be >= 1, got ", top_k);
  CheckView(indices, "ref::DsaSelect", "indices");
  Require(indices.batch() == qi.batch() && indices.heads() == 1 &&
              indices.tokens() == qi.tokens() && indices.dim() == top_k,
          "ref::DsaSelect: indices must be [batch, 1, seqlen_q, top_k] = [", qi.batch(), ", 1, ",
          qi.tokens(), ", ", top_k, "], got ", indices.ShapeString());
  const int64_t sq = qi.tokens(), skv = ki.tokens();
  Tensor<float> scores(qi.batch(), 1, sq, skv);
  RefIndexer(qi, w, ki, scores.view(), o);
  const int64_t q_start = o.q_start ? *o.q_start : o.k_start + skv - sq;
  for (int64_t b = 0; b < qi.batch(); ++b) {
    for (int64_t i = 0; i < sq; ++i) {
      const int64_t visible = std::clamp<int64_t>(q_start + i - o.k_start + 1, 0, skv);
      int32_t* out = indices.row(b, 0, i);
      if (visible == 0) {
        std::fill(out, out + top_k, -1);
        continue;
      }
      TopKRow(scores.view().row(b, 0, i), visible, top_k, out);
    }
  }
}

}  // namespace

void TopKRow(const float* scores, int64_t n, int64_t top_k, int32_t* out) {
  Require(top_k >= 1, "ref::TopKRow: top_k must be >= 1, got ", top_k);
  std::vector<int32_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(order.begin(), order.end(), 0);
  auto rank = [&](int32_t a, int32_t b) {  // NaN last, then higher score, then lower row
    const bool na = std::isnan(scores[a]), nb = std::isnan(scores[b]);
    if (na != nb) return nb;
    if (!na && scores[a] != scores[b]) return scores[a] > scores[b];
    return a < b;
  };
  std::sort(order.begin(), order.end(), rank);
  const int64_t take = std::min(top_k, n);
  std::sort(order.begin(), order.begin() + take);
  for (int64_t j = 0; j < top_k; ++j) out[j] = j < take ? order[j] : -1;
}

template <typename KV>
void GatherForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                   TensorView<const int32_t> indices, TensorView<float> out,
                   const GatherOptions& options, TensorView<float> lse) {
  RefGather<std::remove_const_t<KV>>(q, k, v, indices, out, options, lse);
}
template void GatherForward<float>(TensorView<const float>, TensorView<float>, TensorView<float>,
                                   TensorView<const int32_t>, TensorView<float>,
                                   const GatherOptions&, TensorView<float>);
template void GatherForward<const float>(TensorView<const float>, TensorView<const float>,
                                         TensorView<const float>, TensorView<const int32_t>,
                                         TensorView<float>, const GatherOptions&,
                                         TensorView<float>);
template void GatherForward<bf16>(TensorView<const float>, TensorView<bf16>, TensorView<bf16>,
                                  TensorView<const int32_t>, TensorView<float>,
                                  const GatherOptions&, TensorView<float>);
template void GatherForward<const bf16>(TensorView<const float>, TensorView<const bf16>,
                                        TensorView<const bf16>, TensorView<const int32_t>,
                                        TensorView<float>, const GatherOptions&, TensorView<float>);

template <typename KI>
void LightningIndexer(TensorView<const float> q_index, TensorView<const float> weights,
                      TensorView<KI> k_index, TensorView<float> scores,
                      const IndexerOptions& options) {
  RefIndexer<std::remove_const_t<KI>>(q_index, weights, k_index, scores, options);
}
template void LightningIndexer<float>(TensorView<const float>, TensorView<const float>,
                                      TensorView<float>, TensorView<float>, const IndexerOptions&);
template void LightningIndexer<const float>(TensorView<const float>, TensorView<const float>,
                                            TensorView<const float>, TensorView<float>,
                                            const IndexerOptions&);
template void LightningIndexer<bf16>(TensorView<const float>, TensorView<const float>,
                                     TensorView<bf16>, TensorView<float>, const IndexerOptions&);
template void LightningIndexer<const bf16>(TensorView<const float>, TensorView<const float>,
                                           TensorView<const bf16>, TensorView<float>,
                                           const IndexerOptions&);

template <typename KI>
void DsaSelect(TensorView<const float> q_index, TensorView<const float> weights,
               TensorView<KI> k_index, int64_t top_k, TensorView<int32_t> indices,
               const IndexerOptions& options) {
  RefSelect<std::remove_const_t<KI>>(q_index, weights, k_index, top_k, indices, options);
}
template void DsaSelect<float>(TensorView<const float>, TensorView<const float>, TensorView<float>,
                               int64_t, TensorView<int32_t>, const IndexerOptions&);
template void DsaSelect<const float>(TensorView<const float>, TensorView<const float>,
                                     TensorView<const float>, int64_t, TensorView<int32_t>,
                                     const IndexerOptions&);
template void DsaSelect<bf16>(TensorView<const float>, TensorView<const float>, TensorView<bf16>,
                              int64_t, TensorView<int32_t>, const IndexerOptions&);
template void DsaSelect<const bf16>(TensorView<const float>, TensorView<const float>,
                                    TensorView<const bf16>, int64_t, TensorView<int32_t>,
                                    const IndexerOptions&);

}  // namespace ref
}  // namespace attnkit
