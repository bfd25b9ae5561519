// Multi-head latent attention: latent cache, naive path (per-head K/V up-projection) and
// absorbed path (multi-query attention over the latent). Math: docs/blocks.md.
#include "attnkit/layers/mla.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/kernels/dense_backward.h"

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

// ---- Training (naive path) ----

namespace {
// What the backward needs, per row (batch · tokens rows): x, the q LoRA's pre-norm latent, the
// rotated queries, the pre-norm c_kv, the rotated k_rope, the attention output and its LSE.
// c_q, c_kv, K and V are recomputed from these.
struct MlaTape final : TrainTape {
  std::vector<float> x;        // [rows, hidden]
  std::vector<float> cq_pre;   // [rows, q_lora_rank] (empty without the q LoRA)
  std::vector<float> q;        // [rows, h, nope + rope], rope part rotated
  std::vector<float> ckv_pre;  // [rows, kv_lora_rank]
  std::vector<float> k_rope;   // [rows, rope], rotated
  std::vector<float> o;        // [rows, h, v]
  std::vector<float> lse;      // [batch, h, tokens]
};

// The rope part of every head of q [batch, tokens, h, nope + rope] as [batch, h, tokens, rope].
TensorView<float> QRopeView(float* q, int64_t batch, int64_t n, int64_t h, int64_t dn, int64_t dr) {
  const int64_t dq = dn + dr;
  return {q + dn, {batch, h, n, dr}, {n * h * dq, dq, h * dq, 1}};
}
// k_rope [batch, tokens, rope] as [batch, 1, tokens, rope].
TensorView<float> KRopeView(float* k, int64_t batch, int64_t n, int64_t dr) {
  return {k, {batch, 1, n, dr}, {n * dr, 0, dr, 1}};
}
}  // namespace

void MlaBlock::UpProject(const float* ckv, const float* k_rope, int64_t rows, float* k,
                         float* v) const {
  const MlaConfig& c = config_;
  const int64_t h = c.num_heads, dq = c.qk_head_dim(), dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, r = c.kv_lora_rank;
  for (int64_t hh = 0; hh < h; ++hh) {
    Gemm(rows, dn, r, ckv, r, weights_.w_uk.data.data() + hh * dn, h * dn, false, k + hh * dq,
         h * dq);
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t hh = 0; hh < h; ++hh) {
      std::memcpy(k + (i * h + hh) * dq + dn, k_rope + i * dr, sizeof(float) * dr);
    }
  }
  Linear(ckv, rows, weights_.w_uv, v);
}

void MlaBlock::EnsureGrads() {
  if (has_grads_) return;
  grads_ = weights_;
  has_grads_ = true;
  for (const Param& p : Params()) std::fill(p.grad, p.grad + p.size(), 0.0f);
}

std::vector<Param> MlaBlock::Params() {
  EnsureGrads();
  std::vector<Param> ps;
  AppendParam(ps, "w_dq", weights_.w_dq, grads_.w_dq);
  AppendParam(ps, "q_norm", weights_.q_norm, grads_.q_norm);
  AppendParam(ps, "w_uq", weights_.w_uq, grads_.w_uq);
  AppendParam(ps, "w_dkv", weights_.w_dkv, grads_.w_dkv);
  AppendParam(ps, "kv_norm", weights_.kv_norm, grads_.kv_norm);
  AppendParam(ps, "w_kr", weights_.w_kr, grads_.w_kr);
  AppendParam(ps, "w_uk", weights_.w_uk, grads_.w_uk);
  AppendParam(ps, "w_uv", weights_.w_uv, grads_.w_uv);
  AppendParam(ps, "w_o", weights_.w_o, grads_.w_o);
  return ps;
}

