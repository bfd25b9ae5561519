// Multi-head latent attention: latent cache, naive path (per-head K/V up-projection) and
// absorbed path (multi-query attention over the latent). Math: docs/blocks.md.
#include "attnkit/layers/mla.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "attnkit/core/checked.h"

namespace attnkit {

namespace {
// C [m, n] (ldc) = A [m, k] (lda) · op(B), op(B) = B [k, n] (ldb) or, with trans_b, B [n, k]ᵀ.
void Gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool trans_b, float* c, int64_t ldc) {
  if (m == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), 0.0f, c, static_cast<int>(ldc));
}

// Resizes per-step scratch that grows with the context without reallocating every step: reserves
// 25% headroom, capped at what max_tokens needs.
void GrowScratch(std::vector<float>& v, int64_t needed, int64_t cap) {
  const auto n = static_cast<size_t>(needed);
  if (v.capacity() < n) {
    const int64_t want = std::min(cap, needed + needed / 4);
    detail::CheckAllocation(static_cast<double>(want) * sizeof(float), "MlaBlock",
                            "the up-projected keys and values");
    try {
      v.reserve(static_cast<size_t>(want));
    } catch (const std::bad_alloc&) {
      detail::ThrowAllocationFailed(static_cast<double>(want) * sizeof(float), "MlaBlock",
                                    "the up-projected keys and values");
    }
  }
  v.resize(n);
}
}  // namespace

const char* MlaPathName(MlaPath path) { return path == MlaPath::kNaive ? "naive" : "absorbed"; }

void MlaConfig::Validate() const {
  constexpr const char* fn = "MlaConfig";
  Require(hidden > 0, fn, ": hidden must be positive, got ", hidden);
  Require(num_heads > 0, fn, ": num_heads must be positive, got ", num_heads);
  Require(q_lora_rank >= 0, fn, ": q_lora_rank must be >= 0 (0 = direct projection), got ",
          q_lora_rank);
  Require(kv_lora_rank > 0, fn, ": kv_lora_rank must be positive, got ", kv_lora_rank);
  Require(qk_nope_head_dim > 0, fn, ": qk_nope_head_dim must be positive, got ", qk_nope_head_dim);
  Require(qk_rope_head_dim >= 2 && qk_rope_head_dim % 2 == 0, fn,
          ": qk_rope_head_dim must be even and >= 2, got ", qk_rope_head_dim);
  Require(v_head_dim > 0, fn, ": v_head_dim must be positive, got ", v_head_dim);
  Require(rope.fraction == 1.0f, fn, ": rope.fraction must be 1 (the rope dims rotate fully), got ",
          rope.fraction);
  RotaryDim(rope, qk_rope_head_dim);
  Require(norm_eps > 0 && scale >= 0, fn, ": norm_eps must be positive and scale >= 0");
  Require(batch > 0, fn, ": batch must be positive, got ", batch);
  Require(max_tokens > 0, fn, ": max_tokens must be positive, got ", max_tokens);
}

std::string MlaConfig::Describe() const {
  std::ostringstream os;
  os << "mla(hidden=" << hidden << ",h=" << num_heads << ",q_lora=" << q_lora_rank
     << ",kv_lora=" << kv_lora_rank << ",nope=" << qk_nope_head_dim << ",rope=" << qk_rope_head_dim
     << ",v=" << v_head_dim << "," << MlaPathName(path) << ")";
  return os.str();
}

void MlaWeights::Check(const MlaConfig& c) const {
  constexpr const char* fn = "MlaWeights";
  c.Validate();
  const int64_t h = c.num_heads;
  if (c.q_lora_rank > 0) {
    CheckMatrix(fn, "w_dq", w_dq, c.hidden, c.q_lora_rank);
    CheckVector(fn, "q_norm", q_norm, c.q_lora_rank);
    CheckMatrix(fn, "w_uq", w_uq, c.q_lora_rank, h * c.qk_head_dim());
  } else {
    CheckMatrix(fn, "w_dq", w_dq, 0, 0);
    CheckVector(fn, "q_norm", q_norm, 0);
    CheckMatrix(fn, "w_uq", w_uq, c.hidden, h * c.qk_head_dim());
  }
  CheckMatrix(fn, "w_dkv", w_dkv, c.hidden, c.kv_lora_rank);
  CheckVector(fn, "kv_norm", kv_norm, c.kv_lora_rank);
  CheckMatrix(fn, "w_kr", w_kr, c.hidden, c.qk_rope_head_dim);
  CheckMatrix(fn, "w_uk", w_uk, c.kv_lora_rank, h * c.qk_nope_head_dim);
  CheckMatrix(fn, "w_uv", w_uv, c.kv_lora_rank, h * c.v_head_dim);
  CheckMatrix(fn, "w_o", w_o, h * c.v_head_dim, c.hidden);
}

