// KV caches (contiguous and ring buffer) and the split-KV decode call.
#include "attnkit/kernels/kv_cache.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/runtime.h"
#include "kernels/dense_common.h"
#include "kernels/nonfinite.h"

namespace attnkit {

template <typename T>
KvCache<T>::KvCache(int64_t batch, int64_t num_heads_kv, int64_t head_dim_qk, int64_t head_dim_v,
                    int64_t capacity, int64_t window, int64_t max_step)
    : batch_(batch),
      heads_(num_heads_kv),
      dk_(head_dim_qk),
      dv_(head_dim_v),
      window_(window),
      max_step_(max_step) {
  Require(batch > 0, "KvCache: batch must be positive, got ", batch);
  Require(num_heads_kv > 0, "KvCache: num_heads_kv must be positive, got ", num_heads_kv);
  Require(head_dim_qk > 0 && head_dim_v > 0, "KvCache: head dims must be positive, got ",
          head_dim_qk, " and ", head_dim_v);
  Require(window >= 0, "KvCache: window must be >= 0 (0 = no window), got ", window);
  Require(max_step >= 1, "KvCache: max_step must be >= 1, got ", max_step);
  if (window > 0) {
    slots_ = CheckedAdd(window, max_step - 1, "KvCache", "window + max_step - 1");
  } else {
    Require(capacity > 0, "KvCache: capacity must be positive, got ", capacity);
    slots_ = capacity;
  }
  const int64_t rows =
      CheckedProduct({batch, num_heads_kv, slots_}, "KvCache", "batch*num_heads_kv*slots");
  CheckedResize(k_, CheckedMul(rows, head_dim_qk, "KvCache", "the key buffer"), "KvCache",
                "the key buffer");
  CheckedResize(v_, CheckedMul(rows, head_dim_v, "KvCache", "the value buffer"), "KvCache",
                "the value buffer");
}

template <typename T>
int64_t KvCache<T>::stored() const {
  return std::min(length_, slots_);
}

template <typename T>
void KvCache<T>::Append(TensorView<const float> k, TensorView<const float> v) {
  CheckView(k, "KvCache::Append", "k");
  CheckView(v, "KvCache::Append", "v");
  Require(k.batch() == batch_ && k.heads() == heads_ && k.dim() == dk_, "KvCache::Append: k ",
          k.ShapeString(), " does not match the cache [", batch_, ", ", heads_, ", n, ", dk_, "]");
  Require(v.batch() == batch_ && v.heads() == heads_ && v.dim() == dv_, "KvCache::Append: v ",
          v.ShapeString(), " does not match the cache [", batch_, ", ", heads_, ", n, ", dv_, "]");
  Require(k.tokens() == v.tokens(), "KvCache::Append: k has ", k.tokens(), " tokens but v has ",
          v.tokens());
  const int64_t n = k.tokens();
  if (window_ == 0) {
    Require(n <= slots_ - length_, "KvCache::Append: capacity ", slots_, " exceeded (holds ",
            length_, " tokens, appending ", n, ")");
  }
  // A ring buffer only needs the newest `slots_` of the appended tokens.
  const int64_t first = window_ > 0 ? std::max<int64_t>(0, n - slots_) : 0;
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t h = 0; h < heads_; ++h) {
      for (int64_t t = first; t < n; ++t) {
        const int64_t slot = (length_ + t) % slots_;
        T* kd = k_.data() + ((b * heads_ + h) * slots_ + slot) * dk_;
        T* vd = v_.data() + ((b * heads_ + h) * slots_ + slot) * dv_;
        const float* ks = k.row(b, h, t);
        const float* vs = v.row(b, h, t);
        for (int64_t d = 0; d < dk_; ++d) {
          if constexpr (std::is_same_v<T, float>)
            kd[d] = ks[d];
          else
            kd[d] = ToBf16(ks[d]);
        }
        for (int64_t d = 0; d < dv_; ++d) {
          if constexpr (std::is_same_v<T, float>)
            vd[d] = vs[d];
          else
            vd[d] = ToBf16(vs[d]);
        }
        if (!detail::RowFinite(kd, dk_) || !detail::RowFinite(vd, dv_)) nonfinite_ = true;
      }
    }
  }
  length_ += n;
}

