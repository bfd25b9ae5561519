// The non-finite rule (docs/reliability.md), shared by every engine and both backends:
//
//   An output row is NaN (every element, and its LSE) when it sees at least one key and its query
//   row, or the key or value row of any key it sees, holds a NaN or ±Inf. Keys it may not see
//   never affect it; a row that sees no key is zeros with LSE −inf (or the sink's), whatever the
//   inputs hold, its own query row included. Every other row
//   is exactly what it would be without the non-finite values. No kernel throws, crashes or hangs
//   because of a value.
//
// The softmax engines apply it by a scan of the inputs (one read, beside a kernel that reads them
// many times): when everything is finite the kernel runs as before; otherwise it runs on copies
// whose non-finite rows are zeros, and the rows that read one are set to NaN afterwards, so the
// fast kernel's tiles (which multiply masked keys' zero weights by their values) cannot leak a
// NaN across the mask.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"
#include "kernels/problem.h"

namespace attnkit::detail {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// True when every one of the n values is finite (an integer test the compiler vectorises).
inline bool RowFinite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t d = 0; d < n; ++d) {
    uint32_t u;
    std::memcpy(&u, x + d, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}
inline bool RowFinite(const bf16* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t d = 0; d < n; ++d) bad |= static_cast<uint32_t>((x[d].bits & 0x7f80u) == 0x7f80u);
  return bad == 0;
}

// flags[(b·heads + h)·tokens + t] = 1 where row (b, h, t) of x holds a non-finite value (ORed
// into flags, which must have batch·heads·tokens entries). Returns whether any row did.
template <typename T>
bool MarkNonFiniteRows(TensorView<const T> x, std::vector<uint8_t>& flags) {
  bool any = false;
  for (int64_t b = 0; b < x.batch(); ++b) {
    for (int64_t h = 0; h < x.heads(); ++h) {
      for (int64_t t = 0; t < x.tokens(); ++t) {
        if (!RowFinite(x.row(b, h, t), x.dim())) {
          flags[static_cast<size_t>((b * x.heads() + h) * x.tokens() + t)] = 1;
          any = true;
        }
      }
    }
  }
  return any;
}

template <typename T>
bool AllRowsFinite(TensorView<const T> x) {
  for (int64_t b = 0; b < x.batch(); ++b) {
    for (int64_t h = 0; h < x.heads(); ++h) {
      for (int64_t t = 0; t < x.tokens(); ++t) {
        if (!RowFinite(x.row(b, h, t), x.dim())) return false;
      }
    }
  }
  return true;
}

// A contiguous copy of x with the flagged rows set to zero.
template <typename T>
Tensor<T> CopyZeroingRows(TensorView<const T> x, const std::vector<uint8_t>& flags) {
  Tensor<T> y(x.batch(), x.heads(), x.tokens(), x.dim());  // zero-filled
  TensorView<T> yv = y.view();
  for (int64_t b = 0; b < x.batch(); ++b) {
    for (int64_t h = 0; h < x.heads(); ++h) {
      for (int64_t t = 0; t < x.tokens(); ++t) {
        if (flags[static_cast<size_t>((b * x.heads() + h) * x.tokens() + t)]) continue;
        std::memcpy(static_cast<void*>(yv.row(b, h, t)), x.row(b, h, t),
                    sizeof(T) * static_cast<size_t>(x.dim()));
      }
    }
  }
  return y;
}

// Fills row (b, h, t) of out, and its LSE if lse is given, with NaN.
inline void PoisonRow(TensorView<float> out, TensorView<float> lse, int64_t b, int64_t h,
                      int64_t t) {
  float* row = out.row(b, h, t);
  for (int64_t d = 0; d < out.dim(); ++d) row[d] = kNaN;
  if (!lse.empty()) lse.at(b, h, t, 0) = kNaN;
}

// Zeroed flags, one per row of x [batch, heads, tokens, ·].
template <typename T>
std::vector<uint8_t> RowFlags(TensorView<const T> x, const char* fn) {
  return CheckedVector<uint8_t>(CheckedProduct({x.batch(), x.heads(), x.tokens()}, fn, "rows"), 0,
                                fn, "the non-finite row flags");
}