size_t MlaWeights::bytes() const {
  return w_dq.bytes() + w_uq.bytes() + w_dkv.bytes() + w_kr.bytes() + w_uk.bytes() + w_uv.bytes() +
         w_o.bytes() + (q_norm.size() + kv_norm.size()) * sizeof(float);
}

MlaWeights MlaWeights::Random(const MlaConfig& c, uint64_t seed) {
  c.Validate();
  const uint64_t s = seed * 131;
  const int64_t h = c.num_heads;
  MlaWeights w;
  if (c.q_lora_rank > 0) {
    w.w_dq = RandomMatrix(c.hidden, c.q_lora_rank, s + 1);
    w.q_norm = RandomNormWeight(c.q_lora_rank, s + 2);
    w.w_uq = RandomMatrix(c.q_lora_rank, h * c.qk_head_dim(), s + 3);
  } else {
    w.w_uq = RandomMatrix(c.hidden, h * c.qk_head_dim(), s + 3);
  }
  w.w_dkv = RandomMatrix(c.hidden, c.kv_lora_rank, s + 4);
  w.kv_norm = RandomNormWeight(c.kv_lora_rank, s + 5);
  w.w_kr = RandomMatrix(c.hidden, c.qk_rope_head_dim, s + 6);
  w.w_uk = RandomMatrix(c.kv_lora_rank, h * c.qk_nope_head_dim, s + 7);
  w.w_uv = RandomMatrix(c.kv_lora_rank, h * c.v_head_dim, s + 8);
  w.w_o = RandomMatrix(h * c.v_head_dim, c.hidden, s + 9);
  return w;
}

MlaBlock::MlaBlock(MlaConfig config, MlaWeights weights)
    : config_(config), weights_(std::move(weights)) {
  weights_.Check(config_);
  const double bytes = static_cast<double>(config_.batch) * config_.max_tokens *
                       config_.latent_dim() * sizeof(float);
  Require(bytes < 1e12, "MlaBlock: a latent cache of ", bytes / 1e9, " GB is too large");
  cache_.assign(static_cast<size_t>(config_.batch * config_.max_tokens * config_.latent_dim()),
                0.0f);
  causal_ = CausalMask();
}

double MlaBlock::NaiveScratchBytes(const MlaConfig& c, int64_t tokens) {
  return static_cast<double>(c.batch) * tokens * c.num_heads * (c.qk_head_dim() + c.v_head_dim) *
         sizeof(float);
}