template <typename T>
void KvCache<T>::SaveUndo(int64_t n, UndoRecord* undo) const {
  Require(n >= 0, "KvCache::SaveUndo: n must be >= 0, got ", n);
  undo->length = length_;
  undo->nonfinite = nonfinite_;
  // Only a ring buffer overwrites held rows: slots of tokens [first, n) of the append.
  undo->first = window_ > 0 ? std::max<int64_t>(0, n - slots_) : 0;
  undo->count = window_ > 0 ? n - undo->first : 0;
  const int64_t rows = batch_ * heads_ * undo->count;
  CheckedResize(undo->k, rows * dk_, "KvCache::SaveUndo", "the undo copy of keys");
  CheckedResize(undo->v, rows * dv_, "KvCache::SaveUndo", "the undo copy of values");
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t h = 0; h < heads_; ++h) {
      for (int64_t t = 0; t < undo->count; ++t) {
        const int64_t slot = (length_ + undo->first + t) % slots_;
        const int64_t r = (b * heads_ + h) * undo->count + t;
        std::copy_n(k_.data() + ((b * heads_ + h) * slots_ + slot) * dk_, dk_,
                    undo->k.data() + r * dk_);
        std::copy_n(v_.data() + ((b * heads_ + h) * slots_ + slot) * dv_, dv_,
                    undo->v.data() + r * dv_);
      }
    }
  }
}

template <typename T>
void KvCache<T>::Undo(const UndoRecord& undo) noexcept {
  if (undo.length < 0) return;
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t h = 0; h < heads_; ++h) {
      for (int64_t t = 0; t < undo.count; ++t) {
        const int64_t slot = (undo.length + undo.first + t) % slots_;
        const int64_t r = (b * heads_ + h) * undo.count + t;
        std::copy_n(undo.k.data() + r * dk_, dk_,
                    k_.data() + ((b * heads_ + h) * slots_ + slot) * dk_);
        std::copy_n(undo.v.data() + r * dv_, dv_,
                    v_.data() + ((b * heads_ + h) * slots_ + slot) * dv_);
      }
    }
  }
  length_ = undo.length;
  nonfinite_ = undo.nonfinite;
}

template <typename T>
std::vector<typename KvCache<T>::Segment> KvCache<T>::Segments() const {
  std::vector<Segment> segs;
  const int64_t held = stored();
  if (held == 0) return segs;
  const int64_t oldest = length_ - held;  // absolute position of the oldest held token
  const int64_t slot0 = oldest % slots_;
  auto piece = [&](int64_t slot, int64_t count, int64_t start) {
    Segment s;
    s.k = TensorView<const T>{k_.data() + slot * dk_,
                              {batch_, heads_, count, dk_},
                              {heads_ * slots_ * dk_, slots_ * dk_, dk_, 1}};
    s.v = TensorView<const T>{v_.data() + slot * dv_,
                              {batch_, heads_, count, dv_},
                              {heads_ * slots_ * dv_, slots_ * dv_, dv_, 1}};
    s.start = start;
    segs.push_back(s);
  };
  const int64_t first = std::min(held, slots_ - slot0);
  piece(slot0, first, oldest);
  if (first < held) piece(0, held - first, oldest + first);
  return segs;
}

template class KvCache<float>;
template class KvCache<bf16>;

// Steps of at most this many query tokens split the keys across threads (see DenseDecode).
constexpr int64_t kDecodeSplitMaxTokens = 16;