// Which rows of q, k and v hold a non-finite value: one flag per row. With kv_together (k and v
// have the same heads and tokens) a key row is flagged when its k or its v row is, in k; else k
// and v have flags of their own.
struct NonFiniteRows {
  std::vector<uint8_t> q, k, v;
  bool any = false;
};
template <typename T>
NonFiniteRows ScanRows(const char* fn, TensorView<const float> q, TensorView<const T> k,
                       TensorView<const T> v, bool kv_together) {
  NonFiniteRows r;
  r.q = RowFlags(q, fn);
  r.k = RowFlags(k, fn);
  if (!kv_together) r.v = RowFlags(v, fn);
  r.any = MarkNonFiniteRows(q, r.q);
  r.any = MarkNonFiniteRows(k, r.k) || r.any;
  r.any = MarkNonFiniteRows(v, kv_together ? r.k : r.v) || r.any;
  return r;
}

// state_bad(u) for each of `units` caller-held states, as flags (each state scanned once); a
// set flag also sets *any.
template <typename F>
std::vector<uint8_t> StateFlags(int64_t units, F state_bad, bool* any) {
  std::vector<uint8_t> flags(static_cast<size_t>(units));
  for (int64_t u = 0; u < units; ++u) {
    flags[static_cast<size_t>(u)] = state_bad(u) ? 1 : 0;
    *any = *any || flags[static_cast<size_t>(u)] != 0;
  }
  return flags;
}

// Runs `run(q, k, v)` on copies whose flagged rows are zero (finite inputs for the kernel).
template <typename T, typename Run>
void RunOnZeroedCopies(const NonFiniteRows& r, TensorView<const float> q, TensorView<const T> k,
                       TensorView<const T> v, Run run) {
  const Tensor<float> q2 = CopyZeroingRows(q, r.q);
  const Tensor<T> k2 = CopyZeroingRows(k, r.k), v2 = CopyZeroingRows(v, r.v.empty() ? r.k : r.v);
  run(q2.view(), k2.view(), v2.view());
}

// Applies the rule to a softmax engine over every key a mask allows (dense). `run(q, k, v)` runs
// the kernel on finite inputs, writing out and lse. Call after the arguments have been checked.
template <typename T, typename Run>
void DenseNonFiniteRule(const Problem& g, TensorView<const float> q, TensorView<const T> k,
                        TensorView<const T> v, TensorView<float> out, const DenseOptions& o,
                        TensorView<float> lse, Run run) {
  const NonFiniteRows rows = ScanRows("DenseForward", q, k, v, /*kv_together=*/true);
  if (!rows.any) {
    run(q, k, v);
    return;
  }
  RunOnZeroedCopies(rows, q, k, v, run);
  const std::vector<uint8_t>&bad_q = rows.q, &bad_kv = rows.k;
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t hk = 0; hk < g.heads_kv; ++hk) {
      std::vector<int64_t> bad_keys;
      for (int64_t j = 0; j < g.seqlen_kv; ++j) {
        if (bad_kv[static_cast<size_t>((b * g.heads_kv + hk) * g.seqlen_kv + j)]) {
          bad_keys.push_back(j);
        }
      }
      for (int64_t h = hk * g.group; h < (hk + 1) * g.group; ++h) {
        for (int64_t i = 0; i < g.seqlen_q; ++i) {
          auto allowed = [&](int64_t j) {
            return o.mask == nullptr || o.mask->Allowed(g.q_start + i, g.k_start + j);
          };
          bool poisoned = false;
          for (size_t n = 0; n < bad_keys.size() && !poisoned; ++n) poisoned = allowed(bad_keys[n]);
          // A bad query row poisons its row only if the row sees a key (else: zeros, −inf).
          if (!poisoned && bad_q[static_cast<size_t>((b * g.heads_q + h) * g.seqlen_q + i)]) {
            for (int64_t j = 0; j < g.seqlen_kv && !poisoned; ++j) poisoned = allowed(j);
          }
          if (poisoned) PoisonRow(out, lse, b, h, i);
        }
      }
    }
  }
}

