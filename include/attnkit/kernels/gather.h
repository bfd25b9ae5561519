// The gather engine: DeepSeek Sparse Attention (DeepSeek V3.2, GLM-5).
//
//   1. Lightning indexer: I(t, s) = Σ_j w(t, j) · ReLU(q_I(t, j) · k_I(s)) over index heads j,
//      causal (only s <= t is scored). Cheap by design, so it runs in reduced precision: q_I and
//      k_I are rounded to bf16 and their products summed in f32 (AVX-512 BF16 dot products when
//      the CPU has them, chosen at run time; an f32 SIMD path with the same rounding elsewhere).
//   2. Top-k per query: the top_k keys with the highest I(t, s); fewer visible keys → all of them.
//      Ties go to the lower position, so the selection is a pure function of the scores.
//   3. Exact softmax attention of each query over its own selected keys (GatherForward), for
//      MHA/GQA (num_heads_q % num_heads_kv == 0) and MLA's absorbed multi-query form (one shared
//      latent head, head_dim_qk 576 / head_dim_v 512: pass v as a view of k's first 512 dims).
// Decode: the indexer keys are cached (IndexerCache) like K/V, and the same calls run with
// seqlen_q = 1 and q_start = position of the new token.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "attnkit/core/backend.h"
#include "attnkit/core/tensor.h"

namespace attnkit {

class IndexerCache;

struct GatherOptions {
  std::optional<float> scale = std::nullopt;  // finite; unset → 1 / sqrt(head_dim_qk)
  int num_threads = 0;                        // 0 → GetNumThreads()
  Backend backend = Backend::kAuto;
};

// KV (KI below): the storage type of k and v (of k_index): float or bf16, const or not; the
// library instantiates all four.
// q       [batch, num_heads_q,  seqlen_q,  head_dim_qk]
// k       [batch, num_heads_kv, seqlen_kv, head_dim_qk]   f32 or bf16
// v       [batch, num_heads_kv, seqlen_kv, head_dim_v]    same dtype as k (may alias k's memory)
// indices [batch, 1 or num_heads_kv, seqlen_q, top_k]     key rows of k/v, distinct per row;
//         −1 marks an unused slot. One list per (batch, query) shared by all heads, or one per
//         kv head.
// out     [batch, num_heads_q,  seqlen_q,  head_dim_v]    must not overlap the inputs
// lse     [batch, num_heads_q,  seqlen_q,  1] optional; a row with no key gets out = 0, lse = −inf.
template <typename KV>
void GatherForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                   TensorView<const int32_t> indices, TensorView<float> out,
                   const GatherOptions& options = {}, TensorView<float> lse = {});

struct IndexerOptions {
  int64_t k_start = 0;  // absolute position of key row 0
  // Absolute position of query row 0; unset → bottom-right: k_start + seqlen_kv − seqlen_q.
  std::optional<int64_t> q_start = std::nullopt;
  bool reduced_precision = true;  // bf16-rounded q_I, k_I (f32 sums); false: all f32
  int num_threads = 0;
  Backend backend = Backend::kAuto;
};

// q_index [batch, index_heads, seqlen_q, index_dim]
// weights [batch, 1, seqlen_q, index_heads]             w(t, j)
// k_index [batch, 1, seqlen_kv, index_dim]              f32 or bf16 (e.g. an IndexerCache)
// scores  [batch, 1, seqlen_q, seqlen_kv]               out: I(t, s), −inf where s > t
template <typename KI>
void LightningIndexer(TensorView<const float> q_index, TensorView<const float> weights,
                      TensorView<KI> k_index, TensorView<float> scores,
                      const IndexerOptions& options = {});

// Indexer and top-k fused (no seqlen_q × seqlen_kv buffer): indices [batch, 1, seqlen_q, top_k]
// receives, per query, the selected key rows in increasing order, then −1 for unused slots.
// top_k >= 1. Same operands as LightningIndexer.
template <typename KI>
void DsaSelect(TensorView<const float> q_index, TensorView<const float> weights,
               TensorView<KI> k_index, int64_t top_k, TensorView<int32_t> indices,
               const IndexerOptions& options = {});

// The same two calls reading the keys from an IndexerCache (its view()): equal results, and on
// the AVX-512 BF16 path the cache's packed tiles are read directly (decode does not repack the
// whole cache every step).
void LightningIndexer(TensorView<const float> q_index, TensorView<const float> weights,
                      const IndexerCache& k_index, TensorView<float> scores,
                      const IndexerOptions& options = {});
void DsaSelect(TensorView<const float> q_index, TensorView<const float> weights,
               const IndexerCache& k_index, int64_t top_k, TensorView<int32_t> indices,
               const IndexerOptions& options = {});
// Top-k of one row of scores: writes min(top_k, n) row numbers into out[0, top_k) in increasing
// order (−1 after them): the highest scores, ties to the lower row. NaN scores are never picked
// unless fewer than top_k others exist. O(n).
void TopKRow(const float* scores, int64_t n, int64_t top_k, int32_t* out);

// True when the indexer's reduced-precision path uses AVX-512 BF16 dot products on this CPU.
bool IndexerUsesAvx512Bf16();

// Cache of indexer keys for decode (stored in bf16, as the indexer reads them). Besides the
// rows it keeps the keys packed the way the AVX-512 BF16 micro-kernel reads them (32-key tiles
// of bf16 pairs), filled at Append, so a decode step passing the cache itself to DsaSelect /
// LightningIndexer scores the keys without repacking all of them: 2 · index_dim bytes per token
// for the rows plus as many for the tiles.
class IndexerCache {
 public:
  IndexerCache(int64_t batch, int64_t index_dim, int64_t capacity);
  // k_index [batch, 1, n, index_dim]; throws past the capacity.
  void Append(TensorView<const float> k_index);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  TensorView<const bf16> view() const;  // [batch, 1, length, index_dim]
  size_t bytes() const { return data_.size() * sizeof(bf16) + tiles_.size() * sizeof(uint32_t); }
  // The packed tiles of batch entry b: [ceil(capacity / 32)][ceil(index_dim / 2)][32] pairs of
  // bf16 (element 2p in the low half), zero past length (layout: kernels/gather_indexer.h).
  const uint32_t* packed_tiles(int64_t b) const;

 private:
  int64_t batch_, dim_, capacity_, length_ = 0;
  std::vector<bf16> data_;       // [batch, capacity, index_dim]
  std::vector<uint32_t> tiles_;  // [batch, tiles, depth, 32]
};

namespace ref {
// Plain twins: obvious loops, double accumulation (the indexer rounds q_I, k_I to bf16 first when
// reduced_precision is set, exactly as the fast path does), full sort for top-k.
template <typename KV>
void GatherForward(TensorView<const float> q, TensorView<KV> k, TensorView<KV> v,
                   TensorView<const int32_t> indices, TensorView<float> out,
                   const GatherOptions& options = {}, TensorView<float> lse = {});
template <typename KI>
void LightningIndexer(TensorView<const float> q_index, TensorView<const float> weights,
                      TensorView<KI> k_index, TensorView<float> scores,
                      const IndexerOptions& options = {});
template <typename KI>
void DsaSelect(TensorView<const float> q_index, TensorView<const float> weights,
               TensorView<KI> k_index, int64_t top_k, TensorView<int32_t> indices,
               const IndexerOptions& options = {});
void TopKRow(const float* scores, int64_t n, int64_t top_k, int32_t* out);
}  // namespace ref

}  // namespace attnkit