template <typename T>
void DenseDecode(TensorView<const float> q, const KvCache<T>& cache, TensorView<float> out,
                 const DenseOptions& options, TensorView<float> lse) {
  constexpr const char* fn = "DenseDecode";
  CheckView(q, fn, "q");
  CheckView(out, fn, "out");
  const int64_t n = q.tokens();
  Require(cache.length() > 0, fn, ": the cache is empty");
  Require(n <= cache.length(), fn, ": ", n, " query tokens but the cache holds only ",
          cache.length());
  if (cache.window() > 0) {
    Require(n <= cache.max_step(), fn, ": ", n, " query tokens exceed the ring buffer's max_step ",
            cache.max_step());
  }
  Require(q.batch() == cache.batch() && q.dim() == cache.head_dim_qk(), fn, ": q ", q.ShapeString(),
          " does not match the cache (batch ", cache.batch(), ", head_dim_qk ", cache.head_dim_qk(),
          ")");
  Require(q.heads() % cache.num_heads_kv() == 0, fn, ": num_heads_q (", q.heads(),
          ") must be a multiple of the cache's num_heads_kv (", cache.num_heads_kv(), ")");

  // Mask: causality among the new tokens, the cache's window, and the caller's mask.
  MaskPtr mask;
  if (cache.window() > 0) {
    mask = CausalWindowMask(cache.window());
  } else if (n > 1) {
    mask = CausalMask();
  }
  MaskPtr user;
  if (options.mask) user = MaskPtr(options.mask, [](const Mask*) {});
  if (user) mask = mask ? AndMask(mask, user) : user;

  // Split the held keys into pieces: the cache's segments, each cut further so that every thread
  // has work even with batch 1. Each piece yields (out, lse); the LSE merge makes them exact.
  const int threads = ResolveThreads(options.num_threads);
  const auto segs = cache.Segments();
  const int64_t held = cache.stored();
  // Four pieces per thread, handed out dynamically: on a shared machine a descheduled thread
  // then delays the call by a quarter of its share instead of all of it. A piece keeps at least
  // 256 keys so that the per-piece overhead (partial output, merge) stays negligible.
  // Only a decode-sized step (few query tokens) splits the keys: a long step (a prefill through
  // a layer's cache) has parallel work enough in its query blocks, and splitting it would cost
  // one partial output per piece. It runs the threaded kernel once per cache segment instead.
  const bool split_keys = threads > 1 && n <= kDecodeSplitMaxTokens;
  const int64_t pieces_wanted = split_keys ? 4 * int64_t{threads} : 1;
  const int64_t per = split_keys
                          ? std::max<int64_t>(256, (held + pieces_wanted - 1) / pieces_wanted)
                          : std::max<int64_t>(1, held);
  struct Piece {
    TensorView<const T> k, v;
    int64_t start;
  };
  std::vector<Piece> pieces;
  for (const auto& s : segs) {
    for (int64_t t0 = 0; t0 < s.k.tokens(); t0 += per) {
      const int64_t cnt = std::min(per, s.k.tokens() - t0);
      Piece p{s.k, s.v, s.start + t0};
      p.k.data += t0 * s.k.stride[2];
      p.v.data += t0 * s.v.stride[2];
      p.k.shape[2] = cnt;
      p.v.shape[2] = cnt;
      pieces.push_back(p);
    }
  }
  const int64_t q_start = cache.length() - n;
  const int64_t dv = cache.head_dim_v();
  if (cache.may_hold_nonfinite() || !detail::AllRowsFinite(q)) {
    // The non-finite rule (kernels/nonfinite.h) over the held keys in one contiguous copy:
    // exact, and only taken once a NaN or Inf has reached the cache or the query.
    const int64_t hk = cache.num_heads_kv(), dk = cache.head_dim_qk();
    Tensor<T> kt(q.batch(), hk, held, dk), vt(q.batch(), hk, held, dv);
    for (int64_t b = 0; b < q.batch(); ++b) {
      for (int64_t h = 0; h < hk; ++h) {
        int64_t t = 0;
        for (const auto& s : segs) {
          for (int64_t i = 0; i < s.k.tokens(); ++i, ++t) {
            std::copy_n(s.k.row(b, h, i), dk, kt.view().row(b, h, t));
            std::copy_n(s.v.row(b, h, i), dv, vt.view().row(b, h, t));
          }
        }
      }
    }
    DenseOptions o = options;
    o.mask = mask.get();
    o.k_start = cache.length() - held;
    o.q_start = q_start;
    DenseForward(q, TensorView<const T>(kt.view()), TensorView<const T>(vt.view()), out, o, lse);
    return;
  }
  auto piece_options = [&](size_t p) {
    DenseOptions o = options;
    o.mask = mask.get();
    o.k_start = pieces[p].start;
    o.q_start = q_start;
    return o;
  };
  if (pieces.size() == 1) {
    detail::DenseForwardFinite(q, pieces[0].k, pieces[0].v, out, piece_options(0), lse);
    return;
  }
  std::vector<Tensor<float>> part_out, part_lse;
  std::vector<DenseOptions> part_opt;
  std::vector<detail::DenseGeometry> part_geometry;
  std::vector<DenseStats> part_stats(pieces.size());
  for (size_t p = 0; p < pieces.size(); ++p) {
    part_out.emplace_back(q.batch(), q.heads(), n, dv);
    part_lse.emplace_back(q.batch(), q.heads(), n, 1);
    DenseOptions o = piece_options(p);
    o.num_threads = split_keys ? 1 : threads;
    o.stats = options.stats ? &part_stats[p] : nullptr;
    if (p != 0) o.sinks = {};  // a sink joins the denominator exactly once
    // Every check happens here, before the parallel region (which must not throw).
    part_geometry.push_back(detail::CheckDenseArgs(fn, q, pieces[p].k, pieces[p].v,
                                                   part_out[p].view(), o, part_lse[p].view()));
    part_opt.push_back(o);
  }
  const int64_t np = static_cast<int64_t>(pieces.size());
  if (options.backend == Backend::kReference || !split_keys) {
    for (int64_t p = 0; p < np; ++p) {
      if (options.backend != Backend::kReference) {
        detail::DenseForwardFinite(q, pieces[p].k, pieces[p].v, part_out[p].view(), part_opt[p],
                                   part_lse[p].view());
        continue;
      }
      detail::RefDenseForwardFinite(q, pieces[p].k, pieces[p].v, part_out[p].view(), part_opt[p],
                                    part_lse[p].view());
    }
  } else {
    detail::RegionExceptions errors;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t p = 0; p < np; ++p) {
      errors.Run([&] {
        const detail::DenseJob<T> job{q,
                                      pieces[p].k,
                                      pieces[p].v,
                                      part_out[p].view(),
                                      part_lse[p].view(),
                                      &part_opt[p],
                                      part_geometry[static_cast<size_t>(p)],
                                      1};
        detail::DenseFastUnchecked(job);
      });
    }
    errors.Rethrow();
  }
  std::vector<TensorView<const float>> outs, lses;
  for (size_t p = 0; p < pieces.size(); ++p) {
    outs.push_back(part_out[p].view());
    lses.push_back(part_lse[p].view());
  }
  MergeAttention(outs, lses, out, lse);
  if (options.stats) {  // the pieces' counters add up to the whole call's
    DenseStats total;
    for (const DenseStats& st : part_stats) {
      total.tiles_total += st.tiles_total;
      total.tiles_skipped += st.tiles_skipped;
      total.tiles_full += st.tiles_full;
      total.tiles_partial += st.tiles_partial;
      total.block_q = std::max(total.block_q, st.block_q);
      total.block_kv = std::max(total.block_kv, st.block_kv);
    }
    *options.stats = total;
  }
}

template void DenseDecode<float>(TensorView<const float>, const KvCache<float>&, TensorView<float>,
                                 const DenseOptions&, TensorView<float>);
template void DenseDecode<bf16>(TensorView<const float>, const KvCache<bf16>&, TensorView<float>,
                                const DenseOptions&, TensorView<float>);

}  // namespace attnkit