// The rule for the gathered engine: row (b, h, i) sees the keys listed in its row of `idx`
// [batch, 1 or heads_kv, seqlen_q, top_k] (−1 = unused). Only listed key rows are scanned (once
// each), so a decode step over a long cache reads no more than the kernel does.
template <typename T, typename Run>
void GatherNonFiniteRule(const Problem& g, TensorView<const float> q, TensorView<const T> k,
                         TensorView<const T> v, TensorView<const int32_t> idx,
                         TensorView<float> out, TensorView<float> lse, Run run) {
  constexpr const char* fn = "GatherForward";
  NonFiniteRows rows;
  rows.q = RowFlags(q, fn);
  // Per key row: 0 not scanned yet, 1 finite, 2 non-finite.
  std::vector<uint8_t>& key = rows.k;
  key = RowFlags(k, fn);
  const std::vector<uint8_t>& bad_q = rows.q;
  bool any = MarkNonFiniteRows(q, rows.q);
  const int64_t lists = idx.heads(), top_k = idx.dim();
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t hk = 0; hk < g.heads_kv; ++hk) {
      const int64_t l = lists == 1 ? 0 : hk;
      for (int64_t i = 0; i < g.seqlen_q; ++i) {
        const int32_t* row = idx.row(b, l, i);
        for (int64_t n = 0; n < top_k; ++n) {
          if (row[n] < 0) continue;
          uint8_t& state = key[static_cast<size_t>((b * g.heads_kv + hk) * g.seqlen_kv + row[n])];
          if (state == 0) {
            const bool finite =
                RowFinite(k.row(b, hk, row[n]), g.dk) && RowFinite(v.row(b, hk, row[n]), g.dv);
            state = finite ? 1 : 2;
            any = any || !finite;
          }
        }
      }
    }
  }
  if (!any) {
    run(q, k, v);
    return;
  }
  for (uint8_t& state : key) state = state == 2 ? 1 : 0;  // the flags CopyZeroingRows reads
  RunOnZeroedCopies(rows, q, k, v, run);
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t h = 0; h < g.heads_q; ++h) {
      const int64_t hk = h / g.group, l = lists == 1 ? 0 : hk;
      for (int64_t i = 0; i < g.seqlen_q; ++i) {
        const int32_t* row = idx.row(b, l, i);
        bool poisoned = false, sees = false;
        for (int64_t n = 0; n < top_k && !poisoned; ++n) {
          sees = sees || row[n] >= 0;
          poisoned = row[n] >= 0 &&
                     key[static_cast<size_t>((b * g.heads_kv + hk) * g.seqlen_kv + row[n])] != 0;
        }
        // A bad query row poisons its row only if the row sees a key (else: zeros, −inf).
        const size_t qr = static_cast<size_t>((b * g.heads_q + h) * g.seqlen_q + i);
        poisoned = poisoned || (sees && bad_q[qr] != 0);
        if (poisoned) PoisonRow(out, lse, b, h, i);
      }
    }
  }
}

// The rule for the engines that carry a state through a causal sequence (linear attention's
// causal form, the recurrent engine): `units` states, unit u = (b, s) for s < state_heads; out
// head h belongs to unit (b, h / out_per_unit). Row t of out head h reads its q row
// (`q_bad(b, h, t)`), the keys and values 0 … t of its unit (`kv_bad(b, s, t)`) and the state
// the unit came in with (`state_bad(u)`). A unit whose first non-finite input is at token t0
// gives NaN rows from t0 on, and leaves a NaN state (`poison_state(u)`) so that later calls
// continue the rule. Bidirectional (linear only, no state): any non-finite key poisons every row.
struct SequenceRule {
  int64_t batch = 0, state_heads = 0, out_heads = 0, seqlen = 0, kv_seqlen = 0;
  bool causal = true;
};
template <typename QBad, typename KvBad, typename StateBad, typename PoisonState>
void PoisonSequenceRows(const SequenceRule& r, TensorView<float> out, QBad q_bad, KvBad kv_bad,
                        StateBad state_bad, PoisonState poison_state) {
  const int64_t per = r.out_heads / r.state_heads;
  for (int64_t b = 0; b < r.batch; ++b) {
    for (int64_t s = 0; s < r.state_heads; ++s) {
      const int64_t u = b * r.state_heads + s;
      const bool came_bad = state_bad(u);
      int64_t first = came_bad ? 0 : r.kv_seqlen;  // first non-finite key (kv_seqlen: none)
      for (int64_t t = 0; t < first; ++t) {
        if (kv_bad(b, s, t)) first = t;
      }
      const bool bad = came_bad || first < r.kv_seqlen;
      if (bad) poison_state(u);
      if (!bad) first = r.seqlen;
      if (!r.causal && bad) first = 0;
      for (int64_t h = s * per; h < (s + 1) * per; ++h) {
        for (int64_t t = 0; t < r.seqlen; ++t) {
          if (t >= first || q_bad(b, h, t)) PoisonRow(out, {}, b, h, t);
        }
      }
    }
  }
}

// True when n values (a state) are all finite.
inline bool SpanFinite(const float* x, int64_t n) { return RowFinite(x, n); }

}  // namespace attnkit::detail
