// The linear and recurrent engines' cases of `attnkit bench backward` (see bench_backward.h):
// chunked Gated DeltaNet and causal Performer at 8192 tokens (2 heads, head_dim 128; `quick`: 1024
// tokens), measured by bench::RunBackwardLinearBench. Their PyTorch peer is slow (a token loop:
// minutes per case), so it runs separately: /usr/bin/python3 tools/bench/torch_backward_linear.py.
#include "attnkit/bench/backward.h"
#include "attnkit/bench/backward_linear.h"
#include "attnkit/core/runtime.h"
#include "bench_backward.h"

namespace attnkit::cli {
namespace {

std::vector<bench::BackwardCase> LinearCases(const bench::BackwardBenchConfig& c) {
  bench::BackwardLinearConfig cfg;
  if (c.quick) cfg.seqlen = 1024;
  cfg.threads = c.threads > 0 ? c.threads : GetNumThreads();
  cfg.repeats = c.repeats;
  const bench::BackwardLinearResult r = bench::RunBackwardLinearBench(cfg);
  std::vector<bench::BackwardCase> out;
  for (const auto& l : r.cases) {
    bench::BackwardCase b;
    b.family = "linear";
    b.name = l.name;
    b.description = l.name == "gdn_chunked_backward" ? "Gated DeltaNet, chunked (WY/UT)"
                                                     : "Performer FAVOR+, causal chunk-wise";
    b.seqlen = l.seqlen;
    b.num_heads_q = b.num_heads_kv = l.heads;
    b.head_dim = l.head_dim;
    b.forward_flops = l.forward_flops;
    b.backward_flops = 2.5 * l.forward_flops;
    b.forward_ms = l.forward_seconds * 1e3;
    b.backward_ms = l.backward_seconds * 1e3;
    b.forward_gflops = l.forward_seconds > 0 ? l.forward_flops / l.forward_seconds * 1e-9 : 0;
    b.backward_gflops = l.backward_gflops;
    b.total_gflops = l.total_gflops;
    b.peer_note = "run separately: /usr/bin/python3 tools/bench/torch_backward_linear.py";
    out.push_back(b);
  }
  return out;
}

const BackwardFamilyRegistrar kLinear({"linear", LinearCases});

}  // namespace
}  // namespace attnkit::cli
