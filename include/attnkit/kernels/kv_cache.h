// KV caches for decode, and the decode call of the dense engine.
//
// A KvCache keeps keys and values of past tokens per (batch, kv head). With window == 0 it is
// contiguous with a fixed capacity; with window > 0 it is a ring buffer of
// window + max_step − 1 slots, enough for a decode step of up to max_step query tokens under a
// causal sliding window of `window` keys, so a windowed layer's memory stays bounded by its
// window however long the sequence grows.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"

namespace attnkit {

template <typename T>  // float or bf16 storage
class KvCache {
 public:
  // capacity: most tokens a contiguous cache holds (ignored when window > 0).
  KvCache(int64_t batch, int64_t num_heads_kv, int64_t head_dim_qk, int64_t head_dim_v,
          int64_t capacity, int64_t window = 0, int64_t max_step = 1);

  // Appends n new tokens: k [batch, num_heads_kv, n, head_dim_qk], v [.., n, head_dim_v].
  // A contiguous cache throws attnkit::Error past its capacity; a ring buffer keeps the newest.
  void Append(TensorView<const float> k, TensorView<const float> v);
  void Clear() { length_ = 0, nonfinite_ = false; }

  // For callers that append and then run a step that may still fail (a layer appends its new
  // keys before attention): SaveUndo(n, &undo) records the length and copies the slots an append
  // of n tokens will overwrite (a ring buffer's oldest rows); Undo(undo) puts them back, so the
  // cache is exactly as before, byte for byte. Undo allocates nothing and cannot throw.
  struct UndoRecord {
    int64_t length = -1, first = 0, count = 0;
    bool nonfinite = false;
    std::vector<T> k, v;  // [batch, heads, count, dim]
  };
  void SaveUndo(int64_t n, UndoRecord* undo) const;
  void Undo(const UndoRecord& undo) noexcept;
  // Undo(*undo) if it holds a record (length >= 0), then empties it; returns whether it did.
  bool TakeBack(UndoRecord* undo) noexcept {
    if (undo->length < 0) return false;
    Undo(*undo);
    undo->length = -1;
    return true;
  }

  int64_t length() const { return length_; }  // tokens appended so far (= next position)
  int64_t stored() const;                     // tokens currently held
  int64_t slots() const { return slots_; }    // allocated token slots
  int64_t window() const { return window_; }
  int64_t max_step() const { return max_step_; }
  int64_t batch() const { return batch_; }
  int64_t num_heads_kv() const { return heads_; }
  int64_t head_dim_qk() const { return dk_; }
  int64_t head_dim_v() const { return dv_; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(T); }  // allocated
  // Whether an appended row held a NaN or ±Inf since the last Clear() (it may have left a ring
  // buffer since). DenseDecode then takes the exact, slower path of the non-finite rule.
  bool may_hold_nonfinite() const { return nonfinite_; }

  // The held tokens as up to two position-contiguous pieces, oldest first.
  struct Segment {
    TensorView<const T> k, v;
    int64_t start;  // absolute position of row 0
  };
  std::vector<Segment> Segments() const;

 private:
  int64_t batch_, heads_, dk_, dv_, slots_, window_, max_step_;
  int64_t length_ = 0;
  bool nonfinite_ = false;  // see may_hold_nonfinite()
  std::vector<T> k_, v_;    // [batch, heads, slots, dim]
};

// Attention of n new query tokens over everything in the cache (the new tokens' keys must have
// been appended already): q [batch, num_heads_q, n, head_dim_qk] at positions
// cache.length() − n … cache.length() − 1; out [batch, num_heads_q, n, head_dim_v]. Windowed
// caches apply their causal window; options.mask (if set) is combined with causality.
// Splits the keys across threads and merges through the log-sum-exp, so batch 1 uses all cores.
template <typename T>
void DenseDecode(TensorView<const float> q, const KvCache<T>& cache, TensorView<float> out,
                 const DenseOptions& options = {}, TensorView<float> lse = {});

}  // namespace attnkit
