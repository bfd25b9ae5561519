// The shared checker of q, k, v, out and lse for every kernel family (see problem.h).
#include "kernels/problem.h"

#include <cmath>
#include <limits>

#include "attnkit/core/error.h"
#include "attnkit/masks/mask.h"  // kUnbounded

namespace attnkit::detail {

template <typename KV>
Problem CheckProblem(const char* fn, TensorView<const float> q, TensorView<const KV> k,
                     TensorView<const KV> v, TensorView<const float> out,
                     TensorView<const float> lse, const ProblemRules& r) {
  CheckView(q, fn, "q");
  CheckView(k, fn, "k");
  CheckView(v, fn, "v");
  CheckView(out, fn, "out");
  Require(k.batch() == q.batch() && v.batch() == q.batch(), fn, ": batch sizes differ: q ",
          q.ShapeString(), ", k ", k.ShapeString(), ", v ", v.ShapeString());
  Require(k.dim() == q.dim(), fn, ": head_dim_qk of q (", q.dim(), ") and k (", k.dim(),
          ") differ");
  Require(v.tokens() == k.tokens(), fn, ": k and v must have the same seqlen_kv: k ",
          k.ShapeString(), ", v ", v.ShapeString());
  Problem p;
  p.batch = q.batch();
  p.heads_q = q.heads();
  p.heads_kv = k.heads();
  p.seqlen_q = q.tokens();
  p.seqlen_kv = k.tokens();
  p.dk = q.dim();
  p.dv = v.dim();
  if (r.sharing == HeadSharing::kKeyValue) {
    Require(v.heads() == k.heads(), fn, ": k and v must have the same number of heads: k ",
            k.ShapeString(), ", v ", v.ShapeString());
    Require(q.heads() % k.heads() == 0, fn, ": num_heads_q (", q.heads(),
            ") must be a multiple of num_heads_kv (", k.heads(), ")");
    p.heads = q.heads();
    p.group = q.heads() / k.heads();
  } else {
    Require(k.heads() == q.heads(), fn, ": q ", q.ShapeString(), " and k ", k.ShapeString(),
            " must have the same number of heads");
    Require(v.heads() % q.heads() == 0, fn, ": q/k heads (", q.heads(), ") must divide v heads (",
            v.heads(), ")");
    p.heads = v.heads();
    p.group = v.heads() / q.heads();
  }
  if (r.equal_seqlen) {
    Require(p.seqlen_q == p.seqlen_kv, fn,
            ": q and k must have the same seqlen (seqlen_q == ", "seqlen_kv), got ", p.seqlen_q,
            " and ", p.seqlen_kv);
  }
  Require(out.batch() == p.batch && out.heads() == p.heads && out.tokens() == p.seqlen_q &&
              out.dim() == p.dv,
          fn, ": out must be [batch, heads, seqlen_q, head_dim_v] = [", p.batch, ", ", p.heads,
          ", ", p.seqlen_q, ", ", p.dv, "], got ", out.ShapeString());
  Require(!Overlaps(out, q) && !Overlaps(out, k) && !Overlaps(out, v), fn,
          ": out overlaps an input (q, k or v)");
  if (!lse.empty()) {
    CheckView(lse, fn, "lse");
    Require(lse.batch() == p.batch && lse.heads() == p.heads && lse.tokens() == p.seqlen_q &&
                lse.dim() == 1,
            fn, ": lse must be [batch, num_heads_q, seqlen_q, 1], got ", lse.ShapeString());
    Require(!Overlaps(lse, out) && !Overlaps(lse, q) && !Overlaps(lse, k) && !Overlaps(lse, v), fn,
            ": lse overlaps out or an input");
  }
  if (r.scale) {
    Require(std::isfinite(*r.scale), fn, ": scale must be finite, got ", *r.scale);
    p.scale = *r.scale;
  } else {
    p.scale =
        r.default_scale != 0.0f ? r.default_scale : 1.0f / std::sqrt(static_cast<float>(p.dk));
  }
  Require(r.num_threads >= 0, fn, ": num_threads must be >= 0, got ", r.num_threads);
  Require(r.k_start > -kUnbounded && r.k_start < kUnbounded, fn, ": k_start out of range");
  if (r.q_start) {
    Require(*r.q_start > -kUnbounded && *r.q_start < kUnbounded, fn, ": q_start out of range");
  }
  p.k_start = r.k_start;
  p.q_start = r.q_start ? *r.q_start : r.k_start + p.seqlen_kv - p.seqlen_q;
  return p;
}

template Problem CheckProblem<float>(const char*, TensorView<const float>, TensorView<const float>,
                                     TensorView<const float>, TensorView<const float>,
                                     TensorView<const float>, const ProblemRules&);
template Problem CheckProblem<bf16>(const char*, TensorView<const float>, TensorView<const bf16>,
                                    TensorView<const bf16>, TensorView<const float>,
                                    TensorView<const float>, const ProblemRules&);

void CheckPerHead(const char* fn, const char* name, std::span<const float> values, int64_t n,
                  const char* n_name, PerHeadRules rules) {
  if (values.empty() && rules.allow_empty) return;
  Require(static_cast<int64_t>(values.size()) == n, fn, ": ", name, " must hold ", n_name, " = ", n,
          " values, got ", values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const float x = values[i];
    const bool ok =
        std::isfinite(x) || (rules.allow_neg_inf && x == -std::numeric_limits<float>::infinity());
    Require(ok, fn, ": ", name, "[", i, "] ",
            rules.allow_neg_inf ? "must be a finite logit (or -inf)" : "is not finite", ", got ",
            x);
  }
}

}  // namespace attnkit::detail