void MlaBlock::Forward(TensorView<const float> x, int64_t position, TensorView<float> out) {
  constexpr const char* fn = "MlaBlock::Forward";
  const MlaConfig& c = config_;
  undo_length_ = -1;
  CheckHidden(fn, c.hidden, x, out);
  Require(x.batch() == c.batch, fn, ": x has batch ", x.batch(), " but the block was built for ",
          c.batch);
  CheckPosition(fn, position, length_);
  const int64_t n = x.tokens(), batch = c.batch, rows = batch * n;
  Require(position + n <= c.max_tokens, fn, ": ", n, " tokens at position ", position,
          " exceed the latent cache capacity max_tokens = ", c.max_tokens);
  const int64_t h = c.num_heads, dq = c.qk_head_dim(), dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, r = c.kv_lora_rank, lat = c.latent_dim();

  // Buffers first (a failed allocation leaves the block unchanged). Query path: q [rows, h, dq].
  CheckedResize(q_, CheckedProduct({rows, h, dq}, fn, "rows*heads*head_dim"), fn, "q");
  CheckedResize(o_, CheckedProduct({rows, h, c.v_head_dim}, fn, "rows*heads*head_dim"), fn, "o");
  if (c.q_lora_rank > 0) {
    CheckedResize(cq_, CheckedMul(rows, c.q_lora_rank, fn, "rows*q_lora_rank"), fn, "cq");
  }
  if (c.q_lora_rank > 0) {
    Linear(x.data, rows, weights_.w_dq, cq_.data());
    RmsNorm(cq_.data(), rows, c.q_lora_rank, c.q_lora_rank, weights_.q_norm, c.norm_eps);
    Linear(cq_.data(), rows, weights_.w_uq, q_.data());
  } else {
    Linear(x.data, rows, weights_.w_uq, q_.data());
  }
  ApplyRope(TensorView<float>{q_.data() + dn, {batch, h, n, dr}, {n * h * dq, dq, h * dq, 1}},
            position, c.rope);

  // Key/value path straight into the latent cache rows [c_kv | k_rope] of the new tokens.
  const int64_t batch_stride = c.max_tokens * lat;
  for (int64_t b = 0; b < batch; ++b) {
    float* dst = cache_.data() + b * batch_stride + position * lat;
    const float* xb = x.data + b * n * c.hidden;
    Linear(xb, n, weights_.w_dkv, dst, c.hidden, lat);
    RmsNorm(dst, n, r, lat, weights_.kv_norm, c.norm_eps);
    Linear(xb, n, weights_.w_kr, dst + r, c.hidden, lat);
  }
  ApplyRope(
      TensorView<float>{
          cache_.data() + position * lat + r, {batch, 1, n, dr}, {batch_stride, 0, lat, 1}},
      position, c.rope);
  // The new rows lie past the held ones, so only the length changes; if attention fails (out of
  // memory) it is put back and the block is as if never called.
  length_ = position + n;
  try {
    if (c.path == MlaPath::kNaive) {
      AttendNaive(rows, n, position);
    } else {
      AttendAbsorbed(rows, n, position);
    }
  } catch (...) {
    length_ = position;
    throw;
  }
  Linear(o_.data(), rows, weights_.w_o, out.data);
  undo_length_ = position;
}

bool MlaBlock::UndoForward() noexcept {
  if (undo_length_ < 0) return false;
  length_ = undo_length_;  // the rows past it are never read
  undo_length_ = -1;
  return true;
}

void MlaBlock::AttendNaive(int64_t /*rows*/, int64_t n, int64_t position) {
  const MlaConfig& c = config_;
  const int64_t h = c.num_heads, dq = c.qk_head_dim(), dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, dv = c.v_head_dim, r = c.kv_lora_rank,
                lat = c.latent_dim(), batch = c.batch, total = length_;
  // Up-project every cached token: k_full [batch, total, h, nope + rope] (k_rope copied into each
  // head), v_full [batch, total, h, v]. This materialisation is what the absorbed path avoids.
  GrowScratch(k_full_, batch * total * h * dq, batch * c.max_tokens * h * dq);
  GrowScratch(v_full_, batch * total * h * dv, batch * c.max_tokens * h * dv);
  for (int64_t b = 0; b < batch; ++b) {
    const float* lat_b = cache_.data() + b * c.max_tokens * lat;
    float* kb = k_full_.data() + b * total * h * dq;
    for (int64_t hh = 0; hh < h; ++hh) {
      Gemm(total, dn, r, lat_b, lat, weights_.w_uk.data.data() + hh * dn, h * dn, false,
           kb + hh * dq, h * dq);
    }
    for (int64_t t = 0; t < total; ++t) {
      for (int64_t hh = 0; hh < h; ++hh) {
        std::memcpy(kb + (t * h + hh) * dq + dn, lat_b + t * lat + r, sizeof(float) * dr);
      }
    }
    Gemm(total, h * dv, r, lat_b, lat, weights_.w_uv.data.data(), h * dv, false,
         v_full_.data() + b * total * h * dv, h * dv);
  }
  DenseOptions opt;
  opt.scale = c.scale > 0 ? c.scale : 1.0f / std::sqrt(static_cast<float>(dq));
  opt.mask = n > 1 ? causal_.get() : nullptr;
  opt.k_start = 0;
  opt.q_start = position;
  opt.backend = c.backend;
  DenseForward(MakeBshd<const float>(q_.data(), batch, n, h, dq),
               MakeBshd<const float>(k_full_.data(), batch, total, h, dq),
               MakeBshd<const float>(v_full_.data(), batch, total, h, dv),
               MakeBshd(o_.data(), batch, n, h, dv), opt);
}