std::unique_ptr<TrainTape> MlaBlock::TrainForward(TensorView<const float> x,
                                                  TensorView<float> out) {
  constexpr const char* fn = "MlaBlock::TrainForward";
  const MlaConfig& c = config_;
  CheckHidden(fn, c.hidden, x, out);
  const int64_t batch = x.batch(), n = x.tokens();
  Require(n > 0, fn, ": x must hold at least one token");
  const int64_t rows = CheckedMul(batch, n, fn, "batch*tokens");
  const int64_t h = c.num_heads, dq = c.qk_head_dim(), dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, dv = c.v_head_dim, r = c.kv_lora_rank, ql = c.q_lora_rank;
  auto tape = std::make_unique<MlaTape>();
  tape->owner = this;
  tape->shape = x.shape;
  tape->x = CheckedVector(CheckedMul(rows, c.hidden, fn, "rows*hidden"), 0.0f, fn, "x");
  tape->cq_pre = CheckedVector(CheckedMul(rows, ql, fn, "rows*q_lora_rank"), 0.0f, fn, "c_q");
  tape->q = CheckedVector(CheckedProduct({rows, h, dq}, fn, "rows*heads*head_dim"), 0.0f, fn, "q");
  tape->ckv_pre = CheckedVector(CheckedMul(rows, r, fn, "rows*kv_lora_rank"), 0.0f, fn, "c_kv");
  tape->k_rope = CheckedVector(CheckedMul(rows, dr, fn, "rows*rope"), 0.0f, fn, "k_rope");
  tape->o = CheckedVector(CheckedProduct({rows, h, dv}, fn, "rows*heads*v"), 0.0f, fn, "o");
  tape->lse = CheckedVector(CheckedMul(rows, h, fn, "rows*heads"), 0.0f, fn, "lse");
  std::vector<float> cq = CheckedVector(rows * ql, 0.0f, fn, "c_q");
  std::vector<float> ckv = CheckedVector(rows * r, 0.0f, fn, "c_kv");
  std::vector<float> k = CheckedVector(CheckedProduct({rows, h, dq}, fn, "rows*heads*head_dim"),
                                       0.0f, fn, "the per-head keys");
  std::vector<float> v = CheckedVector(rows * h * dv, 0.0f, fn, "the per-head values");

  std::copy(x.data, x.data + rows * c.hidden, tape->x.begin());
  if (ql > 0) {
    Linear(x.data, rows, weights_.w_dq, tape->cq_pre.data());
    cq = tape->cq_pre;
    RmsNorm(cq.data(), rows, ql, ql, weights_.q_norm, c.norm_eps);
    Linear(cq.data(), rows, weights_.w_uq, tape->q.data());
  } else {
    Linear(x.data, rows, weights_.w_uq, tape->q.data());
  }
  ApplyRope(QRopeView(tape->q.data(), batch, n, h, dn, dr), 0, c.rope);
  Linear(x.data, rows, weights_.w_dkv, tape->ckv_pre.data());
  ckv = tape->ckv_pre;
  RmsNorm(ckv.data(), rows, r, r, weights_.kv_norm, c.norm_eps);
  Linear(x.data, rows, weights_.w_kr, tape->k_rope.data());
  ApplyRope(KRopeView(tape->k_rope.data(), batch, n, dr), 0, c.rope);
  UpProject(ckv.data(), tape->k_rope.data(), rows, k.data(), v.data());

  DenseOptions opt;
  opt.scale = c.scale > 0 ? c.scale : 1.0f / std::sqrt(static_cast<float>(dq));
  opt.mask = causal_.get();
  opt.backend = c.backend;
  DenseForward(MakeBshd<const float>(tape->q.data(), batch, n, h, dq),
               MakeBshd<const float>(k.data(), batch, n, h, dq),
               MakeBshd<const float>(v.data(), batch, n, h, dv),
               MakeBshd(tape->o.data(), batch, n, h, dv), opt,
               MakeBhsd(tape->lse.data(), batch, h, n, 1));
  Linear(tape->o.data(), rows, weights_.w_o, out.data);
  return tape;
}

