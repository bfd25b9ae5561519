// The dense engine's tiled kernel (first, portable version).
//
// Work unit: one (batch, kv head, query block). All group_size query heads that share the kv head
// are processed together, so each K/V row is read once per group, not once per query head.
// Key blocks are classified by the mask: empty ones are skipped, full ones run without
// per-element checks, partial ones are checked per element. Online softmax keeps, per query row,
// the running max m, the running denominator l and the unnormalised output accumulator.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "kernels/dense_common.h"

namespace attnkit {
namespace {

constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockKv = 64;

template <typename KV>
void FastImpl(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
              TensorView<float> out, const DenseOptions& o, TensorView<float> lse) {
  const detail::DenseGeometry g = detail::ResolveDense(q, k, v, o);
  const int64_t num_qb = (g.seqlen_q + kBlockQ - 1) / kBlockQ;
  const int64_t num_kb = (g.seqlen_kv + kBlockKv - 1) / kBlockKv;
  const int64_t units = g.batch * g.heads_kv * num_qb;
  std::atomic<int64_t> skipped{0}, full{0}, partial{0};
  const int threads = ResolveThreads(o.num_threads);

#pragma omp parallel num_threads(threads)
  {
    const int64_t rows_max = g.group * kBlockQ;
    std::vector<float> s(static_cast<size_t>(rows_max * kBlockKv));
    std::vector<float> acc(static_cast<size_t>(rows_max * g.dv));
    std::vector<float> m(static_cast<size_t>(rows_max)), l(static_cast<size_t>(rows_max));
    std::vector<uint8_t> allowed(static_cast<size_t>(kBlockQ * kBlockKv));
    std::vector<float> kf(static_cast<size_t>(kBlockKv * g.dk)), vf(static_cast<size_t>(kBlockKv * g.dv));
    int64_t my_skipped = 0, my_full = 0, my_partial = 0;

#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t qb = u % num_qb;
      const int64_t hk = (u / num_qb) % g.heads_kv;
      const int64_t b = u / (num_qb * g.heads_kv);
      const int64_t i0 = qb * kBlockQ, i1 = std::min(g.seqlen_q, i0 + kBlockQ);
      const int64_t nq = i1 - i0;
      const int64_t rows = g.group * nq;  // row r = gh * nq + (i - i0)
      std::fill(acc.begin(), acc.begin() + rows * g.dv, 0.0f);
      std::fill(m.begin(), m.begin() + rows, detail::kNegInf);
      std::fill(l.begin(), l.begin() + rows, 0.0f);
      const int64_t qp0 = g.q_start + i0, qp1 = g.q_start + i1;
      int64_t jb0 = 0, jb1 = num_kb;
      if (o.mask) {
        const auto [lo, hi] = o.mask->KeyBounds(qp0, qp1);
        jb0 = std::clamp<int64_t>((lo - g.k_start) / kBlockKv, 0, num_kb);
        jb1 = std::clamp<int64_t>((hi - g.k_start + kBlockKv - 1) / kBlockKv, 0, num_kb);
        my_skipped += num_kb - (jb1 - jb0);
      }
      for (int64_t jb = jb0; jb < jb1; ++jb) {
        const int64_t j0 = jb * kBlockKv, j1 = std::min(g.seqlen_kv, j0 + kBlockKv);
        const int64_t nk = j1 - j0;
        const int64_t kp0 = g.k_start + j0;
        TileKind kind = TileKind::kFull;
        if (o.mask) kind = o.mask->Classify(qp0, qp1, kp0, g.k_start + j1);
        if (kind == TileKind::kEmpty) {
          ++my_skipped;
          continue;
        }
        if (kind == TileKind::kPartial) {
          ++my_partial;
          o.mask->FillTile(qp0, qp1, kp0, g.k_start + j1, allowed.data());
        } else {
          ++my_full;
        }
        for (int64_t j = 0; j < nk; ++j) {
          const KV* kr = k.row(b, hk, j0 + j);
          const KV* vr = v.row(b, hk, j0 + j);
          for (int64_t d = 0; d < g.dk; ++d) kf[j * g.dk + d] = ToFloat(kr[d]);
          for (int64_t d = 0; d < g.dv; ++d) vf[j * g.dv + d] = ToFloat(vr[d]);
        }
        for (int64_t gh = 0; gh < g.group; ++gh) {
          const int64_t h = hk * g.group + gh;
          const float slope = o.alibi_slopes ? o.alibi_slopes[h] : 0.0f;
          for (int64_t i = 0; i < nq; ++i) {
            const int64_t r = gh * nq + i;
            const float* qr = q.row(b, h, i0 + i);
            float* sr = s.data() + r * kBlockKv;
            float row_max = detail::kNegInf;
            for (int64_t j = 0; j < nk; ++j) {
              if (kind == TileKind::kPartial && !allowed[i * nk + j]) {
                sr[j] = detail::kNegInf;
                continue;
              }
              const float* kr = kf.data() + j * g.dk;
              float dot = 0.0f;
              for (int64_t d = 0; d < g.dk; ++d) dot += qr[d] * kr[d];
              float sc = dot * g.scale;
              if (o.softcap > 0.0f || slope != 0.0f) {
                sc = detail::ScoreMod(sc, o.softcap, slope, qp0 + i, kp0 + j);
              }
              sr[j] = sc;
              row_max = std::max(row_max, sc);
            }
            if (row_max == detail::kNegInf) continue;
            const float m_new = std::max(m[r], row_max);
            const float corr = std::exp(m[r] - m_new);  // exp(-inf) = 0 on the first tile
            float* ar = acc.data() + r * g.dv;
            for (int64_t d = 0; d < g.dv; ++d) ar[d] *= corr;
            float sum = 0.0f;
            for (int64_t j = 0; j < nk; ++j) {
              const float p = std::exp(sr[j] - m_new);  // masked: exp(-inf) = 0
              sum += p;
              if (p == 0.0f) continue;
              const float* vr = vf.data() + j * g.dv;
              for (int64_t d = 0; d < g.dv; ++d) ar[d] += p * vr[d];
            }
            l[r] = l[r] * corr + sum;
            m[r] = m_new;
          }
        }
      }
      // Finalise: fold in the sink, normalise, write out and lse.
      for (int64_t gh = 0; gh < g.group; ++gh) {
        const int64_t h = hk * g.group + gh;
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t r = gh * nq + i;
          float mr = m[r], lr = l[r];
          float* ar = acc.data() + r * g.dv;
          if (o.sinks && o.sinks[h] != detail::kNegInf) {
            const float m_new = std::max(mr, o.sinks[h]);
            const float corr = std::exp(mr - m_new);
            for (int64_t d = 0; d < g.dv; ++d) ar[d] *= corr;
            lr = lr * corr + std::exp(o.sinks[h] - m_new);
            mr = m_new;
          }
          float* orow = out.row(b, h, i0 + i);
          const float inv = lr > 0.0f ? 1.0f / lr : 0.0f;
          for (int64_t d = 0; d < g.dv; ++d) orow[d] = ar[d] * inv;
          if (!lse.empty()) lse.at(b, h, i0 + i, 0) = lr > 0.0f ? mr + std::log(lr) : detail::kNegInf;
        }
      }
    }
    skipped += my_skipped;
    full += my_full;
    partial += my_partial;
  }
  if (o.stats) {
    o.stats->tiles_total = g.batch * g.heads_kv * num_qb * num_kb;
    o.stats->tiles_skipped = skipped.load();
    o.stats->tiles_full = full.load();
    o.stats->tiles_partial = partial.load();
    o.stats->block_q = kBlockQ;
    o.stats->block_kv = kBlockKv;
  }
}

template <typename KV>
void Dispatch(TensorView<const float> q, TensorView<const KV> k, TensorView<const KV> v,
              TensorView<float> out, const DenseOptions& o, TensorView<float> lse) {
  if (o.backend == Backend::kReference) {
    ref::DenseForward(q, k, v, out, o, lse);
    return;
  }
  CheckDenseArgs("DenseForward", q, k, v, out, o, lse);
  FastImpl(q, k, v, out, o, lse);
}

}  // namespace

void DenseForward(TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
                  TensorView<float> out, const DenseOptions& options, TensorView<float> lse) {
  Dispatch(q, k, v, out, options, lse);
}
void DenseForward(TensorView<const float> q, TensorView<const bf16> k, TensorView<const bf16> v,
                  TensorView<float> out, const DenseOptions& options, TensorView<float> lse) {
  Dispatch(q, k, v, out, options, lse);
}

}  // namespace attnkit