void MlaBlock::AttendAbsorbed(int64_t rows, int64_t n, int64_t position) {
  const MlaConfig& c = config_;
  const int64_t h = c.num_heads, dq = c.qk_head_dim(), dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, dv = c.v_head_dim, r = c.kv_lora_rank,
                lat = c.latent_dim(), batch = c.batch, total = length_;
  // q_abs [rows, h, kv_lora + rope]: per head q_nope · W_uk,hᵀ, then the rotated q_rope.
  q_abs_.resize(static_cast<size_t>(rows * h * lat));
  o_lat_.resize(static_cast<size_t>(rows * h * r));
  for (int64_t hh = 0; hh < h; ++hh) {
    Gemm(rows, r, dn, q_.data() + hh * dq, h * dq, weights_.w_uk.data.data() + hh * dn, h * dn,
         true, q_abs_.data() + hh * lat, h * lat);
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t hh = 0; hh < h; ++hh) {
      std::memcpy(q_abs_.data() + (i * h + hh) * lat + r, q_.data() + (i * h + hh) * dq + dn,
                  sizeof(float) * dr);
    }
  }
  // Multi-query attention over the latent cache: K = [c_kv | k_rope], V = c_kv (same memory).
  const int64_t batch_stride = c.max_tokens * lat;
  TensorView<const float> k{cache_.data(), {batch, 1, total, lat}, {batch_stride, 0, lat, 1}};
  TensorView<const float> v{cache_.data(), {batch, 1, total, r}, {batch_stride, 0, lat, 1}};
  DenseOptions opt;
  opt.scale = c.scale > 0 ? c.scale : 1.0f / std::sqrt(static_cast<float>(dq));
  opt.k_start = 0;
  opt.backend = c.backend;
  if (n == 1) {
    // One new token: every key is visible, so the heads can be the query rows of one head,
    // which lets the kernel tile (and thread) across heads while reading the latent once.
    DenseForward(TensorView<const float>{q_abs_.data(), {batch, 1, h, lat}, {h * lat, 0, lat, 1}},
                 k, v, TensorView<float>{o_lat_.data(), {batch, 1, h, r}, {h * r, 0, r, 1}}, opt);
  } else {
    opt.mask = causal_.get();
    opt.q_start = position;
    DenseForward(MakeBshd<const float>(q_abs_.data(), batch, n, h, lat), k, v,
                 MakeBshd(o_lat_.data(), batch, n, h, r), opt);
  }
  // o_h = o_lat,h · W_uv,h → o [rows, h, v].
  for (int64_t hh = 0; hh < h; ++hh) {
    Gemm(rows, dv, r, o_lat_.data() + hh * r, h * r, weights_.w_uv.data.data() + hh * dv, h * dv,
         false, o_.data() + hh * dv, h * dv);
  }
}

void MlaBlock::FillCacheRandom(int64_t tokens, uint64_t seed) {
  Require(tokens >= 0 && tokens <= config_.max_tokens, "MlaBlock::FillCacheRandom: tokens (",
          tokens, ") must be in [0, max_tokens = ", config_.max_tokens, "]");
  const int64_t lat = config_.latent_dim();
  for (int64_t b = 0; b < config_.batch; ++b) {
    FillUniform(cache_.data() + b * config_.max_tokens * lat, static_cast<size_t>(tokens * lat),
                1.0f, seed * 104729 + b);
  }
  length_ = tokens;
  undo_length_ = -1;
}

void MlaBlock::ReserveScratch(int64_t tokens) {
  const MlaConfig& c = config_;
  Require(tokens >= 0 && tokens <= c.max_tokens, "MlaBlock::ReserveScratch: tokens (", tokens,
          ") must be in [0, max_tokens = ", c.max_tokens, "]");
  if (c.path != MlaPath::kNaive) return;
  const int64_t h = c.num_heads;
  GrowScratch(k_full_, c.batch * tokens * h * c.qk_head_dim(),
              c.batch * c.max_tokens * h * c.qk_head_dim());
  GrowScratch(v_full_, c.batch * tokens * h * c.v_head_dim,
              c.batch * c.max_tokens * h * c.v_head_dim);
}

void MlaBlock::ReleaseScratch() {
  for (auto* v : {&cq_, &q_, &o_, &k_full_, &v_full_, &q_abs_, &o_lat_}) {
    std::vector<float>().swap(*v);
  }
}

int64_t MlaCacheBytesPerToken(const MlaConfig& c) {
  return c.latent_dim() * static_cast<int64_t>(sizeof(float));
}

}  // namespace attnkit