void MlaBlock::TrainBackward(TrainTape& tape_base, TensorView<const float> dout,
                             TensorView<float> dx) {
  constexpr const char* fn = "MlaBlock::TrainBackward";
  tape_base.Check(fn, this, dout, dx);
  auto& t = dynamic_cast<MlaTape&>(tape_base);
  const MlaConfig& c = config_;
  const int64_t batch = t.shape[0], n = t.shape[2], rows = batch * n;
  const int64_t h = c.num_heads, dq = c.qk_head_dim(), dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, dv = c.v_head_dim, r = c.kv_lora_rank, ql = c.q_lora_rank;
  // Every buffer before anything is written: a failed allocation changes nothing.
  EnsureGrads();
  auto buf = [&](int64_t count, const char* what) { return CheckedVector(count, 0.0f, fn, what); };
  std::vector<float> cq = buf(rows * ql, "c_q"), dcq = buf(rows * ql, "dc_q");
  std::vector<float> ckv = buf(rows * r, "c_kv"), dckv = buf(rows * r, "dc_kv");
  std::vector<float> k = buf(rows * h * dq, "the per-head keys"), dk = buf(rows * h * dq, "dk"),
                     dq_buf = buf(rows * h * dq, "dq");
  std::vector<float> v = buf(rows * h * dv, "the per-head values"), dvv = buf(rows * h * dv, "dv"),
                     d_o = buf(rows * h * dv, "do");
  std::vector<float> dk_nope = buf(rows * h * dn, "dk_nope"), dkr = buf(rows * dr, "dk_rope");
  t.consumed = true;

  // out = o W_o.
  LinearBackward(t.o.data(), rows, weights_.w_o, dout.data, d_o.data(), grads_.w_o.data.data());
  // Recompute c_q, c_kv and the per-head K, V.
  if (ql > 0) {
    cq = t.cq_pre;
    RmsNorm(cq.data(), rows, ql, ql, weights_.q_norm, c.norm_eps);
  }
  ckv = t.ckv_pre;
  RmsNorm(ckv.data(), rows, r, r, weights_.kv_norm, c.norm_eps);
  UpProject(ckv.data(), t.k_rope.data(), rows, k.data(), v.data());

  DenseOptions opt;
  opt.scale = c.scale > 0 ? c.scale : 1.0f / std::sqrt(static_cast<float>(dq));
  opt.mask = causal_.get();
  opt.backend = c.backend;
  DenseBackward(
      MakeBshd<const float>(t.q.data(), batch, n, h, dq),
      MakeBshd<const float>(k.data(), batch, n, h, dq),
      MakeBshd<const float>(v.data(), batch, n, h, dv),
      MakeBshd<const float>(t.o.data(), batch, n, h, dv),
      MakeBhsd<const float>(t.lse.data(), batch, h, n, 1),
      MakeBshd<const float>(d_o.data(), batch, n, h, dv),
      DenseGrads{MakeBshd(dq_buf.data(), batch, n, h, dq), MakeBshd(dk.data(), batch, n, h, dq),
                 MakeBshd(dvv.data(), batch, n, h, dv)},
      opt);

  // K/V path: v = c_kv W_uv, k_nope = c_kv W_uk (per head), every head's k_rope is one RoPE(x
  // W_kr).
  for (int64_t i = 0; i < rows; ++i) {
    float* kr = dkr.data() + i * dr;
    for (int64_t hh = 0; hh < h; ++hh) {
      const float* src = dk.data() + (i * h + hh) * dq;
      std::memcpy(dk_nope.data() + (i * h + hh) * dn, src, sizeof(float) * dn);
      for (int64_t e = 0; e < dr; ++e) kr[e] += src[dn + e];
    }
  }
  LinearBackward(ckv.data(), rows, weights_.w_uv, dvv.data(), dckv.data(), grads_.w_uv.data.data());
  LinearBackward(ckv.data(), rows, weights_.w_uk, dk_nope.data(), dckv.data(),
                 grads_.w_uk.data.data(), /*accumulate_dx=*/true);
  RmsNormBackward(t.ckv_pre.data(), rows, r, r, weights_.kv_norm, c.norm_eps, false, dckv.data(),
                  dckv.data(), grads_.kv_norm.data());
  ApplyRopeBackward(KRopeView(dkr.data(), batch, n, dr), 0, c.rope);
  float* dxp = dx.data;  // null → only the weight gradients
  LinearBackward(t.x.data(), rows, weights_.w_dkv, dckv.data(), dxp, grads_.w_dkv.data.data());
  LinearBackward(t.x.data(), rows, weights_.w_kr, dkr.data(), dxp, grads_.w_kr.data.data(), true);

  // Query path.
  ApplyRopeBackward(QRopeView(dq_buf.data(), batch, n, h, dn, dr), 0, c.rope);
  if (ql > 0) {
    LinearBackward(cq.data(), rows, weights_.w_uq, dq_buf.data(), dcq.data(),
                   grads_.w_uq.data.data());
    RmsNormBackward(t.cq_pre.data(), rows, ql, ql, weights_.q_norm, c.norm_eps, false, dcq.data(),
                    dcq.data(), grads_.q_norm.data());
    LinearBackward(t.x.data(), rows, weights_.w_dq, dcq.data(), dxp, grads_.w_dq.data.data(), true);
  } else {
    LinearBackward(t.x.data(), rows, weights_.w_uq, dq_buf.data(), dxp, grads_.w_uq.data.data(),
                   true);
  }
}

int64_t MlaCacheBytesPerToken(const MlaConfig& c) {
  return c.latent_dim() * static_cast<int64_t>(sizeof(float));
}

}  // namespace attnkit
